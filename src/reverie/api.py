"""The Python API: train, load, evaluate, plan, imagine and analyse a world model from a script or a notebook.

::

    import reverie

    run = reverie.train("dreamer", env="gym:CartPole-v1", preset="tiny", steps=500, run_dir="runs/cp")
    run.eval_return                                   # the last evaluation's mean return
    run = reverie.load("runs/cp")                     # the newest intact checkpoint of a run folder
    env = run.env(seed=0)
    step = env.reset()
    out = run.agent.act(reverie.batch_step(step, run.agent), run.agent.init_state(1), explore=False)
    states, last = run.model.observe(obs, actions, is_first)        # filter a sequence [B, T]
    future = reverie.imagine(run.model, last, actions_ahead)        # the prior rolled forward [B, H]
    result = reverie.plan("cem", run.model, last, horizon=12)       # any planner that fits the model
    report = reverie.analyze("runs/cp")                             # what the model learned (HTML report)
    reverie.merge(["runs/a", "runs/b"], method="ties", base="runs/cp", out="runs/ab")   # one model of two

The command line (``reverie train / eval / dream / analyze / merge / bench``) is a thin layer over these.
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from reverie.agents.base import Agent
from reverie.agents.registry import resolve_config
from reverie.envs import Env
from reverie.models.base import CapabilityError, WorldModel, imagine
from reverie.planning import plan
from reverie.run_config import AgentConfig
from reverie.training import session
from reverie.training.driver import RunResult
from reverie.training.env_factory import EnvFactory, TaskFactory
from reverie.training.logger import read_metrics

if TYPE_CHECKING:
    from reverie.analysis.report.run import RunAccess

__all__ = ["Evaluation", "Run", "analyze", "batch_step", "default_run_dir", "make_config", "imagine", "load", "merge",
           "plan", "train"]


def make_config(agent: str = "dreamer", preset: str | None = None, overrides: Sequence[str] = (), **settings: Any) -> AgentConfig:
    """The resolved config of ``agent``: its defaults, then ``preset``'s, then ``overrides`` (``"key=value"``
    strings) and ``settings`` (``run__steps=1000`` or ``{"run.steps": 1000}`` spelled as keyword arguments with
    ``__`` for the dots). A mistyped key is a ConfigError naming the closest valid ones."""
    items = [*overrides, *(f"{key.replace('__', '.')}={value}" for key, value in settings.items())]
    return resolve_config(agent, preset, items)


@dataclass(frozen=True)
class Evaluation:
    """Greedy episodes of a trained agent (or a planner on its model)."""

    returns: np.ndarray
    step: int
    planner: str
    acting: str
    tasks: dict[str, np.ndarray] = field(default_factory=dict)
    """A multitask run's returns of each task (``returns`` holds them all, task after task)."""

    @property
    def mean(self) -> float:
        return float(self.returns.mean())

    @property
    def std(self) -> float:
        return float(self.returns.std())

    def as_dict(self) -> dict[str, Any]:
        """What ``reverie eval`` prints."""
        out = {"return_mean": self.mean, "return_std": self.std, "episodes": int(len(self.returns)),
               "step": self.step, "planner": self.planner, "acting": self.acting}
        if self.tasks:
            out["tasks"] = {name: {"return_mean": float(r.mean()), "return_std": float(r.std())}
                            for name, r in self.tasks.items()}
        return out


