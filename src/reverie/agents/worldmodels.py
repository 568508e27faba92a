"""World Models (Ha & Schmidhuber, 2018): V (a VAE), M (an MDN-RNN), C (a linear controller evolved by CMA-ES).

One ``reverie train worldmodels`` run goes through the paper's stages, each
resumable (the stage and its progress are checkpointed with the weights):

1. random-policy rollouts into the replay on disk (the loop's collection,
   :class:`~reverie.agents.base.Staged`), each random action held for ``collect_hold`` steps;
2. ``vae``: train the VAE on the stored frames;
3. ``encode``: encode every stored frame to (mean, log-variance) of z, saved
   to ``stages/encoded.safetensors`` with the actions, rewards and ends;
4. ``mdn``: train the MDN-RNN on windows of sampled codes, the LSTM state
   carried from window to window (:mod:`reverie.agents.worldmodels_memory`);
5. ``controller``: evolve the linear controller (:class:`Controller`) with the
   ``cma`` package, candidates scored in the real environment (parallel
   subprocesses) or in the dream (every candidate's rollouts as one batch of
   the MDN-RNN, :class:`~reverie.envs.dream_env.DreamVectorEnv`, at
   ``dream_temperature``).

The defaults follow the reference implementation where it differs from what
is simplest (each a choice in :class:`WorldModelsConfig` and
:class:`~reverie.models.mdn_rnn.MDNRNNConfig`): held random actions in the
collection, the state carried through M's training, the episode's end read
from the LSTM output with its rare positives weighted and the dream ended at
a threshold, and the controller's output mapping of each game (presets).

The controller acts with the mean of the search distribution, and the loop
evaluates it in the real environment. CMA-ES's state is restored on
resumption by replaying its generations: the sampler draws from a generator
seeded by the generation, so asking again gives the same candidates, and the
stored fitnesses are told again.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from reverie.agents.base import (ActOutput, AgentBase, StageReport, StageWork, Staged, observe_step,
                                 precision_context)
from reverie.agents.worldmodels_memory import Carried, Windows, mdn_step
from reverie.agents.worldmodels_rollouts import dream_returns, real_returns
from reverie.config import ConfigError, NonNegativeFloat, PositiveFloat, PositiveInt, check_ranges
from reverie.models.mdn_rnn import MDNRNNConfig, WorldModelsModel
from reverie.models.vae import VAEConfig
from reverie.run_config import RunConfig
from reverie.specs import ActionSpec, ArraySpec

__all__ = ["Controller", "Evolution", "WorldModels", "WorldModelsConfig", "controller_input", "generation_env_seeds"]

STAGES = ("vae", "encode", "mdn", "controller", "done")
ENCODED = "encoded.safetensors"


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


def generation_env_seeds(seed: int, generation: int, population: int, rollouts: int, num_envs: int) -> list[int]:
    """Seeds of the ``num_envs`` real environments that score generation ``generation``'s candidates: apart
    from the collection's and every other generation's."""
    return [seed + 50_000 + generation * population * rollouts + i for i in range(num_envs)]


def controller_input(features: torch.Tensor, which: str, z_size: int, hidden: int) -> torch.Tensor:
    """``[z, c, h]``, ``[z, h]`` or ``z`` (``which``) out of World Models features ``[..., z (+ c) + h]``."""
    if which == "z":
        return features[..., :z_size]
    if which == "zh":
        return torch.cat([features[..., :z_size], features[..., -hidden:]], -1)
    if features.shape[-1] != z_size + 2 * hidden:
        raise ConfigError("controller_input='zch' needs a model built with features='zch'")
    return features


class Controller:
    """The linear controller on N candidates at once: parameters ``[N, size]`` -> actions ``[N, A]``.

    ``size = O * F (+ O with a bias)`` for ``O`` outputs on ``F`` inputs: one per action dimension (the
    argmax over them for discrete actions), or a single one cut into ``len(bins)`` equal bins over
    [-1, 1] of its tanh, bin k playing discrete action ``bins[k]``. Continuous actions are tanh of the
    outputs, those in ``clip_dims`` clipped at zero (in model space ``2 max(tanh, 0) - 1``, so a zero
    output is the lowest action the environment takes).
    """

    def __init__(self, in_size: int, act_spec: ActionSpec, bias: bool = True, bins: tuple[int, ...] = (),
                 clip_dims: tuple[int, ...] = ()):
        self.in_size, self.act_spec, self.bias = in_size, act_spec, bias
        self.bins = tuple(bins) if act_spec.discrete else ()
        self.clip_dims = [] if act_spec.discrete else list(clip_dims)
        self.outputs = 1 if self.bins else act_spec.size
        self.size = self.outputs * in_size + (self.outputs if bias else 0)

    def act(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Model-space actions ``[N, A]`` (one-hot for discrete) for inputs ``x [N, F]``."""
        O, A = self.outputs, self.act_spec.size
        W = params[:, :O * self.in_size].reshape(-1, O, self.in_size)
        out = torch.einsum("nof,nf->no", W, x)
        if self.bias:
            out = out + params[:, O * self.in_size:]
        if self.act_spec.discrete:
            if self.bins:
                k = ((torch.tanh(out[:, 0]) + 1.0) * (len(self.bins) / 2.0)).long().clamp(0, len(self.bins) - 1)
                index = torch.as_tensor(self.bins, device=x.device)[k]
            else:
                index = out.argmax(-1)
            return torch.nn.functional.one_hot(index, A).to(x.dtype)
        action = torch.tanh(out)
        if self.clip_dims:
            action[:, self.clip_dims] = 2.0 * action[:, self.clip_dims].clamp(min=0.0) - 1.0
        return action


