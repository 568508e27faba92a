"""MuZero's PUCT selection (Schrittwieser et al. 2020, appendix B) and its root exploration noise.

At a node with visit count N(s) the child maximising

    score(a) = Qnorm(s, a) + P(s, a) * sqrt(N(s)) / (1 + N(s, a)) * (c1 + log((N(s) + c2 + 1) / c2))

is selected, with Q(s, a) = r(s, a) + discount(s, a) * value(child). Qnorm
rescales Q by the smallest and largest Q backed up anywhere in the row's tree
so far (MuZero's MinMaxStats), which makes the exploration constants
independent of the reward scale; unvisited children score Qnorm = 0. Ties go to
the lowest action index (``argmax`` returns the first maximum), so the search
is deterministic without exploration.

With ``q_transform="parent_and_siblings"`` (mctx's default for MuZero) Qnorm
is per node instead: the bounds are the min and max over the node's own search
value and its visited children's Q, and a span below ``SIBLING_EPSILON`` is
widened to it (``sibling_normalizer``). A node's scores then depend on its own
statistics alone.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .tree import DISCOUNT, PRIOR, REWARD, VALUE_SUM, VISITS, Tree, qvalues
from .types import MCTSSettings

#: The smallest span of the parent-and-siblings rescaling (mctx's ``epsilon``).
SIBLING_EPSILON = 1e-8


def min_max_normalizer(q_min: Tensor, q_max: Tensor) -> tuple[Tensor, Tensor]:
    """MinMaxStats as an affine map: bounds [B] -> (offset, scale) [B, 1] with Qnorm = (Q - offset) * scale.

    Rows whose bounds are not yet a proper interval (max <= min: no Q or a
    single distinct Q backed up so far) keep Q unnormalised (offset 0, scale 1),
    as MuZero does. The bounds change only in backups, so a simulation computes
    this once for all its levels.
    """
    span = q_max - q_min
    proper = span > 0
    offset = torch.where(proper, q_min, 0.0)
    scale = 1.0 / torch.where(proper, span, 1.0)
    return offset[:, None], scale[:, None]


def sibling_normalizer(stats: Tensor, node_value: Tensor, dim: int = -1) -> tuple[Tensor, Tensor]:
    """The parent-and-siblings Qnorm of M nodes as an affine map: (offset, scale) [M] each, with
    Qnorm = (Q - offset) * scale for visited children (unvisited ones score 0 as always).

    ``stats`` are the nodes' channel-first ``edge_stats`` (``gather_stats``: [C, M, K] with ``dim``
    -1, [C, K, M] with ``dim`` 0), ``node_value`` [M] their search values (the mean of the values
    backed up through them). With V the node value, low = min(V, min of visited Q) and
    high = max(V, max of visited Q); offset = low and scale = 1 / max(high - low, SIBLING_EPSILON),
    which maps visited Q into [0, 1] as mctx's ``qtransform_by_parent_and_siblings`` does.
    """
    visits = stats[VISITS]
    q = torch.addcmul(stats[REWARD], stats[DISCOUNT], stats[VALUE_SUM] / visits.clamp(min=1))
    # an unvisited child is an unexpanded one, whose reward, discount and value sum are 0: q = 0 there
    # exactly, so q + V * (1 - min(N, 1)) is q where visited and V elsewhere, and V joins the min and max
    completed = torch.addcmul(q, node_value.unsqueeze(dim), 1.0 - visits.clamp(max=1))
    low = torch.minimum(completed.amin(dim=dim), node_value)
    high = torch.maximum(completed.amax(dim=dim), node_value)
    return low, 1.0 / (high - low).clamp(min=SIBLING_EPSILON)


def normalize_q(q: Tensor, q_min: Tensor, q_max: Tensor) -> Tensor:
    """MinMaxStats normalisation of q [B, K] by the row bounds [B]: [B, K] (see ``min_max_normalizer``)."""
    offset, scale = min_max_normalizer(q_min, q_max)
    return (q - offset) * scale


def puct_scores(
    prior: Tensor,
    visits: Tensor,
    q: Tensor,
    offset: Tensor,
    scale: Tensor,
    pb_c_init: float,
    pb_c_base: float,
) -> Tensor:
    """PUCT scores of the K children of one node per row: prior, visits (float), q [B, K] -> [B, K].

    ``offset``, ``scale`` [B, 1] come from ``min_max_normalizer``. The node's
    visit count N(s) is 1 + the children's visits (its own expansion counts),
    so the prior term is positive from the first selection on; the selection
    happens only at nodes that have children to choose, where this holds.
    """
    n = 1.0 + visits.sum(dim=-1, keepdim=True)
    weight = pb_c_init + torch.log1p((n + 1.0) / pb_c_base)  # c1 + log((N + c2 + 1) / c2)
    exploration = prior * (weight * n.sqrt()) / (1.0 + visits)
    value = torch.where(visits > 0, (q - offset) * scale, 0.0)  # unvisited children score Q = 0
    return value + exploration


def exploration_table(
    size: int, pb_c_init: float, pb_c_base: float, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """The prior term's node factor for every count s of children visits: [size], entry s is
    sqrt(N) * (c1 + log((N + c2 + 1) / c2)) with N = 1 + s (``puct_scores``'s formula on the same values).

    A node's factor depends only on its integer visit count, so a search computes
    the table once and selection looks the factor up instead of recomputing it.
    """
    n = 1.0 + torch.arange(size, dtype=dtype, device=device)
    return (pb_c_init + torch.log1p((n + 1.0) / pb_c_base)) * n.sqrt()


def puct_actions(
    stats: Tensor, offset: Tensor, scale: Tensor, table: Tensor, blocked: Tensor | None = None, dim: int = -1
) -> Tensor:
    """The PUCT action at M nodes from their channel-first ``edge_stats`` (``gather_stats``): [M] int64.

    ``stats`` [C, M, K] (``dim`` -1) or [C, K, M] (``dim`` 0, action-major);
    ``offset``, ``scale`` [M] are each node's normaliser (its row's ``min_max_normalizer``, or
    its own ``sibling_normalizer``),
    ``table`` the search's ``exploration_table``, ``blocked`` (shaped like a
    channel) the actions that score -inf (invalid root actions). The same scores
    as ``puct_scores``, with the node factor looked up.
    """
    prior, reward, discount = stats[PRIOR], stats[REWARD], stats[DISCOUNT]
    value_sum, visits = stats[VALUE_SUM], stats[VISITS]
    factor = table.take(visits.sum(dim=dim, keepdim=True).long())  # visit counts are exact integers
    exploration = prior * factor / (1.0 + visits)
    q = torch.addcmul(reward, discount, value_sum / visits.clamp(min=1))
    # unvisited children score Q = 0: they are the unexpanded ones, whose reward, discount and value
    # sum are 0, so q = 0 there and q - offset * min(N, 1) is q - offset or exactly 0, which a float
    # multiply-add computes much faster on the CPU than a where() on a bool mask
    value = torch.addcmul(q, visits.clamp(max=1), -offset.unsqueeze(dim)) * scale.unsqueeze(dim)
    scores = value + exploration
    if blocked is not None:
        scores = scores.masked_fill(blocked, float("-inf"))
    return scores.max(dim=dim).indices  # the first maximum, like argmax, and faster on the CPU


def _stats_scores(stats: Tensor, normalizer: tuple[Tensor, Tensor], settings: MCTSSettings) -> Tensor:
    channels = stats.unbind(1)
    return puct_scores(
        channels[PRIOR], channels[VISITS], qvalues(stats), *normalizer, settings.pb_c_init, settings.pb_c_base
    )


def puct_action(stats: Tensor, normalizer: tuple[Tensor, Tensor], settings: MCTSSettings) -> Tensor:
    """The PUCT action from gathered ``edge_stats`` [A, C, K] and the rows' normaliser ([A, 1] each): [A]."""
    return _stats_scores(stats, normalizer, settings).argmax(dim=-1)