class Run:
    """A run folder: its summary and metrics, and (loaded on first use) its agent at the newest intact
    checkpoint, config and environment."""

    def __init__(self, path: str | Path, device: str | None = None, result: RunResult | None = None,
                 warn: Callable[[str], None] | None = None):
        self.path = Path(path)
        self.device = device
        self.result = result
        self._warn = warn

    @functools.cached_property
    def _loaded(self) -> tuple[Agent, AgentConfig, EnvFactory, dict]:
        if self._warn is None:
            return session.load_run(self.path, device=self.device)
        return session.load_run(self.path, device=self.device, warn=self._warn)

    @property
    def agent(self) -> Agent:
        """The agent with the newest intact checkpoint loaded (a damaged one is named and skipped)."""
        return self._loaded[0]

    @property
    def model(self) -> WorldModel:
        """The agent's world model, with its value and policy heads as capabilities where it has them."""
        model = self.agent.model
        if model is None:
            raise CapabilityError(f"agent '{self.agent.name}' has no world model")
        return model

    @property
    def config(self) -> AgentConfig:
        return self._loaded[1]

    @property
    def checkpoint_step(self) -> int:
        """The step (updates for offline runs) of the loaded checkpoint."""
        return int(self._loaded[3]["step"])

    def env(self, seed: int = 0) -> Env:
        """A fresh environment of the run (its suite, observations and action repeat)."""
        return self._loaded[2](seed)

    @property
    def summary(self) -> dict[str, Any] | None:
        """``summary.json`` of a finished run, or None."""
        path = self.path / "summary.json"
        return json.loads(path.read_text()) if path.exists() else None

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """Every row of ``metrics.jsonl`` (``step`` plus the metrics logged at it)."""
        return read_metrics(self.path / "metrics.jsonl")

    @property
    def eval_return(self) -> float | None:
        """The mean return of the run's last evaluation."""
        if self.result is not None:
            return self.result.eval_return
        evals = [m["eval/return"] for m in self.metrics if m.get("eval/return") is not None]
        return evals[-1] if evals else None

    def evaluate(self, episodes: int = 10, planner: str = "policy", acting: str = "eager",
                 planner_args: Sequence[str] = (), seed: int | None = None) -> Evaluation:
        """Greedy episodes by the agent's policy, its model's policy prior (``planner="prior"``) or a planner
        on its model, through an acting path (eager, compiled, int8); as ``reverie eval``."""
        from reverie.agents.acting import prepare_acting
        from reverie.training.evaluate import run_episodes

        actor = prepare_acting(self.agent, acting, planner, list(planner_args))
        base = (self.config.run.seed + 50_000) if seed is None else seed
        make = self._loaded[2]
        if not isinstance(make, TaskFactory):
            returns, _ = run_episodes(actor, [functools.partial(make, base + i) for i in range(episodes)])
            return Evaluation(returns, self.checkpoint_step, planner, acting)
        tasks = {name: run_episodes(actor, [functools.partial(make.task(k), base + i) for i in range(episodes)])[0]
                 for k, name in enumerate(make.names)}   # a multitask run: ``episodes`` in every task
        return Evaluation(np.concatenate(list(tasks.values())), self.checkpoint_step, planner, acting, tasks)

    def dream(self, out: str | Path | None = None, context: int = 5, horizon: int = 45) -> tuple[Path, dict]:
        """One greedy episode observed for ``context`` steps and imagined for ``horizon`` from the actions
        taken; writes a GIF (pixels) or a plot (vectors); returns (the file, open-loop MSE per key)."""
        from reverie.models.base import DECODER, require
        from reverie.training.artifacts import write_dream

        require(self.model, [DECODER], f"a dream (it shows predicted observations) of a {self.agent.name} run")
        return write_dream(self.agent, functools.partial(self._loaded[2], self.config.run.seed + 777),
                           Path(out) if out else self.path / "dream", context=context, horizon=horizon)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"


def train(agent: str = "dreamer", env: str | None = None, *, steps: int | None = None, seed: int | None = None,
          obs: str | None = None, preset: str | None = None, run_dir: str | Path | None = None,
          device: str | None = None, dataset: str | Path | None = None, overrides: Sequence[str] = (),
          say: Callable[[str], None] | None = print, vector_env: Any = None, init_from: str | Path | None = None,
          **settings: Any) -> Run:
    """Train (or resume) ``agent`` and return its :class:`Run`.

    ``env``, ``steps``, ``seed``, ``obs`` and ``device`` set the run's keys of the same names; ``preset``
    and ``overrides``/``settings`` as in :func:`config`. ``run_dir`` defaults to
    ``runs/AGENT-ENV-OBS-sSEED`` (``runs/AGENT-offline-NAME-sSEED`` with a ``dataset``). Re-running the same
    call on the same folder resumes it. ``say``: where messages go (None: nowhere, and no progress bar).
    ``init_from``: a run folder of the same agent and architecture whose newest weights a new run starts from
    (fine-tuning; recorded in the run's ``init_from.json``)."""
    flags = {"run.env": env, "run.steps": steps, "run.seed": seed, "run.obs": obs, "run.device": device}
    cfg = make_config(agent, preset, [*(f"{k}={v}" for k, v in flags.items() if v is not None), *overrides], **settings)
    if run_dir is None:
        run_dir = default_run_dir(agent, cfg, dataset)
    result = session.train(agent, cfg, run_dir, say=say or (lambda _: None), vector_env=vector_env,
                           dataset=dataset, progress=say is not None, init_from=init_from)
    return Run(run_dir, device=device, result=result)


def default_run_dir(agent: str, cfg: AgentConfig, dataset: str | Path | None = None) -> Path:
    """``runs/AGENT-ENV-OBS-sSEED``, or ``runs/AGENT-offline-NAME-sSEED`` for a dataset."""
    if dataset is not None:
        name = Path(str(dataset)).name.replace("/", "-") or "dataset"
        return Path("runs") / f"{agent}-offline-{name}-s{cfg.run.seed}"
    safe = cfg.run.env
    for char, to in ((":", "-"), ("/", "-"), (",", "+"), (">", "_then_"), ("?", "-"), ("&", "-"), ("=", "")):
        safe = safe.replace(char, to)   # a sequence, a variant or a multitask run's
        # tasks (joined by +) still name one plain folder
    return Path("runs") / f"{agent}-{safe}-{cfg.run.obs}-s{cfg.run.seed}"


