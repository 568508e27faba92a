"""LAPO-style latent actions (Schmidt and Jiang, ICLR 2024; Genie, Bruce et al., 2024): a playable world learned
from observations alone.

One ``reverie train lapo`` run is a staged pipeline (:class:`~reverie.agents.base.Staged`):

1. ``run.prefill`` agent steps of uniformly random actions into the replay (the driver's collection), or a
   dataset in its place (``reverie train lapo --dataset ...``: the stages read the replay alone,
   ``Staged(offline=True)``). The replay records the true actions; the model never reads them.
2. ``updates`` Adam steps on windows of ``model.context + 1`` consecutive frames of one episode
   (:func:`windows_of`; a window that starts before its episode repeats the episode's first frame, as the
   dream does), ``unit_updates`` of them per checkpointed unit, batches drawn by a generator seeded by
   (seed, unit), so a killed run resumes at the unit it was in and replays it exactly. A training batch is
   ``{"frames": ...}`` and nothing else (:meth:`LatentAction.training_batch`); the model refuses any other key.
   After every step, codes that fell out of use restart on a latent of the batch
   (:meth:`~reverie.models.latent_action.VectorQuantizer.restart_unused`).

The newest ``holdout`` of the windows (mostly other episodes than the trained ones) is never trained on: the
evaluation (``benchmarks/lapo_eval.py``, :func:`~reverie.analysis.latent_actions.held_out_report`) scores the
finished model on them, and that is where the true actions come back.

The model (:mod:`reverie.models.latent_action`) learns no policy: the agent acts uniformly at random, as the
data were collected. Its use is the dream driven by codes: ``reverie play`` shows the codes as the buttons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from reverie.agents.base import ActOutput, AgentBase, StageReport, StageWork, Staged, gradient_step, precision_context
from reverie.config import ConfigError, Fraction, PositiveFloat, PositiveInt, check_ranges
from reverie.models.latent_action import LatentActionModel, LatentActionModelConfig
from reverie.run_config import RunConfig
from reverie.specs import ActionSpec, ArraySpec

__all__ = ["LatentAction", "LatentActionConfig", "Windows", "windows_of"]


def _lapo_run() -> RunConfig:
    return RunConfig(env="minatar:breakout", obs="pixels", prefill=50_000, batch_size=64, seq_len=2,
                     replay_chunk=1000, parallel_envs=False, eval_episodes=1, eval_every=10**9,
                     checkpoint_every=10**9, threads=1)


@dataclass(frozen=True)
class LatentActionConfig:
    """Everything that defines a latent-action run (the data set is ``run.prefill`` random agent steps; a batch is
    ``run.batch_size`` windows)."""

    model: LatentActionModelConfig = field(default_factory=LatentActionModelConfig)
    """The IDM, the quantiser and the forward models."""
    updates: PositiveInt = 4000
    """Adam steps in all."""
    unit_updates: PositiveInt = 500
    """Adam steps per checkpointed unit."""
    lr: PositiveFloat = 1e-3
    """Adam's learning rate."""
    grad_clip: PositiveFloat = 100.0
    """Gradient-norm clip."""
    holdout: Fraction = 0.1
    """The newest fraction of the windows, never trained on, that the evaluation scores."""
    eval_windows: PositiveInt = 5000
    """At most this many held-out windows scored (and training windows to fit the code -> action mapping)."""
    restart_decay: Fraction = 0.9
    """Decay of each code's moving share of the latents (see ``VectorQuantizer.restart_unused``)."""
    restart_share: Fraction = 0.1
    """A code whose moving share falls below this fraction of 1 / K restarts on a latent of the batch (0: never)."""
    run: RunConfig = field(default_factory=_lapo_run)
    """Environment, data set size, batch size and bookkeeping."""

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass(frozen=True)
class Windows:
    """Every training window: frames ``[F, H, W, C]`` once each; per window the rows of its ``L + 1`` frames
    ``[N, L + 1]`` (oldest first, the last the one to predict) and the true action into its last frame
    ``[N]`` (discrete actions; -1 for continuous ones), which only the evaluation reads."""

    frames: torch.Tensor
    rows: torch.Tensor
    actions: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


def windows_of(chunks: Iterable[Mapping[str, np.ndarray]], key: str, context: int, discrete: bool) -> Windows:
    """The windows in ``chunks`` (a replay's ``chunks(overlap=True)``, ``{key: [L, ...]}`` each): one per step t
    that does not start an episode, rows ``t - context .. t``, where a row before the episode's first step (or
    the chunk's) is that first step. ``discrete``: whether the stored (one-hot) actions are discrete."""
    frames, rows, actions = [], [], []
    base = 0
    offsets = np.arange(-context, 1)
    for chunk in chunks:
        first = np.asarray(chunk["is_first"], bool)
        n = len(first)
        start = np.maximum.accumulate(np.where(first, np.arange(n), 0))      # the first step of each step's episode
        t = np.flatnonzero(~first[1:]) + 1
        index = np.maximum(t[:, None] + offsets, start[t][:, None])          # [M, L + 1]
        rows.append(base + index)
        actions.append(np.asarray(chunk["action"])[t].argmax(-1) if discrete else np.full(len(t), -1))
        frames.append(np.asarray(chunk[key]))
        base += n
    if not rows or not sum(len(r) for r in rows):
        raise ConfigError("the replay holds no transition (every stored step starts an episode); raise run.prefill")
    return Windows(torch.as_tensor(np.concatenate(frames)), torch.as_tensor(np.concatenate(rows)),
                   np.concatenate(actions).astype(np.int64))


