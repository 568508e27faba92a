"""Starting a run from another run's weights: ``reverie train --init-from RUN_DIR`` (fine-tuning).

The base run's newest intact checkpoint gives the new run its module weights (every module state dict
the agent checkpoints: model, heads, target networks, running scales); optimiser states and counters
start fresh. The base must be a run of the same agent whose weights have the same names and shapes
(another environment is fine when its observations and actions have the same sizes); anything else is a
one-sentence :class:`~reverie.models.merging.MergeError` before the new run folder is touched.

The run folder records its base in ``init_from.json`` (the base's folder, checkpoint step and the
SHA-256 of its weights file), which ``reverie merge`` reads to check that runs were fine-tuned from the
base they are merged against. The weights are loaded only while the folder has no checkpoint: a resumed
run continues from its own checkpoint, and resuming with another base is refused.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import Tensor

from reverie.agents.base import Agent
from reverie.io import atomic_write_text
from reverie.models.merging import MergeError, check_same_architecture, join_weights, split_weights
from reverie.training.checkpoint import CheckpointError, latest_checkpoint, load_latest
from reverie.training.run_dir import RunFolder, RunFolderError

__all__ = ["INIT_FILE", "BaseWeights", "read_base", "read_init_record", "start_from"]

#: The file in a run folder that names the run whose weights it started from.
INIT_FILE = "init_from.json"


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@dataclass(frozen=True)
class BaseWeights:
    """The weights a run starts from and where they came from."""

    run: Path
    """The base run's folder (absolute)."""
    step: int
    """The step of the base's checkpoint."""
    sha256: str
    """SHA-256 of the checkpoint's weights file (identifies the weights whatever the folder is called later)."""
    weights: dict[str, Tensor]
    """The base's module weights, flat (``"module/param"``, see :func:`~reverie.models.merging.split_weights`)."""

    def record(self) -> dict[str, Any]:
        return {"run": str(self.run), "step": self.step, "weights_sha256": self.sha256}


def read_base(run_dir: str | os.PathLike, agent: Agent, warn: Callable[[str], None] = _warn) -> BaseWeights:
    """The newest intact checkpoint of ``run_dir`` as the weights ``agent`` starts from, after checking it
    is a run of the same agent with weights of the same names and shapes."""
    folder = RunFolder.existing(run_dir)
    meta = folder.read_meta() or {}
    if meta.get("agent") != agent.name:
        raise MergeError(f"--init-from {run_dir} holds a '{meta.get('agent')}' run; a {agent.name} run can only "
                         f"start from the weights of a {agent.name} run")
    found = load_latest(folder.checkpoints, expected_agent=agent.name, device=agent.device, warn=warn)
    if found is None:
        raise CheckpointError(f"--init-from {run_dir} has no complete checkpoint yet; train it first")
    tensors, _, marker = found
    weights, _ = split_weights(tensors)
    own, _ = split_weights(agent.tensors())
    check_same_architecture([weights, own], [f"the base run {run_dir}", "this run"])
    record = json.loads(marker.read_text(encoding="utf-8"))
    return BaseWeights(folder.path.resolve(), int(record["step"]), str(record["weights"]["sha256"]), weights)


def read_init_record(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """What ``init_from.json`` of ``run_dir`` says (None when the run did not start from another run)."""
    path = Path(run_dir) / INIT_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise RunFolderError(f"{path} is unreadable ({e}); restore it or remove it") from None
    if not isinstance(data, dict) or "weights_sha256" not in data:
        raise RunFolderError(f"{path} names no base weights (weights_sha256); restore it or remove it")
    return data


def start_from(folder: RunFolder, agent: Agent, base: BaseWeights) -> bool:
    """Give ``agent`` the base's module weights if ``folder`` (whose writer lock the caller holds) has no
    checkpoint yet, and record the base; returns whether the weights were loaded. RunFolderError if the
    folder started from other weights."""
    earlier = read_init_record(folder.path)
    if earlier is not None and earlier["weights_sha256"] != base.sha256:
        raise RunFolderError(f"{folder.path} started from {earlier.get('run')} (step {earlier.get('step')}), not "
                             f"from these weights of {base.run}; resume it with its own --init-from or choose a "
                             "new --run-dir")
    load = latest_checkpoint(folder.checkpoints) is None
    if load:
        _, rest = split_weights(agent.tensors())
        agent.load_tensors(join_weights(base.weights, rest))
    if earlier is None:
        atomic_write_text(folder.path / INIT_FILE, json.dumps(base.record(), indent=1) + "\n")
    return load