def puct_root_select(tree: Tree, settings: MCTSSettings, normalizer: tuple[Tensor, Tensor]) -> Tensor:
    """The PUCT action at every root: [B] int64; invalid actions score -inf, so they are never visited.

    ``normalizer`` is this simulation's ``min_max_normalizer(tree.q_min, tree.q_max)``.
    """
    scores = _stats_scores(tree.edge_stats[:, 0], normalizer, settings)
    return scores.masked_fill(tree.root_invalid, float("-inf")).argmax(dim=-1)


def puct_select(
    tree: Tree, node: Tensor, settings: MCTSSettings, normalizer: tuple[Tensor, Tensor], rows: Tensor | None = None
) -> Tensor:
    """The PUCT action at one non-root node per row: node [A] -> action [A] int64.

    ``rows`` [A] names the rows the nodes belong to (None: all B rows);
    ``normalizer`` is this simulation's ``min_max_normalizer`` for all B rows.
    """
    stats = tree.gather(tree.edge_stats, tree.flat_nodes(node, rows))  # one gather for everything the score needs
    if rows is not None:
        normalizer = (normalizer[0].index_select(0, rows), normalizer[1].index_select(0, rows))
    return puct_action(stats, normalizer, settings)


def dirichlet_noise(
    shape: tuple[int, int],
    alpha: float,
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    """Samples of Dirichlet(alpha, ..., alpha) over the last dim: [B, K].

    torch's Dirichlet sampler takes no generator; with one, a seed drawn from it
    seeds the CPU RNG inside ``fork_rng`` (so the global RNG is left as it was
    and a seeded generator gives the same noise every time). Sampling happens on
    the CPU, whose RNG is the only one forked, then moves to ``device``.
    """
    concentration = torch.full(shape, float(alpha), dtype=torch.float64)
    sampler = torch.distributions.Dirichlet(concentration)
    if generator is None:
        sample = sampler.sample()
    else:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            sample = sampler.sample()
    return sample.to(device=device, dtype=dtype)


def add_dirichlet_noise(
    prior: Tensor,
    invalid: Tensor,
    alpha: float,
    fraction: float,
    generator: torch.Generator | None,
) -> Tensor:
    """Mix Dirichlet noise into root priors: prior, invalid [B, K] -> [B, K].

    The noise is restricted to the valid actions and renormalised there, which is
    again Dirichlet(alpha) over the valid actions (a Dirichlet's renormalised
    sub-vector is Dirichlet), so invalid actions keep probability 0.
    """
    noise = dirichlet_noise((prior.shape[0], prior.shape[1]), alpha, generator, prior.device, prior.dtype)
    noise = noise.masked_fill(invalid, 0.0)
    noise = noise / noise.sum(dim=-1, keepdim=True).clamp(min=torch.finfo(noise.dtype).tiny)
    return (1.0 - fraction) * prior + fraction * noise


def visit_policy(visits: Tensor, dtype: torch.dtype) -> Tensor:
    """PUCT's search policy, the normalised visit counts: [B, K] -> [B, K]."""
    counts = visits.to(dtype)
    return counts / counts.sum(dim=-1, keepdim=True).clamp(min=1.0)


def visit_temperature_logits(visits: Tensor, temperature: float, dtype: torch.dtype) -> Tensor:
    """log(visits ** (1 / T)) = log(visits) / T: [B, K] (-inf for unvisited actions; T > 0).

    Working in logs keeps small temperatures from overflowing visits ** (1 / T).
    """
    return visits.to(dtype).log() / temperature
