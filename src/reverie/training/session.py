"""Wiring a run together: config -> environment -> agent -> trainer -> artifacts.

The CLI calls these; they are also the Python entry points for users who do
not want the command line.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from reverie.agents.registry import AGENTS, agent_entry
from reverie.config import ConfigError, load_config
from reverie.envs import make_env
from reverie.training.checkpoint import CheckpointError, load_latest
from reverie.training.loop import RunResult, Trainer
from reverie.run_config import RunConfig
from reverie.training.hardware import keep_freed_memory, resolve_precision
from reverie.training.lock import describe
from reverie.training.run_dir import RunFolder, RunFolderError, atomic_write_text, drop_retired

#: Action repeat per suite when the config leaves it unset.
SUITE_ACTION_REPEAT = {"atari": 4, "dmc": 2}


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def action_repeat_of(run: RunConfig) -> int:
    return run.action_repeat or SUITE_ACTION_REPEAT.get(run.env.partition(":")[0], 1)


def env_factory(run: RunConfig) -> Callable[[int], Any]:
    """A picklable ``seed -> Env`` for the run's environment."""
    size = (run.image_size, run.image_size)
    return functools.partial(_make, run.env, run.obs, action_repeat_of(run), size, run.time_limit)


def _make(name, obs, repeat, size, time_limit, seed):
    return make_env(name, obs=obs, seed=seed, action_repeat=repeat, size=size, time_limit=time_limit)


def build_agent(agent_name: str, cfg: Any, make: Callable[[int], Any]) -> Any:
    """The agent for the environment ``make`` builds; a first reset and step check the environment first,
    so one that breaks its declared spaces is named before any run folder is touched."""
    probe = make(cfg.run.seed)
    try:
        obs_spec, act_spec = probe.obs_spec, probe.act_spec
        probe.reset()
        probe.step(act_spec.sample(np.random.default_rng(cfg.run.seed), 1)[0])
    finally:
        probe.close()
    return agent_entry(agent_name).build(obs_spec, act_spec, cfg, cfg.run.device)


def _setup_torch(run: RunConfig) -> None:
    keep_freed_memory()   # the process's allocator: large activations are reused, not faulted in anew
    if run.threads:
        torch.set_num_threads(run.threads)
    torch.manual_seed(run.seed)
    if run.device.startswith("cuda") and not torch.cuda.is_available():
        raise RunFolderError(f"device '{run.device}' was asked for but no CUDA device is available; "
                             "use run.device=cpu")


def train(agent_name: str, cfg: Any, run_dir: str | Path, say: Callable[[str], None] = print,
          vector_env: Any = None) -> RunResult:
    """Train (or resume) ``agent_name`` with ``cfg`` in ``run_dir``; write the end-of-run artifacts.

    ``vector_env``: a gymnasium ``VectorEnv`` of ``run.num_envs`` environments to collect with instead
    of ``run.env`` (which still evaluates); see :mod:`reverie.envs.gym_vector`. The run closes it."""
    from reverie.training.distributed import DataParallel

    parallel = DataParallel.from_env()
    if parallel is not None:   # one rank of a torchrun launch
        return _train_parallel(parallel, agent_name, cfg, run_dir, say)
    run = cfg.run
    _setup_torch(run)
    make = env_factory(run)
    resolved, why = _resolve_precision(cfg)
    resolved = _resolve_compile(agent_name, resolved, say)
    agent = build_agent(agent_name, resolved, make)   # checks the environment before touching the folder
    collector = None if vector_env is None else _vector_collector(vector_env, agent, run)
    folder, _ = RunFolder.prepare(run_dir, agent_name, cfg)   # takes the folder's writer lock (saves "auto")
    try:
        if folder.stale_lock:
            say(f"taking over the lock of {describe(folder.stale_lock)}, which is no longer running")
        if run.precision == "auto":
            say(f"precision: {resolved.run.precision} ({why})")
        return _train_locked(agent_name, agent, cfg, folder, make, say,
                             notes={"run/precision_bf16": float(resolved.run.precision == "bf16"),
                                    "run/compiled": float(resolved.run.compile)},
                             vector_env=collector)
    finally:
        folder.release()


