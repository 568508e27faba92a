"""World Models (Ha & Schmidhuber, 2018): V (a VAE), M (an MDN-RNN), C (a linear controller evolved by CMA-ES).

One ``reverie train worldmodels`` run goes through the paper's stages, each
resumable (the stage and its progress are checkpointed with the weights):

1. ``collect``: random-policy rollouts into the replay on disk (the loop's collection,
   :class:`~reverie.agents.base.Staged`), each random action held for ``collect_hold`` steps;
2. ``vae``: train the VAE on the stored frames;
3. ``encode``: encode every stored frame to (mean, log-variance) of z, saved
   to ``stages/encoded.safetensors`` with the actions, rewards and ends;
4. ``mdn``: train the MDN-RNN on windows of sampled codes, the LSTM state
   carried from window to window (:mod:`reverie.agents.worldmodels_memory`);
5. ``controller``: evolve the linear controller
   (:class:`~reverie.agents.worldmodels_controller.Controller`) with the
   ``cma`` package, candidates scored in the real environment (parallel
   subprocesses) or in the dream (every candidate's rollouts as one batch of
   the MDN-RNN, :class:`~reverie.envs.dream_env.DreamVectorEnv`, at
   ``dream_temperature``).

With ``iterations=N`` the paper's iterative training procedure follows the
first pass: N - 1 more rounds, each of which asks the loop for
``round_steps`` more agent steps collected with the controller acting and
held random actions mixed in at rate ``explore`` (a
:class:`~reverie.agents.base.Collection`), then (optionally V,) encodes all
data so far, trains M further on it and evolves C again from the controller
it had. The last unit of each round logs ``round/*``: the data size, M's
loss and the controller's return in the dream; its return in the real
environment is the evaluation the loop makes then (``eval/return``).

The defaults follow the reference implementation where it differs from what
is simplest (each a choice in :class:`WorldModelsConfig` and
:class:`~reverie.models.mdn_rnn.MDNRNNConfig`): held random actions in the
collection, the state carried through M's training, the episode's end read
from the LSTM output with its rare positives weighted and the dream ended at
a threshold, and the controller's output mapping of each game (presets).

The controller acts with the mean of the search distribution, and the loop
evaluates it in the real environment. CMA-ES's state is restored on
resumption by replaying its generations: the sampler draws from a generator
seeded by the round and the generation, so asking again gives the same
candidates, and the stored fitnesses are told again.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from reverie.agents.base import (ActOutput, AgentBase, Collection, DreamPolicy, StageReport, StageWork, Staged,
                                 observe_step, precision_context, to_env_action)
from reverie.agents.worldmodels_config import WorldModelsConfig
from reverie.agents.worldmodels_controller import Controller, Evolution, controller_input, generation_env_seeds
from reverie.agents.worldmodels_memory import Carried, Windows, mdn_step
from reverie.agents.worldmodels_rollouts import dream_returns, real_returns
from reverie.config import ConfigError
from reverie.models.mdn_rnn import WorldModelsModel
from reverie.specs import ActionSpec, ArraySpec

__all__ = ["Controller", "Evolution", "STAGES", "WorldModels", "WorldModelsConfig", "controller_input",
           "generation_env_seeds"]

STAGES = ("collect", "vae", "encode", "mdn", "controller", "done")
ENCODED = "encoded.safetensors"


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
        # the first round starts at V: the loop collected its random data before the stages
        self.stage, self.done_updates, self.round = STAGES.index("vae"), 0, 0
        self.mdn_loss = float("nan")      # M's loss in the last unit of its training (a round's summary)
        self.evolution = self._evolution(None)
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
        return ActOutput(to_env_action(action, self.act_spec), action.cpu().numpy().astype(np.float32), state, {})

    def dream_policy(self) -> DreamPolicy | None:
        """The controller on the dream's features, once a generation has set its parameters."""
        if self.round == 0 and self.evolution.generation == 0:
            return None

        @torch.no_grad()
        def policy(features: np.ndarray) -> np.ndarray:
            x = self.controller_input(torch.as_tensor(features, device=self.device))
            action = self.controller.act(self.params.expand(x.shape[0], -1), x)
            return to_env_action(action, self.act_spec)
        return policy

    # -- the stages --------------------------------------------------------------------------
    def advance(self, work: StageWork) -> StageReport:
        if STAGES[self.stage] == "collect":
            until = self.cfg.run.prefill + self.round * (self.cfg.round_steps or self.cfg.run.prefill)
            if work.agent_steps < until:     # the loop collects with the controller, then calls again
                return StageReport(self._label("collect"), {"collect/until_agent_steps": until},
                                   collect=Collection(until, self.cfg.explore))
            self._next_stage()
            if not self.cfg.round_vae_updates:
                self._next_stage()           # V stays as it is
        name = STAGES[self.stage]
        if name == "vae":
            total = self.cfg.round_vae_updates if self.round else self.cfg.vae_updates
            return self._train_units("vae", work, total, self._vae_update)
        if name == "encode":
            return self._encode(work)
        if name == "mdn":
            return self._train_units("mdn", work, self.cfg.rnn_updates, self._mdn_update)
        if name == "controller":
            return self._generation(work)
        return StageReport("done", {}, done=True)

    def _label(self, name: str, what: str | None = None) -> str:
        """How a stage's reports are shown: ``stage 2/5 (vae)``, within a round when there are several."""
        stage = f"stage {STAGES.index(name) + 1}/5 ({what or name})"
        return stage if self.cfg.iterations == 1 else f"round {self.round + 1}/{self.cfg.iterations}, {stage}"

    def _next_stage(self) -> None:
        self.stage += 1
        self.done_updates = 0

    def _evolution(self, start: np.ndarray | None) -> Evolution:
        """The CMA-ES search of the current round, from ``start`` (None: zeros), its draws the round's own."""
        return Evolution(self.controller.size, self.cfg.population, self.cfg.sigma0,
                         self.cfg.run.seed + 1_000_003 * self.round, start)

    def _train_units(self, name: str, work: StageWork, total: int,
                     update: Callable[[StageWork, np.random.Generator], dict[str, float]]) -> StageReport:
        # keyed by the stage's place after the collection (vae 0, mdn 2), and by the round after the first
        key = [self.cfg.run.seed, self.stage - 1, self.done_updates] + ([self.round] if self.round else [])
        rng = np.random.default_rng(key)
        if self._windows is not None:    # every unit starts its streams anew, so a resumed unit is the same
            self._windows.reset()
        metrics: list[dict[str, float]] = []
        for _ in range(min(self.cfg.unit_updates, total - self.done_updates)):
            metrics.append(update(work, rng))
            self.done_updates += 1
        out = {k: float(np.mean([m[k] for m in metrics])) for k in metrics[-1]}
        out[f"{name}/updates"] = self.done_updates
        if name == "mdn":
            self.mdn_loss = out["mdn/loss"]
        if self.done_updates >= total:
            self._next_stage()
        return StageReport(self._label(name), out)

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
        self._windows, self._carried = None, None      # M's windows are those of the data encoded now
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
        return StageReport(self._label("encode"), {"encode/frames": float(len(data["mean"])),
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
        total = self.round * cfg.generations + g      # generations of every round so far: their own seeds
        params = torch.as_tensor(es.ask(), dtype=torch.float32, device=self.device)
        steps = 0
        if cfg.evolve_in == "dream":
            returns = dream_returns(self.wm, self.controller, self.controller_input, params, cfg.rollouts,
                                    self.encoded(work)["starts"], cfg.dream_temperature, cfg.dream_max_steps,
                                    seed=cfg.run.seed * 1_000_003 + total)
        else:
            seeds = generation_env_seeds(cfg.run.seed, total, cfg.population, cfg.rollouts, work.num_envs)
            returns, steps = real_returns(self.wm, self.controller, self.controller_input, params, cfg.rollouts,
                                          [functools.partial(work.make_env, s) for s in seeds], work.parallel)
        fitness = returns.mean(1)
        es.tell(fitness)
        self.params = torch.as_tensor(es.mean, dtype=torch.float32, device=self.device)
        metrics = {"cma/generation": float(g + 1), "cma/best": float(fitness.max()),
                   "cma/mean": float(fitness.mean()), "cma/worst": float(fitness.min()),
                   "cma/sigma": float(es.sigma), "cma/real_env_steps": float(steps)}
        label = self._label("controller", f"controller in the {cfg.evolve_in} environment")
        round_end = es.generation >= cfg.generations
        if round_end and cfg.iterations > 1:
            metrics.update(self._round_summary(work))
        done = round_end and self.round + 1 >= cfg.iterations
        if done:
            self._next_stage()
        elif round_end:                  # the next round: collect with this controller, evolve it further
            self.round += 1
            self.stage, self.done_updates = STAGES.index("collect"), 0
            self.evolution = self._evolution(es.mean)
        return StageReport(label, metrics, env_steps=steps,
                           evaluate=round_end or (g + 1) % cfg.eval_every_generations == 0, done=done)

    def _round_summary(self, work: StageWork) -> dict[str, float]:
        """What a round ends with: its data, M's last loss, and the controller's mean return over
        ``run.eval_episodes`` dreams (its real return is the loop's evaluation that follows)."""
        cfg = self.cfg
        dream = dream_returns(self.wm, self.controller, self.controller_input, self.params[None],
                              cfg.run.eval_episodes, self.encoded(work)["starts"], cfg.dream_temperature,
                              cfg.dream_max_steps, seed=cfg.run.seed * 1_000_003 + 999_983 * (self.round + 1))
        return {"round/index": float(self.round + 1), "round/replay_steps": float(len(work.replay)),
                "round/agent_steps": float(work.agent_steps), "round/mdn_loss": self.mdn_loss,
                "round/dream_return": float(dream.mean())}

    # -- checkpoints -----------------------------------------------------------------------------
    def tensors(self) -> dict[str, dict[str, Any]]:
        return {**super().tensors(),
                "progress": {"stage": self.stage, "done_updates": self.done_updates, "round": self.round,
                             "mdn_loss": self.mdn_loss},
                "controller": {"params": self.params.detach().cpu(),
                               "fitness": torch.as_tensor(self.evolution.fitness, dtype=torch.float64),
                               "start": torch.as_tensor(self.evolution.start, dtype=torch.float64)}}

    def load_tensors(self, tensors: dict[str, dict[str, Any]]) -> None:
        super().load_tensors(tensors)
        progress, controller = tensors["progress"], tensors["controller"]
        # checkpoints from before the rounds counted the stages from vae, with no collect stage
        self.stage = int(progress["stage"]) + (0 if "round" in progress else 1)
        self.done_updates = int(progress["done_updates"])
        self.round = int(progress.get("round", 0))
        self.mdn_loss = float(progress.get("mdn_loss", float("nan")))
        self.params = controller["params"].to(self.device, torch.float32)
        start = controller["start"].cpu().numpy() if "start" in controller else None
        self.evolution = self._evolution(start)
        self.evolution.restore(controller["fitness"].cpu().numpy().reshape(-1, self.cfg.population))
