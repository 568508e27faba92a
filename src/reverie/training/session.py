"""Wiring a run together: config -> environment (or dataset) -> agent -> run folder -> the driver.

:func:`train` is the one entry from a command (``reverie train``, ``reverie bench``) or from Python
(:func:`reverie.train`) to the driver (:mod:`reverie.training.driver`); :func:`load_run` gives a trained
run back for evaluation, dreams, planning and analysis.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from reverie.agents.base import Agent
from reverie.agents.base import Staged as StagedSchedule
from reverie.agents.registry import AGENTS, agent_entry
from reverie.config import ConfigError, load_config
from reverie.envs import EnvError
from reverie.envs.sequence import SEPARATOR, parse_sequence
from reverie.envs.multitask import split_tasks
from reverie.run_config import AgentConfig, RunConfig
from reverie.training.checkpoint import CheckpointError, load_latest
from reverie.training.collect import EnvBatch
from reverie.training.distributed import DataParallel, rank_seed
from reverie.training.driver import SOLO, Driver, Mode, RunResult, Topology
from reverie.training.continual import Continual, wants_continual
from reverie.training.env_factory import EnvFactory, action_repeat_of, env_factory, task_factories
from reverie.training.hardware import keep_freed_memory, resolve_precision
from reverie.training.init_from import read_base, start_from
from reverie.training.lock import describe
from reverie.training.modes import Offline, Online, Staged, collection_replay
from reverie.training.offline import attach_dataset, check_offline_agent, dataset_env, dataset_run, read_dataset
from reverie.training.run_dir import RunFolder, RunFolderError, drop_retired

__all__ = ["action_repeat_of", "build_agent", "env_factory", "load_run", "train"]


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def build_agent(agent_name: str, cfg: AgentConfig, make: EnvFactory) -> Agent:
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


def _resolved(agent_name: str, cfg: AgentConfig, run: RunConfig, say: Callable[[str], None]) -> tuple[AgentConfig, str]:
    """``cfg`` with ``run`` as this process runs it, ``run.precision=auto`` replaced by what the hardware
    calls for, and ``run.compile`` off where torch.compile does not work (said once); and why that precision.
    ConfigError for ``run.compile`` on an agent that does not declare ``compilable``."""
    from reverie.agents.compiled import compile_problem

    picked, why = resolve_precision(run.precision, run.device)
    out = replace(cfg, run=replace(run, precision="bf16" if picked == "bf16" else "fp32"))
    if not run.compile:
        return out, why
    if not agent_entry(agent_name).build.compilable:
        able = sorted(name for name, entry in AGENTS.items() if entry.build.compilable)
        raise ConfigError(f"run.compile=true compiles the updates of {', '.join(able)} only; "
                          f"{agent_name} trains eager (drop run.compile)")
    reason = compile_problem()
    if reason is None:
        return out, why
    say(f"run.compile: torch.compile does not work on this machine ({reason}); the update runs eager")
    return replace(out, run=replace(out.run, compile=False)), why


def train(agent_name: str, cfg: AgentConfig, run_dir: str | Path, say: Callable[[str], None] = print,
          vector_env: Any = None, dataset: str | Path | None = None, progress: bool = True,
          init_from: str | Path | None = None) -> RunResult:
    """Train (or resume) ``agent_name`` with ``cfg`` in ``run_dir`` and write the end-of-run artifacts.

    ``dataset``: train offline on a Minari dataset (id or folder) or a folder written by ``reverie import``;
    ``run.steps`` then counts updates. ``vector_env``: a gymnasium ``VectorEnv`` of ``run.num_envs``
    environments to collect with instead of ``run.env`` (which still evaluates; see
    :mod:`reverie.envs.gym_vector`); the run closes it. ``progress``: show a progress bar (a line every
    10 % where the output is no terminal). ``init_from``: a run folder whose newest weights a new run starts
    from (see :mod:`reverie.training.init_from`). Inside a ``torchrun`` launch this process trains
    as one rank of a data-parallel run (see :mod:`reverie.training.distributed`)."""
    parallel = DataParallel.from_env()
    if parallel is None:
        return _train(agent_name, cfg, cfg.run, run_dir, say, SOLO, vector_env, dataset, progress, init_from)
    if init_from is not None:
        raise ConfigError("starting from another run's weights (--init-from) runs in one process; drop --nproc")
    if dataset is not None or vector_env is not None:
        raise ConfigError("offline training and a vector environment of your own run in one process; drop --nproc")
    device = parallel.init(cfg.run.device)
    try:
        run = replace(cfg.run, seed=rank_seed(cfg.run.seed, parallel.rank), device=device)   # this rank's seeds
        return _train(agent_name, cfg, run, run_dir, say if parallel.is_main else (lambda _: None), parallel,
                      progress=progress)
    finally:
        parallel.close()


def _train(agent_name: str, cfg: AgentConfig, run: RunConfig, run_dir: str | Path, say: Callable[[str], None],
           topology: Topology, vector_env: Any = None, dataset: str | Path | None = None,
           progress: bool = True, init_from: str | Path | None = None) -> RunResult:
    _setup_torch(run)
    data = None
    if dataset is not None:   # the dataset's spaces (and environment, for evaluation) define the run
        data = read_dataset(dataset)
        cfg = replace(cfg, run=dataset_run(data, cfg.run))
        run = dataset_run(data, run)
    tasks = split_tasks(run.env)
    if len(tasks) > 1 and data is None:
        _check_multitask(agent_name, tasks, vector_env)
        run = replace(run, num_envs=run.num_envs * len(tasks))   # run.num_envs environments of every task
    resolved, why = _resolved(agent_name, cfg, run, say)
    make = env_factory(resolved.run)
    sequence = parse_sequence(run.env, run.steps, run.continual.switch_every)
    if data is None:
        agent = build_agent(agent_name, resolved, make)   # checks the environment before touching the folder
        continual = wants_continual(run, sequence)
        if continual and len(tasks) > 1:
            raise ConfigError("run.continual settings (regularizer, updates_per_second, detect_change) follow one "
                              "task or a task sequence, not several tasks at once; drop them or name one task")
        if continual:
            _check_continual(agent, task_factories(resolved.run), run, vector_env)
    else:
        agent = agent_entry(agent_name).build(data.obs_spec, data.act_spec, resolved, run.device)
        check_offline_agent(agent, agent_name)
    collector = None if vector_env is None else _vector_collector(vector_env, agent, run)
    base = None if init_from is None else read_base(init_from, agent, _warn)   # checked before the folder
    if isinstance(topology, DataParallel):
        topology.check(agent)
        folder = topology.open_folder(run_dir, agent_name, cfg)
    else:
        folder, _ = RunFolder.prepare(run_dir, agent_name, cfg)   # takes the folder's writer lock
    try:
        if folder.stale_lock:
            say(f"taking over the lock of {describe(folder.stale_lock)}, which is no longer running")
        if base is not None and start_from(folder, agent, base):
            say(f"starting from the weights of {base.run} at step {base.step}")
        if run.precision == "auto":
            say(f"precision: {resolved.run.precision} ({why})")
        notes = {"run/precision_bf16": float(resolved.run.precision == "bf16"),
                 "run/compiled": float(resolved.run.compile)}
        if isinstance(topology, DataParallel):
            notes.update({"dist/world_size": topology.world,
                          **{f"dist/seed_rank_{r}": rank_seed(cfg.run.seed, r) for r in range(topology.world)}})
        repeat = action_repeat_of(run)
        mode: Mode
        eval_env: EnvFactory | None = make
        if data is not None:
            record, replay = attach_dataset(folder, data, run)
            eval_env, no_eval = dataset_env(record, agent.obs_spec, agent.act_spec, run.seed)
            if eval_env is None:
                say(f"no evaluation: {no_eval}")
            mode = Offline(run, replay, agent, data.source, stages=folder.path / "stages")
            notes = {**notes, "offline/replay_steps": len(replay)}
        else:
            replay = collection_replay(run, topology.replay_dir(folder))
            if isinstance(agent.schedule, StagedSchedule):
                mode = Staged(run, make, repeat, replay, folder.path / "stages")
            elif continual:
                mode = Continual(run, task_factories(resolved.run), sequence, repeat, replay, agent)
            else:
                mode = Online(run, make, repeat, replay, agent, vector_env=collector)
        driver = Driver(agent, cfg, run, folder, mode, eval_env, repeat, topology=topology, say=say, notes=notes,
                        progress=progress)
        return driver.run_to_end()
    finally:
        folder.release()


def _check_continual(agent: Agent, tasks: list[EnvFactory], run: RunConfig, vector_env: Any) -> None:
    """ConfigError for run.continual settings this run cannot follow; EnvError for tasks of a sequence
    whose spaces differ from those the agent was built for."""
    if isinstance(agent.schedule, StagedSchedule) or vector_env is not None:
        what = "a staged agent" if vector_env is None else "a vector environment of your own"
        raise ConfigError(f"task sequences and run.continual settings need online collection by reverie, "
                          f"not {what}; train on one task with the run.continual defaults")
    if len(tasks) < 2:
        return
    for name, make in zip(run.env.split(SEPARATOR), tasks):
        probe = make(run.seed)
        try:
            if (probe.obs_spec, probe.act_spec) != (agent.obs_spec, agent.act_spec):
                raise EnvError(f"the tasks of a sequence must share their spaces, but {name.strip()} gives "
                               f"{probe.obs_spec}, {probe.act_spec} and the last task {agent.obs_spec}, "
                               f"{agent.act_spec}")
        finally:
            probe.close()


def _check_multitask(agent_name: str, tasks: tuple[str, ...], vector_env: Any) -> None:
    """ConfigError unless ``agent_name`` trains on several tasks at once and nothing else stands in the way."""
    if not agent_entry(agent_name).build.multitask:
        able = sorted(name for name, entry in AGENTS.items() if entry.build.multitask)
        raise ConfigError(f"run.env names {len(tasks)} tasks, but multitask training is built for "
                          f"{', '.join(able)} only; train {agent_name} on one environment")
    if vector_env is not None:
        raise ConfigError("a vector environment of your own collects one environment; name one task in run.env")


def _vector_collector(vector_env: Any, agent: Agent, run: RunConfig) -> EnvBatch:
    """``vector_env`` as the collection environments, checked against the run and the agent."""
    from reverie.envs.gym_vector import GymVectorEnv

    collector = GymVectorEnv(vector_env, seed=run.seed)
    if collector.num_envs != run.num_envs:
        raise ConfigError(f"the vector environment holds {collector.num_envs} environments but run.num_envs is "
                          f"{run.num_envs}; set run.num_envs={collector.num_envs}")
    if (collector.obs_spec, collector.act_spec) != (agent.obs_spec, agent.act_spec):
        raise EnvError(f"the vector environment's spaces give {collector.obs_spec}, {collector.act_spec} but "
                       f"{run.env} gives {agent.obs_spec}, {agent.act_spec}; hand over environments of run.env")
    return collector


def load_run(run_dir: str | Path, device: str | None = None,
             warn: Callable[[str], None] = _warn) -> tuple[Agent, AgentConfig, EnvFactory, dict]:
    """(agent with the newest intact checkpoint loaded, config, env factory, checkpoint meta) of a run folder.

    A damaged checkpoint is named through ``warn`` and the one before it is loaded.
    """
    folder = RunFolder.existing(run_dir)
    meta = folder.read_meta()
    if meta is None or "agent" not in meta:
        raise RunFolderError(f"{folder.path}/run.json names no agent; it is not a usable reverie run folder")
    name = meta["agent"]
    entry = agent_entry(name)
    cfg: AgentConfig = load_config(entry.config_cls, folder.config, migrate=drop_retired)
    if device is not None:
        cfg = replace(cfg, run=replace(cfg.run, device=device))
    _setup_torch(cfg.run)
    make = env_factory(cfg.run)
    cfg, _ = _resolved(name, replace(cfg, run=replace(cfg.run, compile=False)), cfg.run, _warn)
    agent = build_agent(name, cfg, make)
    found = load_latest(folder.checkpoints, expected_agent=name, device=agent.device, warn=warn)
    if found is None:
        raise CheckpointError(f"{folder.path} has no complete checkpoint yet; train longer or resume the run")
    tensors, meta, _ = found
    agent.load_tensors(tensors)
    return agent, cfg, make, meta