def _resolve_precision(cfg: Any) -> tuple[Any, str]:
    """``cfg`` with ``run.precision=auto`` replaced by what this machine's hardware calls for, and why."""
    from dataclasses import replace

    precision, why = resolve_precision(cfg.run.precision, cfg.run.device)
    return replace(cfg, run=replace(cfg.run, precision=precision)), why


def _resolve_compile(agent_name: str, cfg: Any, say: Callable[[str], None]) -> Any:
    """``cfg`` itself, or with ``run.compile`` off where torch.compile does not work here (said once);
    ConfigError for an agent that does not declare ``compilable``."""
    from dataclasses import replace

    from reverie.agents.compiled import compile_problem

    if not cfg.run.compile:
        return cfg
    if not agent_entry(agent_name).build.compilable:
        able = sorted(name for name, entry in AGENTS.items() if entry.build.compilable)
        raise ConfigError(f"run.compile=true compiles the updates of {', '.join(able)} only; "
                          f"{agent_name} trains eager (drop run.compile)")
    reason = compile_problem()
    if reason is not None:
        say(f"run.compile: torch.compile does not work on this machine ({reason}); the update runs eager")
        return replace(cfg, run=replace(cfg.run, compile=False))
    return cfg


def _train_parallel(parallel: Any, agent_name: str, cfg: Any, run_dir: str | Path,
                    say: Callable[[str], None]) -> RunResult:
    """One rank of a data-parallel run (see :mod:`reverie.training.distributed`)."""
    from dataclasses import replace

    from reverie.training.distributed import ParallelTrainer, rank_seed

    device = parallel.init(cfg.run.device)
    folder = None
    try:
        run = replace(cfg.run, seed=rank_seed(cfg.run.seed, parallel.rank), device=device)   # this rank's seeds
        _setup_torch(run)
        make = env_factory(run)
        resolved, _ = _resolve_precision(replace(cfg, run=replace(cfg.run, device=device)))
        resolved = _resolve_compile(agent_name, resolved, say if parallel.is_main else lambda _: None)
        agent = build_agent(agent_name, resolved, make)
        parallel.check(agent)
        error = None
        if parallel.is_main:
            try:
                folder, _ = RunFolder.prepare(run_dir, agent_name, cfg)
            except ValueError as e:
                error = e
        message = parallel.broadcast(None if error is None else str(error))
        if error is not None:
            raise error
        if message is not None:
            raise RunFolderError(message)
        if not parallel.is_main:
            folder = RunFolder(run_dir)
        elif folder.stale_lock:
            say(f"taking over the lock of {describe(folder.stale_lock)}, which is no longer running")
        seeds = [rank_seed(cfg.run.seed, r) for r in range(parallel.world)]
        notes = {"run/precision_bf16": float(resolved.run.precision == "bf16"), "run/compiled": float(resolved.run.compile),
                 "dist/world_size": parallel.world,
                 **{f"dist/seed_rank_{r}": s for r, s in enumerate(seeds)}}
        trainer = ParallelTrainer(parallel, agent, cfg, replace(resolved.run, seed=run.seed), folder, make,
                                  action_repeat_of(run), console=say if parallel.is_main else (lambda m: None),
                                  notes=notes)
        trainer.resume()
        result = trainer.train()
        if parallel.is_main:
            _finish(agent_name, agent, cfg, folder, make, result, {"world_size": parallel.world, "rank_seeds": seeds})
        parallel.barrier()
        return result
    finally:
        if folder is not None:
            folder.release()
        parallel.close()


