"""C-SWM (Kipf, van der Pol and Welling, ICLR 2020): a structured world model trained contrastively on a fixed
random-policy data set.

One ``reverie train cswm`` run is the paper's protocol as a staged pipeline
(:class:`~reverie.agents.base.Staged`):

1. ``run.prefill`` agent steps of uniformly random actions into the replay (the driver's collection; the
   paper: 1,000 episodes of 100 steps, ``run.prefill=101000`` with the reset step of every episode), or
   a dataset in its place (``reverie train cswm --dataset ...``: the stages learn from the replay alone,
   ``Staged(offline=True)``);
2. ``epochs`` passes over every stored transition ``(o_t, a_t, o_t+1)`` in shuffled batches of
   ``run.batch_size`` transitions, each epoch one checkpointed unit. Epoch e's order is drawn from a
   generator seeded by (seed, e), so a killed run resumes at the epoch it was in and replays it exactly.

Adam at ``lr`` on the contrastive hinge loss, no gradient clipping, as the reference. A finished run keeps
the weights of its epoch of lowest mean training loss (``keep=best``), as the reference keeps the model it
evaluates: one unlucky last epoch (a loss spike that collapses some slots, seen on 2D shapes) then costs
nothing.

The model (:mod:`reverie.models.cswm`) learns no policy: the agent acts uniformly at random, as the data
were collected. Its use is the latent model itself: ranking its multi-step predictions
(``benchmarks/cswm_eval.py``, :mod:`reverie.analysis.ranking`) and planning toward a goal observation in its
latent space (``reverie eval RUN --planner cem --goal ...``, :mod:`reverie.training.goal_eval`, with the
settings of :data:`GOAL_PLANNERS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
import copy
import math
from typing import Any, Iterable, Literal, Mapping

import numpy as np
import torch

from reverie.agents.base import ActOutput, AgentBase, StageReport, StageWork, Staged, precision_context
from reverie.config import ConfigError, PositiveFloat, PositiveInt, check_ranges
from reverie.models.cswm import CSWMModel, CSWMModelConfig
from reverie.planning import CEMSettings, PlannerSettings, ShootingSettings
from reverie.run_config import RunConfig
from reverie.specs import ActionSpec, ArraySpec

__all__ = ["CSWM", "CSWMConfig", "GOAL_PLANNERS", "Transitions", "transitions_of"]

#: Planner settings toward a goal (``reverie eval RUN --planner cem --goal ...``; the model has no reward, so
#: these are its only planning): short horizons, since every step's cost is the energy to the goal and a
#: replan follows every action; sized so that a plan for 100 goals at once takes seconds on one core
#: (docs/notes/cswm.md has the measurements).
GOAL_PLANNERS: dict[str, PlannerSettings] = {
    "cem": CEMSettings(horizon=5, candidates=256, elites=25, iterations=4),
    "shooting": ShootingSettings(horizon=5, candidates=1024),
}


def _cswm_run() -> RunConfig:
    return RunConfig(env="gym:reverie/Shapes-v0", image_size=50, prefill=101_000, batch_size=1024, seq_len=2,
                     replay_chunk=1000, parallel_envs=False, eval_episodes=1, eval_every=10**9,
                     checkpoint_every=10**9, threads=1)


@dataclass(frozen=True)
class CSWMConfig:
    """Everything that defines a C-SWM run (the data set is ``run.prefill`` random agent steps; a batch is
    ``run.batch_size`` transitions)."""

    model: CSWMModelConfig = field(default_factory=CSWMModelConfig)
    """The networks and the loss (the paper's 2D-shapes sizes by default)."""
    epochs: PositiveInt = 100
    """Passes over the data set (the paper: 100)."""
    lr: PositiveFloat = 5e-4
    """Adam's learning rate (the paper: 5e-4)."""
    keep: Literal["best", "last"] = "best"
    """The weights a finished run keeps: its epoch of lowest mean training loss (the reference) or the last."""
    run: RunConfig = field(default_factory=_cswm_run)
    """Environment, data set size, batch size and bookkeeping."""

    def __post_init__(self):
        check_ranges(self)


@dataclass(frozen=True)
class Transitions:
    """Every stored transition: frames ``{key: [F, *shape]}`` once each, and per transition the rows of its
    observation and next observation ``[N]`` and the model-space action between them ``[N, A]``."""

    frames: dict[str, torch.Tensor]
    before: torch.Tensor
    after: torch.Tensor
    action: torch.Tensor

    def __len__(self) -> int:
        return len(self.before)


def transitions_of(chunks: Iterable[Mapping[str, np.ndarray]], keys: list[str]) -> Transitions:
    """The transitions in ``chunks`` (a replay's ``chunks(overlap=True)``: ``{key: [L, ...]}`` each, every pair of
    consecutive steps of a stream inside one chunk): step t-1 to step t wherever step t does not start an
    episode; ``action[t]`` is the action that led into step t."""
    frames: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    before, actions = [], []
    base = 0
    for chunk in chunks:
        length = len(chunk["is_first"])
        t = np.flatnonzero(~np.asarray(chunk["is_first"], bool)[1:]) + 1
        before.append(base + t - 1)
        actions.append(np.asarray(chunk["action"], np.float32)[t])
        for k in keys:
            frames[k].append(np.asarray(chunk[k]))
        base += length
    if not before or not sum(len(b) for b in before):
        raise ConfigError("the replay holds no transition (every stored step starts an episode); raise run.prefill")
    index = torch.as_tensor(np.concatenate(before))
    return Transitions({k: torch.as_tensor(np.concatenate(v)) for k, v in frames.items()}, index, index + 1,
                       torch.as_tensor(np.concatenate(actions)))


class CSWM(AgentBase):
    """The C-SWM agent (see the module docstring)."""

    name = "cswm"

    def __init__(self, obs_spec: Mapping[str, ArraySpec], act_spec: ActionSpec, cfg: CSWMConfig,
                 device: str | torch.device = "cpu"):
        super().__init__(obs_spec, act_spec, device)
        self.cfg = cfg
        self.cswm = CSWMModel(obs_spec, act_spec, cfg.model).to(self.device).eval()   # train() only in an update
        self.model = self.cswm
        self.modules = {"cswm": self.cswm}
        self.optimizers = {"opt": torch.optim.Adam(self.cswm.parameters(), lr=cfg.lr)}
        self.planner_defaults = GOAL_PLANNERS
        self.schedule = Staged(offline=True)   # the epochs read the replay alone: a dataset may fill it
        self.epoch = 0
        self.gradient_steps = 0
        self.best_loss, self.best_epoch = math.inf, 0    # the epoch of lowest mean loss so far, and its weights
        self.best_weights: dict[str, torch.Tensor] = {}
        self._data: Transitions | None = None
        self._rng = np.random.default_rng([cfg.run.seed, 7])

    # -- acting: C-SWM learns no policy ----------------------------------------------------------
    def init_state(self, batch: int) -> None:
        return None

    def act(self, step: dict[str, np.ndarray], state: Any, explore: bool) -> ActOutput:
        """Uniformly random actions (the data set's policy): C-SWM models the world, it does not act in it."""
        n = len(step["is_first"])
        env_action = self.act_spec.sample(self._rng, n)
        return ActOutput(env_action, self.act_spec.to_model(env_action), state, {})

    # -- training: one epoch per unit --------------------------------------------------------------
    def data(self, work: StageWork) -> Transitions:
        if self._data is None:
            self._data = transitions_of(work.replay.chunks(overlap=True), self.cswm.image_keys)
        return self._data

    def advance(self, work: StageWork) -> StageReport:
        cfg = self.cfg
        if self.epoch >= cfg.epochs:
            return StageReport("done", {}, done=True)
        data = self.data(work)
        rng = np.random.default_rng([cfg.run.seed, 11, self.epoch])
        order = torch.as_tensor(rng.permutation(len(data)))
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        sums: dict[str, float] = {}
        batches = 0
        for start in range(0, len(order), cfg.run.batch_size):
            rows = order[start:start + cfg.run.batch_size]
            if len(rows) < 2:     # BatchNorm and a negative need two transitions
                continue
            for k, v in self.update_on(data, rows, gen).items():
                sums[k] = sums.get(k, 0.0) + v
            batches += 1
        self.epoch += 1
        metrics = {k: v / max(batches, 1) for k, v in sums.items()}
        if metrics.get("cswm/loss", math.inf) < self.best_loss:
            self.best_loss, self.best_epoch = metrics["cswm/loss"], self.epoch
            self.best_weights = copy.deepcopy(self.cswm.state_dict())
        metrics.update({"cswm/epoch": float(self.epoch), "cswm/transitions": float(len(data)),
                        "cswm/gradient_steps": float(self.gradient_steps), "cswm/best_epoch": float(self.best_epoch)})
        done = self.epoch >= cfg.epochs
        if done and cfg.keep == "best" and self.best_weights:
            self.cswm.load_state_dict(self.best_weights)   # the finished run's model (its optimiser is done)
        return StageReport(f"epoch {self.epoch}/{cfg.epochs}", metrics, evaluate=done, done=done)

    def update_on(self, data: Transitions, rows: torch.Tensor, generator: torch.Generator) -> dict[str, float]:
        """One Adam step on transitions ``rows [B]`` of ``data``."""
        obs = {k: v[data.before[rows]].to(self.device) for k, v in data.frames.items()}
        nxt = {k: v[data.after[rows]].to(self.device) for k, v in data.frames.items()}
        action = data.action[rows].to(self.device)
        self.cswm.train()
        try:
            with precision_context(self.cfg.run.precision, self.device):
                loss, terms = self.cswm.loss(obs, action, nxt, generator)
            opt = self.optimizers["opt"]
            opt.zero_grad(set_to_none=True)
            loss.float().backward()
            opt.step()
            self.gradient_steps += 1
        finally:
            self.cswm.eval()
        return {"cswm/loss": float(loss.detach()), **{f"cswm/{k}": float(v.detach()) for k, v in terms.items()}}

    # -- checkpoints -----------------------------------------------------------------------------
    def tensors(self) -> dict[str, dict[str, Any]]:
        return {**super().tensors(), "progress": {"epoch": self.epoch, "gradient_steps": self.gradient_steps},
                "best": {"loss": torch.tensor(self.best_loss), "epoch": torch.tensor(self.best_epoch),
                         "weights": self.best_weights}}

    def load_tensors(self, tensors: dict[str, dict[str, Any]]) -> None:
        super().load_tensors(tensors)
        self.epoch = int(tensors["progress"]["epoch"])
        self.gradient_steps = int(tensors["progress"]["gradient_steps"])
        best = tensors["best"]
        self.best_loss, self.best_epoch = float(best["loss"]), int(best["epoch"])
        self.best_weights = {k: v.to(self.device) for k, v in best["weights"].items()}
