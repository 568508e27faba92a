"""The training loop: collect, train at a replay ratio, evaluate, checkpoint, resume.

This is the shell around the pure parts: it alone touches the environment,
the run folder, the clock and the loggers. Re-running the same command on the
same run folder resumes from the newest complete checkpoint with its replay.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from reverie.agents.base import Agent, Refit, ReplayRatio, Staged
from reverie.config import to_dict
from reverie.envs import BatchEnv
from reverie.envs.spaces import check_finite
from reverie.failpoints import failpoint
from reverie.models.batch import Batch
from reverie.replay import Replay
from reverie.run_config import RunConfig
from reverie.training.checkpoint import load_latest, save_checkpoint
from reverie.training.evaluate import run_episodes
from reverie.training.logger import MetricsLogger, read_metrics
from reverie.training.progress import Progress
from reverie.training.provenance import Provenance
from reverie.training.run_dir import RunFolder


@dataclass
class Counters:
    """Progress of a run; saved with every checkpoint."""

    env_steps: int = 0
    agent_steps: int = 0
    updates: int = 0
    episodes: int = 0
    wall_time: float = 0.0
    last_eval: int = 0
    last_log: int = 0
    last_checkpoint: int = 0
    pinned: int = 0
    """How many of the run.keep_checkpoints evenly spaced points have a checkpoint kept for good."""


@dataclass
class RunResult:
    """What a finished (or interrupted) run reports."""

    run_dir: Path
    counters: Counters
    eval_return: float | None
    eval_return_std: float | None
    artifacts: dict[str, Path] = field(default_factory=dict)


class Trainer:
    """Drives one run of ``agent`` on environments built by ``make_env(seed)``."""

    def __init__(self, agent: Agent, cfg: Any, run: RunConfig, folder: RunFolder,
                 make_env: Callable[[int], Any], action_repeat: int, console: Callable[[str], None] = print,
                 notes: dict[str, float] | None = None):
        self.agent, self.cfg, self.run, self.folder = agent, cfg, run, folder
        self.action_repeat = action_repeat
        self.make_env = make_env
        self.say = console
        self.counters = Counters()
        self.replay = Replay(folder.replay, capacity=run.replay_capacity, seq_len=run.seq_len,
                             chunk_size=run.replay_chunk, eviction=run.replay_eviction, seed=run.seed,
                             owner=True)   # the trainer holds the run folder's lock
        self.latest_eval: tuple[float, float] | None = None
        self.resumed = False
        self.checkpoint_step = 0                       # env steps of the checkpoint the run resumed from
        self.resume_notes: dict[str, float] = {}       # logged once when a resumed run starts
        self.notes = dict(notes or {})                  # facts of the run logged once when it starts
        self.first_update_timed = not self.notes.get("run/compiled")   # a compiled update: say what compiling cost
        self.vector_env: Any = None                     # a user's vectorised environment for collection
        self.provenance = Provenance(folder.path, run.device)   # what produced this run's numbers

    # -- checkpoints ---------------------------------------------------------------------------
    def resume(self) -> bool:
        """Continue the run in the folder, if there is one: the newest intact checkpoint, then the replay.

        A damaged checkpoint is named and the one before it loaded. The counters then move on by
        every step the replay kept after that checkpoint (the kill came later): those steps were
        taken in the environment and stay in the replay, so they count; only the chunk in progress
        at the kill is lost. A resumed run's step counts thus match an uninterrupted one's.
        """
        found = load_latest(self.folder.checkpoints, expected_agent=self.agent.name, device=self.agent.device,
                            warn=lambda m: self.say(f"warning: {m}"))
        if found is not None:
            tensors, meta, path = found
            self.agent.load_tensors(tensors)
            self.counters = Counters(**meta["counters"])
            if "rng" in meta:
                torch.set_rng_state(torch.tensor(meta["rng"], dtype=torch.uint8))
        c = self.counters
        self.checkpoint_step = c.env_steps
        kept = self._count_kept_steps()
        self.provenance.session["start_step"] = c.env_steps
        skipped = self.replay.stats["files_skipped"]
        if found is None and not kept:
            return False
        self.resumed = True
        self.resume_notes = {"resume/checkpoint_step": self.checkpoint_step, "resume/steps_kept_after_checkpoint":
                             kept * self.run.num_envs * self.action_repeat, "resume/replay_files_skipped": skipped}
        evals = [m for m in read_metrics(self.folder.metrics)
                 if "eval/return" in m and m["step"] <= self.checkpoint_step]
        if evals:
            self.latest_eval = (evals[-1]["eval/return"], evals[-1].get("eval/return_std", 0.0))
        since = "no checkpoint" if found is None else f"the checkpoint at step {self.checkpoint_step}"
        self.say(f"resuming {self.folder.path} at step {c.env_steps} from {since} and {len(self.replay)} replay "
                 f"steps" + (f" ({skipped} damaged replay file(s) skipped)" if skipped else ""))
        return True

    def _count_kept_steps(self) -> int:
        """Move the counters past the agent steps the replay holds beyond them; return how many."""
        c, streams = self.counters, self.run.num_envs
        extra = self.replay.clock // streams - c.agent_steps
        if extra <= 0:
            return 0
        c.episodes += self.replay.count_from(c.agent_steps * streams, "is_last")
        c.agent_steps += extra
        c.env_steps += extra * streams * self.action_repeat
        return extra

    def _milestones_reached(self) -> int:
        """How many of the run.keep_checkpoints evenly spaced points of run.steps the run has passed."""
        n, steps = self.run.keep_checkpoints, self.run.steps
        return sum(1 for i in range(1, n + 1) if self.counters.env_steps * n >= steps * i)

    def checkpoint(self) -> None:
        self.replay.flush()
        c = self.counters
        c.last_checkpoint = c.env_steps
        reached = self._milestones_reached()
        pin = reached > c.pinned
        c.pinned = max(c.pinned, reached)
        meta = {"agent": self.agent.name, "config": to_dict(self.cfg), "counters": vars(c).copy(),
                "rng": torch.get_rng_state().tolist()}
        save_checkpoint(self.folder.checkpoints, c.env_steps, self.agent.tensors(), meta, keep=2, pin=pin)
        self.provenance.save(c.env_steps)

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(self, logger: MetricsLogger) -> None:
        run = self.run
        seeds = [run.seed + 10_000 + 1000 * self.counters.env_steps + i for i in range(run.eval_episodes)]
        returns, _ = run_episodes(self.agent, [functools.partial(self.make_env, s) for s in seeds])
        self.latest_eval = (float(returns.mean()), float(returns.std()))
        logger.log(self.counters.env_steps, {"eval/return": self.latest_eval[0],
                                              "eval/return_std": self.latest_eval[1],
                                              "eval/episodes": len(returns)})
        self.counters.last_eval = self.counters.env_steps

    # -- the loop ------------------------------------------------------------------------------
    def train(self) -> RunResult:
        if isinstance(self.agent.schedule, Staged):   # collect once, then the agent's stages
            from reverie.training.staged import train_staged
            return train_staged(self)
        run, c = self.run, self.counters
        repeat = self.action_repeat
        per_step = run.num_envs * repeat                     # env steps per batched agent step
        prefill = max(run.prefill, run.seq_len)   # sequences run along one stream: each needs seq_len steps
        tokens = run.batch_size * run.seq_len
        envs = self.open_envs()
        # On resumption, metric rows logged after the checkpoint describe rolled-back work: drop them,
        # except the episodes the replay kept (the counters include them).
        logger = self.open_logger(resume_step=self.checkpoint_step if self.resumed else None,
                                  keep_after=functools.partial(_kept_episode, c.env_steps))
        if self.resume_notes or self.notes:
            logger.log(c.env_steps, {**self.notes, **self.resume_notes})
        progress = self.open_progress(total=run.steps, start=c.env_steps,
                                      refits=isinstance(self.agent.schedule, Refit))
        rng = np.random.default_rng(run.seed + c.agent_steps)
        act_spec = envs.act_spec
        started = time.perf_counter() - c.wall_time
        interrupted = False
        try:
            step = envs.reset()
            state = self.agent.init_state(run.num_envs)
            prev = np.zeros((run.num_envs, act_spec.size), np.float32)
            ep_return = np.zeros(run.num_envs)
            ep_length = np.zeros(run.num_envs, np.int64)
            train_metrics: list[dict[str, float]] = []
            while c.env_steps < run.steps:
                prev[step["is_first"]] = 0.0
                step = dict(step, action=prev)
                check_finite(step, envs.obs_spec, f" at environment step {c.env_steps}")
                if c.agent_steps < prefill:
                    env_action, extras = act_spec.sample(rng, run.num_envs), self._no_extras(run.num_envs)
                else:
                    env_action, _, state, extras = self.agent.act(step, state, explore=True)
                # what the agent computed on this step (a search policy, say) is stored beside it
                self.replay.add({**step, **extras})
                ep_return += step["reward"]
                ep_length += 1
                for i in np.flatnonzero(step["is_last"]):
                    c.episodes += 1
                    logger.log(c.env_steps, {"train/episode_return": float(ep_return[i]),
                                             "train/episode_length": int(ep_length[i]) * repeat})
                    progress.episode(float(ep_return[i]))
                ep_return[step["is_last"]] = 0.0
                ep_length[step["is_last"]] = 0
                prev = act_spec.to_model(env_action)
                # The environments step (in their own processes with parallel_envs) while the learner
                # makes the updates owed: neither needs the other's result, so the order of every
                # computation, and with it every result, is that of stepping first and updating after.
                envs.step_async(env_action)
                c.agent_steps += 1
                c.env_steps += per_step
                if c.agent_steps >= prefill:
                    train_metrics.extend(self._train_owed(prefill, tokens))
                step = envs.step_wait()
                failpoint("loop.collect")
                c.wall_time = time.perf_counter() - started
                progress.update(c.env_steps, c.updates, c.wall_time, self.latest_eval)
                if c.env_steps - c.last_log >= run.log_every and train_metrics:
                    logger.log(c.env_steps, self._summarise(train_metrics))
                    train_metrics = []
                    c.last_log = c.env_steps
                if c.env_steps - c.last_eval >= run.eval_every:
                    self.evaluate(logger)
                if (c.env_steps - c.last_checkpoint >= run.checkpoint_every
                        or self._milestones_reached() > c.pinned):
                    self.checkpoint()
        except KeyboardInterrupt:
            interrupted = True
            self.say("interrupted: saving a checkpoint so the same command resumes")
        finally:
            progress.close()
            envs.close()
        c.wall_time = time.perf_counter() - started
        return self.finish(logger, interrupted)

    def finish(self, logger: MetricsLogger, interrupted: bool) -> RunResult:
        """End a run: an interrupted one is checkpointed and the interrupt raised again; a finished one
        is evaluated (unless it just was), checkpointed and reported."""
        c = self.counters
        if interrupted:
            self.checkpoint()
            logger.close()
            raise KeyboardInterrupt
        if c.last_eval != c.env_steps or self.latest_eval is None:
            self.evaluate(logger)
        self.checkpoint()
        self.provenance.close(c.env_steps)
        logger.close()
        mean, std = self.latest_eval
        return RunResult(self.folder.path, c, mean, std)

    def open_envs(self) -> Any:
        """The collection environments: ``run.num_envs`` of ``make_env`` as a :class:`BatchEnv`, or the
        vectorised environment a user handed over (``vector_env``, see :mod:`reverie.envs.gym_vector`)."""
        if self.vector_env is not None:
            return self.vector_env
        run, start = self.run, self.counters.agent_steps
        return BatchEnv([functools.partial(self.make_env, run.seed + 100 * i + start) for i in range(run.num_envs)],
                        parallel=parallel_collection(run))

    def open_logger(self, **kwargs: Any) -> MetricsLogger:
        """The run's metrics logger (a data-parallel rank other than 0 replaces it with one that writes nothing)."""
        return MetricsLogger(self.folder.path, **kwargs)

    def open_progress(self, **kwargs: Any) -> Progress:
        """The progress display (likewise replaced on ranks other than 0)."""
        return Progress(**kwargs)

    def _no_extras(self, n: int) -> dict[str, np.ndarray]:
        """Zeros for the agent's extras on steps it did not act on (prefill)."""
        return {k: np.zeros((n, *spec.shape), spec.dtype) for k, spec in self.agent.extras_spec.items()}

    def _train_owed(self, prefill: int, tokens: int) -> list[dict[str, float]]:
        """Run the updates the agent's declared schedule owes by now."""
        c, run, agent = self.counters, self.run, self.agent
        done_since_prefill = c.agent_steps - prefill + 1
        schedule = agent.schedule
        if isinstance(schedule, Refit):
            if (done_since_prefill - 1) % schedule.every:
                return []
            c.updates += 1
            return [agent.refit(self.replay)]
        if not isinstance(schedule, ReplayRatio):
            raise TypeError(f"agent '{agent.name}' declares an unknown schedule {schedule!r}")
        owed = int(done_since_prefill * run.num_envs * run.train_ratio / tokens) - c.updates
        out = []
        for _ in range(max(owed, 0)):
            batch = Batch.build(self.replay.sample(run.batch_size), agent.obs_spec, agent.act_spec, agent.device,
                                agent.extras_spec)
            started = time.perf_counter()
            out.append(agent.update(batch))
            if not self.first_update_timed:
                self.first_update_timed = True
                self.say(f"compiled update: the first took {time.perf_counter() - started:.1f} s, compiling included")
            c.updates += 1
            failpoint("loop.update")
        return out

    def _summarise(self, metrics: list[dict[str, float]]) -> dict[str, float]:
        keys = metrics[-1].keys()
        out = {f"train/{k}": float(np.nanmean([m[k] for m in metrics if k in m])) for k in keys}
        out["train/updates"] = self.counters.updates
        out["train/updates_per_second"] = self.counters.updates / max(self.counters.wall_time, 1e-9)
        out["train/replay_steps"] = len(self.replay)
        return out


_EPISODE_KEYS = {"step", "train/episode_return", "train/episode_length"}


def _kept_episode(until: int, row: dict) -> bool:
    """A metrics row of an episode that ended by step ``until`` (kept in a resumed run's replay)."""
    return row["step"] <= until and set(row) <= _EPISODE_KEYS


def parallel_collection(run: RunConfig) -> bool:
    """Whether the collection environments run in subprocesses (``run.parallel_envs``; None: for pixels)."""
    return run.obs == "pixels" if run.parallel_envs is None else bool(run.parallel_envs)
