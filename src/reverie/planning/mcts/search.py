"""The simulation loop shared by PUCT and Gumbel MuZero.

A simulation descends from the root of every row at once, one depth level per
step of a Python loop, makes one ``recurrent_fn`` call for all B rows to
expand the selected leaves, and backs the new values up to the roots along
the recorded paths (one scatter per statistic, not one step per level).

Host synchronisation: once per search to validate ``invalid_actions``, and
once per simulation to read the depth of the new nodes, which bounds the next
descent on the host. On the CPU, where reading a tensor on the host costs no
synchronisation, the descent also drops the rows that have stopped at every
level (and ends when none is left), so the deep levels few rows reach cost
little; elsewhere it keeps all rows under a mask and never waits inside the
depth loop.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

from collections.abc import Callable

from . import gumbel as gm
from . import puct
from .backup import backup
from .cache import SelectionCache
from .tree import CHANNELS, LOGITS, PRIOR, VISITS, Tree, expand, init_tree, qvalues
from .types import MCTSSettings, RecurrentFn, RecurrentOutput, RootOutput, SearchResult, State


def _check_root(root: RootOutput, invalid: Tensor | None) -> tuple[int, int]:
    logits, value = root.prior_logits, root.value
    if logits.dim() != 2 or logits.shape[1] < 1:
        raise ValueError(f"root.prior_logits must be [B, K], got shape {tuple(logits.shape)}.")
    batch, actions = logits.shape
    if value.shape != (batch,) or not value.is_floating_point():
        raise ValueError(f"root.value must be a floating [B] = [{batch}] tensor, got {value.dtype} {list(value.shape)}")
    for leaf in pytree.tree_leaves(root.embedding):
        if not isinstance(leaf, Tensor) or leaf.dim() < 1 or leaf.shape[0] != batch:
            raise ValueError(f"root.embedding leaves must be tensors [B = {batch}, ...].")
    if invalid is not None and (invalid.shape != (batch, actions) or invalid.dtype != torch.bool):
        raise ValueError(f"invalid_actions must be a bool [B, K] = [{batch}, {actions}] tensor.")
    return batch, actions


def _output_checker(root: RootOutput) -> Callable[[RecurrentOutput, State], None]:
    """A check of every ``recurrent_fn`` answer against the root's shapes (the root's side computed once)."""
    batch, actions = root.prior_logits.shape
    stored, stored_spec = pytree.tree_flatten(root.embedding)
    shapes = [leaf.shape for leaf in stored]

    def check(output: RecurrentOutput, embedding: State) -> None:
        # shapes only: metadata checks cost no device synchronisation
        for name in ("reward", "discount", "value"):
            shape = getattr(output, name).shape
            if shape != (batch,):
                raise ValueError(f"recurrent_fn's {name} must be [B] = [{batch}], got {list(shape)}.")
        if output.prior_logits.shape != (batch, actions):
            raise ValueError(f"recurrent_fn's prior_logits must be [B, K] = [{batch}, {actions}].")
        if isinstance(embedding, Tensor) and isinstance(root.embedding, Tensor):
            if embedding.shape == shapes[0]:
                return
        else:
            leaves, spec = pytree.tree_flatten(embedding)
            if spec == stored_spec and all(new.shape == old for new, old in zip(leaves, shapes)):
                return
        raise ValueError("recurrent_fn must return an embedding with the root embedding's structure and leaf shapes.")

    return check


def _compacts(device: torch.device) -> bool:
    """Whether the search reads tensors on the host to do less work (free on the CPU, a sync elsewhere):
    the descent stops at the first level where no row moves, and the refresh after a backup gathers
    only the nodes that changed instead of every candidate."""
    return device.type == "cpu"


def _slots(tree: Tree, rows: Tensor, count: int) -> Tensor:
    """Flat indices of slots 0..count - 1 of ``rows`` [R]: [R * count]."""
    return (tree.row_offsets.index_select(0, rows)[:, None] + torch.arange(count, device=rows.device)).view(-1)


class _Puct:
    """PUCT selection for one search, through the selection cache.

    A node's PUCT action changes when its statistics change (it lies on the
    backed-up path) or when its row's min-max bounds change; the bounds move
    in only a few rows per simulation once the first values are in.
    """

    def __init__(self, tree: Tree, settings: MCTSSettings, cache: SelectionCache, compact: bool, blocked: bool):
        self.tree, self.cache, self.compact = tree, cache, compact
        batch, nodes, actions = tree.batch_size, tree.num_nodes, tree.num_actions
        self.stats = tree.edge_stats.view(batch * nodes, CHANNELS, actions)
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
        offset, scale = puct.min_max_normalizer(self.tree.q_min, self.tree.q_max)
        rows = torch.div(flat, self.tree.num_nodes, rounding_mode="floor")
        blocked = None if self.blocked is None else self.blocked.index_select(0, flat)
        action = puct.puct_actions(
            self.stats.index_select(0, flat), offset.index_select(0, rows), scale.index_select(0, rows), self.table, blocked
        )
        self.cache.store(flat, action)

    def after_backup(self, path: Tensor, on_path: Tensor, changed: Tensor, slot: int) -> None:
        if not self.compact:  # no host reads: every used slot of every row
            self.refresh(_slots(self.tree, torch.arange(self.tree.batch_size, device=path.device), slot + 1))
            return
        flat = path.view(-1).masked_select(on_path.view(-1))
        rows = changed.nonzero().squeeze(1)
        if rows.numel() > 0:  # new bounds change the scores of every node of the row
            flat = torch.cat([flat, _slots(self.tree, rows, slot + 1)])
        self.refresh(flat)


class _Gumbel:
    """Gumbel MuZero selection for one search: the root follows the sequential-halving schedule,
    interior nodes use the cache (their action depends on their own statistics only)."""

    def __init__(self, tree: Tree, settings: MCTSSettings, cache: SelectionCache, compact: bool, noise: Tensor):
        self.tree, self.settings, self.cache, self.compact = tree, settings, cache, compact
        self.stats = tree.edge_stats.view(-1, CHANNELS, tree.num_actions)
        self.root_scores = noise + tree.edge_stats[:, 0, LOGITS]  # g + logits, -inf for invalid actions
        self.considered, count = gm.select_considered(
            self.root_scores, ~tree.root_invalid, settings.max_considered_actions
        )
        table = gm.schedule_table(
            min(settings.max_considered_actions, tree.num_actions), settings.num_simulations, noise.device
        )
        self.targets = table[count].to(noise.dtype)  # [B, n]: each row follows the schedule of its own m
        self.excluded = gm.exclusion(tree.root_invalid, noise.dtype)

    def begin(self, simulation: int) -> None:
        action = gm.gumbel_root_select(
            self.tree, self.root_scores, self.considered, self.targets[:, simulation], self.settings, self.excluded
        )
        self.cache.store(self.cache.roots, action)

    def refresh(self, flat: Tensor) -> None:
        """Recompute the cached action of the non-root nodes ``flat`` [M]."""
        raw_value = self.tree.raw_values.view(-1).index_select(0, flat)
        self.cache.store(flat, gm.gumbel_actions(self.stats.index_select(0, flat), raw_value, self.settings))

    def after_backup(self, path: Tensor, on_path: Tensor, changed: Tensor, slot: int) -> None:
        # the root is left out: ``begin`` chooses its action afresh every simulation
        if self.compact:
            self.refresh(path[1:].reshape(-1).masked_select(on_path[1:].reshape(-1)))
        else:  # no host reads: stopped rows repeat their last node, which recomputes the same action
            self.refresh(path[1:].reshape(-1))

    def final_action(self) -> Tensor:
        return gm.gumbel_final_action(self.tree, self.root_scores, self.considered, self.settings)


@torch.no_grad()
def search(
    recurrent_fn: RecurrentFn,
    root: RootOutput,
    settings: MCTSSettings,
    *,
    invalid_actions: Tensor | None = None,
    explore: bool = True,
    generator: torch.Generator | None = None,
) -> SearchResult:
    """Run ``settings.num_simulations`` simulations from B roots and choose an action per root.

    ``invalid_actions`` [B, K] bool marks root actions that are never visited
    or chosen (every row needs a valid one). ``explore`` adds the algorithm's
    root noise (Dirichlet for PUCT, Gumbel for Gumbel) and samples PUCT's
    action from visits ** (1 / T); without it the search is deterministic and
    the action greedy. All randomness comes from ``generator`` (torch's global
    RNG when None). Everything runs on the device of ``root.prior_logits``.
    """
    batch, actions = _check_root(root, invalid_actions)
    device, dtype = root.prior_logits.device, root.value.dtype
    if invalid_actions is None:
        invalid = torch.zeros((batch, actions), dtype=torch.bool, device=device)
    else:
        invalid = invalid_actions.to(device)
        if not bool((~invalid).any(dim=-1).all()):  # one host sync per search, before any work
            raise ValueError("invalid_actions leaves some row without a valid action.")
    tree = init_tree(root, settings.num_simulations + 1, invalid)
    cache = SelectionCache.create(tree)
    compact = _compacts(device)

    selector: _Puct | _Gumbel
    if settings.algorithm == "puct":
        if explore and settings.dirichlet_fraction > 0:
            tree.edge_stats[:, 0, PRIOR] = puct.add_dirichlet_noise(
                tree.edge_stats[:, 0, PRIOR], invalid, settings.dirichlet_alpha, settings.dirichlet_fraction, generator
            )
        selector = _Puct(tree, settings, cache, compact, blocked=invalid_actions is not None)
    else:
        noise = torch.zeros((batch, actions), dtype=dtype, device=device)
        if explore and settings.gumbel_scale > 0:
            noise = settings.gumbel_scale * gm.sample_gumbel((batch, actions), generator, device, dtype)
        selector = _Gumbel(tree, settings, cache, compact, noise)

    check = _output_checker(root)
    single = isinstance(tree.embeddings, Tensor)
    flat_embeddings = tree.embeddings.view(batch * tree.num_nodes, *tree.embeddings.shape[2:]) if single else None
    # without max_depth every row expands every simulation, so the expansion needs no masks
    limited = settings.max_depth is not None
    deepest = 0  # host copy of the deepest node's depth: bounds the descent and backup loops
    for sim in range(settings.num_simulations):
        slot = sim + 1
        selector.begin(sim)
        path = cache.descend(deepest, compact)  # [L + 2, B]; the last row is for the new node
        leaf = path[-2]
        action = cache.best.index_select(0, leaf)
        embedding = flat_embeddings.index_select(0, leaf) if single else pytree.tree_map(
            lambda field: field.view(-1, *field.shape[2:]).index_select(0, leaf), tree.embeddings
        )
        output, embedding = recurrent_fn(embedding, action)
        check(output, embedding)
        # a row stopped at a max_depth node creates nothing: it backs up that node's model value again
        expanding = tree.depth.view(-1).index_select(0, leaf) < settings.max_depth if limited else None
        expand(tree, slot, leaf - cache.roots, action, output, embedding, expanding)
        on_path = cache.extend(path, slot, action, expanding)
        value = output.value.to(dtype)
        if expanding is not None:
            value = torch.where(expanding, value, tree.raw_values.view(-1).index_select(0, leaf))
        changed = backup(tree, path, cache.edge_of.index_select(0, path[1:].reshape(-1)).view(-1, batch), on_path, value)
        selector.after_backup(path, on_path, changed, slot)
        if deepest < (settings.max_depth if limited else settings.num_simulations):
            deepest = max(deepest, int(tree.depth[:, slot].max()))  # the one host read of a simulation

    visits = tree.edge_stats[:, 0, VISITS].long()
    stats = tree.edge_stats[:, 0]
    q_values = torch.where(visits > 0, qvalues(stats), 0.0)
    root_value = tree.value_sums[:, 0] / tree.node_visits[:, 0].to(dtype)
    if isinstance(selector, _Puct):
        policy = puct.visit_policy(visits, dtype)
        if explore and settings.temperature > 0:
            logits = puct.visit_temperature_logits(visits, settings.temperature, dtype)
            chosen = (logits + gm.sample_gumbel((batch, actions), generator, device, dtype)).argmax(dim=-1)
        else:
            chosen = visits.masked_fill(invalid, -1).argmax(dim=-1)
        return SearchResult(chosen, visits, policy, root_value, q_values, tree)
    policy = gm.improved_policy(tree, settings)
    return SearchResult(selector.final_action(), visits, policy, root_value, q_values, tree, selector.considered)
