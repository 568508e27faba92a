"""``reverie merge``: merge runs fine-tuned from one base into a new run folder (the shell around
:mod:`reverie.models.merging`).

1. Every input is checked before anything is written: the runs are reverie runs of one agent with weights
   of the same names and shapes, a run that records its base (``init_from.json``, written by
   ``reverie train --init-from``) was fine-tuned from a checkpoint of ``--base``, and ``--out`` does not
   exist (a merge never overwrites).
2. The module weights of each run's newest intact checkpoint (and of the base) are merged; optimiser
   states and counters are the base's (the first run's for an average without a base).
3. The coefficient of task arithmetic and TIES is chosen from a grid on held-out data: the last
   ``holdout_episodes`` episodes (of at least ``CONTEXT + HORIZON`` steps) of each input run's replay,
   task ``j`` being run ``j``'s. On each, the *prediction loss* is the world model's open-loop error
   (:func:`~reverie.analysis.open_loop.open_loop_error`, ``CONTEXT`` steps observed, ``HORIZON``
   imagined from the actions taken) averaged over the horizon: the reward MSE plus, for a model with a
   decoder, the observation MSE of every key. The chosen coefficient minimises the mean over tasks of
   ``loss_j(merged) / loss_j(base)``. These episodes were in the fine-tuned run's training data; they are
   held out of nothing but the choice of the coefficient.
4. The output is an ordinary run folder (``run.json``, the base's ``config.yaml``, one pinned checkpoint
   at step 0 in safetensors) that ``reverie eval``, ``reverie analyze`` and :func:`reverie.load` open,
   plus ``merge.json``: the runs, method, coefficient, the grid's scores and the per-task losses of the
   base, each fine-tuned run on its own task, and the merged model, with the normalised error reduction
   ``(base - merged) / (base - fine-tuned)`` per task. It is written in a hidden sibling folder and
   renamed into place when complete.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from reverie.agents.base import Agent
from reverie.agents.registry import agent_entry
from reverie.analysis.open_loop import open_loop_error
from reverie.config import load_config, to_dict
from reverie.io import atomic_write_text
from reverie.models.base import DECODER, REWARD, has
from reverie.models.merging import METHODS, MergeError, check_same_architecture, join_weights, merge, split_weights
from reverie.training import session
from reverie.training.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, load_latest, save_checkpoint
from reverie.training.driver import Counters
from reverie.training.init_from import read_init_record
from reverie.training.offline import replay_streams
from reverie.training.provenance import source_revision
from reverie.training.run_dir import RunFolder, drop_retired

__all__ = ["CONTEXT", "DEFAULT_GRIDS", "HORIZON", "MERGE_FILE", "merge_runs"]

MERGE_FILE = "merge.json"
#: Steps the model observes, then imagines, in each held-out window.
CONTEXT, HORIZON = 5, 10
#: The coefficients tried when none is given: Ilharco et al.'s 0.05 .. 1 for task arithmetic; for TIES,
#: whose disjoint mean keeps a task vector's scale, 0.1 .. 2 around its usual 1.
DEFAULT_GRIDS = {"task-arithmetic": tuple(round(0.05 * i, 2) for i in range(1, 21)),
                 "ties": tuple(round(0.1 * i, 1) for i in range(1, 21))}


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


class _Source:
    """One input run: its folder, agent name, checkpoint and flat module weights."""

    def __init__(self, run_dir: str | os.PathLike, warn: Callable[[str], None], marker: Path | None = None):
        self.folder = RunFolder.existing(run_dir)
        self.name = str(run_dir)
        self.agent = (self.folder.read_meta() or {}).get("agent")
        if self.agent is None:
            raise MergeError(f"{run_dir}/run.json names no agent; it is not a usable reverie run folder")
        if marker is None:
            found = load_latest(self.folder.checkpoints, expected_agent=self.agent, warn=warn)
            if found is None:
                raise CheckpointError(f"{run_dir} has no complete checkpoint yet; train it first")
            tensors, _, marker = found
        else:
            tensors, _ = load_checkpoint(marker, self.agent)
        record = json.loads(marker.read_text(encoding="utf-8"))
        self.step, self.sha256 = int(record["step"]), str(record["weights"]["sha256"])
        self.weights, self.rest = split_weights(tensors)

    def describe(self) -> dict[str, Any]:
        return {"run": str(self.folder.path.resolve()), "step": self.step, "weights_sha256": self.sha256}


def _check_settings(runs: Sequence[Any], method: str, out: Path, base: Any, coef: float | None,
                    coef_grid: Sequence[float] | None, trim: float, holdout_episodes: int) -> tuple[float, ...]:
    """The coefficients to try, after checking every setting (nothing is loaded yet)."""
    if method not in METHODS:
        raise MergeError(f"unknown merging method {method!r}; choose one of {', '.join(METHODS)}")
    if len(runs) < 2:
        raise MergeError(f"merging needs at least two runs, got {len(runs)}")
    if out.exists():
        raise MergeError(f"--out {out} already exists; a merge never overwrites a folder, choose a new --out")
    if holdout_episodes < 1:
        raise MergeError(f"the held-out slice needs at least one episode per run, got {holdout_episodes}")
    if not 0.0 < trim <= 1.0:
        raise MergeError(f"--trim is the fraction of each task vector kept, in (0, 1], got {trim}")
    if method == "average":
        if coef is not None or coef_grid is not None:
            raise MergeError("an average has no coefficient; drop --coef and --coef-grid")
        return (1.0,)
    if base is None:
        raise MergeError(f"{method} adds task vectors to the weights the runs were fine-tuned from; give --base")
    if coef is not None and coef_grid is not None:
        raise MergeError("give either --coef or --coef-grid, not both")
    grid = (coef,) if coef is not None else tuple(coef_grid) if coef_grid is not None else DEFAULT_GRIDS[method]
    if not grid or not all(math.isfinite(c) for c in grid):
        raise MergeError(f"the coefficients must be finite numbers, got {list(grid)}")
    return tuple(float(c) for c in grid)


def _base_checkpoint(base_dir: str | os.PathLike, runs: Sequence[str | os.PathLike]) -> Path | None:
    """The checkpoint of ``base_dir`` the runs that record their base were fine-tuned from (None: the
    newest); MergeError for a run fine-tuned from other weights."""
    recorded = {str(run): rec for run in runs if (rec := read_init_record(run)) is not None}
    if not recorded:
        return None
    by_sha = {json.loads(m.read_text(encoding="utf-8"))["weights"]["sha256"]: m
              for m in list_checkpoints(RunFolder.existing(base_dir).checkpoints)}
    markers = set()
    for run, rec in recorded.items():
        if rec["weights_sha256"] not in by_sha:
            raise MergeError(f"{run} was fine-tuned from {rec.get('run')} at step {rec.get('step')}, which is no "
                             f"checkpoint of --base {base_dir}; merge it against the base it was fine-tuned from")
        markers.add(by_sha[rec["weights_sha256"]])
    if len(markers) > 1:
        steps = sorted(json.loads(m.read_text(encoding="utf-8"))["step"] for m in markers)
        raise MergeError(f"the runs were fine-tuned from different checkpoints of {base_dir} (steps "
                         f"{', '.join(map(str, steps))}); merge runs fine-tuned from one base checkpoint")
    return markers.pop()


def _held_out(source: _Source, keys: Sequence[str], episodes: int, warn: Callable[[str], None]
              ) -> list[dict[str, np.ndarray]]:
    """The last ``episodes`` episodes of at least CONTEXT + HORIZON steps in a run's replay, as
    ``{key: [T, ...]}`` with ``action[t]`` leading into step t."""
    found: list[dict[str, np.ndarray]] = []
    for rows in replay_streams(source.folder.replay, warn):
        starts = list(np.flatnonzero(rows["is_first"]))
        for begin, end in zip(starts, starts[1:] + [len(rows["is_first"])]):
            last = np.flatnonzero(rows["is_last"][begin:end])
            stop = begin + int(last[0]) + 1 if len(last) else end
            if stop - begin >= CONTEXT + HORIZON:
                found.append({k: rows[k][begin:stop] for k in (*keys, "action", "reward", "is_terminal")})
    if not found:
        raise MergeError(f"{source.name}'s replay holds no episode of {CONTEXT + HORIZON} steps or more to "
                         "measure the merged model on; train the run longer")
    return found[-episodes:]


def _prediction_loss(agent: Agent, episodes: list[dict[str, np.ndarray]]) -> float:
    """The model's open-loop reward MSE (plus observation MSE with a decoder), averaged over the horizon."""
    model = agent.model
    assert model is not None, "merge_runs checked that the agent has a world model"
    torch.manual_seed(0)   # a model that samples its latents sees the same noise for every candidate
    report = open_loop_error(model, episodes, CONTEXT, HORIZON, device=agent.device, keep_trajectories=False)
    parts = [np.asarray(v) for v in report.obs_mse.values()]
    if report.reward_mse is not None:
        parts.append(report.reward_mse)
    return float(sum(p.mean() for p in parts))


