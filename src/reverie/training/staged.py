"""The loop of a :class:`~reverie.agents.base.Staged` agent: collect random-policy data, then the stages.

Stage 1 steps ``run.num_envs`` environments (in subprocesses for pixels)
with uniformly random actions until ``run.prefill`` agent steps are in the
replay on disk. Then the agent's ``advance`` is called, one unit of work at a
time; after each unit the loop logs its metrics, evaluates the current policy
in the real environment if the agent asks, and checkpoints. A killed run
resumes, like any run, from its newest checkpoint and its replay: in the
collection where it stopped, or in the stage and unit the agent recorded.
Real environment steps that a stage takes (a controller evolved in the real
environment) count in ``env_steps``.
"""

from __future__ import annotations

import functools
import time

import numpy as np

from reverie.agents.base import StageWork
from reverie.envs import BatchEnv
from reverie.envs.spaces import check_finite
from reverie.failpoints import failpoint
from reverie.training.logger import MetricsLogger

__all__ = ["train_staged"]


def train_staged(trainer) -> "RunResult":  # noqa: F821 - the loop's RunResult, imported lazily
    from reverie.training.loop import _kept_episode, parallel_collection

    tr, run, c, agent = trainer, trainer.run, trainer.counters, trainer.agent
    logger = MetricsLogger(tr.folder.path, resume_step=tr.checkpoint_step if tr.resumed else None,
                           keep_after=functools.partial(_kept_episode, c.env_steps))
    if tr.resume_notes or tr.notes:
        logger.log(c.env_steps, {**tr.notes, **tr.resume_notes})
    started = time.perf_counter() - c.wall_time
    interrupted = False
    try:
        if c.agent_steps < run.prefill:
            _collect(tr, logger, started, parallel_collection(run))
            tr.checkpoint()
        directory = tr.folder.path / "stages"
        directory.mkdir(exist_ok=True)
        work = StageWork(replay=tr.replay, directory=directory, make_env=tr.make_env, num_envs=run.num_envs,
                         parallel=parallel_collection(run), seed=run.seed)
        while True:
            report = agent.advance(work)
            c.updates += 1
            c.env_steps += report.env_steps
            c.wall_time = time.perf_counter() - started
            logger.log(c.env_steps, {**report.metrics, "train/updates": c.updates, "time/wall_s": c.wall_time})
            tr.say(f"[{c.wall_time:7.0f}s] {report.stage}: " + ", ".join(
                f"{k}={v:.4g}" for k, v in list(report.metrics.items())[:4] if isinstance(v, (int, float))))
            if report.evaluate:
                tr.evaluate(logger)
            tr.checkpoint()
            failpoint("loop.stage")
            if report.done:
                break
    except KeyboardInterrupt:
        interrupted = True
        tr.say("interrupted: saving a checkpoint so the same command resumes")
    c.wall_time = time.perf_counter() - started
    return tr.finish(logger, interrupted)


def _collect(tr, logger: MetricsLogger, started: float, parallel: bool) -> None:
    """Random-policy steps into the replay until ``run.prefill`` agent steps are stored."""
    run, c = tr.run, tr.counters
    per_step = run.num_envs * tr.action_repeat
    envs = BatchEnv([functools.partial(tr.make_env, run.seed + 100 * i + c.agent_steps) for i in range(run.num_envs)],
                    parallel=parallel)
    rng = np.random.default_rng(run.seed + c.agent_steps)
    act_spec = envs.act_spec
    try:
        step = envs.reset()
        prev = np.zeros((run.num_envs, act_spec.size), np.float32)
        ep_return = np.zeros(run.num_envs)
        ep_length = np.zeros(run.num_envs, np.int64)
        while c.agent_steps < run.prefill:
            prev[step["is_first"]] = 0.0
            step = dict(step, action=prev)
            check_finite(step, envs.obs_spec, f" at environment step {c.env_steps}")
            tr.replay.add(step)
            ep_return += step["reward"]
            ep_length += 1
            for i in np.flatnonzero(step["is_last"]):
                c.episodes += 1
                logger.log(c.env_steps, {"train/episode_return": float(ep_return[i]),
                                         "train/episode_length": int(ep_length[i]) * tr.action_repeat})
            ep_return[step["is_last"]] = 0.0
            ep_length[step["is_last"]] = 0
            env_action = act_spec.sample(rng, run.num_envs)
            prev = act_spec.to_model(env_action)
            step = envs.step(env_action)
            c.agent_steps += 1
            c.env_steps += per_step
            failpoint("loop.collect")
            c.wall_time = time.perf_counter() - started
            if c.env_steps - c.last_checkpoint >= run.checkpoint_every:
                tr.checkpoint()
    finally:
        envs.close()
