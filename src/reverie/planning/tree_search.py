"""Tree search as a planner: batched MCTS (PUCT or Gumbel) on any model with reward, value and a policy.

The search itself (:mod:`reverie.planning.mcts`) talks to a model through a
recurrent function; :func:`recurrent_fn` builds that function from the
world-model contract alone, so MuZero's model and a Dreamer model with its
actor-critic attached are searched the same way:

- next state ``model.step(state, one_hot(a))``, reward ``model.reward(next)``;
- discount ``settings.discount``, times ``model.cont(next)`` with ``use_cont``;
- prior logits ``model.policy(next).logits`` and value ``model.value(next)``.

Discrete actions only. The result's ``extras`` carry what MuZero trains on:
``search_policy [B, K]``, ``root_value [B]`` and ``visit_counts [B, K]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from reverie.models.base import CONT, POLICY, REWARD, VALUE, Dynamics, State

from .base import PlannerSettings, PlannerSpec, PlanningError, PlanResult, WarmStart, prepare
from .capabilities import cont_head, policy_logits_head, reward_head, value_head
from .mcts import MCTSSettings, RecurrentFn, RecurrentOutput, RootOutput, search

#: Who asks for the model's capabilities, in the sentence of a CapabilityError.
PURPOSE = "planner 'mcts'"

__all__ = ["MCTSPlannerSettings", "mcts_plan", "recurrent_fn", "root_output"]


@dataclass(frozen=True)
class MCTSPlannerSettings(MCTSSettings, PlannerSettings):
    """Tree-search settings: the search's own (:class:`~reverie.planning.mcts.MCTSSettings`, MuZero's
    defaults: PUCT, 50 simulations, c1 1.25, c2 19652) plus the planner contract's.

    ``max_depth`` bounds the tree; ``horizon``, ``policy_candidates``, ``centre_on_policy`` and ``bf16``
    do not apply.
    """

    discount: float = 0.997
    """Discount gamma of every transition (times the continuation with ``use_cont``)."""
    use_value: bool = True
    """Tree search always bootstraps with the model's value (this field must stay True)."""
    explore: bool = False
    """Root noise and sampled acting (collecting data); False acts greedily (evaluation)."""

    def needs(self) -> frozenset[str]:
        return frozenset({REWARD, VALUE, POLICY} | ({CONT} if self.use_cont else set()))


def root_output(model: Dynamics, state: State) -> RootOutput:
    """The model's prediction at B start states (capabilities policy, with logits, and value)."""
    logits = policy_logits_head(model, PURPOSE)
    value = value_head(model, PURPOSE)
    return RootOutput(logits(state).float(), value(state).float(), state)


def recurrent_fn(model: Dynamics, discount: float, use_cont: bool) -> RecurrentFn:
    """``(state [B], action [B] int64) -> (RecurrentOutput, next state)`` from the model's contract
    (capabilities reward, policy with logits and value, and cont with ``use_cont``)."""
    size = model.act_spec.size
    reward, logits, value = reward_head(model, PURPOSE), policy_logits_head(model, PURPOSE), value_head(model, PURPOSE)
    cont = cont_head(model, PURPOSE) if use_cont else None

    def step(state: State, action: Tensor) -> tuple[RecurrentOutput, State]:
        nxt = model.step(state, torch.nn.functional.one_hot(action, size).float())
        r = reward(nxt).float()
        gamma = torch.full_like(r, discount)
        if cont is not None:
            gamma = gamma * cont(nxt).float()
        return RecurrentOutput(r, gamma, logits(nxt).float(), value(nxt).float()), nxt

    return step


def mcts_plan(model: Dynamics, state: State, settings: MCTSPlannerSettings | None = None,
              warm: WarmStart | None = None, *, generator: torch.Generator | None = None) -> PlanResult:
    """Plan one action per start state by tree search.

    Args:
        model: discrete actions; capabilities reward, value and policy (and cont with ``use_cont``).
        state: B start states.
        settings: see :class:`MCTSPlannerSettings`.
        warm: unused (a tree is not carried between calls); accepted for the planner contract.
        generator: randomness of the root noise and of sampled actions.

    Returns:
        PlanResult with action ``[B, K]`` (one-hot), ``probs [B, 1, K]`` the search policy, diagnostics
        ``best_return [1, B]`` (the best root Q) and ``mean_return [1, B]`` (the root value), and
        ``extras`` {search_policy [B, K], root_value [B], visit_counts [B, K]}.
    """
    settings = settings or MCTSPlannerSettings()
    setup = prepare(SPEC, model, state, settings, None, generator)
    if not settings.use_value:
        raise PlanningError("tree search always bootstraps with the model's value; leave use_value=True.")
    with torch.no_grad():
        result = search(recurrent_fn(model, settings.discount, settings.use_cont), root_output(model, state),
                        settings, explore=settings.explore, generator=setup.generator)
    action = torch.nn.functional.one_hot(result.action, setup.size).float()
    visited = result.visit_counts > 0
    best_q = torch.where(visited, result.q_values, torch.full_like(result.q_values, float("-inf"))).max(-1).values
    extras = {"search_policy": result.policy, "root_value": result.root_value, "visit_counts": result.visit_counts}
    return PlanResult(action, None, None, result.policy[:, None], None, best_q[None], result.root_value[None], extras)


SPEC = PlannerSpec("mcts", mcts_plan, MCTSPlannerSettings, discrete=True, continuous=False)
