"""Gumbel MuZero (Danihelka et al., "Policy improvement by planning with Gumbel", ICLR 2022).

At the root, Gumbel-top-k samples m actions without replacement (the top m of
g + logits, g ~ Gumbel), and sequential halving spends the simulations on
them: each phase gives the surviving actions equal visits and keeps the better
half by g + logits + sigma(q). The final action is the survivor with the best
such score, which is a policy improvement in expectation even with few
simulations. Inside the tree the selection is deterministic: it moves the
visit distribution towards the improved policy softmax(logits + sigma(q)).

Q-values of unvisited actions are "completed" with the mixed value, a
prior-weighted blend of the model value and the visited Q-values, then
rescaled to [0, 1] per node and multiplied by sigma's growing scale
(c_visit + max_b N(b)) * c_scale, so the search trusts Q more as visits grow.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .tree import DISCOUNT, LOGITS, PRIOR, REWARD, VALUE_SUM, VISITS, Tree, gather_stats
from .types import MCTSSettings

#: Guards the [0, 1] rescaling of a node whose completed Q-values are all equal.
RESCALE_EPSILON = 1e-8


def sample_gumbel(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """Standard Gumbel(0, 1) samples -log(E), E ~ Exponential(1), drawn on the generator's device."""
    source = generator.device if generator is not None else device
    exponential = torch.empty(shape, dtype=dtype, device=source).exponential_(generator=generator)
    # E = 0 has probability ~0 but would give +inf; the clamp keeps every sample finite
    return -exponential.clamp(min=torch.finfo(dtype).tiny).log().to(device)


