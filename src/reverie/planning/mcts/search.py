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

from . import gumbel as gm
from . import puct
from .tree import LOGITS, PRIOR, VISITS, Tree, backup, expand, init_tree, qvalues
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


def _check_output(output: RecurrentOutput, embedding: State, root: RootOutput) -> None:
    # shapes only: metadata checks cost no device synchronisation
    batch, actions = root.prior_logits.shape
    for name in ("reward", "discount", "value"):
        shape = getattr(output, name).shape
        if shape != (batch,):
            raise ValueError(f"recurrent_fn's {name} must be [B] = [{batch}], got {list(shape)}.")
    if output.prior_logits.shape != (batch, actions):
        raise ValueError(f"recurrent_fn's prior_logits must be [B, K] = [{batch}, {actions}].")
    leaves, spec = pytree.tree_flatten(embedding)
    stored, stored_spec = pytree.tree_flatten(root.embedding)
    if spec != stored_spec or any(new.shape != old.shape for new, old in zip(leaves, stored)):
        raise ValueError("recurrent_fn must return an embedding with the root embedding's structure and leaf shapes.")


def _compacts(device: torch.device) -> bool:
    """Whether the descent keeps only the rows still descending (a host read per level; free on the CPU)."""
    return device.type == "cpu"


class _Puct:
    """PUCT selection for one search; the min-max normalisation is refreshed once per simulation."""

    def __init__(self, tree: Tree, settings: MCTSSettings):
        self.tree, self.settings = tree, settings
        self.normalizer = puct.min_max_normalizer(tree.q_min, tree.q_max)

    def begin(self, simulation: int) -> None:
        self.normalizer = puct.min_max_normalizer(self.tree.q_min, self.tree.q_max)

    def root(self) -> Tensor:
        return puct.puct_root_select(self.tree, self.settings, self.normalizer)

    def interior(self, node: Tensor, rows: Tensor | None) -> Tensor:
        return puct.puct_select(self.tree, node, self.settings, self.normalizer, rows)


class _Gumbel:
    """Gumbel MuZero selection for one search: the root follows the sequential-halving schedule."""

    def __init__(self, tree: Tree, settings: MCTSSettings, noise: Tensor):
        self.tree, self.settings = tree, settings
        self.root_scores = noise + tree.edge_stats[:, 0, LOGITS]  # g + logits, -inf for invalid actions
        self.considered, count = gm.select_considered(
            self.root_scores, ~tree.root_invalid, settings.max_considered_actions
        )
        table = gm.schedule_table(
            min(settings.max_considered_actions, tree.num_actions), settings.num_simulations, noise.device
        )
        self.targets = table[count].to(noise.dtype)  # [B, n]: each row follows the schedule of its own m
        self.target = self.targets[:, 0]

    def begin(self, simulation: int) -> None:
        self.target = self.targets[:, simulation]

    def root(self) -> Tensor:
        return gm.gumbel_root_select(self.tree, self.root_scores, self.considered, self.target, self.settings)

    def interior(self, node: Tensor, rows: Tensor | None) -> Tensor:
        return gm.gumbel_interior_select(self.tree, node, self.settings, rows)

    def final_action(self) -> Tensor:
        return gm.gumbel_final_action(self.tree, self.root_scores, self.considered, self.settings)