def load(run_dir: str | Path, device: str | None = None) -> Run:
    """The run in ``run_dir`` (its agent is loaded at the newest intact checkpoint on first use)."""
    from reverie.training.run_dir import RunFolder

    RunFolder.existing(run_dir)   # a missing or foreign folder is named now, not on first use
    return Run(run_dir, device=device, warn=lambda m: print(f"warning: {m}", file=sys.stderr))


def analyze(run_dir: str | Path, run_dir_b: str | Path | None = None, *, checkpoint: int | None = None,
            episodes: int = 4, only: Sequence[str] | str | None = None, out: str | Path | None = None,
            device: str | None = None, progress: bool = False) -> dict[str, Any]:
    """What a run's world model learned (its dominant oscillation, open-loop error, spectra, Fourier, random
    projections, over checkpoints), written as an HTML report with its JSON and figures under ``out``
    (default ``RUN_DIR/analysis``); with ``run_dir_b``, the two runs side by side. ``only``: some of the
    analyses (names or a comma-separated string); ``progress``: show the stages as they run. Returns the
    report's paths and the checkpoint steps analysed (what ``reverie analyze`` prints)."""
    import contextlib

    from reverie.analysis.report import StageProgress, analyze_run, check_inputs, write_compare, write_report

    access = run_access()
    runs = [str(run_dir)] + ([str(run_dir_b)] if run_dir_b is not None else [])
    names = check_inputs(access, runs, checkpoint, episodes,
                         ",".join(only) if only is not None and not isinstance(only, str) else only)
    results = []
    for run in runs:   # inputs are checked before anything is loaded
        shown = StageProgress(Path(run).name, 2 + len(names)) if progress else contextlib.nullcontext()
        with shown as display:
            stage = display.stage if display is not None else (lambda name: None)
            results.append(analyze_run(access, run, checkpoint=checkpoint, episodes=episodes, only=names,
                                       device=device, stage=stage))
    folder = Path(out) if out else Path(run_dir) / "analysis"
    paths = write_report(results[0], folder) if len(results) == 1 else write_compare(results[0], results[1], folder)
    return {"report": str(paths["html"]), "json": str(paths["json"]), "checkpoint_step": [r.step for r in results],
            "seconds": [round(sum(r.seconds.values()), 1) for r in results]}


def merge(runs: Sequence[str | Path], *, method: str, out: str | Path, base: str | Path | None = None,
          coef: float | None = None, coef_grid: Sequence[float] | None = None, trim: float = 0.2,
          holdout_episodes: int = 2, device: str | None = None) -> dict[str, Any]:
    """Merge ``runs`` (fine-tuned from ``base``) into the new run folder ``out`` by ``method`` (``average``,
    ``task-arithmetic`` or ``ties``, see :mod:`reverie.models.merging`); task arithmetic's and TIES'
    coefficient is ``coef`` or the one of ``coef_grid`` that predicts the runs' held-out replay best
    (:mod:`reverie.training.merge_runs`); ``trim``: the fraction of each task vector TIES keeps. ``out`` opens
    with :func:`load` like any run. Returns what ``out/merge.json`` records."""
    from reverie.training.merge_runs import merge_runs

    return merge_runs(list(runs), method, out, base=base, coef=coef, coef_grid=coef_grid, trim=trim,
                      holdout_episodes=holdout_episodes, device=device,
                      warn=lambda m: print(f"warning: {m}", file=sys.stderr))


def run_access() -> RunAccess:
    """How the analysis report reaches run folders: the training shell's functions (``reverie.analysis``
    never imports ``reverie.training``; this layer hands them in)."""
    from reverie.analysis.report.run import RunAccess
    from reverie.training.checkpoint import list_checkpoints, load_checkpoint
    from reverie.training.evaluate import run_episodes
    from reverie.training.run_dir import RunFolder

    return RunAccess(open_run=session.load_run, load_checkpoint=load_checkpoint, play=run_episodes,
                     checkpoints=lambda run: list_checkpoints(RunFolder.existing(run).checkpoints))


def batch_step(step: Mapping[str, np.ndarray], agent: Agent, action: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """One environment's step (``env.reset()`` / ``env.step(a)``) as the batch of one that ``agent.act`` takes,
    with the model-space ``action`` that led into it (zeros at an episode's first step)."""
    out = {k: np.asarray(v)[None] for k, v in step.items()}
    size = agent.act_spec.size
    out["action"] = (np.zeros((1, size), np.float32) if action is None
                     else agent.act_spec.to_model(np.asarray(action)[None]).astype(np.float32))
    return out
