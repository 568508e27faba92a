"""The simulation loop shared by PUCT and Gumbel MuZero.

A simulation (1) walks from every root at once along the selection cache's
``next`` links, one lookup per depth level, to the node where each row stops;
(2) makes one ``recurrent_fn`` call for all B rows to expand the selected
children; (3) backs the new values up along the recorded paths, one scatter
per statistic for all levels; (4) recomputes the cached action of the nodes
the backup changed, in one batch (``selectors``). Selection formulas thus run
once per changed node instead of once per level of every descent, which cuts
the small tensor ops per simulation several times over (see ``cache``).

Host synchronisation: once per search to validate ``invalid_actions``, and
once per simulation to read the depth of the new nodes, which bounds the next
walk. On the CPU, where reading a tensor on the host costs no
synchronisation, the walk also ends at the first level where no row moves
(the path length then gives the new depth) and refreshes gather only the
nodes that changed; elsewhere the same results come from fixed-size work that
never waits on the device.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

from . import gumbel as gm
from . import puct
from .backup import backup
from .cache import SelectionCache
from .selectors import GumbelSelector, PuctSelector
from .tree import PRIOR, VISITS, expand, init_tree, qvalues
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

    selector: PuctSelector | GumbelSelector
    if settings.algorithm == "puct":
        if explore and settings.dirichlet_fraction > 0:
            tree.edge_stats[:, 0, PRIOR] = puct.add_dirichlet_noise(
                tree.edge_stats[:, 0, PRIOR], invalid, settings.dirichlet_alpha, settings.dirichlet_fraction, generator
            )
        selector = PuctSelector(tree, settings, cache, compact, blocked=invalid_actions is not None)
    else:
        noise = torch.zeros((batch, actions), dtype=dtype, device=device)
        if explore and settings.gumbel_scale > 0:
            noise = settings.gumbel_scale * gm.sample_gumbel((batch, actions), generator, device, dtype)
        selector = GumbelSelector(tree, settings, cache, compact, noise, invalid=invalid_actions is not None)

    check = _output_checker(root)
    flat_embeddings = None  # [B * N, ...] for a single tensor embedding
    if isinstance(tree.embeddings, Tensor):
        flat_embeddings = tree.embeddings.view(batch * tree.num_nodes, *tree.embeddings.shape[2:])
    max_depth = settings.max_depth
    cap = settings.num_simulations if max_depth is None else max_depth  # no node is deeper
    deepest = 0  # host copy of the deepest node's depth: bounds the descent and backup loops
    for sim in range(settings.num_simulations):
        slot = sim + 1
        selector.begin(sim)
        path = cache.descend(deepest, compact)  # [L + 2, B]; the last row is for the new node
        leaf = path[-2]
        action = cache.best.index_select(0, leaf)
        embedding = flat_embeddings.index_select(0, leaf) if flat_embeddings is not None else pytree.tree_map(
            lambda field: field.view(-1, *field.shape[2:]).index_select(0, leaf), tree.embeddings
        )
        output, embedding = recurrent_fn(embedding, action)
        check(output, embedding)
        # a row stopped at a max_depth node creates nothing: it backs up that node's model value again
        # (without max_depth every row expands every simulation, so the expansion needs no masks)
        expanding = None if max_depth is None else tree.depth.view(-1).index_select(0, leaf) < max_depth
        links = expand(tree, slot, leaf - cache.roots, action, output, embedding, expanding)
        on_path = cache.extend(path, slot, links, torch.stack((output.reward, output.discount)), expanding)
        value = output.value.to(dtype)
        if expanding is not None:
            value = torch.where(expanding, value, tree.raw_values.view(-1).index_select(0, leaf))
        changed = backup(tree, path, on_path, value, *cache.edges(path))
        selector.after_backup(path, on_path, changed, slot)
        if deepest < cap and compact:
            # the walk ended at the deepest stopping node, so the path length gives the new depth:
            # a row stopping there expands one level deeper, unless that node is at max_depth
            deepest = max(deepest, min(cap, path.shape[0] - 1))
        elif deepest < cap:
            deepest = max(deepest, int(tree.depth[:, slot].max()))  # the one host read of a simulation

    visits = tree.edge_stats[:, 0, VISITS].long()
    stats = tree.edge_stats[:, 0]
    q_values = torch.where(visits > 0, qvalues(stats), 0.0)
    root_value = tree.value_sums[:, 0] / tree.node_visits[:, 0].to(dtype)
    if isinstance(selector, PuctSelector):
        policy = puct.visit_policy(visits, dtype)
        if explore and settings.temperature > 0:
            logits = puct.visit_temperature_logits(visits, settings.temperature, dtype)
            chosen = (logits + gm.sample_gumbel((batch, actions), generator, device, dtype)).argmax(dim=-1)
        else:
            chosen = visits.masked_fill(invalid, -1).argmax(dim=-1)
        return SearchResult(chosen, visits, policy, root_value, q_values, tree)
    policy = gm.improved_policy(tree, settings)
    return SearchResult(selector.final_action(), visits, policy, root_value, q_values, tree, selector.considered)
