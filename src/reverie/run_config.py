"""Settings of a training run that every agent shares.

Numeric fields declare their range in the annotation (``PositiveInt`` is an
int of at least 1, see :mod:`reverie.config`), so ``run.steps=-5`` on the
command line or ``RunConfig(steps=-5)`` in Python fails in one sentence
before anything is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Optional, Protocol

from reverie.config import Fraction, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, check_ranges


@dataclass(frozen=True)
class ContinualConfig:
    """Learning in a world that changes: task sequences, a regulariser against forgetting, a streaming budget
    and a detector of changes in the world (see :mod:`reverie.training.continual`)."""

    switch_every: Optional[PositiveInt] = None
    """Environment steps per task of a task sequence (run.env 'A>B>C'); None: run.steps split evenly."""
    regularizer: Literal["none", "l2", "ewc"] = "none"
    """Pull the weights towards those at the last task switch after every update: l2 (every weight alike) or
    ewc (each weight by its diagonal Fisher information, from the squared gradients of the updates before it)."""
    reg_weight: Fraction = 0.01
    """Fraction of its distance to the anchor a weight of average importance loses per update (l2, ewc)."""
    fisher_decay: Fraction = 0.99
    """Decay of the running mean of squared gradients that estimates the Fisher information (ewc)."""
    updates_per_second: Optional[PositiveFloat] = None
    """Wall-clock update budget: at most this many updates per second of the run (None: the replay ratio alone)."""
    detect_change: bool = False
    """Watch the world model's one-step prediction error on incoming data and log a world_change event when
    a Page-Hinkley test on it fires."""
    detect_every: PositiveInt = 16
    """Agent steps between two measurements of the prediction error (each over the last run.seq_len steps)."""
    detect_threshold: PositiveFloat = 25.0
    """Page-Hinkley threshold, in standard deviations of the error measured before the change."""
    detect_slack: NonNegativeFloat = 0.5
    """Page-Hinkley drift allowance per measurement, in the same standard deviations."""

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass(frozen=True)
class RunConfig:
    """Environment, budget, data flow and bookkeeping of one training run."""

    env: str = "gym:CartPole-v1"
    """Environment as SUITE:TASK, e.g. gym:CartPole-v1, dmc:cartpole-swingup, atari:Pong; several separated by
    commas train one multitask agent on all of them (TD-MPC2; see reverie.envs.multitask)."""
    obs: Literal["state", "pixels"] = "state"
    """Observation type: state vectors or 64x64 pixels."""
    steps: PositiveInt = 20_000
    """Environment steps to train for (counting every repeated action)."""
    seed: NonNegativeInt = 0
    """Seed of the environments, the networks and the replay sampler."""
    num_envs: PositiveInt = 1
    """Environments stepped together for collection (of each task, in a multitask run)."""
    parallel_envs: Optional[bool] = None
    """Step the collection environments in subprocesses, overlapped with the updates (None: for pixel
    observations, whose rendering would stall the learner, not for state vectors, where a process
    round trip costs more than the step)."""
    action_repeat: Optional[PositiveInt] = None
    """Times each action is repeated in the environment (None: the suite's default, atari 4, dmc 2, gym 1)."""
    time_limit: Optional[PositiveInt] = None
    """Episode length limit in agent steps (None: the environment's own)."""
    image_size: PositiveInt = 64
    """Side of the square pixel observations."""
    batch_size: PositiveInt = 16
    """Sequences per training batch."""
    seq_len: PositiveInt = 64
    """Steps per training sequence."""
    train_ratio: PositiveFloat = 512.0
    """Replayed steps per agent step: updates = agent steps * train_ratio / (batch_size * seq_len)."""
    prefill: NonNegativeInt = 1000
    """Agent steps of uniformly random actions collected before training starts."""
    replay_capacity: PositiveInt = 1_000_000
    """Replay capacity in steps."""
    replay_chunk: PositiveInt = 256
    """Steps per replay chunk file (a crash loses at most the chunk in progress)."""
    replay_eviction: Literal["fifo", "reservoir"] = "fifo"
    """What is dropped when the replay is full: the oldest data, or a reservoir sample."""
    eval_every: PositiveInt = 5000
    """Environment steps between evaluations."""
    eval_episodes: PositiveInt = 10
    """Episodes per evaluation (greedy policy)."""
    log_every: PositiveInt = 1000
    """Environment steps between training-metric log lines."""
    checkpoint_every: PositiveInt = 5000
    """Environment steps between checkpoints."""
    keep_checkpoints: NonNegativeInt = 0
    """Checkpoints kept for good at N evenly spaced points of the run (the first checkpoint at or after
    each of run.steps * i / N, i = 1..N), beside the two newest; ``reverie analyze`` reads them to show
    what the model learned when (0 keeps only the newest two)."""
    device: str = "cpu"
    """Torch device: cpu, cuda, cuda:1, ..."""
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    """Matmul precision of the networks: fp32, bf16 autocast (losses stay fp32), or auto: bf16 where the
    hardware multiplies bf16 natively (AMX or AVX512-BF16 CPUs, bf16 GPUs), fp32 elsewhere."""
    threads: Optional[PositiveInt] = None
    """Torch CPU threads (None: torch's default)."""
    compile: bool = False
    """torch.compile the update's hot parts (agents that declare ``compilable``: Dreamer's world-model
    loss and imagination rollout), paid once in the first update, which the run reports; eager where
    torch.compile does not work. Off by default: on the CPU measured the `default` update was 1.17x
    faster by median but paid minutes of compiling and an occasional slow update (BENCHMARKS.md)."""

    continual: ContinualConfig = field(default_factory=ContinualConfig)
    """Task sequences, regularisation against forgetting, streaming budget, change detection."""

    def __post_init__(self) -> None:
        check_ranges(self)


class AgentConfig(Protocol):
    """What every agent's config is: a frozen dataclass with the run's settings as its ``run`` section (and
    the agent's own sections beside it). The shell (driver, session, CLI, API) needs no more of it."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @property
    def run(self) -> RunConfig: ...
