"""Acting by planning: trained world models behind the planner contract, and a policy that plans.

Three pieces, used by PlaNet and PETS to act and by ``reverie eval --planner``:

- :class:`RSSMPlanningModel` shows an RSSM world model (Dreamer's or PlaNet's),
  optionally with a critic as the terminal value, as a *belief model*: the
  planner contract (``step``, ``reward``, ``cont``, ``value``, ``action_size``)
  plus ``initial`` / ``filter`` / ``start``, which fold environment steps into
  a belief (the posterior) and turn it into the planner's B start states;
- :class:`PlannerPolicy` acts like an agent (``init_state`` / ``act``): it
  filters each step, plans from the belief and keeps one warm start per
  environment in the agent state, resetting an environment's plan when its
  episode starts over;
- :func:`planner_policy` wraps any trained agent so that it acts through any
  planner, e.g. a Dreamer model planned with MPPI with its critic as the
  terminal value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor

from reverie.agents.base import to_env_action
from reverie.envs.spaces import ActionSpec
from reverie.planning import PLANNERS, PlannerSettings, PlanningError, Policy, WarmStart, plan, planner_settings

#: What ``reverie eval --planner`` accepts: "policy" is the agent's own way of acting.
PLANNER_CHOICES = ("policy", *sorted(PLANNERS))


class BeliefModel(Protocol):
    """A planning model that also filters observations into a belief.

    The belief is whatever the model carries between environment steps for N
    environments (an RSSM posterior, or simply the last observation).
    """

    action_size: int

    def initial(self, batch: int) -> Any:
        """The belief before the first step of ``batch`` environments."""

    def filter(self, step: dict[str, np.ndarray], belief: Any) -> Any:
        """Fold one environment step (obs keys ``[N, ...]``, ``action [N, A]`` leading into it,
        ``is_first [N]``) into the belief; returns the new belief for the N environments."""

    def start(self, belief: Any) -> Any:
        """The planner's start states ``[N, ...]`` for the current belief."""

    def step(self, state: Any, action: Tensor) -> Any:
        """Planner contract: ``state [M, ...], action [M, A] -> state [M, ...]``."""

    def reward(self, state: Any) -> Tensor:
        """Planner contract: reward for arriving at ``state``, ``[M]``."""


@dataclass(frozen=True)
class PlanState:
    """The agent state of a planning policy for N environments."""

    belief: Any
    """The model's belief (e.g. RSSM posterior ``[N]``), or None before the first step."""
    warm: WarmStart | None
    """The planner's warm start for the N environments (plans shifted by one step), or None."""


def reset_warm(warm: WarmStart | None, is_first: Tensor, init_std: float) -> WarmStart | None:
    """Forget the plans of environments whose episode starts now.

    A reset row gets the planner's cold start (mean 0 and ``init_std``, or uniform
    choice probabilities), which is exactly what the planners use without a warm start.

    Args:
        warm: the warm start for N environments, or None.
        is_first: ``[N]`` bool, True where an episode starts.
        init_std: the planner's initial standard deviation.
    """
    if warm is None or bool(is_first.all()):
        return None
    if not bool(is_first.any()):
        return warm
    rows = is_first.view(-1, 1, 1)

    def cold(x: Tensor | None, fill: float) -> Tensor | None:
        return None if x is None else torch.where(rows.to(x.device), torch.full_like(x, fill), x)

    size = (warm.probs if warm.probs is not None else warm.mean).shape[-1]  # type: ignore[union-attr]
    return WarmStart(mean=cold(warm.mean, 0.0), std=cold(warm.std, init_std), probs=cold(warm.probs, 1.0 / size))


class RSSMPlanningModel:
    """An RSSM world model (and optional critic) as a :class:`BeliefModel`.

    ``step`` samples the prior, ``reward`` is the reward head's mean, ``cont`` the
    continuation probability and ``value`` the critic's expected return of the
    features, all ``[M]``. The belief is the posterior state ``[N]``.
    """

    def __init__(self, wm: Any, act_spec: ActionSpec, value: Callable[[Tensor], Tensor] | None = None,
                 device: torch.device | str = "cpu"):
        self.wm = wm
        self.action_size = act_spec.size
        self.device = torch.device(device)
        self._value = value

    def initial(self, batch: int) -> dict[str, Tensor]:
        return self.wm.initial(batch)

    def filter(self, step: dict[str, np.ndarray], belief: dict[str, Tensor]) -> dict[str, Tensor]:
        obs = {k: torch.as_tensor(step[k], device=self.device)[:, None] for k in self.wm.obs_spec}
        action = torch.as_tensor(step["action"], device=self.device, dtype=torch.float32)[:, None]
        is_first = torch.as_tensor(step["is_first"], device=self.device)[:, None]
        _, belief = self.wm.observe(obs, action, is_first, belief)
        return belief

    def start(self, belief: dict[str, Tensor]) -> dict[str, Tensor]:
        return belief

    def step(self, state: dict[str, Tensor], action: Tensor) -> dict[str, Tensor]:
        return self.wm.step(state, action)

    def reward(self, state: dict[str, Tensor]) -> Tensor:
        return self.wm.reward(state)

    def cont(self, state: dict[str, Tensor]) -> Tensor:
        return self.wm.cont(state)

    def value(self, state: dict[str, Tensor]) -> Tensor:
        if self._value is None:
            raise PlanningError("this model has no critic to give a terminal value; set use_value=false")
        return self._value(self.wm.features(state))


