"""Settings of a training run that every agent shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional


@dataclass(frozen=True)
class RunConfig:
    """Environment, budget, data flow and bookkeeping of one training run."""

    env: str = "gym:CartPole-v1"
    """Environment as SUITE:TASK, e.g. gym:CartPole-v1, dmc:cartpole-swingup, atari:Pong."""
    obs: Literal["state", "pixels"] = "state"
    """Observation type: state vectors or 64x64 pixels."""
    steps: int = 20_000
    """Environment steps to train for (counting every repeated action)."""
    seed: int = 0
    """Seed of the environments, the networks and the replay sampler."""
    num_envs: int = 1
    """Environments stepped together for collection."""
    parallel_envs: bool = False
    """Step the collection environments in subprocesses."""
    action_repeat: Optional[int] = None
    """Times each action is repeated in the environment (None: the suite's default, atari 4, dmc 2, gym 1)."""
    time_limit: Optional[int] = None
    """Episode length limit in agent steps (None: the environment's own)."""
    image_size: int = 64
    """Side of the square pixel observations."""
    batch_size: int = 16
    """Sequences per training batch."""
    seq_len: int = 64
    """Steps per training sequence."""
    train_ratio: float = 512.0
    """Replayed steps per agent step: updates = agent steps * train_ratio / (batch_size * seq_len)."""
    prefill: int = 1000
    """Agent steps of uniformly random actions collected before training starts."""
    replay_capacity: int = 1_000_000
    """Replay capacity in steps."""
    replay_chunk: int = 256
    """Steps per replay chunk file (a crash loses at most the chunk in progress)."""
    replay_eviction: Literal["fifo", "reservoir"] = "fifo"
    """What is dropped when the replay is full: the oldest data, or a reservoir sample."""
    eval_every: int = 5000
    """Environment steps between evaluations."""
    eval_episodes: int = 10
    """Episodes per evaluation (greedy policy)."""
    log_every: int = 1000
    """Environment steps between training-metric log lines."""
    checkpoint_every: int = 5000
    """Environment steps between checkpoints."""
    device: str = "cpu"
    """Torch device: cpu, cuda, cuda:1, ..."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """Matmul precision of the networks: fp32, or bf16 autocast (losses stay fp32)."""
    threads: Optional[int] = None
    """Torch CPU threads (None: torch's default)."""
