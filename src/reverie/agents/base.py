"""The agent contract: how the training loop, evaluation and the CLI talk to an agent.

An agent composes a world model with a way of acting and learning; the loop
owns the environments, the replay and the run folder. What the loop needs is
declared, never probed:

- ``schedule``: how the agent learns. :class:`ReplayRatio`: the loop calls
  ``update(batch)`` with replay batches at the run's train ratio;
  :class:`Refit`: the loop calls ``refit(replay)`` every ``every`` agent steps;
  :class:`Staged`: the loop collects random-policy data, then calls ``advance(work)``
  (one checkpointed unit of a staged pipeline at a time) until the last stage is done; a stage
  may ask for more data, collected with the agent acting (:class:`Collection`).
  A new kind of schedule is a new dataclass here and one branch in the loop.
- ``extras_spec``: arrays that ``act`` returns next to its action for every
  environment (a search policy, a root value); the loop stores them in the
  replay beside the step they were computed on, and they come back in
  ``batch.extras``. Steps collected before the agent acts (prefill) get zeros.
- ``model``: the world model planners and analyses may use, with the agent's
  value and policy heads attached as capabilities where it has them (None if
  the agent has no model); ``discount`` and ``planner_defaults`` (settings by
  planner name) tell ``reverie eval --planner`` how to plan on it.
- Optimisers, loss weights and the order of updates belong to the agent, so
  staged and multi-optimiser training fit without the loop knowing.
- ``acting_parts`` / ``acting_copy``: what the fast acting paths
  (:mod:`reverie.agents.acting`, ``reverie eval --acting``) may compile or quantise,
  and the acting-only copy the agent builds with what they made of those parts
  (:class:`ActingParts`). Planners acting for an agent declare theirs the same way
  (:class:`Actor`).

:class:`AgentBase` implements the bookkeeping every agent shares.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import operator
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Mapping, NamedTuple, Protocol, Union

import numpy as np
import torch
from torch import Tensor, nn

from reverie.models.base import State, WorldModel
from reverie.models.batch import Batch
from reverie.planning import PlannerSettings
from reverie.specs import ActionSpec, ArraySpec

if TYPE_CHECKING:
    from typing_extensions import Self

#: No parts handed back (the default of ``acting_copy``).
NO_PARTS: Mapping[str, Any] = MappingProxyType({})

__all__ = [
    "ActOutput", "ActingParts", "Actor", "Agent", "AgentBase", "Collection", "DreamPolicy", "NO_PARTS", "Refit",
    "ReplayRatio", "Schedule", "StageReport", "StageWork", "Staged", "gradient_step", "observe_step",
    "precision_context", "to_env_action", "to_model_action",
]


@dataclass(frozen=True)
class ReplayRatio:
    """Gradient updates on replay batches: the loop calls ``update(batch)`` so that
    ``updates = agent steps * num_envs * run.train_ratio / (batch_size * seq_len)``."""


@dataclass(frozen=True)
class Refit:
    """Periodic refits on everything stored: the loop calls ``refit(replay)`` on the first agent step after
    prefill and every ``every`` agent steps after that."""

    every: int


@dataclass(frozen=True)
class Staged:
    """Staged training on a fixed data set (World Models: V, then M, then C). The loop collects
    ``run.prefill`` agent steps with uniformly random actions into the replay, each held for a number
    of agent steps drawn uniformly from ``hold`` (:class:`~reverie.envs.random_actions.HeldRandomActions`),
    then calls ``advance(work)`` with a :class:`StageWork` until a :class:`StageReport` says ``done``,
    logging and checkpointing after every call. A report may ask for a :class:`Collection`: the loop
    then collects with the agent acting before it calls ``advance`` again. The agent keeps its stage in
    its checkpointed tensors, so a killed run resumes in the stage (and the unit) it was in."""

    hold: tuple[int, int] = (1, 1)
    """Inclusive range of the agent steps each random action of the collection is held for."""
    offline: bool = False
    """Whether the stages learn from the replay alone (they never call ``work.make_env``), so that a
    dataset (``reverie train --dataset``) can take the place of the collection."""


@dataclass(frozen=True)
class StageWork:
    """What the loop lends a :class:`Staged` agent: the replay, a folder of the run for the stages'
    own files, and the run's environments (``make_env(seed)``, ``num_envs`` of them, in subprocesses
    when ``parallel``) for stages that act in the real environment; ``agent_steps``: how many agent
    steps the loop has collected so far (each one step of every environment)."""

    replay: Any
    directory: Any
    make_env: Any
    num_envs: int
    parallel: bool
    seed: int
    agent_steps: int


@dataclass(frozen=True)
class Collection:
    """A stage's request for more real data: the loop collects with the agent acting
    (``act(..., explore=True)``) until it has taken ``until`` agent steps in all, then calls ``advance``
    again. ``explore``: the probability that an environment not already playing a random action starts
    one at a step, held for a number of steps drawn from the schedule's ``hold``
    (:class:`~reverie.envs.random_actions.RandomRuns`)."""

    until: int
    explore: float = 0.0


@dataclass(frozen=True)
class StageReport:
    """What one ``advance`` call did: its stage, metrics, real environment steps taken, whether the
    loop should evaluate the current policy now, whether the last stage is done, and the data the
    next stage needs collected first (None: none)."""

    stage: str
    metrics: dict
    env_steps: int = 0
    evaluate: bool = False
    done: bool = False
    collect: Collection | None = None


Schedule = Union[ReplayRatio, Refit, Staged]


class ActOutput(NamedTuple):
    """What ``act`` returns for N environments."""

    env_action: np.ndarray
    """``[N]`` int64 indices or ``[N, A]`` float32 in [-1, 1]: what the environments receive."""
    action: np.ndarray
    """``[N, A]`` float32 model-space actions (one-hot for discrete)."""
    state: Any
    """The agent's recurrent state after this step."""
    extras: dict[str, np.ndarray]
    """``{key: [N, *extras_spec[key].shape]}``: stored in the replay beside this step."""