def halving_schedule(num_considered: int, num_simulations: int) -> list[int]:
    """Sequential halving as a visit schedule: entry k is the visit count (before simulation k) of the action it visits.

    With m considered actions the budget n is split into ceil(log2 m) phases;
    a phase with r surviving actions visits each of them max(1, floor(n / (ceil(log2 m) * r)))
    times, one round (r simulations, one per survivor) at a time; then the best
    floor(r / 2) survivors go on, but never fewer than 2 (left-over budget keeps
    refining the best two). That is the halving of Karnin et al. (2013) that
    Gumbel MuZero uses, and mctx's ``get_sequence_of_considered_visits``: m = 5
    keeps 2 actions after the first phase, not 3. A round of survivors that all
    have v visits is the entry v repeated r times: visiting, at each step, the
    best survivor still at v visits gives every survivor one more visit. Actions
    dropped earlier have fewer visits than the current round's v, so matching
    visit counts is what removes them. m <= 1 gives 0, 1, 2, ...: the only action
    is visited every time.

    >>> halving_schedule(4, 8)
    [0, 0, 0, 0, 1, 1, 2, 2]
    >>> halving_schedule(5, 12)
    [0, 0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4]
    """
    if num_considered <= 1:
        return list(range(num_simulations))
    phases = (num_considered - 1).bit_length()  # ceil(log2 m), exact in integers
    schedule: list[int] = []
    visits, survivors = 0, num_considered
    while len(schedule) < num_simulations:
        rounds = max(1, num_simulations // (phases * survivors))
        for _ in range(rounds):
            schedule.extend([visits] * survivors)
            visits += 1
        survivors = max(2, survivors // 2)
    return schedule[:num_simulations]


def schedule_table(max_considered: int, num_simulations: int, device: torch.device) -> Tensor:
    """Schedules for every m up to ``max_considered``: [max_considered + 1, num_simulations] int64.

    Rows may have fewer valid actions than ``max_considered``, so each row of the
    batch reads the schedule of its own m (row 0, never read, is that of m = 1).
    """
    table = [halving_schedule(m, num_simulations) for m in range(max_considered + 1)]
    return torch.tensor(table, dtype=torch.int64, device=device)


def select_considered(scores: Tensor, valid: Tensor, max_considered: int) -> tuple[Tensor, Tensor]:
    """Gumbel-top-k: the top m = min(max_considered, valid actions) of ``scores`` = g + logits [B, K].

    Returns ``considered`` [B, K] bool and m [B] int64. The stable sort breaks
    ties towards the lower action index, so equal scores (explore=False with
    equal logits) give the same set every time.
    """
    count = valid.sum(dim=-1).clamp(max=max_considered)
    ranked = scores.masked_fill(~valid, float("-inf"))
    order = torch.sort(ranked, dim=-1, descending=True, stable=True).indices
    positions = torch.arange(scores.shape[-1], device=scores.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(-1, order, positions)
    return (rank < count[:, None]) & valid, count


def mixed_value(raw_value: Tensor, q: Tensor, visits: Tensor, prior: Tensor) -> Tensor:
    """v_mix = (v_raw + sum_b N(b) * sum_visited pi(a) q(a) / sum_visited pi(a)) / (1 + sum_b N(b)): [B].

    raw_value [B]; q, visits, prior [B, K]. Without visited actions it is the raw
    value. Visited priors are floored at the smallest normal number so the
    weighted mean stays defined when a visited action's prior underflows.
    """
    total = visits.sum(dim=-1).to(q.dtype)
    tiny = torch.finfo(q.dtype).tiny
    # prior where visited, else 0, as a float product (a where() on a bool mask is much slower on the
    # CPU): counts are non-negative integers, so min(N, 1) is the 0/1 indicator; q is finite, so 0 * q = 0
    weights = prior.clamp(min=tiny) * visits.clamp(max=1)
    weighted_q = (weights * q).sum(dim=-1) / weights.sum(dim=-1).clamp(min=tiny)
    return (raw_value + total * weighted_q) / (1.0 + total)


def completed_q(raw_value: Tensor, q: Tensor, visits: Tensor, logits: Tensor) -> Tensor:
    """Q of visited actions, the mixed value for the others: [B, K].

    pi = softmax(logits); invalid actions carry -inf logits and so weigh nothing.
    """
    value = mixed_value(raw_value, q, visits, torch.softmax(logits, dim=-1))
    return torch.where(visits > 0, q, value[:, None])


def sigma(completed: Tensor, visits: Tensor, c_visit: float, c_scale: float, valid: Tensor | None = None) -> Tensor:
    """sigma(q) = (c_visit + max_b N(b)) * c_scale * q, q the completed Q rescaled to [0, 1] per row: [B, K].

    The min and max run over the valid actions only (all when ``valid`` is
    None); invalid actions get 0 (their -inf logits exclude them anyway).
    """
    if valid is None:
        low, high = torch.aminmax(completed, dim=-1, keepdim=True)
    else:
        low = completed.masked_fill(~valid, float("inf")).amin(dim=-1, keepdim=True)
        high = completed.masked_fill(~valid, float("-inf")).amax(dim=-1, keepdim=True)
    scale = (c_visit + visits.amax(dim=-1, keepdim=True).to(completed.dtype)) * c_scale  # visits: int or float
    transformed = (completed - low) * (scale / (high - low).clamp(min=RESCALE_EPSILON))
    return transformed if valid is None else transformed.masked_fill(~valid, 0.0)


def _softmax(x: Tensor, dim: int) -> Tensor:
    """softmax over ``dim``. On the CPU as exp(x - max) / sum: torch's softmax kernel over a short
    last dim works a row at a time and is several times slower for a few actions per row (K = 2:
    100 vs 30 us for 2000 rows); the composed ops are row-independent too."""
    if x.device.type != "cpu":
        return torch.softmax(x, dim=dim)
    e = (x - x.amax(dim=dim, keepdim=True)).exp_()
    return e.div_(e.sum(dim=dim, keepdim=True))


def _completed(stats: Tensor | Sequence[Tensor], raw_value: Tensor, dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """(completed Q, visits, total visits) of M nodes from their ``edge_stats`` channels.

    ``stats[c]`` is channel c, [M, K] (``dim`` -1) or [K, M] (``dim`` 0);
    ``raw_value`` [M] the nodes' model values; total is summed over ``dim``
    (kept). ``completed_q`` on tree statistics, using two facts of the tree: the
    PRIOR channel is softmax(LOGITS) (Gumbel adds no noise to the root prior),
    and an unvisited child is an unexpanded one, whose reward, discount and value
    sum are 0, so q = 0 there and q + v_mix * (1 - min(N, 1)) is exactly q where
    visited and v_mix elsewhere (v_mix is finite). No where() on a bool mask:
    that is slow on the CPU, and min(N, 1) is the 0/1 visited indicator.
    """
    visits = stats[VISITS]
    q = torch.addcmul(stats[REWARD], stats[DISCOUNT], stats[VALUE_SUM] / visits.clamp(min=1))
    visited = visits.clamp(max=1)
    # mixed_value, with the sums kept along ``dim``
    total = visits.sum(dim=dim, keepdim=True)
    tiny = torch.finfo(q.dtype).tiny
    weights = stats[PRIOR].clamp(min=tiny) * visited
    weighted_q = (weights * q).sum(dim=dim, keepdim=True) / weights.sum(dim=dim, keepdim=True).clamp(min=tiny)
    value = (raw_value.unsqueeze(dim) + total * weighted_q) / (1.0 + total)
    return torch.addcmul(q, value, 1.0 - visited), visits, total


def _scaled(
    completed: Tensor, visits: Tensor, settings: MCTSSettings, excluded: Tensor | None = None, dim: int = -1
) -> Tensor:
    """``sigma`` of completed Q-values (actions along ``dim``), the rescaling's min and max over the
    actions where ``excluded`` is 0 (+inf elsewhere: x + inf is inf, x + 0 is x exactly; None: all).
    Excluded actions get an arbitrary finite value: their -inf logits or scores override it."""
    if excluded is None:
        low, high = completed.amin(dim=dim, keepdim=True), completed.amax(dim=dim, keepdim=True)
    else:
        low = (completed + excluded).amin(dim=dim, keepdim=True)
        high = (completed - excluded).amax(dim=dim, keepdim=True)
    scale = (settings.c_visit + visits.amax(dim=dim, keepdim=True)) * settings.c_scale
    return (completed - low) * (scale / (high - low).clamp(min=RESCALE_EPSILON))


def node_sigma(stats: Tensor, raw_value: Tensor, settings: MCTSSettings, valid: Tensor | None = None) -> Tensor:
    """sigma(completed Q) of one node's children from its gathered ``edge_stats`` [B, C, K]: [B, K].

    ``raw_value`` [B] is the node's model value; ``valid`` [B, K] restricts the
    rescaling to the valid root actions. The prior pi is the PRIOR channel,
    softmax(LOGITS) in a Gumbel tree.
    """
    completed, visits, _ = _completed(stats.unbind(1), raw_value, -1)
    return sigma(completed, visits, settings.c_visit, settings.c_scale, valid)


def root_sigma(tree: Tree, settings: MCTSSettings) -> Tensor:
    """sigma(completed Q) of the root's children, invalid actions 0: [B, K]."""
    return node_sigma(tree.edge_stats[:, 0], tree.raw_values[:, 0], settings, ~tree.root_invalid)


def improved_policy(tree: Tree, settings: MCTSSettings) -> Tensor:
    """The root's improved policy pi' = softmax(logits + sigma(completed Q)): [B, K] (invalid actions 0)."""
    return torch.softmax(tree.edge_stats[:, 0, LOGITS] + root_sigma(tree, settings), dim=-1)


def gumbel_interior_select(tree: Tree, node: Tensor, settings: MCTSSettings, rows: Tensor | None = None) -> Tensor:
    """argmax_a pi'(a) - N(a) / (1 + sum_b N(b)) at one non-root node per row: node [A] -> action [A].

    ``rows`` [A] names the rows the nodes belong to (None: all B rows).
    Deterministic: it visits the action whose share of visits lags most behind
    the improved policy pi' = softmax(logits + sigma(completed Q)), so the
    visit distribution tracks pi'.
    """
    flat = tree.flat_nodes(node, rows)
    return gumbel_actions(gather_stats(tree, flat, False), tree.gather(tree.raw_values, flat), settings)


def gumbel_actions(stats: Tensor, raw_value: Tensor, settings: MCTSSettings, dim: int = -1) -> Tensor:
    """``gumbel_interior_select``'s action at M nodes from their channel-first ``edge_stats``
    (``gather_stats``: [C, M, K] with ``dim`` -1, [C, K, M] with ``dim`` 0) and model values
    ``raw_value`` [M]: [M] int64."""
    return gumbel_interior(stats, raw_value, settings, dim)[0]


def gumbel_interior(
    stats: Tensor, raw_value: Tensor, settings: MCTSSettings, dim: int = -1, excluded: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``gumbel_actions`` and the nodes' sigma(completed Q) (shaped like a channel of ``stats``).

    ``excluded`` (shaped like a channel, see ``_scaled``) leaves actions out of
    the rescaling, as ``root_sigma`` does for invalid root actions; their sigma
    is then some finite value instead of 0.
    """
    completed, visits, total = _completed(stats, raw_value, dim)
    scaled = _scaled(completed, visits, settings, excluded, dim)
    policy = _softmax(stats[LOGITS] + scaled, dim)
    scores = policy - visits / (1.0 + total)
    return scores.max(dim=dim).indices, scaled  # max: the first maximum, like argmax, and faster on the CPU


def _best_with_visits(tree: Tree, root_scores: Tensor, candidates: Tensor, settings: MCTSSettings) -> Tensor:
    """argmax of g + logits + sigma(completed Q) over ``candidates`` [B, K] at the root: [B]."""
    scores = root_scores + root_sigma(tree, settings)
    return scores.masked_fill(~candidates, float("-inf")).argmax(dim=-1)


def gumbel_root_select(
    tree: Tree,
    root_scores: Tensor,
    considered: Tensor,
    target_visits: Tensor,
    settings: MCTSSettings,
    excluded: Tensor | None = None,
) -> Tensor:
    """The root action of one simulation: the considered action with ``target_visits`` [B] visits
    (this simulation's schedule entry) that maximises g + logits + sigma(completed Q): [B].

    ``root_scores`` [B, K] is g + logits. The schedule always leaves such an
    action; falling back to all considered actions only guards against misuse.
    ``excluded`` [B, K] is ``exclusion(tree.root_invalid, dtype)`` if the caller keeps one.
    """
    stats = tree.edge_stats[:, 0].transpose(0, 1).contiguous()  # [C, B, K]: contiguous channels are faster
    completed, visits, _ = _completed(stats, tree.raw_values[:, 0], -1)
    if excluded is None:
        excluded = exclusion(tree.root_invalid, stats.dtype)
    scaled = _scaled(completed, visits, settings, excluded)
    return gumbel_root_choice(root_scores + scaled, considered, visits, target_visits)


def gumbel_root_choice(scores: Tensor, considered: Tensor, visits: Tensor, target_visits: Tensor) -> Tensor:
    """The considered action with ``target_visits`` [B] ``visits`` [B, K] that maximises ``scores``
    [B, K] (g + logits + sigma(completed Q); invalid actions -inf): [B]. The schedule always
    leaves such an action; falling back to all considered actions only guards against misuse."""
    candidates = considered & (visits == target_visits[:, None])
    candidates = torch.where(candidates.any(dim=-1, keepdim=True), candidates, considered)
    return torch.where(candidates, scores, float("-inf")).argmax(dim=-1)


def exclusion(invalid: Tensor, dtype: torch.dtype) -> Tensor:
    """+inf where ``invalid`` [B, K], else 0: the rescaling mask of ``_scaled``."""
    return torch.zeros(invalid.shape, dtype=dtype, device=invalid.device).masked_fill(invalid, float("inf"))


def gumbel_final_action(tree: Tree, root_scores: Tensor, considered: Tensor, settings: MCTSSettings) -> Tensor:
    """The action to play: among the most visited considered actions, the best g + logits + sigma(completed Q): [B]."""
    visits = tree.edge_stats[:, 0, VISITS]
    most = visits.masked_fill(~considered, -1.0).max(dim=-1, keepdim=True).values
    return _best_with_visits(tree, root_scores, considered & (visits == most), settings)
