"""What defines a World Models run (:class:`WorldModelsConfig`): V's and M's sizes and training, the
controller's inputs and outputs, CMA-ES, the dream, and the rounds of the paper's iterative training
procedure (``iterations``; :mod:`reverie.agents.worldmodels`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from reverie.config import (ConfigError, Fraction, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt,
                            check_ranges)
from reverie.models.mdn_rnn import MDNRNNConfig
from reverie.models.vae import VAEConfig
from reverie.run_config import RunConfig
from reverie.specs import ActionSpec

__all__ = ["WorldModelsConfig"]


def _wm_run() -> RunConfig:
    return RunConfig(env="gym:CarRacing-v3", obs="pixels", prefill=5000, num_envs=2, seq_len=32,
                     replay_chunk=500, eval_episodes=5, eval_every=10**9, checkpoint_every=2000, threads=1)


@dataclass(frozen=True)
class WorldModelsConfig:
    """Everything that defines a World Models run (the random collection is ``run.prefill`` agent steps)."""

    vae: VAEConfig = field(default_factory=VAEConfig)
    """The vision model (the paper: z = 32)."""
    rnn: MDNRNNConfig = field(default_factory=MDNRNNConfig)
    """The memory model (the paper: 256 LSTM units, 5 Gaussians)."""
    vae_updates: PositiveInt = 3000
    """Gradient steps of the VAE."""
    rnn_updates: PositiveInt = 3000
    """Gradient steps of the MDN-RNN (on run.seq_len-step windows)."""
    rnn_carry: bool = True
    """Carry M's LSTM state from each window into the next along the stored streams (the reference); false:
    every window from a zero state, so M never sees a state more than run.seq_len steps into an episode."""
    collect_hold: tuple[int, int] = (1, 10)
    """Agent steps each random action of the collection is held for, drawn uniformly from this inclusive
    range (the reference: 1 to 10; (1, 1) draws a new action every step)."""
    unit_updates: PositiveInt = 100
    """Gradient steps per checkpointed (and logged) unit of the vae and mdn stages."""
    controller_input: Literal["zch", "zh", "z"] = "zh"
    """What the controller reads: [z, h] (the paper's CarRacing agent), [z, c, h] (its take-cover agent) or
    z alone (its ablation)."""
    controller_bias: bool = True
    """Whether the controller adds a bias (the reference's CarRacing controller does, its take-cover one not)."""
    action_bins: tuple[int, ...] = ()
    """Discrete actions: () = one output per action and the argmax; else one tanh output cut into equal bins
    over [-1, 1], bin k playing action action_bins[k] (take-cover: (2, 0, 1) = left, a dead zone of no-op,
    right, as the reference's thresholds at -1/3 and 1/3)."""
    clip_dims: tuple[int, ...] = ()
    """Continuous actions whose tanh output is clipped at zero, so that a zero output plays the lowest
    action (CarRacing's brake, (2,), as the reference clips it to [0, 1]); the others map [-1, 1] onto
    the environment's [low, high]."""
    evolve_in: Literal["real", "dream"] = "real"
    """Where candidates are scored: the real environment or the MDN-RNN's dream."""
    population: PositiveInt = 16
    """CMA-ES population (the paper: 64)."""
    rollouts: PositiveInt = 2
    """Episodes per candidate, averaged (the paper: 16)."""
    generations: PositiveInt = 50
    """CMA-ES generations."""
    sigma0: PositiveFloat = 0.1
    """Initial step size of CMA-ES around zero weights."""
    dream_temperature: NonNegativeFloat = 1.15
    """tau of the dream when evolve_in=dream (the paper's take-cover agent: 1.15)."""
    dream_max_steps: PositiveInt = 1000
    """Longest dream episode."""
    eval_every_generations: PositiveInt = 10
    """Generations between real-environment evaluations of the controller."""
    iterations: PositiveInt = 1
    """Rounds of the paper's iterative training procedure: 1 is the single pass (random data, V, M, C); each
    further round collects round_steps agent steps with the controller acting (explore mixed in), encodes
    all data so far, trains M on it for rnn_updates more steps (V first, for round_vae_updates steps) and
    evolves C again, for generations generations from the controller it had."""
    round_steps: PositiveInt | None = None
    """Agent steps collected in each round after the first, each a step of all run.num_envs environments
    (None: as many as run.prefill)."""
    explore: Fraction = 0.1
    """Probability that, at an agent step of a later round's collection, an environment not already playing
    a random action starts one in place of the controller's, held for collect_hold steps."""
    round_vae_updates: NonNegativeInt = 0
    """Gradient steps of the VAE on all data at the start of each later round (0: V stays as the first
    round trained it, and only M and C are trained again)."""
    run: RunConfig = field(default_factory=_wm_run)
    """Environment, budget and bookkeeping."""

    def __post_init__(self):
        check_ranges(self)
        low, high = self.collect_hold
        if not 1 <= low <= high:
            raise ConfigError(f"collect_hold must be (low, high) with 1 <= low <= high, got {self.collect_hold}")

    def check_actions(self, act_spec: ActionSpec) -> None:
        """Refuse, in one sentence, ``action_bins`` or ``clip_dims`` that do not fit ``act_spec``."""
        A = act_spec.size
        if act_spec.discrete and self.action_bins and sorted(self.action_bins) != list(range(A)):
            raise ConfigError(f"action_bins={self.action_bins} must name each of the environment's {A} discrete "
                              f"actions once (e.g. action_bins={tuple(range(A))}), or be () for the argmax")
        if not act_spec.discrete and any(not 0 <= d < A for d in self.clip_dims):
            raise ConfigError(f"clip_dims={self.clip_dims} names an action dimension the environment's {A} do not "
                              "have; set clip_dims=() (or the dimensions whose zero output should be the lowest)")