class Evolution:
    """CMA-ES (the ``cma`` package) that maximises, restorable from its fitness history alone.

    The sampler draws generation g's candidates from a generator seeded by (seed, g), so replaying
    the history (ask again, tell the stored fitnesses) rebuilds the exact state: nothing of ``cma``
    is pickled.
    """

    def __init__(self, size: int, population: int, sigma0: float, seed: int):
        self.size, self.population, self.sigma0, self.seed = size, population, sigma0, seed
        self.restore(np.zeros((0, population)))

    def _normal(self, *shape: int) -> np.ndarray:
        return self._rng.standard_normal(shape)

    def restore(self, fitness: np.ndarray) -> None:
        """Start over and replay the generations whose fitnesses are ``fitness [G, population]``."""
        import cma

        self._rng = np.random.default_rng([self.seed, 0])
        self.es = cma.CMAEvolutionStrategy(np.zeros(self.size), self.sigma0,
                                           {"popsize": self.population, "seed": self.seed + 1, "verbose": -9,
                                            "randn": self._normal})
        self.fitness = np.zeros((0, self.population))
        self._asked: np.ndarray | None = None
        for row in np.asarray(fitness, np.float64):
            self.ask()
            self.tell(row)

    @property
    def generation(self) -> int:
        return len(self.fitness)

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.es.mean)

    @property
    def sigma(self) -> float:
        return float(self.es.sigma)

    def ask(self) -> np.ndarray:
        """This generation's candidates ``[population, size]`` (the same ones when asked again)."""
        if self._asked is None:
            self._rng = np.random.default_rng([self.seed, 1, self.generation])
            self._asked = np.stack(self.es.ask())
        return self._asked

    def tell(self, fitness: np.ndarray) -> None:
        """Fitnesses ``[population]`` of the asked candidates (larger is better)."""
        fitness = np.asarray(fitness, np.float64).reshape(self.population)
        self.es.tell(list(self.ask()), list(-fitness))
        self.fitness = np.concatenate([self.fitness, fitness[None]])
        self._asked = None