class LatentAction(AgentBase):
    """The latent-action agent (see the module docstring)."""

    name = "lapo"

    def __init__(self, obs_spec: Mapping[str, ArraySpec], act_spec: ActionSpec, cfg: LatentActionConfig,
                 device: str | torch.device = "cpu"):
        super().__init__(obs_spec, act_spec, device)
        self.cfg = cfg
        self.lam = LatentActionModel(obs_spec, cfg.model).to(self.device)
        self.model = self.lam
        self.modules = {"lam": self.lam}
        self.optimizers = {"opt": torch.optim.Adam(self.lam.parameters(), lr=cfg.lr)}
        self.schedule = Staged(offline=True)   # the units read the replay alone: a dataset may fill it
        self.scales = {"predict": 1.0, "codebook": 1.0, "commitment": cfg.model.beta, "baseline": 1.0}
        self.unit = 0
        self.gradient_steps = 0
        self._data: Windows | None = None
        self._rng = np.random.default_rng([cfg.run.seed, 7])

    # -- acting: the model learns no policy -------------------------------------------------------
    def init_state(self, batch: int) -> None:
        return None

    def act(self, step: dict[str, np.ndarray], state: Any, explore: bool) -> ActOutput:
        """Uniformly random actions (the data set's policy): the model dreams, it does not act."""
        env_action = self.act_spec.sample(self._rng, len(step["is_first"]))
        return ActOutput(env_action, self.act_spec.to_model(env_action), state, {})

    # -- data ------------------------------------------------------------------------------------
    def data(self, work: StageWork) -> Windows:
        if self._data is None:
            self._data = windows_of(work.replay.chunks(overlap=True), self.lam.key, self.cfg.model.context,
                                    self.act_spec.discrete)
        return self._data

    def split(self, count: int) -> int:
        """How many of ``count`` windows (the oldest) are trained on; the rest are held out."""
        train = int(round(count * (1 - self.cfg.holdout)))
        if train < 1 or (self.cfg.holdout > 0 and train >= count):
            raise ConfigError(f"{count} windows cannot be split into training and held-out ones at holdout="
                              f"{self.cfg.holdout}; raise run.prefill")
        return train

    def training_batch(self, data: Windows, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the model learns from for windows ``rows [B]``: their frames ``[B, L + 1, H, W, C]``, no actions."""
        return {"frames": data.frames[data.rows[rows]].to(self.device)}

    # -- training: ``unit_updates`` steps per unit, then the evaluation -----------------------------
    @property
    def units(self) -> int:
        return -(-self.cfg.updates // self.cfg.unit_updates)

    def advance(self, work: StageWork) -> StageReport:
        cfg = self.cfg
        if self.unit >= self.units:
            return StageReport("done", {}, done=True)
        data = self.data(work)
        train = self.split(len(data))
        rng = np.random.default_rng([cfg.run.seed, 11, self.unit])
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        steps = min(cfg.unit_updates, cfg.updates - self.unit * cfg.unit_updates)
        sums: dict[str, float] = {}
        for _ in range(steps):
            rows = torch.randint(train, (cfg.run.batch_size,), generator=gen)
            for k, v in self.update_on(self.training_batch(data, rows), gen).items():
                sums[k] = sums.get(k, 0.0) + v
        self.unit += 1
        metrics = {k: v / steps for k, v in sums.items()}
        metrics.update({"lapo/unit": float(self.unit), "lapo/windows": float(train),
                        "lapo/gradient_steps": float(self.gradient_steps)})
        done = self.unit >= self.units
        return StageReport(f"unit {self.unit}/{self.units}", metrics, evaluate=done, done=done)

    def update_on(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, float]:
        """One Adam step on a training batch, then the restarts of unused codes."""
        cfg = self.cfg
        self.lam.train()
        try:
            with precision_context(cfg.run.precision, self.device):
                out = self.lam.loss(batch)
            metrics = gradient_step(out.losses, self.scales, self.optimizers["opt"], self.lam.parameters(),
                                    cfg.grad_clip, prefix="lapo/")
            restarted = 0
            if cfg.restart_share > 0:
                restarted = self.lam.quantizer.restart_unused(out.latents, out.codes, cfg.restart_decay,
                                                              cfg.restart_share, generator)
            self.gradient_steps += 1
        finally:
            self.lam.eval()
        used = float(len(torch.unique(out.codes)))
        return {**metrics, "lapo/restarted": float(restarted), "lapo/batch_codes": used}

    # -- checkpoints -----------------------------------------------------------------------------
    def tensors(self) -> dict[str, dict[str, Any]]:
        return {**super().tensors(), "progress": {"unit": self.unit, "gradient_steps": self.gradient_steps}}

    def load_tensors(self, tensors: dict[str, dict[str, Any]]) -> None:
        super().load_tensors(tensors)
        progress = tensors["progress"]
        self.unit, self.gradient_steps = int(progress["unit"]), int(progress["gradient_steps"])