def _descend(
    tree: Tree, levels: int, max_depth: int | None, slot: int, selector: _Puct | _Gumbel, compact: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Walk from every root to where its row stops, recording the paths for ``backup``.

    A row stops at the first selected action without a child (it will expand
    that child into ``slot``) or on reaching a node at ``max_depth`` (no
    expansion: that node is the leaf whose value is backed up again).
    ``levels`` = deepest node depth + 1, so every row has stopped by then.

    Two ways to carry the rows that are still descending: with ``compact``
    each level keeps only their indices (``nonzero``), so deep levels that few
    rows reach cost little and the loop ends when the last row stops; that
    reads a count on the host per level, which is free on the CPU. Without it
    (other devices) every level works on all B rows under a mask and the loop
    runs to ``levels`` without synchronising.

    Returns level-major ``path`` [L + 1, B] (the new slot appended after the
    stopping node of expanding rows), ``actions`` [L, B], ``on_path`` [L + 1, B],
    and each row's stopping ``node`` [B], ``action`` [B] and ``expanding`` [B] bool.
    """
    batch, device = tree.batch_size, tree.row_offsets.device
    path = torch.zeros((levels + 2, batch), dtype=torch.int64, device=device)
    on_path = torch.zeros((levels + 2, batch), dtype=torch.bool, device=device)
    taken = torch.zeros((levels + 1, batch), dtype=torch.int64, device=device)
    limited = torch.zeros(batch, dtype=torch.bool, device=device)
    node = torch.zeros(batch, dtype=torch.int64, device=device)
    active = torch.ones(batch, dtype=torch.bool, device=device)
    rows: Tensor | None = None  # compact mode: the rows still descending (None: all of them)
    used = levels
    for level in range(levels):
        if rows is None:
            path[level] = node
            on_path[level] = active
        else:
            path[level].index_copy_(0, rows, node)
            on_path[level].index_fill_(0, rows, True)
        if max_depth is not None and level == max_depth:
            limited = on_path[level].clone()  # nodes at max_depth never get children: back their value up again
            used = level + 1
            break
        action = selector.root() if level == 0 else selector.interior(node, rows)
        if rows is None:
            taken[level] = action
        else:
            taken[level].index_copy_(0, rows, action)
        child = torch.take(tree.children_index, tree.flat_nodes(node, rows) * tree.num_actions + action)
        if compact:
            keep = (child >= 0).nonzero().squeeze(1)
            if keep.numel() == 0:  # every row stops here
                used = level + 1
                break
            rows = keep if rows is None else rows.index_select(0, keep)
            node = child.index_select(0, keep)
        else:
            active = active & (child >= 0)
            node = torch.where(active, child, node)
    path, on_path, taken = path[: used + 1], on_path[: used + 1], taken[:used]
    stop = on_path.sum(dim=0, keepdim=True) - 1  # [1, B] depth where each row stopped
    expanding = ~limited
    path.scatter_(0, stop + 1, slot)
    on_path.scatter_(0, stop + 1, expanding[None])
    return path, taken, on_path, path.gather(0, stop)[0], taken.gather(0, stop)[0], expanding


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

    selector: _Puct | _Gumbel
    if settings.algorithm == "puct":
        if explore and settings.dirichlet_fraction > 0:
            tree.edge_stats[:, 0, PRIOR] = puct.add_dirichlet_noise(
                tree.edge_stats[:, 0, PRIOR], invalid, settings.dirichlet_alpha, settings.dirichlet_fraction, generator
            )
        selector = _Puct(tree, settings)
    else:
        noise = torch.zeros((batch, actions), dtype=dtype, device=device)
        if explore and settings.gumbel_scale > 0:
            noise = settings.gumbel_scale * gm.sample_gumbel((batch, actions), generator, device, dtype)
        selector = _Gumbel(tree, settings, noise)

    # without max_depth every row expands every simulation, so the expansion needs no masks
    limited = settings.max_depth is not None
    compact = _compacts(device)
    deepest = 0  # host copy of the deepest node's depth: bounds the descent and backup loops
    for sim in range(settings.num_simulations):
        slot = sim + 1
        selector.begin(sim)
        path, taken, on_path, node, action, expanding = _descend(
            tree, deepest + 1, settings.max_depth, slot, selector, compact
        )
        output, embedding = recurrent_fn(tree.node_embedding(node), action)
        _check_output(output, embedding, root)
        expand(tree, slot, node, action, output, embedding, expanding if limited else None)
        value = output.value.to(dtype)
        if limited:  # a max_depth leaf backs up its model value again; a new node its fresh one
            value = torch.where(expanding, value, tree.at(tree.raw_values, node))
        backup(tree, path, taken, on_path, value)
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
