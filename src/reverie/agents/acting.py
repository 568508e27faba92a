"""Fast acting paths for a trained agent: eager, compiled (torch.compile) or int8 (dynamic quantisation).

:func:`prepare_acting` returns something that acts like the agent (``init_state`` / ``act``), through its
own policy or through a planner on its model, and computes what the agent computes up to numerics.
``reverie eval RUN --acting MODE`` and ``benchmarks/bench_acting.py`` use it.

- ``eager``: the agent, or :func:`planner_policy` of it, unchanged.
- ``int8``: an acting-only copy of the agent (without optimisers; it is never trained) in which every
  ``nn.Linear`` of every module in ``agent.modules`` (world model, actor, critic: what its ``act`` and
  its ``model``'s heads run) is replaced by a dynamically quantised one: int8 weights per output
  channel, activations quantised to 8 bits at each call, float outputs
  (``torch.ao.quantization.quantize_dynamic``). Norms, nonlinearities, convolutions and the GRU's
  gates stay float32. The agent passed in is not touched. On the Pendulum Dreamer below it is no faster
  (MPPI 0.98x, policy 0.81x): at width 128, fp32 AVX-512 matrix products cost what dynamic int8 ones do,
  and they are a third of MPPI's time (two-hot softmaxes, LayerNorms and elementwise ops are the rest).
- ``compiled``: ``torch.compile`` (inductor, static shapes) of what dominates the cost of a decision,
  chosen by measurement on a trained Pendulum Dreamer (one thread; benchmarks/bench_acting.py):

  * planner: the whole planner call (``PlannerSpec.fn``: every iteration's imagined rollouts as one
    graph): 61 ms against 103 ms eager for MPPI 512 x 6 x 3. In side-by-side trials compiling ``act``
    whole was 1.3x slower than this, and compiling the model's ``step`` / ``reward`` / ``value`` /
    ``policy`` one by one 3x slower (and slower than eager);
  * Dreamer's policy: its world model's ``observe`` and its actor's ``policy``, on an acting copy:
    0.70 ms against 0.78 ms eager; compiling ``act`` whole (numpy in and out) was 1.25x slower.

  Compiling happens during the first ``act`` calls (seconds for a policy, minutes for MPPI on a CPU)
  and again for each new batch size. Random draws inside compiled code come from inductor's own
  generator: sampled candidates differ from eager draw by draw, not in distribution.

Every agent kind can act in ``int8`` if its modules have ``nn.Linear`` layers; ``compiled`` covers
planners on any model, Dreamer's policy and PlaNet's and PETS's planning policies. Anything else is
refused with one sentence (:class:`ActingError`).
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from typing import Any, Sequence

import torch
from torch import nn

from reverie.agents.base import AgentBase
from reverie.agents.compiled import compile_problem, compile_static
from reverie.agents.dreamer import Dreamer
from reverie.agents.pets import Pets
from reverie.agents.planet import Planet
from reverie.agents.planner_policy import PlannerPolicy, PriorPolicy, planner_policy
from reverie.planning import PlanningError

#: What ``reverie eval --acting`` accepts.
ACTING_MODES = ("eager", "compiled", "int8")

#: Planners that take gradients through the model (quantised layers have none).
DIFFERENTIATING = frozenset({"gradient"})

__all__ = ["ACTING_MODES", "ActingError", "prepare_acting"]


class ActingError(PlanningError):
    """An acting mode that cannot run this agent here (the message says why and what to use instead)."""


def prepare_acting(agent: Any, mode: str, planner: str = "policy", overrides: Sequence[str] = ()) -> Any:
    """Something that acts like ``agent`` with ``planner`` (see :func:`planner_policy`; "policy" is the
    agent's own way of acting) in acting mode ``mode`` (one of :data:`ACTING_MODES`).

    Raises ActingError (a mode that cannot run this agent), or what :func:`planner_policy` raises.
    """
    if mode not in ACTING_MODES:
        raise ActingError(f"unknown acting mode {mode!r}; choose one of {', '.join(ACTING_MODES)}")
    if mode == "int8":
        if planner in DIFFERENTIATING:
            raise ActingError(f"the {planner} planner differentiates through the model, which int8 layers cannot; "
                              "use --acting eager or compiled with it")
        agent = _quantised(agent)
    actor = planner_policy(agent, planner, overrides)
    return _compiled(actor) if mode == "compiled" else actor


# -- int8 ----------------------------------------------------------------------------------------
def acting_copy(agent: AgentBase) -> AgentBase:
    """A deep copy of ``agent`` for acting only: its own modules (and ``model`` around them), no optimisers."""
    return copy.deepcopy(agent, {id(agent.optimizers): {}})


def _quantised(agent: Any) -> AgentBase:
    if not isinstance(agent, AgentBase):
        raise ActingError(f"int8 acting quantises the modules an agent declares in `modules`, which "
                          f"{type(agent).__name__} does not have")
    if agent.device.type != "cpu":
        raise ActingError(f"int8 acting runs on the CPU but this agent is on {agent.device}; add --device cpu")
    try:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError:
        raise ActingError(f"int8 acting uses torch.ao.quantization.quantize_dynamic, which torch "
                          f"{torch.__version__} no longer ships; use --acting eager or compiled") from None
    quantised = acting_copy(agent)
    with warnings.catch_warnings():   # torch deprecates torch.ao.quantization in favour of torchao (not installed)
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel")
        for module in quantised.modules.values():
            quantize_dynamic(module, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)
    from torch.ao.nn.quantized.dynamic import Linear as QuantisedLinear

    count = sum(isinstance(m, QuantisedLinear) for module in quantised.modules.values() for m in module.modules())
    if count == 0:
        raise ActingError(f"int8 acting quantises nn.Linear layers but agent '{agent.name}' has none in its "
                          f"modules ({', '.join(agent.modules)}); use --acting eager or compiled")
    return quantised


# -- compiled ------------------------------------------------------------------------------------
def _compiled(actor: Any) -> Any:
    if isinstance(actor, PriorPolicy):
        raise ActingError("compiled acting covers planners and Dreamer's policy, not a model's policy prior "
                          "alone (--planner prior); use --acting eager or int8")
    if isinstance(actor, PlannerPolicy):
        return _compiled_planner(actor)
    if isinstance(actor, (Planet, Pets)):    # they act through a PlannerPolicy of their own
        fast = copy.copy(actor)              # shares the modules; only the policy's planner call changes
        fast.policy = _compiled_planner(actor.policy)
        return fast
    if isinstance(actor, Dreamer):
        fast = acting_copy(actor)            # its own modules, so that compiling methods leaves `actor` alone
        fast.wm.observe = _compile(fast.wm.observe)
        fast.ac.policy = _compile(fast.ac.policy)
        return fast
    raise ActingError(f"compiled acting covers planners, dreamer's policy and planet's and pets' planning, "
                      f"not {actor.name}'s own acting; use --acting eager or int8, or add --planner")


def _compiled_planner(policy: PlannerPolicy) -> PlannerPolicy:
    """A copy of ``policy`` whose planner call (all iterations of its imagined rollouts) is compiled."""
    fast = copy.copy(policy)
    fast.spec = dataclasses.replace(policy.spec, fn=_compile(policy.spec.fn))
    return fast


def _compile(fn: Any) -> Any:
    _check_compile()
    return compile_static(fn)


def _check_compile() -> None:
    """Name a machine where torch.compile cannot work before the first decision, not in the middle of one."""
    reason = compile_problem()
    if reason is not None:
        raise ActingError(f"torch.compile does not work on this machine ({reason}); use --acting eager or int8")
