"""The planner contract: what a planner declares, takes and returns.

Every planner in reverie is a pure function

    planner(model, state, settings, warm=None, *, generator=None) -> PlanResult

of a world model (at least :class:`reverie.models.base.Dynamics`: ``act_spec``,
``capabilities`` and ``step``), a batch of B start states, a frozen settings
dataclass and the warm start returned by the previous call. Nothing is kept
in ``self``: the caller stores ``result.warm`` and hands it back next time,
and :meth:`WarmStart.forget` resets the rows whose episode starts over.

Each planner declares a :class:`PlannerSpec` (which action kinds it plans)
and its settings say which model capabilities they use
(:meth:`PlannerSettings.needs`); :func:`prepare`, the preamble every planner
runs first, refuses anything else in one sentence.

Conventions used by the trajectory planners (the time index t runs over the
horizon H):

- ``s_0`` is the start state, ``s_{t+1} = model.step(s_t, a_t)``;
- ``r_t = model.reward(s_{t+1})`` is the reward for arriving at ``s_{t+1}``;
- ``c_t = model.cont(s_{t+1})`` is the probability of continuing after it;
- the predicted return of a candidate is
  ``sum_t gamma^t (prod_{k<t} c_k) r_t + gamma^H (prod_{k<H} c_k) V(s_H)``,
  where the ``c`` factors are used only with ``use_cont`` and the last term
  only with ``use_value``;
- with ``policy_candidates = P > 0`` the first P candidates of every start
  state follow the model's ``policy`` prior (its mode) instead of sampled actions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from torch import Tensor

from reverie.models.base import CONT, POLICY, REWARD, VALUE, Dynamics, require
from reverie.models.state import State, StateError, state_batch
from reverie.specs import ActionSpec

from .capabilities import policy_head

__all__ = [
    "PlanResult", "PlannerSettings", "PlannerSpec", "PlanningError", "Policy", "Setup", "State", "WarmStart",
    "centred_probs", "check_settings", "fit_horizon", "prepare", "shift_plan", "unsupported",
]

#: A prior policy used to propose candidates: ``policy(state [N, ...]) -> action [N, A]``.
Policy = Callable[[State], Tensor]


class PlanningError(ValueError):
    """A planner was called with inputs it cannot use (the message says which and how to fix it)."""


@dataclass(frozen=True)
class PlannerSettings:
    """Options every planner shares (each planner's settings extend these)."""

    horizon: int = 12
    """Number of actions H in each planned sequence."""
    discount: float = 1.0
    """Discount gamma applied to the reward of step t as gamma^t (and gamma^H to the value)."""
    use_cont: bool = False
    """Weight rewards by the cumulative product of ``model.cont`` (episode may end)."""
    use_value: bool = False
    """Add gamma^H times ``model.value`` of the last imagined state (TD-MPC style)."""
    policy_candidates: int = 0
    """Candidates rolled out by the model's ``policy`` prior (TD-MPC2 style)."""
    sample_policy: bool = False
    """The policy candidates sample the policy's actions (TD-MPC2), each a different rollout; False takes
    its mode, so every policy candidate is the same sequence."""
    centre_on_policy: bool = False
    """Start the search at the model's ``policy``: its action sequence along its own imagined trajectory is
    the initial mean (continuous; the spread is the planner's ``init_std``) or carries half of each step's
    choice probability (discrete), instead of zeros / uniform choices / the warm start."""
    bf16: bool = False
    """Run the model calls under bfloat16 autocast; returns are still summed in float32."""
    seed: int | None = None
    """Seed for a fresh generator when none is passed; None uses torch's global generator."""

    def needs(self) -> frozenset[str]:
        """The model capabilities these settings use."""
        return frozenset({REWARD} | ({CONT} if self.use_cont else set()) | ({VALUE} if self.use_value else set())
                         | ({POLICY} if self.policy_candidates or self.centre_on_policy else set()))


@dataclass(frozen=True)
class WarmStart:
    """What a planner hands to its next call; time is already shifted by one step.

    Exactly one of ``mean`` (continuous) and ``probs`` (discrete) is set. The
    planner that made it records its cold start (``init_std``), so the warm
    start can forget single rows without knowing which planner made it.
    """

    mean: Tensor | None = None
    """[B, H, A] action means for the next call (continuous)."""
    std: Tensor | None = None
    """[B, H, A] standard deviations (continuous, optional)."""
    probs: Tensor | None = None
    """[B, H, K] per-step choice probabilities for the next call (discrete)."""
    init_std: float = 1.0
    """The std a cold start uses (continuous)."""

    def forget(self, rows: Tensor) -> "WarmStart | None":
        """Replace the plans of ``rows [B]`` (bool, e.g. where an episode starts) by the cold start:
        mean 0 and ``init_std``, or uniform choice probabilities. None if every row is forgotten."""
        if bool(rows.all()):
            return None
        if not bool(rows.any()):
            return self
        mask = rows.view(-1, 1, 1)

        def cold(x: Tensor | None, fill: float) -> Tensor | None:
            return None if x is None else torch.where(mask.to(x.device), torch.full_like(x, fill), x)

        uniform = 1.0 / self.probs.shape[-1] if self.probs is not None else 0.0
        return WarmStart(mean=cold(self.mean, 0.0), std=cold(self.std, self.init_std),
                         probs=cold(self.probs, uniform), init_std=self.init_std)

    def detach(self) -> "WarmStart":
        def detached(x: Tensor | None) -> Tensor | None:
            return None if x is None else x.detach()

        return WarmStart(mean=detached(self.mean), std=detached(self.std), probs=detached(self.probs),
                         init_std=self.init_std)

    def plan(self, discrete: bool) -> Tensor:
        """The plan a planner of this action kind starts from: ``probs`` [B, H, K] (discrete) or
        ``mean`` [B, H, A] (continuous); PlanningError if this warm start has none."""
        plan = self.probs if discrete else self.mean
        if plan is None:
            kind = "probs (discrete)" if discrete else "mean (continuous)"
            raise PlanningError(f"The warm start has no {kind}; pass the `warm` of a planner run with the same "
                                "action type.")
        return plan


@dataclass(frozen=True)
class PlanResult:
    """The outcome of one planner call for B start states."""

    action: Tensor
    """[B, A] the action to execute now (one-hot float for discrete actions)."""
    mean: Tensor | None
    """[B, H, A] the refined plan (continuous; the best sequence for shooting / gradient)."""
    std: Tensor | None
    """[B, H, A] the refined spread (CEM and MPPI only)."""
    probs: Tensor | None
    """[B, H, K] refined per-step choice probabilities (discrete only)."""
    warm: WarmStart | None
    """The plan shifted by one step: pass it as ``warm`` to the next call (None for tree search)."""
    best_return: Tensor
    """[iterations, B] best finite predicted return among the candidates of each iteration."""
    mean_return: Tensor
    """[iterations, B] mean finite predicted return of each iteration's candidates."""
    extras: Mapping[str, Tensor] = field(default_factory=dict)
    """Planner-specific outputs per start state, e.g. a tree search's ``search_policy [B, K]`` and
    ``root_value [B]``."""


@dataclass(frozen=True)
class PlannerSpec:
    """A planner's declaration: its name, function, settings type and the action kinds it plans."""

    name: str
    fn: Callable[..., PlanResult]
    settings_type: type[PlannerSettings]
    discrete: bool
    continuous: bool

    def supports(self, act_spec: ActionSpec) -> bool:
        return self.discrete if act_spec.discrete else self.continuous

    @property
    def kinds(self) -> str:
        return " and ".join(k for k, ok in (("discrete", self.discrete), ("continuous", self.continuous)) if ok)


@dataclass(frozen=True)
class Setup:
    """What :func:`prepare` resolved for one planner call."""

    batch: int
    """B start states."""
    device: torch.device
    size: int
    """A: action dimension, or number of choices if discrete."""
    discrete: bool
    generator: torch.Generator | None
    policy: Policy | None
    """The model's prior as ``state -> action [N, A]`` for the policy candidates (its mode, or a sample with
    ``sample_policy``), if the settings have any."""
    centre: Tensor | None
    """[B, H, A] the policy's action sequence from each start state (``centre_on_policy``), else None."""


def check_settings(settings: PlannerSettings, candidates: int | None = None) -> None:
    """Reject settings that cannot plan, with one sentence naming the field."""
    if settings.horizon < 1:
        raise PlanningError(f"horizon must be >= 1; got {settings.horizon}.")
    if not 0.0 < settings.discount <= 1.0:
        raise PlanningError(f"discount must be in (0, 1]; got {settings.discount}.")
    if settings.policy_candidates < 0:
        raise PlanningError(f"policy_candidates must be >= 0; got {settings.policy_candidates}.")
    if candidates is not None and settings.policy_candidates >= candidates:
        raise PlanningError(
            f"policy_candidates ({settings.policy_candidates}) must be smaller than the number of "
            f"candidates ({candidates}) so that some candidates are sampled."
        )


def prepare(spec: PlannerSpec, model: Dynamics, state: State, settings: PlannerSettings, warm: WarmStart | None,
            generator: torch.Generator | None, candidates: int | None = None) -> Setup:
    """The preamble every planner runs: check the settings, the model's capabilities and action kind,
    the start states and the warm start; pick the generator; build the prior policy."""
    if not isinstance(settings, spec.settings_type):
        raise PlanningError(f"planner '{spec.name}' takes {spec.settings_type.__name__}, "
                            f"not {type(settings).__name__}.")
    check_settings(settings, candidates)
    act_spec = getattr(model, "act_spec", None)
    if not isinstance(act_spec, ActionSpec):
        raise PlanningError(f"{type(model).__name__} has no `act_spec` (a reverie.specs.ActionSpec); "
                            "a planner reads the action size and kind from it.")
    if not spec.supports(act_spec):
        raise PlanningError(unsupported(spec, act_spec))
    purpose = f"planner '{spec.name}' with these settings"
    require(model, settings.needs(), purpose)
    try:
        batch, device = state_batch(state)
    except StateError as e:
        raise PlanningError(f"the start state is not usable: {e}.") from None
    size = act_spec.size
    if size < 1 or (act_spec.discrete and size < 2):
        raise PlanningError(f"action size must be >= 1 (>= 2 choices if discrete); got {size}.")
    _check_warm(warm, batch, size, act_spec.discrete)
    generator = _generator(settings, device, generator)
    if not (settings.policy_candidates or settings.centre_on_policy):
        return Setup(batch, device, size, act_spec.discrete, generator, None, None)

    prior = policy_head(model, purpose)

    def mode(s: State) -> Tensor:
        return prior(s).mode()

    def sample(s: State) -> Tensor:
        return prior(s).sample(generator)

    policy = (sample if settings.sample_policy else mode) if settings.policy_candidates else None
    centre = _policy_plan(model, state, settings.horizon, mode) if settings.centre_on_policy else None
    return Setup(batch, device, size, act_spec.discrete, generator, policy, centre)


def _policy_plan(model: Dynamics, state: State, horizon: int, policy: Policy) -> Tensor:
    """The actions ``[B, H, A]`` the policy takes along its own imagined trajectory from each start state."""
    actions = []
    with torch.no_grad():
        for _ in range(horizon):
            action = policy(state).float()
            actions.append(action)
            state = model.step(state, action)
    return torch.stack(actions, 1)


def centred_probs(centre: Tensor) -> Tensor:
    """Discrete choice probabilities ``[B, H, K]`` with half the mass on the policy's choice, half uniform."""
    return 0.5 * centre + 0.5 / centre.shape[-1]


def unsupported(spec: PlannerSpec, act_spec: ActionSpec, others: Mapping[str, PlannerSpec] | None = None) -> str:
    """The sentence for a planner that cannot plan this kind of action, naming ``others`` that can."""
    kind = "discrete" if act_spec.discrete else "continuous"
    able = [repr(n) for n, s in (others or {}).items() if s.supports(act_spec)]
    hint = f"; use {' or '.join(able)}" if able else ""
    return f"planner '{spec.name}' plans {spec.kinds} actions but this model's are {kind}{hint}."


def _generator(settings: PlannerSettings, device: torch.device,
               generator: torch.Generator | None) -> torch.Generator | None:
    """The generator to draw candidates from: the one passed, a seeded one, or None (global)."""
    if generator is not None:
        if torch.device(generator.device).type != device.type:
            raise PlanningError(
                f"The generator lives on {generator.device} but the start state is on {device}; "
                "create it with torch.Generator(device=state_device)."
            )
        return generator
    if settings.seed is None:
        return None
    return torch.Generator(device=device).manual_seed(settings.seed)


def _check_warm(warm: WarmStart | None, batch: int, action_size: int, discrete: bool) -> None:
    """Check that a warm start fits B start states and A actions."""
    if warm is None:
        return
    plan = warm.plan(discrete)
    if plan.dim() != 3 or plan.shape[0] != batch or plan.shape[2] != action_size:
        raise PlanningError(
            f"The warm start plan has shape {tuple(plan.shape)} but this call needs [B={batch}, H, A={action_size}]; "
            "pass the `warm` from a call with the same batch and action size, or None."
        )


def fit_horizon(plan: Tensor, horizon: int, fill: float) -> Tensor:
    """Cut or pad a plan [B, H', A] along time to [B, horizon, A], padding with ``fill``."""
    if plan.shape[1] >= horizon:
        return plan[:, :horizon]
    pad = plan.new_full((plan.shape[0], horizon - plan.shape[1], plan.shape[2]), fill)
    return torch.cat([plan, pad], dim=1)


def shift_plan(plan: Tensor, fill: float) -> Tensor:
    """Drop the executed first step and append ``fill``: [B, H, A] -> [B, H, A]."""
    return torch.cat([plan[:, 1:], plan.new_full(plan[:, :1].shape, fill)], dim=1)