class PlannerPolicy:
    """Acts by planning on a :class:`BeliefModel` (see :class:`reverie.agents.base.Agent`).

    Each call filters the step into the belief, plans from it with ``planner`` and
    executes the first action. Exploration (``explore=True``) adds Gaussian noise of
    std ``explore_noise`` to continuous actions (PlaNet uses 0.3) or, for discrete
    actions, takes a uniformly random action with probability ``explore_noise``.
    """

    def __init__(self, model: BeliefModel, act_spec: ActionSpec, planner: str = "cem",
                 settings: PlannerSettings | None = None, *, explore_noise: float = 0.0,
                 device: torch.device | str = "cpu", prior: Policy | None = None, name: str = "planner"):
        if planner not in PLANNERS:
            raise PlanningError(f"unknown planner {planner!r}; choose one of {', '.join(sorted(PLANNERS))}")
        if act_spec.discrete and planner in ("mppi", "gradient"):
            raise PlanningError(f"planner {planner!r} needs continuous actions but this environment's are "
                                "discrete; use 'cem' or 'shooting'")
        if explore_noise < 0:
            raise PlanningError(f"exploration noise must be >= 0; got {explore_noise}")
        self.model = model
        self.act_spec = act_spec
        self.planner = planner
        # the environment decides the action size and type, whatever the settings said
        self.settings = planner_settings(planner, settings, action_size=act_spec.size, discrete=act_spec.discrete)
        self.explore_noise = explore_noise
        self.device = torch.device(device)
        self.prior = prior
        self.name = name

    def init_state(self, batch: int) -> PlanState:
        return PlanState(self.model.initial(batch), None)

    @torch.no_grad()
    def act(self, step: dict[str, np.ndarray], state: PlanState, explore: bool
            ) -> tuple[np.ndarray, np.ndarray, PlanState]:
        """step: obs keys ``[N, ...]``, ``action [N, A]``, ``is_first [N]``. Returns
        (env actions, model-space actions ``[N, A]``, new state); randomness from torch's global generator."""
        is_first = torch.as_tensor(np.asarray(step["is_first"]), device=self.device).bool()
        belief = self.model.filter(step, state.belief)
        warm = reset_warm(state.warm, is_first, getattr(self.settings, "init_std", 1.0))
        # the gradient planner switches autograd back on for itself
        result = plan(self.planner, self.model, self.model.start(belief), self.settings, warm, policy=self.prior)
        action = result.action.detach().float()
        if explore and self.explore_noise > 0:
            action = self._explore(action)
        warm_next = WarmStart(**{k: None if v is None else v.detach()
                                 for k, v in vars(result.warm).items()})
        return to_env_action(action, self.act_spec), action.cpu().numpy(), PlanState(belief, warm_next)

    def _explore(self, action: Tensor) -> Tensor:
        if self.act_spec.discrete:
            n, size = action.shape
            random = torch.nn.functional.one_hot(torch.randint(size, (n,), device=action.device), size).float()
            pick = torch.rand(n, device=action.device) < self.explore_noise
            return torch.where(pick[:, None], random, action)
        return (action + self.explore_noise * torch.randn_like(action)).clamp(-1.0, 1.0)


def _apply(settings: PlannerSettings, overrides: Sequence[str]) -> PlannerSettings:
    from reverie.config import apply_overrides

    return apply_overrides(settings, list(overrides)) if overrides else settings


def planner_policy(agent: Any, planner: str, overrides: Sequence[str] = ()) -> Any:
    """Something that acts like ``agent`` but chooses actions with ``planner``.

    ``planner`` is one of :data:`PLANNER_CHOICES`; "policy" returns ``agent`` itself.
    Agents that plan (PlaNet, PETS) offer ``planning_view(planner) -> (BeliefModel,
    settings or None)``; a Dreamer agent (``wm`` and ``ac``) is planned on its world
    model with its critic as the terminal value, its discount and its continuation
    head, and its actor as the prior for ``policy_candidates``. ``overrides`` are
    ``key=value`` changes of the planner's settings (e.g. ``horizon=5``).

    Raises PlanningError (unknown planner, continuous-only planner on discrete
    actions) or ConfigError (unknown or mistyped setting), each one sentence.
    """
    if planner not in PLANNER_CHOICES:
        raise PlanningError(f"unknown planner {planner!r}; choose one of {', '.join(PLANNER_CHOICES)}")
    if planner == "policy":
        if overrides:
            raise PlanningError("planner settings need a planner; add --planner cem|mppi|shooting|gradient")
        return agent
    settings_type = PLANNERS[planner][1]
    prior = None
    if hasattr(agent, "planning_view"):
        model, settings = agent.planning_view(planner)
        settings = settings if settings is not None else settings_type()
    elif hasattr(agent, "wm") and hasattr(agent, "ac"):
        ac = agent.ac
        model = RSSMPlanningModel(agent.wm, agent.act_spec, value=ac.value, device=agent.device)
        settings = settings_type(discount=ac.cfg.gamma, use_value=True, use_cont=True)

        def prior(state: dict[str, Tensor]) -> Tensor:
            return ac.policy(agent.wm.features(state)).mode().detach()
    else:
        raise PlanningError(f"agent '{getattr(agent, 'name', type(agent).__name__)}' has no world model "
                            "that a planner can use; evaluate it with --planner policy")
    settings = _apply(settings, overrides)
    return PlannerPolicy(model, agent.act_spec, planner, settings, device=agent.device, prior=prior,
                         name=f"{getattr(agent, 'name', 'agent')}+{planner}")


__all__ = ["PLANNER_CHOICES", "BeliefModel", "PlanState", "PlannerPolicy", "RSSMPlanningModel", "planner_policy",
           "reset_warm"]
