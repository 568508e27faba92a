"""How PUCT and Gumbel MuZero choose actions through the ``SelectionCache``.

Each selector knows which nodes' cached actions a backup can have changed
and recomputes exactly those (``after_backup``), in one batch for all rows:
the nodes on the backed-up paths, plus for PUCT with the tree-wide min-max
normalisation every node of a row whose bounds moved (they rescale all its
Q-values); the per-node parent-and-siblings normalisation needs no more than
the path, since it reads only the node's own value and children. The formulas are
``puct.puct_actions`` and ``gumbel.gumbel_interior``, on statistics gathered
with ``tree.gather_stats`` in the layout that is fastest for K.

With ``compact`` (the CPU, where reading a tensor on the host is free) the
batch holds just those nodes; elsewhere it is every entry of the padded paths
(PUCT: every used slot) and nothing waits on the device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import gumbel as gm
from . import puct
from .cache import SelectionCache
from .tree import LOGITS, VISITS, Tree, gather_stats, stats_layout
from .types import MCTSSettings


def _slots(tree: Tree, rows: Tensor, count: int) -> Tensor:
    """Flat indices of slots 0..count - 1 of ``rows`` [R]: [R * count]."""
    return (tree.row_offsets.index_select(0, rows)[:, None] + torch.arange(count, device=rows.device)).view(-1)


class PuctSelector:
    """PUCT selection for one search, through the selection cache.

    A node's PUCT action changes when its statistics change (it lies on the
    backed-up path) or, with ``q_transform="min_max"``, when its row's bounds
    change; the bounds move in only a few rows per simulation once the first
    values are in.
    """

    def __init__(self, tree: Tree, settings: MCTSSettings, cache: SelectionCache, compact: bool, blocked: bool):
        self.tree, self.cache, self.compact = tree, cache, compact
        self.per_node = settings.q_transform == "parent_and_siblings"
        batch, nodes, actions = tree.batch_size, tree.num_nodes, tree.num_actions
        self.action_major, self.dim = stats_layout(actions, tree.edge_stats.device)
        dtype, device = tree.edge_stats.dtype, tree.edge_stats.device
        self.table = puct.exploration_table(nodes, settings.pb_c_init, settings.pb_c_base, dtype, device)
        self.blocked: Tensor | None = None  # [B * N, K]: invalid root actions, False elsewhere
        if blocked:
            table = torch.zeros((batch, nodes, actions), dtype=torch.bool, device=device)
            table[:, 0] = tree.root_invalid
            self.blocked = table.view(batch * nodes, actions)
        self.refresh(cache.roots)

    def begin(self, simulation: int) -> None:
        pass  # the root's action is cached like any other node's

    def refresh(self, flat: Tensor) -> None:
        """Recompute the cached action of the nodes ``flat`` [M]."""
        blocked = None
        if self.blocked is not None:
            blocked = self.blocked.index_select(0, flat)
            blocked = blocked.t() if self.dim == 0 else blocked
        stats = gather_stats(self.tree, flat, self.action_major)
        if self.per_node:
            visits = self.tree.node_visits.view(-1).take(flat)
            value = self.tree.value_sums.view(-1).take(flat) / visits.to(stats.dtype)
            offset, scale = puct.sibling_normalizer(stats, value, self.dim)
        else:
            offset, scale = puct.min_max_normalizer(self.tree.q_min, self.tree.q_max)
            rows = torch.div(flat, self.tree.num_nodes, rounding_mode="floor")
            offset, scale = offset.view(-1).index_select(0, rows), scale.view(-1).index_select(0, rows)
        self.cache.store(flat, puct.puct_actions(stats, offset, scale, self.table, blocked, self.dim))

    def after_backup(self, path: Tensor, on_path: Tensor, changed: Tensor, slot: int) -> None:
        if self.per_node:  # only the path's nodes changed; off the CPU the repeats recompute the same action
            self.refresh(path.view(-1).masked_select(on_path.view(-1)) if self.compact else path.view(-1))
            return
        if not self.compact:  # no host reads: every used slot of every row
            self.refresh(_slots(self.tree, torch.arange(self.tree.batch_size, device=path.device), slot + 1))
            return
        flat = path.view(-1).masked_select(on_path.view(-1))
        rows = changed.nonzero().squeeze(1)
        if rows.numel() > 0:  # new bounds change the scores of every node of the row
            flat = torch.cat([flat, _slots(self.tree, rows, slot + 1)])
        self.refresh(flat)


class GumbelSelector:
    """Gumbel MuZero selection for one search: the root follows the sequential-halving schedule,
    interior nodes use the cache (their action depends on their own statistics only).

    The refreshes include the roots (first in every batch of nodes), so the
    root's sigma(completed Q), which the schedule's choice needs, comes from the
    same computation as the interior nodes'.
    """

    def __init__(
        self, tree: Tree, settings: MCTSSettings, cache: SelectionCache, compact: bool, noise: Tensor, invalid: bool
    ):
        self.tree, self.settings, self.cache, self.compact = tree, settings, cache, compact
        batch, nodes, actions = tree.batch_size, tree.num_nodes, tree.num_actions
        self.action_major, self.dim = stats_layout(actions, noise.device)
        self.root_scores = noise + tree.edge_stats[:, 0, LOGITS]  # g + logits, -inf for invalid actions
        self.considered, count = gm.select_considered(
            self.root_scores, ~tree.root_invalid, settings.max_considered_actions
        )
        table = gm.schedule_table(min(settings.max_considered_actions, actions), settings.num_simulations, noise.device)
        self.targets = table[count].to(noise.dtype)  # [B, n]: each row follows the schedule of its own m
        self.excluded: Tensor | None = None  # [B * N, K]: +inf at invalid root actions, 0 elsewhere
        if invalid:
            excluded = torch.zeros((batch, nodes, actions), dtype=noise.dtype, device=noise.device)
            excluded[:, 0] = gm.exclusion(tree.root_invalid, noise.dtype)
            self.excluded = excluded.view(batch * nodes, actions)
        self.root_sigma = self.root_scores  # [B, K], set by the refresh
        self.refresh(cache.roots)

    def begin(self, simulation: int) -> None:
        visits = self.tree.edge_stats[:, 0, VISITS]
        scores = self.root_scores + self.root_sigma
        action = gm.gumbel_root_choice(scores, self.considered, visits, self.targets[:, simulation])
        self.cache.store(self.cache.roots, action)

    def refresh(self, flat: Tensor) -> None:
        """Recompute the cached action of the nodes ``flat`` [M], whose first B are the roots
        (their action is ``begin``'s to choose; their sigma is kept for it)."""
        raw_value = self.tree.raw_values.view(-1).index_select(0, flat)
        stats = gather_stats(self.tree, flat, self.action_major)
        excluded = None
        if self.excluded is not None:
            excluded = self.excluded.index_select(0, flat)
            excluded = excluded.t() if self.dim == 0 else excluded
        action, sigma = gm.gumbel_interior(stats, raw_value, self.settings, self.dim, excluded)
        self.cache.store(flat, action)
        batch = self.tree.batch_size
        self.root_sigma = sigma[:, :batch].t() if self.dim == 0 else sigma[:batch]

    def after_backup(self, path: Tensor, on_path: Tensor, changed: Tensor, slot: int) -> None:
        # level-major: the roots come first, and every root is on its path
        if self.compact:
            self.refresh(path.view(-1).masked_select(on_path.view(-1)))
        else:  # no host reads: repeated nodes recompute the same action
            self.refresh(path.view(-1))

    def final_action(self) -> Tensor:
        return gm.gumbel_final_action(self.tree, self.root_scores, self.considered, self.settings)
