"""Provenance of a run: what produced its numbers, recorded in the run folder as ``provenance.json``.

A figure is only as believable as what is known about how it was made. Each process that trains in
a run folder (the first one and every resumption) appends one *session* to ``provenance.json``:

- the code: reverie's version, the git commit of the source tree it was imported from and whether
  that tree had uncommitted changes (``null`` when reverie is not run from a git checkout);
- the libraries: versions of torch, numpy and the environment packages that are installed;
- the machine: CPU model, whether it multiplies bf16 natively (``amx_bf16`` / ``avx512_bf16``),
  cores this process may use, torch's thread count, the device, Python and the OS;
- the command line, the start and the last update of the session;
- the one-minute load average sampled every :data:`SAMPLE_EVERY_S` seconds while the run trains
  (mean, max, count) and the process's CPU seconds against its wall seconds: a run that shared its
  cores with other work says so.

The file is rewritten atomically at every checkpoint and at the end, so a killed run keeps what
it recorded up to its last checkpoint. Nothing here is read back by training.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from reverie.io import atomic_write_text
from reverie.training.hardware import NATIVE_BF16_FLAGS, cpu_flags, cpu_model

__all__ = ["PROVENANCE_FILE", "Provenance", "machine_facts", "read_provenance", "source_revision"]

PROVENANCE_FILE = "provenance.json"
#: Seconds between samples of the load average.
SAMPLE_EVERY_S = 15.0
#: Distributions whose versions are recorded when installed.
PACKAGES = ("reverie", "torch", "numpy", "gymnasium", "dm-control", "mujoco", "ale-py", "minari", "cma",
            "minatar", "popgym")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def source_revision(path: Path | None = None) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the git checkout holding reverie's source."""
    where = path or Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}


def _versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def machine_facts(device: str) -> dict[str, Any]:
    """The facts of this machine a timing or a learning curve depends on."""
    import torch

    flags = cpu_flags()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:   # not Linux
        cores = os.cpu_count() or 0
    facts: dict[str, Any] = {
        "cpu": cpu_model(), "cpu_native_bf16": sorted(f for f in NATIVE_BF16_FLAGS if f in flags),
        "cores": cores, "torch_threads": torch.get_num_threads(), "device": device,
        "python": platform.python_version(), "os": platform.platform(terse=True),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return facts


def read_provenance(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run folder's provenance (``{"sessions": []}`` when it has none or it is unreadable)."""
    path = Path(run_dir) / PROVENANCE_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {"sessions": []}
    return data if isinstance(data.get("sessions"), list) else {"sessions": []}


class Provenance:
    """This process's session of a run folder's provenance; :meth:`save` writes the whole file."""

    def __init__(self, run_dir: str | os.PathLike, device: str, argv: list[str] | None = None,
                 start_step: int = 0):
        self.path = Path(run_dir) / PROVENANCE_FILE
        self.earlier = read_provenance(run_dir)["sessions"]
        self.session: dict[str, Any] = {
            "started": _now(), "start_step": int(start_step),
            "command": shlex.join(sys.argv if argv is None else argv),
            **source_revision(), "versions": _versions(), "machine": machine_facts(device),
        }
        self._loads: list[float] = []
        self._wall0, self._cpu0 = time.monotonic(), time.process_time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="reverie-load-sampler", daemon=True)
        self._sample_once()
        self._thread.start()

    def _sample_once(self) -> None:
        try:
            self._loads.append(os.getloadavg()[0])
        except OSError:   # not available on this system
            pass

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            self._sample_once()

    def snapshot(self, step: int) -> dict[str, Any]:
        """This session as it stands now, at environment step (or update) ``step``."""
        loads = list(self._loads)
        wall = time.monotonic() - self._wall0
        return {**self.session, "updated": _now(), "end_step": int(step),
                "load_1min": ({"mean": round(sum(loads) / len(loads), 2), "max": round(max(loads), 2),
                               "samples": len(loads)} if loads else None),
                "wall_s": round(wall, 1), "process_cpu_s": round(time.process_time() - self._cpu0, 1)}

    def save(self, step: int) -> None:
        """Write every earlier session and this one (atomically)."""
        data = {"sessions": [*self.earlier, self.snapshot(step)]}
        atomic_write_text(self.path, json.dumps(data, indent=1) + "\n")

    def close(self, step: int) -> None:
        self._stop.set()
        self.save(step)