@dataclass(frozen=True)
class ActingParts:
    """What the fast acting paths (:mod:`reverie.agents.acting`) may change in something that acts,
    declared by that thing itself. An acting path compiles or quantises these parts and hands the results
    back, by the same names, to the actor's ``acting_copy``, which builds the fast copy; it never reaches
    into the actor."""

    what: str
    """What acts, as messages name it ("muzero's own acting", "a model's policy prior alone")."""
    compiled: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    """The callables that dominate the cost of a decision, by name, for ``--acting compiled`` to compile
    (``torch.compile``, static shapes). Empty: compiled acting is refused for this actor's own acting."""
    quantised: Mapping[str, nn.Module] = field(default_factory=dict)
    """The modules its acting runs, by name, whose ``nn.Linear`` layers ``--acting int8`` quantises."""

    def check(self, owner: str, compiled: Mapping[str, Any], quantised: Mapping[str, Any]) -> None:
        """ValueError naming a part handed back to ``owner`` that it does not declare."""
        for verb, given, declared in (("compile", compiled, self.compiled), ("quantise", quantised, self.quantised)):
            unknown = sorted(set(given) - set(declared))
            if unknown:
                raise ValueError(f"{owner} declares no {', '.join(unknown)} to {verb}; it declares "
                                 f"{', '.join(sorted(declared)) or 'nothing'}")


DreamPolicy = Callable[[np.ndarray], np.ndarray]
"""A policy on a dream's feature vectors: ``features [n, F]`` (``model.features`` of the dream's states, what
:class:`reverie.envs.dream_env.DreamVectorEnv` gives with ``observation="features"``) -> environment
actions ``[n]`` int64 or ``[n, A]`` float32. An agent whose policy reads the model's features offers one
(:meth:`Agent.dream_policy`), so that its policy can be scored in its own dream."""


class Actor(Protocol):
    """Something that acts in N environments: an agent, or a planner or policy prior acting for one
    (:mod:`reverie.agents.planner_policy`)."""

    name: str

    def init_state(self, batch: int) -> Any:
        """Recurrent state for ``batch`` environments before their first step."""

    def act(self, step: dict[str, np.ndarray], state: Any, explore: bool) -> ActOutput:
        """step: observation keys ``[N, ...]``, ``action [N, A]`` (the model-space action that led into it)
        and ``is_first [N]``."""

    def acting_parts(self) -> ActingParts:
        """What the fast acting paths may compile or quantise (see :class:`ActingParts`)."""

    def acting_copy(self, compiled: Mapping[str, Callable[..., Any]] = ...,
                    quantised: Mapping[str, nn.Module] = ...) -> Self:
        """A copy that acts with ``compiled`` callables and ``quantised`` modules (by the names
        :meth:`acting_parts` declares) in place of its own, for acting only; ``self`` is not changed.
        ValueError for a name it does not declare."""


