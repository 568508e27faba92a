"""Acting by planning: any planner on any world model, and any trained agent acting through a planner.

- :class:`PlannerPolicy` acts like an agent (``init_state`` / ``act``): it folds
  each environment step into the model's state with ``observe``, plans from
  that state and executes the first action, keeping one warm start per
  environment in the agent state (forgotten where an episode starts over).
  PlaNet and PETS act this way.
- :func:`planner_policy` makes a trained agent act through a planner on its
  ``model`` (``reverie eval --planner``), with the agent's own settings for
  that planner or :func:`default_settings`, which use whatever the model can
  do: its continuation, its value as the terminal value, its policy as a prior.
- :class:`PriorPolicy` (``--planner prior``) acts by the model's own policy
  prior without any search, the baseline every planner on that model should beat.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from reverie.agents.base import NO_PARTS, ActingParts, ActOutput, Actor, Agent, observe_step, to_env_action
from reverie.models.base import CONT, POLICY, VALUE, State, WorldModel, capabilities_of, policy_head, require
from reverie.planning import PLANNERS, PlannerSettings, PlanningError, WarmStart, planner_settings, planner_spec

#: What ``reverie eval --planner`` accepts: "policy" is the agent's own way of acting, "prior" the
#: model's policy prior alone (its ``policy`` capability's mode, no search).
PLANNER_CHOICES = ("policy", "prior", *sorted(PLANNERS))

__all__ = ["PLANNER_CHOICES", "PlanState", "PlannerPolicy", "PriorPolicy", "default_settings", "planner_policy"]


@dataclass(frozen=True)
class PlanState:
    """The agent state of a planning policy for N environments."""

    belief: State
    """The model's state after the last observed step ``[N]``."""
    warm: WarmStart | None
    """The planner's warm start for the N environments (plans shifted by one step), or None."""


class PlannerPolicy:
    """Acts by planning with ``planner`` on ``model`` (a :class:`~reverie.models.base.WorldModel`).

    Exploration (``explore=True``) adds Gaussian noise of std ``explore_noise`` to continuous
    actions (PlaNet uses 0.3) or, for discrete actions, takes a uniformly random action with
    probability ``explore_noise``.
    """

    def __init__(self, model: WorldModel, planner: str, settings: PlannerSettings | None = None, *,
                 explore_noise: float = 0.0, device: torch.device | str = "cpu", name: str = "planner"):
        self.spec = planner_spec(planner, model.act_spec)
        if explore_noise < 0:
            raise PlanningError(f"exploration noise must be >= 0; got {explore_noise}")
        self.settings = planner_settings(planner, settings)
        require(model, self.settings.needs(), f"planner '{planner}' with these settings")
        self.model = model
        self.act_spec = model.act_spec
        self.explore_noise = explore_noise
        self.device = torch.device(device)
        self.name = name

    def init_state(self, batch: int) -> PlanState:
        return PlanState(self.model.initial(batch), None)

    @torch.no_grad()
    def act(self, step: dict[str, np.ndarray], state: PlanState, explore: bool) -> ActOutput:
        """step: obs keys ``[N, ...]``, ``action [N, A]``, ``is_first [N]``; randomness from torch's global
        generator."""
        is_first = torch.as_tensor(np.asarray(step["is_first"]), device=self.device).bool()
        belief = observe_step(self.model, step, state.belief, self.device)
        warm = state.warm.forget(is_first) if state.warm is not None else None
        # the gradient planner switches autograd back on for itself
        result = self.spec.fn(self.model, belief, self.settings, warm)
        action = result.action.detach().float()
        if explore and self.explore_noise > 0:
            action = self._explore(action)
        warm_next = result.warm.detach() if result.warm is not None else None
        return ActOutput(to_env_action(action, self.act_spec), action.cpu().numpy(), PlanState(belief, warm_next), {})

    def _explore(self, action: Tensor) -> Tensor:
        if self.act_spec.discrete:
            n, size = action.shape
            random = torch.nn.functional.one_hot(torch.randint(size, (n,), device=action.device), size).float()
            pick = torch.rand(n, device=action.device) < self.explore_noise
            return torch.where(pick[:, None], random, action)
        return (action + self.explore_noise * torch.randn_like(action)).clamp(-1.0, 1.0)

    def acting_parts(self) -> ActingParts:
        """Compiled acting compiles the planner call: every iteration's imagined rollouts as one graph.
        On a trained Pendulum Dreamer (one thread, benchmarks/bench_acting.py) MPPI 512 x 6 x 3 took 61 ms
        against 103 ms eager; compiling ``act`` whole was 1.3x slower than this, and compiling the model's
        ``step`` / ``reward`` / ``value`` / ``policy`` one by one 3x slower (and slower than eager). The
        model's modules belong to the agent planning with it: int8 acting quantises them there."""
        return ActingParts(f"{self.name}'s planning", compiled={"planner": self.spec.fn})

    def acting_copy(self, compiled: Mapping[str, Callable[..., Any]] = NO_PARTS,
                    quantised: Mapping[str, nn.Module] = NO_PARTS) -> PlannerPolicy:
        """This policy with ``compiled["planner"]`` as its planner call, where given (see :meth:`acting_parts`)."""
        self.acting_parts().check(f"planner policy '{self.name}'", compiled, quantised)
        fast = copy.copy(self)   # shares the model; only the planner call changes
        if "planner" in compiled:
            fast.spec = dataclasses.replace(self.spec, fn=compiled["planner"])
        return fast