def _vector_collector(vector_env: Any, agent: Any, run: RunConfig) -> Any:
    """``vector_env`` as the loop's collection envs, checked against the run and the agent."""
    from reverie.config import ConfigError
    from reverie.envs import EnvError
    from reverie.envs.gym_vector import GymVectorEnv

    collector = GymVectorEnv(vector_env, seed=run.seed)
    if collector.num_envs != run.num_envs:
        raise ConfigError(f"the vector environment holds {collector.num_envs} environments but run.num_envs is "
                          f"{run.num_envs}; set run.num_envs={collector.num_envs}")
    if (collector.obs_spec, collector.act_spec) != (agent.obs_spec, agent.act_spec):
        raise EnvError(f"the vector environment's spaces give {collector.obs_spec}, {collector.act_spec} but "
                       f"{run.env} gives {agent.obs_spec}, {agent.act_spec}; hand over environments of run.env")
    return collector


def _train_locked(agent_name: str, agent: Any, cfg: Any, folder: RunFolder, make: Callable[[int], Any],
                  say: Callable[[str], None], notes: dict[str, float], vector_env: Any = None) -> RunResult:
    run = cfg.run
    trainer = Trainer(agent, cfg, run, folder, make, action_repeat_of(run), console=say, notes=notes)
    trainer.vector_env = vector_env
    trainer.resume()
    return _finish(agent_name, agent, cfg, folder, make, trainer.train(), {})


def _finish(agent_name: str, agent: Any, cfg: Any, folder: RunFolder, make: Callable[[int], Any], result: RunResult,
            extra: dict[str, Any]) -> RunResult:
    """Write the end-of-run artifacts (learning curve, dream, summary.json)."""
    from reverie.training.artifacts import can_dream, write_dream, write_learning_curve

    run = cfg.run
    result.artifacts["learning_curve"] = write_learning_curve(folder.path)
    errors = None
    if can_dream(agent):   # a model without a decoder (MuZero's) has no observations to imagine
        dream_path, errors = write_dream(agent, functools.partial(make, run.seed + 999), folder.path / "dream")
        result.artifacts["dream"] = dream_path
    summary = {
        "agent": agent_name, "env": run.env, "obs": run.obs, "env_steps": result.counters.env_steps,
        "updates": result.counters.updates, "episodes": result.counters.episodes,
        "wall_time_s": round(result.counters.wall_time, 1), "eval/return": result.eval_return,
        "eval/return_std": result.eval_return_std, "dream/open_loop_mse": errors,
        "artifacts": {k: str(v) for k, v in result.artifacts.items()}, **extra,
    }
    atomic_write_text(folder.path / "summary.json", json.dumps(summary, indent=1) + "\n")
    return result


def load_run(run_dir: str | Path, device: str | None = None,
             warn: Callable[[str], None] = _warn) -> tuple[Any, Any, Callable[[int], Any], dict]:
    """(agent with the newest intact checkpoint loaded, config, env factory, checkpoint meta) of a run folder.

    A damaged checkpoint is named through ``warn`` and the one before it is loaded.
    """
    folder = RunFolder.existing(run_dir)
    name = folder.read_meta()["agent"]
    entry = agent_entry(name)
    cfg = load_config(entry.config_cls, folder.config, migrate=drop_retired)
    if device is not None:
        from dataclasses import replace
        cfg = replace(cfg, run=replace(cfg.run, device=device))
    _setup_torch(cfg.run)
    make = env_factory(cfg.run)
    cfg, _ = _resolve_precision(cfg)
    agent = build_agent(name, cfg, make)
    found = load_latest(folder.checkpoints, expected_agent=name, device=agent.device, warn=warn)
    if found is None:
        raise CheckpointError(f"{folder.path} has no complete checkpoint yet; train longer or resume the run")
    tensors, meta, _ = found
    agent.load_tensors(tensors)
    return agent, cfg, make, meta


__all__ = ["action_repeat_of", "build_agent", "env_factory", "load_run", "train"]