class WorldModels(AgentBase):
    """The World Models agent (see the module docstring)."""

    name = "worldmodels"

    def __init__(self, obs_spec: Mapping[str, ArraySpec], act_spec: ActionSpec, cfg: WorldModelsConfig,
                 device: str | torch.device = "cpu"):
        super().__init__(obs_spec, act_spec, device)
        cfg.check_actions(act_spec)
        self.cfg = cfg
        self.wm = WorldModelsModel(obs_spec, act_spec, cfg.vae, cfg.rnn,
                                   features="zch" if cfg.controller_input == "zch" else "zh").to(self.device)
        self.model = self.wm
        self.modules = {"vae": self.wm.vae, "rnn": self.wm.rnn}
        self.optimizers = {"vae_opt": torch.optim.Adam(self.wm.vae.parameters(), lr=cfg.vae.lr),
                           "rnn_opt": torch.optim.Adam(self.wm.rnn.parameters(), lr=cfg.rnn.lr)}
        self.schedule = Staged(hold=cfg.collect_hold)
        feat = cfg.vae.z_size + cfg.rnn.hidden * {"zch": 2, "zh": 1, "z": 0}[cfg.controller_input]
        self.controller = Controller(feat, act_spec, cfg.controller_bias, cfg.action_bins, cfg.clip_dims)
        self.params = torch.zeros(self.controller.size, device=self.device)
        self.stage, self.done_updates = 0, 0
        self.evolution = Evolution(self.controller.size, cfg.population, cfg.sigma0, cfg.run.seed)
        self._frames: torch.Tensor | None = None
        self._encoded: dict[str, np.ndarray] | None = None
        self._windows: Windows | None = None
        self._carried: Carried | None = None

    # -- acting ------------------------------------------------------------------------------
    def init_state(self, batch: int):
        return None

    def controller_input(self, features: torch.Tensor) -> torch.Tensor:
        """The controller's input ``[..., F]`` out of the model's features (``[z, h]`` or ``[z, c, h]``)."""
        return controller_input(features, self.cfg.controller_input, self.cfg.vae.z_size, self.cfg.rnn.hidden)

    @torch.no_grad()
    def act(self, step: dict[str, np.ndarray], state: Any, explore: bool) -> ActOutput:
        state = observe_step(self.wm, step, state, self.device)
        x = self.controller_input(self.wm.features(state))
        action = self.controller.act(self.params.expand(x.shape[0], -1), x)
        env_action = (action.argmax(-1).cpu().numpy().astype(np.int64) if self.act_spec.discrete
                      else action.cpu().numpy().astype(np.float32))
        return ActOutput(env_action, action.cpu().numpy().astype(np.float32), state, {})

    # -- the stages --------------------------------------------------------------------------
    def advance(self, work: StageWork) -> StageReport:
        name = STAGES[self.stage]
        if name == "vae":
            return self._train_units("vae", work, self.cfg.vae_updates, self._vae_update)
        if name == "encode":
            return self._encode(work)
        if name == "mdn":
            return self._train_units("mdn", work, self.cfg.rnn_updates, self._mdn_update)
        if name == "controller":
            return self._generation(work)
        return StageReport("done", {}, done=True)

    def _next_stage(self) -> None:
        self.stage += 1
        self.done_updates = 0

    def _train_units(self, name: str, work: StageWork, total: int, update) -> StageReport:
        rng = np.random.default_rng([self.cfg.run.seed, self.stage, self.done_updates])
        if self._windows is not None:    # every unit starts its streams anew, so a resumed unit is the same
            self._windows.reset()
        metrics: list[dict[str, float]] = []
        for _ in range(min(self.cfg.unit_updates, total - self.done_updates)):
            metrics.append(update(work, rng))
            self.done_updates += 1
        out = {k: float(np.mean([m[k] for m in metrics])) for k in metrics[-1]}
        out[f"{name}/updates"] = self.done_updates
        if self.done_updates >= total:
            self._next_stage()
        return StageReport(f"stage {STAGES.index(name) + 2}/5 ({name})", out)

    def _vae_update(self, work: StageWork, rng: np.random.Generator) -> dict[str, float]:
        if self._frames is None:
            self._frames = torch.as_tensor(np.concatenate([ch[self.wm.key] for ch in work.replay.chunks()]))
        index = torch.as_tensor(rng.integers(0, len(self._frames), self.cfg.vae.batch_size))
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        with precision_context(self.cfg.run.precision, self.device):   # bf16 convolutions where asked
            loss, metrics = self.wm.vae.loss(self._frames[index].to(self.device), gen)
        opt = self.optimizers["vae_opt"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return metrics

    @torch.no_grad()
    def _encode(self, work: StageWork) -> StageReport:
        self._frames = None
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("mean", "logvar", "action", "reward", "is_first",
                                                              "is_terminal", "chunk")}
        firsts = []
        for i, ch in enumerate(work.replay.chunks()):
            image = torch.as_tensor(ch[self.wm.key])
            stats = [self.wm.vae.encode(image[j:j + 256].to(self.device)) for j in range(0, len(image), 256)]
            parts["mean"].append(torch.cat([m for m, _ in stats]).cpu().numpy())
            parts["logvar"].append(torch.cat([v for _, v in stats]).cpu().numpy())
            parts["action"].append(np.asarray(ch["action"], np.float32))
            parts["reward"].append(np.asarray(ch["reward"], np.float32))
            parts["is_first"].append(np.asarray(ch["is_first"], np.uint8))
            parts["is_terminal"].append(np.asarray(ch["is_terminal"], np.uint8))
            parts["chunk"].append(np.full(len(image), i, np.int64))
            firsts.append(np.asarray(ch[self.wm.key])[np.asarray(ch["is_first"], bool)])
        data = {k: np.ascontiguousarray(np.concatenate(v)) for k, v in parts.items()}
        starts = np.concatenate(firsts)[:256]
        data["starts"] = np.ascontiguousarray(starts if len(starts) else np.asarray(next(work.replay.chunks())
                                                                                    [self.wm.key][:1]))
        path = Path(work.directory) / ENCODED
        tmp = path.with_suffix(".tmp")
        save_file(data, str(tmp))
        tmp.replace(path)
        self._encoded = data
        self._next_stage()
        return StageReport("stage 3/5 (encode)", {"encode/frames": float(len(data["mean"])),
                                                  "encode/starts": float(len(data["starts"]))})

    def encoded(self, work: StageWork) -> dict[str, np.ndarray]:
        if self._encoded is None:
            path = Path(work.directory) / ENCODED
            if not path.exists():
                raise ConfigError(f"{path} is missing; the run folder lost its encoded data, so stage 3 must "
                                  "be run again: start a new run folder")
            self._encoded = load_file(str(path))
        return self._encoded

    def _mdn_update(self, work: StageWork, rng: np.random.Generator) -> dict[str, float]:
        data = self.encoded(work)
        if self._windows is None:
            self._windows = Windows(data["chunk"], data["is_first"], self.cfg.run.seq_len, self.cfg.rnn.batch_size,
                                    self.cfg.rnn_carry)
        metrics, self._carried = mdn_step(self.wm.rnn, self.optimizers["rnn_opt"], data,
                                          self._windows.next(rng), self._carried, rng, self.device)
        return metrics

    # -- CMA-ES ----------------------------------------------------------------------------------
    def _generation(self, work: StageWork) -> StageReport:
        cfg = self.cfg
        es = self.evolution
        g = es.generation
        params = torch.as_tensor(es.ask(), dtype=torch.float32, device=self.device)
        steps = 0
        if cfg.evolve_in == "dream":
            returns = dream_returns(self.wm, self.controller, self.controller_input, params, cfg.rollouts,
                                    self.encoded(work)["starts"], cfg.dream_temperature, cfg.dream_max_steps,
                                    seed=cfg.run.seed * 1_000_003 + g)
        else:
            seeds = generation_env_seeds(cfg.run.seed, g, cfg.population, cfg.rollouts, work.num_envs)
            returns, steps = real_returns(self.wm, self.controller, self.controller_input, params, cfg.rollouts,
                                          [functools.partial(work.make_env, s) for s in seeds], work.parallel)
        fitness = returns.mean(1)
        es.tell(fitness)
        self.params = torch.as_tensor(es.mean, dtype=torch.float32, device=self.device)
        done = es.generation >= cfg.generations
        if done:
            self._next_stage()
        metrics = {"cma/generation": float(g + 1), "cma/best": float(fitness.max()),
                   "cma/mean": float(fitness.mean()), "cma/worst": float(fitness.min()),
                   "cma/sigma": float(es.sigma), "cma/real_env_steps": float(steps)}
        return StageReport(f"stage 5/5 (controller in the {cfg.evolve_in} environment)", metrics, env_steps=steps,
                           evaluate=done or (g + 1) % cfg.eval_every_generations == 0, done=done)

    # -- checkpoints -----------------------------------------------------------------------------
    def tensors(self) -> dict[str, dict[str, Any]]:
        return {**super().tensors(),
                "progress": {"stage": self.stage, "done_updates": self.done_updates},
                "controller": {"params": self.params.detach().cpu(),
                               "fitness": torch.as_tensor(self.evolution.fitness, dtype=torch.float64)}}

    def load_tensors(self, tensors: dict[str, dict[str, Any]]) -> None:
        super().load_tensors(tensors)
        self.stage = int(tensors["progress"]["stage"])
        self.done_updates = int(tensors["progress"]["done_updates"])
        self.params = tensors["controller"]["params"].to(self.device, torch.float32)
        self.evolution.restore(tensors["controller"]["fitness"].cpu().numpy().reshape(-1, self.cfg.population))
