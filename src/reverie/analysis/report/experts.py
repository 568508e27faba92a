"""The ``experts`` section of ``reverie analyze``: how a mixture-of-experts dynamics shares its work.

For a model with the ``routing`` capability (TD-MPC2 with ``model.experts > 0``,
:mod:`reverie.models.moe`), every step of the played episodes is routed from the model's filtered state
at the action taken next; the section gives, per task (a multitask run's ``task`` observation; one row
otherwise), the share of those inputs each expert received, and the Switch load-balancing loss over all
of them (1 at uniform use, up to E when one expert takes everything). Experts that specialise by task
show as rows that differ.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import torch

from reverie.analysis.report.sections import TITLES, Section
from reverie.models.base import ROUTING, HasRouting, State, WorldModel, has
from reverie.models.moe import Routing, expert_usage, load_balance_loss
from reverie.models.state import map_state
from reverie.specs import TASK_KEY

__all__ = ["experts_section"]

TITLE = TITLES["experts"]


@torch.no_grad()
def experts_section(model: WorldModel, episodes: list[dict], states: list[State], tasks: tuple[str, ...],
                    device: torch.device | str) -> Section:
    """The section (see the module docstring); ``states``: the filtered states ``[T]`` of each episode;
    ``tasks``: the names of the run's tasks, in order."""
    if not has(model, ROUTING):
        return Section("experts", TITLE, False, "Not available: the model's dynamics is not a mixture of experts "
                                                "(for TD-MPC2 set model.experts).")
    router = cast(HasRouting, model)
    probs: dict[int, list[torch.Tensor]] = {}
    dispatch: dict[int, list[torch.Tensor]] = {}
    for ep, state in zip(episodes, states):
        if len(ep["action"]) < 2:
            continue
        action = torch.as_tensor(ep["action"][1:], device=device, dtype=torch.float32)   # led out of steps 0..T-2
        routing = router.routing(map_state(lambda x: x[:-1], state), action)
        k = int(np.argmax(ep[TASK_KEY][0])) if TASK_KEY in ep else 0
        probs.setdefault(k, []).append(routing.probs)
        dispatch.setdefault(k, []).append(routing.dispatch)
    if not probs:
        return Section("experts", TITLE, False, "Not available: the episodes were too short.")
    per_task = {k: Routing(torch.cat(probs[k]), torch.cat(dispatch[k])) for k in sorted(probs)}
    everything = Routing(torch.cat([r.probs for r in per_task.values()]),
                         torch.cat([r.dispatch for r in per_task.values()]))
    usage = {tasks[k] if k < len(tasks) else f"task {k}": expert_usage(r).tolist() for k, r in per_task.items()}
    balance = float(load_balance_loss(everything))
    experts = everything.probs.shape[-1]
    facts = {name: ", ".join(f"e{e} {100 * u:.0f}%" for e, u in enumerate(shares)) for name, shares in usage.items()}
    facts["load-balancing loss"] = f"{balance:.3f} (1 = uniform use, {experts} = one expert)"
    text = (f"Share of the dynamics inputs of the played episodes routed to each of {experts} experts "
            f"({len(everything.probs)} inputs), per task.")
    return Section("experts", TITLE, True, text, facts, {}, {"usage": usage, "load_balance_loss": balance,
                                                            "experts": experts})