class Agent(Actor, Protocol):
    """What the loop, evaluation and the CLI use (see the module docstring)."""

    obs_spec: Mapping[str, ArraySpec]
    act_spec: ActionSpec
    device: torch.device
    extras_spec: Mapping[str, ArraySpec]
    model: WorldModel | None
    discount: float
    planner_defaults: Mapping[str, PlannerSettings]

    @property
    def schedule(self) -> Schedule:
        """How the agent learns (see the module docstring)."""

    def update(self, batch: Batch) -> dict[str, float]:
        """One update from a replay batch ``[B, T]`` (agents with a :class:`ReplayRatio` schedule)."""

    def refit(self, replay: Any) -> dict[str, float]:
        """Refit on everything in ``replay`` (agents with a :class:`Refit` schedule)."""

    def advance(self, work: StageWork) -> StageReport:
        """One unit of staged training (agents with a :class:`Staged` schedule)."""

    def dream_policy(self) -> DreamPolicy | None:
        """The agent's own policy acting on a dream's feature vectors, or None when it has none that does
        (see :data:`DreamPolicy`)."""

    def tensors(self) -> dict[str, dict[str, Any]]:
        """Everything to checkpoint as named state dicts (weights, optimiser states, counters)."""

    def load_tensors(self, tensors: dict[str, dict[str, Any]]) -> None:
        """Restore what :meth:`tensors` returned."""


