"""Fast acting paths for a trained agent: eager, compiled (torch.compile) or int8 (dynamic quantisation).

:func:`prepare_acting` returns something that acts like the agent (``init_state`` / ``act``), through its
own policy or through a planner on its model, and computes what the agent computes up to numerics.
``reverie eval RUN --acting MODE`` and ``benchmarks/bench_acting.py`` use it.

What may change is declared by whatever acts, never looked up here: its ``acting_parts()``
(:class:`~reverie.agents.base.ActingParts`) names the callables worth compiling and the modules that may be
quantised, and its ``acting_copy(compiled=..., quantised=...)`` builds the fast copy from what this module
made of them. This module knows no agent class.

- ``eager``: the agent, or :func:`planner_policy` of it, unchanged.
- ``int8``: the agent's acting copy (without optimisers; it is never trained) in which every ``nn.Linear``
  of every module the agent declares (by default all of ``agent.modules``: world model, actor, critic:
  what its ``act`` and its ``model``'s heads run) is replaced by a dynamically quantised one: int8 weights
  per output channel, activations quantised to 8 bits at each call, float outputs
  (``torch.ao.quantization.quantize_dynamic``). Norms, nonlinearities, convolutions and the GRU's
  gates stay float32. The agent passed in is not touched. On a trained Pendulum Dreamer it is no faster
  (MPPI 0.98x, policy 0.81x): at width 128, fp32 AVX-512 matrix products cost what dynamic int8 ones do,
  and they are a third of MPPI's time (two-hot softmaxes, LayerNorms and elementwise ops are the rest).
- ``compiled``: ``torch.compile`` (inductor, static shapes) of the callables the actor declares, chosen by
  measurement on a trained Pendulum Dreamer (one thread; the figures are in the declarations): a
  planner's whole call for any planner on any model (:meth:`PlannerPolicy.acting_parts`), and an agent's
  own parts where it declares them (Dreamer's ``observe`` and ``policy``, PlaNet's and PETS's planner call).

  Compiling happens during the first ``act`` calls (seconds for a policy, minutes for MPPI on a CPU)
  and again for each new batch size. Random draws inside compiled code come from inductor's own
  generator: sampled candidates differ from eager draw by draw, not in distribution.

Every agent can act in ``int8`` if its declared modules have ``nn.Linear`` layers; an actor that declares
nothing to compile is refused ``compiled`` with one sentence (:class:`ActingError`), as is anything else
a mode cannot run.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torch import nn

from reverie.agents.base import Actor, Agent
from reverie.agents.compiled import compile_problem, compile_static
from reverie.agents.planner_policy import planner_policy
from reverie.planning import PlanningError

#: What ``reverie eval --acting`` accepts.
ACTING_MODES = ("eager", "compiled", "int8")

#: Planners that take gradients through the model (quantised layers have none).
DIFFERENTIATING = frozenset({"gradient"})

__all__ = ["ACTING_MODES", "ActingError", "prepare_acting"]


class ActingError(PlanningError):
    """An acting mode that cannot run this agent here (the message says why and what to use instead)."""


def prepare_acting(agent: Agent, mode: str, planner: str = "policy", overrides: Sequence[str] = ()) -> Actor:
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
    return _compiled(actor, own=planner == "policy") if mode == "compiled" else actor


def _declares(actor: object) -> bool:
    return callable(getattr(actor, "acting_parts", None)) and callable(getattr(actor, "acting_copy", None))


# -- int8 ----------------------------------------------------------------------------------------
def _quantised(agent: Agent) -> Agent:
    if not _declares(agent):
        raise ActingError(f"int8 acting quantises the modules an agent declares in `acting_parts`, which "
                          f"{type(agent).__name__} does not have")
    if agent.device.type != "cpu":
        raise ActingError(f"int8 acting runs on the CPU but this agent is on {agent.device}; add --device cpu")
    try:
        from torch.ao.nn.quantized.dynamic import Linear as QuantisedLinear
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError:
        raise ActingError(f"int8 acting uses torch.ao.quantization.quantize_dynamic, which torch "
                          f"{torch.__version__} no longer ships; use --acting eager or compiled") from None
    declared = agent.acting_parts().quantised
    with warnings.catch_warnings():   # torch deprecates torch.ao.quantization in favour of torchao (not installed)
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel")
        quantised = {name: quantize_dynamic(module, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
                     for name, module in declared.items()}   # copies: the agent's own modules stay float
    if not any(isinstance(m, QuantisedLinear) for module in quantised.values() for m in module.modules()):
        raise ActingError(f"int8 acting quantises nn.Linear layers but agent '{agent.name}' has none in its "
                          f"modules ({', '.join(declared) or 'none declared'}); use --acting eager or compiled")
    return agent.acting_copy(quantised=quantised)


# -- compiled ------------------------------------------------------------------------------------
def _compiled(actor: Actor, own: bool) -> Actor:
    """``actor``'s acting copy with the callables it declares compiled; ``own``: the actor is the agent
    itself (so a planner is the alternative to suggest)."""
    parts = actor.acting_parts() if _declares(actor) else None
    if parts is None or not parts.compiled:
        what = parts.what if parts is not None else f"{actor.name}'s own acting"
        hint = ", or add --planner" if own else ""
        raise ActingError(f"compiled acting covers planners and what an agent declares to compile, not {what}; "
                          f"use --acting eager or int8{hint}")
    _check_compile()
    return actor.acting_copy(compiled={name: compile_static(fn) for name, fn in parts.compiled.items()})


def _check_compile() -> None:
    """Name a machine where torch.compile cannot work before the first decision, not in the middle of one."""
    reason = compile_problem()
    if reason is not None:
        raise ActingError(f"torch.compile does not work on this machine ({reason}); use --acting eager or int8")