class PriorPolicy:
    """Acts by the policy prior of ``model`` (its ``policy`` capability) on the model state that
    ``observe`` folds each step into: the distribution's mode, or a sample when exploring. No search:
    what a planner on the same model adds is its return against this one's."""

    def __init__(self, model: WorldModel, *, device: torch.device | str = "cpu", name: str = "prior"):
        self.policy = policy_head(model, "acting by the model's policy prior (--planner prior)")
        self.model = model
        self.act_spec = model.act_spec
        self.device = torch.device(device)
        self.name = name

    def init_state(self, batch: int) -> State:
        return self.model.initial(batch)

    @torch.no_grad()
    def act(self, step: dict[str, np.ndarray], state: State, explore: bool) -> ActOutput:
        belief = observe_step(self.model, step, state, self.device)
        dist = self.policy(belief)
        action = (dist.sample() if explore else dist.mode()).detach().float()
        if self.act_spec.discrete:
            action = torch.nn.functional.one_hot(action.argmax(-1), self.act_spec.size).float()
        return ActOutput(to_env_action(action, self.act_spec), action.cpu().numpy(), belief, {})

    def acting_parts(self) -> ActingParts:
        """Nothing to compile: compiled acting covers planners and what agents declare; the model's modules
        belong to the agent, where int8 acting quantises them."""
        return ActingParts("a model's policy prior alone (--planner prior)")

    def acting_copy(self, compiled: Mapping[str, Callable[..., Any]] = NO_PARTS,
                    quantised: Mapping[str, nn.Module] = NO_PARTS) -> PriorPolicy:
        """A copy sharing the model (nothing is declared to replace; see :meth:`acting_parts`)."""
        self.acting_parts().check(f"policy prior '{self.name}'", compiled, quantised)
        return copy.copy(self)


#: Planner settings for a model with a value and a policy prior: a short horizon bootstrapped by the
#: value (TD-MPC2's 3 steps), candidates sampled from the policy along their own imagined trajectories
#: (TD-MPC2 samples 24), and CEM / MPPI / gradient steps started at the policy's plan with a small
#: spread. Sampling around zero instead (TD-MPC2's std 2, 24 mode rollouts) let every planner pick
#: action sequences the learned model overrates: on a Dreamer Pendulum model MPPI scored -590 where the
#: policy alone scored -313 (BENCHMARKS.md has the comparison with these settings).
TRAINED_MODEL: dict[str, dict[str, Any]] = {
    "shooting": dict(horizon=3, candidates=128, policy_candidates=127, sample_policy=True),
    "cem": dict(horizon=3, candidates=128, elites=16, iterations=3, policy_candidates=64, sample_policy=True,
                centre_on_policy=True, init_std=0.3),
    "mppi": dict(horizon=3, candidates=128, elites=16, iterations=3, policy_candidates=64, sample_policy=True,
                 centre_on_policy=True, init_std=0.3),
    "gradient": dict(horizon=3, restarts=4, iterations=5, learning_rate=0.02, policy_candidates=3,
                     sample_policy=True, centre_on_policy=True),
    "mcts": dict(),
}


def default_settings(planner: str, model: WorldModel, discount: float = 1.0) -> PlannerSettings:
    """Settings of ``planner`` for ``model`` built from its capabilities: continuation when it predicts one,
    and with a value and a policy prior the :data:`TRAINED_MODEL` settings; otherwise the planner's own
    defaults."""
    caps = capabilities_of(model)
    fields: dict[str, Any] = dict(discount=discount, use_cont=CONT in caps)
    if VALUE in caps and POLICY in caps:
        fields.update(use_value=True, **TRAINED_MODEL[planner])
    elif VALUE in caps:
        fields.update(use_value=True)
    return planner_settings(planner, **fields)


def _apply(settings: PlannerSettings, overrides: Sequence[str]) -> PlannerSettings:
    from reverie.config import apply_overrides

    return apply_overrides(settings, list(overrides)) if overrides else settings


def planner_policy(agent: Agent, planner: str, overrides: Sequence[str] = ()) -> Actor:
    """Something that acts like ``agent`` but chooses actions with ``planner`` on ``agent.model``.

    ``planner`` is one of :data:`PLANNER_CHOICES`; "policy" returns ``agent`` itself, "prior" a
    :class:`PriorPolicy` on its model. The settings are
    ``agent.planner_defaults[planner]`` if the agent has its own, else :func:`default_settings`, then
    ``overrides`` (``key=value``, e.g. ``horizon=5``).

    Raises PlanningError (unknown planner, one that cannot plan these actions, an agent without a model),
    CapabilityError (settings that need what the model lacks) or ConfigError (a bad override), each
    one sentence.
    """
    if planner not in PLANNER_CHOICES:
        raise PlanningError(f"unknown planner {planner!r}; choose one of {', '.join(PLANNER_CHOICES)}")
    if planner == "policy":
        if overrides:
            raise PlanningError("planner settings need a planner; add --planner " + "|".join(sorted(PLANNERS)))
        return agent
    model = agent.model
    if model is None:
        raise PlanningError(f"agent '{agent.name}' has no world model that a planner can use; "
                            "evaluate it with --planner policy")
    if model.act_spec.latent:
        raise PlanningError(f"agent '{agent.name}' has a model driven by latent action codes, not the environment's "
                            "actions: a plan on it cannot be sent to the environment; evaluate it with --planner policy")
    if planner == "prior":
        if overrides:
            raise PlanningError("the policy prior has no planner settings; drop --planner-arg")
        return PriorPolicy(model, device=agent.device, name=f"{agent.name}+prior")
    planner_spec(planner, model.act_spec)
    settings = agent.planner_defaults.get(planner) or default_settings(planner, model, agent.discount)
    settings = _apply(settings, overrides)
    return PlannerPolicy(model, planner, settings, device=agent.device, name=f"{agent.name}+{planner}")