class AgentBase:
    """Shared bookkeeping: specs and device, checkpointed modules and optimisers, defaults of the contract.

    Subclasses fill ``self.modules`` and ``self.optimizers`` (name -> object; the names are the checkpoint's
    keys) and set ``schedule``, ``model`` and what else differs from the defaults below.
    """

    name = "agent"
    schedule: Schedule
    extras_spec: Mapping[str, ArraySpec] = {}
    #: whether ``run.compile=true`` compiles this agent's update (it then does so in ``__init__``)
    compilable: ClassVar[bool] = False
    #: whether it trains on several tasks at once: it reads the task and action-mask keys that a multitask
    #: run adds to the observations (:mod:`reverie.envs.multitask`) and keeps padded action dimensions at zero
    multitask: ClassVar[bool] = False
    discount = 1.0
    planner_defaults: Mapping[str, PlannerSettings] = {}
    model: WorldModel | None = None

    def __init__(self, obs_spec: Mapping[str, ArraySpec], act_spec: ActionSpec, device: str | torch.device):
        self.obs_spec: Mapping[str, ArraySpec] = dict(obs_spec)
        self.act_spec = act_spec
        self.device = torch.device(device)
        self.modules: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    @property
    def data_parallel(self) -> bool:
        """Whether several processes can train this agent together by averaging its gradients
        (``torchrun``, ``reverie train --nproc N``): true for gradient updates on replay batches
        (:class:`ReplayRatio`), false for refits and staged pipelines."""
        return isinstance(self.schedule, ReplayRatio)

    # -- learning: the loop calls the one of these that ``schedule`` names ----------------------------
    def update(self, batch: Batch) -> dict[str, float]:
        raise self._not_scheduled("update(batch)")

    def refit(self, replay: Any) -> dict[str, float]:
        raise self._not_scheduled("refit(replay)")

    def advance(self, work: StageWork) -> StageReport:
        raise self._not_scheduled("advance(work)")

    def dream_policy(self) -> DreamPolicy | None:
        return None

    def _not_scheduled(self, call: str) -> TypeError:
        return TypeError(f"agent '{self.name}' learns on a {type(self.schedule).__name__} schedule, "
                         f"which never calls {call}")

    def tensors(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {k: m.state_dict() for k, m in self.modules.items()}
        out.update({k: opt.state_dict() for k, opt in self.optimizers.items()})
        return out

    def load_tensors(self, tensors: dict[str, dict[str, Any]]) -> None:
        for k, m in self.modules.items():
            m.load_state_dict(tensors[k])
        for k, opt in self.optimizers.items():
            opt.load_state_dict(tensors[k])

    # -- fast acting ---------------------------------------------------------------------------
    def acting_parts(self) -> ActingParts:
        """What the fast acting paths may change (see :class:`ActingParts`). Here: nothing to compile, and
        every module in ``modules`` for int8. An agent whose ``act`` spends its time in a few callables
        declares them under ``compiled`` and puts compiled ones in their place in :meth:`place_compiled`."""
        return ActingParts(f"{self.name}'s own acting", quantised=dict(self.modules))

    def acting_copy(self, compiled: Mapping[str, Callable[..., Any]] = NO_PARTS,
                    quantised: Mapping[str, nn.Module] = NO_PARTS) -> Self:
        """A copy of this agent for acting only (no optimisers; it is never trained). Each ``quantised``
        module takes the place of the declared module of its name wherever the agent refers to it (its
        model, its planners), every other module in ``modules`` is shared with this agent, and ``compiled``
        callables take the place of the declared ones in ``act`` (:meth:`place_compiled`). This agent is not
        changed. ValueError for a name :meth:`acting_parts` does not declare."""
        parts = self.acting_parts()
        parts.check(f"agent '{self.name}'", compiled, quantised)
        # deepcopy takes what its memo holds as it is: no optimisers, shared modules, the quantised ones
        memo: dict[int, Any] = {id(self.optimizers): {}}
        memo.update({id(module): module for module in self.modules.values()})
        memo.update({id(parts.quantised[name]): module for name, module in quantised.items()})
        fast = copy.deepcopy(self, memo)
        if compiled:
            fast.place_compiled(compiled)
            placed = fast.acting_parts().compiled
            missed = sorted(name for name, fn in compiled.items() if placed.get(name) is not fn)
            if missed:
                raise TypeError(f"agent '{self.name}' declares {', '.join(missed)} to compile, but its acting copy "
                                "does not act through the compiled ones (see AgentBase.place_compiled)")
        return fast

    def place_compiled(self, compiled: Mapping[str, Callable[..., Any]]) -> None:
        """Put ``compiled`` (compiled versions of callables that :meth:`acting_parts` declares, by name) where
        ``act`` calls them. :meth:`acting_copy` calls this on its copy only; an agent that declares callables
        to compile overrides it."""
        raise TypeError(f"agent '{self.name}' declares {', '.join(sorted(compiled))} to compile but does not "
                        "say where it calls them (override AgentBase.place_compiled)")


def observe_step(model: WorldModel, step: Mapping[str, np.ndarray], state: State | None,
                 device: torch.device, observe: Callable[..., tuple[State, State]] | None = None) -> State:
    """Fold one environment step of N environments into the model's state: obs keys ``[N, ...]``,
    ``action [N, A]`` leading into it, ``is_first [N]``. ``observe``: the model's ``observe`` (the default)
    or a compiled version of it. Returns the new state ``[N]``."""
    obs = {k: torch.as_tensor(np.asarray(step[k]), device=device)[:, None] for k in model.obs_spec}
    action = torch.as_tensor(np.asarray(step["action"]), device=device, dtype=torch.float32)[:, None]
    is_first = torch.as_tensor(np.asarray(step["is_first"]), device=device)[:, None]
    _, state = (observe or model.observe)(obs, action, is_first, state)
    return state


def to_model_action(action: np.ndarray, spec: ActionSpec) -> np.ndarray:
    """Env actions (``[N]`` indices or ``[N, A]`` floats) -> model-space float32 ``[N, A]``."""
    return spec.to_model(action)


def to_env_action(action: Tensor, spec: ActionSpec) -> np.ndarray:
    """Model-space actions ``[N, A]`` -> env actions (indices or floats clipped to [-1, 1])."""
    if spec.discrete:
        return action.argmax(-1).cpu().numpy().astype(np.int64)
    return action.clamp(-1, 1).float().cpu().numpy()


def precision_context(precision: str, device: torch.device):
    """bf16 autocast for ``precision == "bf16"``, otherwise nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def gradient_step(losses: Mapping[str, Tensor], scales: Mapping[str, float], optimizer: torch.optim.Optimizer,
                  params: Iterable[Tensor], grad_clip: float, prefix: str = "") -> dict[str, float]:
    """Minimise ``sum_k scales[k] * mean(losses[k])`` by one optimiser step with gradient-norm clipping.

    Every loss term needs a scale (a missing one is a bug, not a silent weight of 1). Returns the
    unweighted mean of each term (``loss/<k>``) and the gradient norm before clipping (``<prefix>grad_norm``).
    """
    missing = sorted(set(losses) - set(scales))
    if missing:
        raise KeyError(f"no loss scale for {missing}")
    total = functools.reduce(operator.add, [scales[k] * v.mean() for k, v in losses.items()])
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    params = list(params)
    metrics = {f"{prefix}grad_norm": float(nn.utils.clip_grad_norm_(params, grad_clip))}
    optimizer.step()
    metrics.update({f"loss/{k}": float(v.detach().mean()) for k, v in losses.items()})
    return metrics