def merge_runs(runs: Sequence[str | os.PathLike], method: str, out: str | os.PathLike,
               base: str | os.PathLike | None = None, coef: float | None = None,
               coef_grid: Sequence[float] | None = None, trim: float = 0.2, holdout_episodes: int = 2,
               device: str | None = None, warn: Callable[[str], None] = _warn) -> dict[str, Any]:
    """Merge ``runs`` by ``method`` into the new run folder ``out`` (see the module docstring); returns what
    ``merge.json`` records."""
    out = Path(out)
    grid = _check_settings(runs, method, out, base, coef, coef_grid, trim, holdout_episodes)
    sources = [_Source(run, warn) for run in runs]
    reference = _Source(base, warn, _base_checkpoint(base, runs)) if base is not None else None
    agents = {s.agent for s in sources} | ({reference.agent} if reference else set())
    if len(agents) > 1:
        raise MergeError(f"the runs are of different agents ({', '.join(sorted(map(str, agents)))}); only runs of "
                         "one agent can be merged")
    every = ([reference] if reference else []) + sources
    check_same_architecture([s.weights for s in every], [s.name for s in every])
    home = reference or sources[0]
    agent, _, _, _ = session.load_run(home.folder.path, device=device, warn=warn)
    model = agent.model
    if model is None or not (has(model, REWARD) or has(model, DECODER)):
        raise MergeError(f"a {agent.name} model predicts neither rewards nor observations, so a merge of it "
                         "cannot be measured on held-out data")
    tasks = [_held_out(s, list(agent.obs_spec), holdout_episodes, warn) for s in sources]

    def losses(weights: dict[str, Tensor]) -> list[float]:
        agent.load_tensors(join_weights(weights, home.rest))
        return [_prediction_loss(agent, eps) for eps in tasks]

    names = [s.name for s in sources]
    tuned = [s.weights for s in sources]
    base_losses = losses(reference.weights) if reference else None
    cross = [losses(s.weights) for s in sources]          # [run i][task j]
    own = [cross[j][j] for j in range(len(sources))]
    tried: list[tuple[float, float, list[float]]] = []      # (coef, score, losses per task)
    for c in grid:
        task_losses = losses(merge(method, tuned, reference.weights if reference else None, c, trim, names))
        score = float(np.mean(np.divide(task_losses, base_losses))) if base_losses else float(np.mean(task_losses))
        tried.append((c, score, task_losses))
    best_coef, _, best_losses = min(tried, key=lambda t: t[1])
    chosen = merge(method, tuned, reference.weights if reference else None, best_coef, trim, names)
    reduction = ([(b - m) / (b - f) if b != f else None for b, m, f in zip(base_losses, best_losses, own)]
                 if base_losses else None)
    record = {
        "method": method, "coef": None if method == "average" else best_coef,
        "trim": trim if method == "ties" else None,
        "runs": [s.describe() for s in sources], "base": reference.describe() if reference else None,
        "selection": {"held_out": f"the last {holdout_episodes} episode(s) of at least {CONTEXT + HORIZON} steps "
                                  "of each run's replay (task j: run j's)",
                      "loss": f"open-loop prediction error, {CONTEXT} steps observed, {HORIZON} imagined: reward "
                              "MSE plus observation MSE (with a decoder), mean over the horizon",
                      "score": "mean over tasks of loss(merged) / loss(base)" if base_losses else "mean loss",
                      "tried": [{"coef": c, "score": sc, "losses": ls} for c, sc, ls in tried]},
        "losses": {"base": base_losses, "finetuned": own, "merged": best_losses, "finetuned_on_every_task": cross},
        "normalised_error_reduction": reduction,
        "source": source_revision(),
    }
    _write(out, home, agent.name, join_weights(chosen, home.rest), record)
    return {"out": str(out), **record}


def _write(out: Path, home: _Source, agent_name: str, tensors: dict[str, Any], record: dict[str, Any]) -> None:
    """The merged run folder, written beside ``out`` and renamed into place when complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.merging-", dir=out.parent))
    try:
        cfg = load_config(agent_entry(agent_name).config_cls, home.folder.config, migrate=drop_retired)
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        atomic_write_text(tmp / "run.json", json.dumps({"agent": agent_name, "created": now, "merged": True}) + "\n")
        shutil.copyfile(home.folder.config, tmp / "config.yaml")
        meta = {"agent": agent_name, "config": to_dict(cfg), "counters": vars(Counters()), "mode": "merge",
                "merge": {k: record[k] for k in ("method", "coef", "trim")}
                | {"runs": [r["run"] for r in record["runs"]], "base": (record["base"] or {}).get("run")}}
        save_checkpoint(tmp / "checkpoints", 0, tensors, meta, keep=None, pin=True)
        atomic_write_text(tmp / MERGE_FILE, json.dumps(record, indent=1) + "\n")
        if out.exists():   # appeared while we merged
            raise MergeError(f"--out {out} appeared while merging; a merge never overwrites a folder, choose a "
                             "new --out")
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
