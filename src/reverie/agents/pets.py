"""PETS (Chua et al., 2018): a probabilistic ensemble refitted on all data, CEM on sampled particles.

This file composes parts: the :class:`ProbabilisticEnsemble` model, the data
it learns from (transitions cut from the replay's chunks), a fitting routine
with a held-out split and early stopping, and :class:`PlannerPolicy` running
CEM on the ensemble's particles. The reward is learned along with the
dynamics, since gym tasks come with no reward function to plan on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Iterable, Literal, Mapping

import numpy as np
import torch

from reverie.agents.base import ActingParts, ActOutput, AgentBase, Refit
from reverie.agents.planner_policy import PlannerPolicy, PlanState
from reverie.config import ConfigError, NonNegativeFloat, PositiveInt, between, check_ranges
from reverie.models.ensemble import EnsembleConfig, ProbabilisticEnsemble
from reverie.models.ensemble_model import EnsembleWorldModel
from reverie.planning import CEMSettings
from reverie.run_config import RunConfig
from reverie.specs import ActionSpec, ArraySpec


def _pets_run() -> RunConfig:
    # one random episode first (PETS), then a refit per Pendulum episode; no replay batches are drawn
    return RunConfig(env="gym:Pendulum-v1", steps=5000, prefill=200, seq_len=2, batch_size=1, eval_every=1000,
                     eval_episodes=5, log_every=200, checkpoint_every=1000, replay_chunk=200)


@dataclass(frozen=True)
class PetsConfig:
    """Everything that defines a PETS run."""

    model: EnsembleConfig = field(default_factory=EnsembleConfig)
    """The probabilistic ensemble and its optimiser."""
    planner: CEMSettings = field(default_factory=lambda: CEMSettings(
        horizon=25, candidates=400, elites=40, iterations=5, momentum=0.1, init_std=0.5))
    """CEM over action sequences (PETS: horizon 25, 400 candidates, 40 elites, 5 iterations, alpha 0.1;
    the action size and type come from the environment)."""
    particles: PositiveInt = 20
    """Particles P propagated per candidate; its return is the particles' mean."""
    fit_every: PositiveInt = 200
    """Agent steps between refits on all stored transitions (an episode of Pendulum)."""
    holdout: Annotated[float, between(0.0, 1.0, low_strict=True, high_strict=True)] = 0.1
    """Fraction of the transitions held out to decide when to stop fitting."""
    max_epochs: PositiveInt = 50
    """Most passes over the training transitions per refit."""
    patience: PositiveInt = 5
    """Stop after this many epochs in which no member's held-out score improved."""
    min_improvement: NonNegativeFloat = 0.01
    """Relative decrease of a member's held-out score that counts as an improvement."""
    stop_metric: Literal["mse", "nll"] = "mse"
    """Held-out score for early stopping: mean squared error of the mean, or Gaussian NLL."""
    batch_size: PositiveInt = 32
    """Transitions per member and gradient step."""
    run: RunConfig = field(default_factory=_pets_run)
    """Environment, budget and bookkeeping."""

    def __post_init__(self):
        check_ranges(self)


# -- data --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Transitions:
    """Aligned transitions as float32 arrays: obs ``[M, D]``, action ``[M, A]``, next_obs ``[M, D]``,
    reward ``[M]`` (received on arriving at next_obs)."""

    obs: np.ndarray
    action: np.ndarray
    next_obs: np.ndarray
    reward: np.ndarray

    def __len__(self) -> int:
        return self.obs.shape[0]

    def take(self, index: np.ndarray) -> "Transitions":
        return Transitions(self.obs[index], self.action[index], self.next_obs[index], self.reward[index])

    def tensors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs ``[M, D + A]``, targets ``[M, D + 1]`` = (next_obs - obs, reward)) on ``device``."""
        inputs = np.concatenate([self.obs, self.action], -1)
        targets = np.concatenate([self.next_obs - self.obs, self.reward[:, None]], -1)
        return torch.as_tensor(inputs, device=device), torch.as_tensor(targets, device=device)


def flat_obs(step: dict[str, np.ndarray], keys: list[str]) -> np.ndarray:
    """Concatenate the vector observation ``keys`` of ``[L, ...]`` arrays into float32 ``[L, D]``."""
    return np.concatenate([np.asarray(step[k], np.float32).reshape(len(step[k]), -1) for k in keys], -1)


def transitions_from_chunks(chunks: Iterable[dict[str, np.ndarray]], keys: list[str]) -> Transitions:
    """Consecutive step pairs inside each replay chunk (one stream's steps in order), skipping
    pairs whose second step starts a new episode. The step stored at t + 1 carries the action
    taken at t and the reward that followed it. Pass ``Replay.chunks(overlap=True)`` so the
    pairs spanning two chunks of one stream are kept too."""
    parts: list[tuple[np.ndarray, ...]] = []
    for chunk in chunks:
        if len(chunk["is_first"]) < 2:
            continue
        obs = flat_obs(chunk, keys)
        keep = ~np.asarray(chunk["is_first"][1:], bool)
        parts.append((obs[:-1][keep], np.asarray(chunk["action"][1:], np.float32)[keep], obs[1:][keep],
                      np.asarray(chunk["reward"][1:], np.float32)[keep]))
    if not parts:
        return Transitions(*(np.zeros((0, 0), np.float32),) * 3, np.zeros(0, np.float32))
    return Transitions(*(np.concatenate(p) for p in zip(*parts)))


def split_holdout(data: Transitions, fraction: float, rng: np.random.Generator) -> tuple[Transitions, Transitions]:
    """A random (train, held-out) split with at least one transition on each side (needs >= 2)."""
    order = rng.permutation(len(data))
    held = min(max(1, int(round(fraction * len(data)))), len(data) - 1)
    return data.take(order[held:]), data.take(order[:held])


# -- fitting -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class FitReport:
    """What one refit did."""

    history: np.ndarray
    """[epochs, E] held-out score of every member after each epoch."""
    best_epoch: np.ndarray
    """[E] the epoch (0-based) whose weights each member kept."""
    start_scores: np.ndarray
    """[E] held-out scores before the refit (with the new normaliser)."""
    train_metrics: dict[str, float]
    """Training metrics of the last epoch."""

    @property
    def best_scores(self) -> np.ndarray:
        """[E] held-out scores of the weights kept."""
        return self.history[self.best_epoch, np.arange(len(self.best_epoch))]


def fit_ensemble(model: ProbabilisticEnsemble, optimizer: torch.optim.Optimizer, train: Transitions,
                 holdout: Transitions, *, max_epochs: int, patience: int, batch_size: int,
                 min_improvement: float = 0.01, metric: Literal["mse", "nll"] = "mse",
                 rng: np.random.Generator | None = None) -> FitReport:
    """Fit the ensemble on ``train`` with early stopping on ``holdout``; each member keeps its best weights.

    The normaliser is refitted to ``train``. Every epoch each member sees its own bootstrap
    resample of ``train`` (drawn with replacement, as in PETS) in minibatches of ``batch_size``.
    A member's weights are snapshotted after the first epoch and whenever its held-out score
    falls by more than ``min_improvement`` (relative) below its best so far; fitting stops
    after ``patience`` epochs without any such improvement, and every member is restored to
    its snapshot. (The weights from before the refit are never kept: their held-out rows may
    have been training rows of the previous refit, so their score flatters them.)
    """
    rng = rng or np.random.default_rng()
    device = model.in_mean.device
    x_train, y_train = train.tensors(device)
    x_hold, y_hold = holdout.tensors(device)
    model.fit_normaliser(x_train, y_train)
    params = list(model.parameters())   # all carry the member axis first
    start = model.scores(x_hold, y_hold, metric)
    best = torch.full_like(start, float("inf"))
    snapshot = [p.detach().clone() for p in params]
    best_epoch = np.zeros(model.members, np.int64)
    history, stale = [], 0
    metrics: dict[str, float] = {}
    n = len(train)
    for epoch in range(max_epochs):
        boot = torch.as_tensor(rng.integers(0, n, size=(model.members, n)), device=device)   # [E, n]
        for begin in range(0, n, batch_size):
            index = boot[:, begin:begin + batch_size]                                        # [E, b]
            loss, metrics = model.loss(x_train[index], y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scores = model.scores(x_hold, y_hold, metric)
        history.append(scores.cpu().numpy())
        # relative improvement; the first epoch always counts (best is inf)
        improved = (scores < best) & ((best - scores) > min_improvement * best.abs().clamp(max=1e30))
        if bool(improved.any()):
            with torch.no_grad():
                for p, s in zip(params, snapshot):
                    s[improved] = p[improved]
            best = torch.where(improved, scores, best)
            best_epoch[improved.cpu().numpy()] = epoch
            stale = 0
        else:
            stale += 1
            if stale >= patience:
                break
    with torch.no_grad():
        for p, s in zip(params, snapshot):
            p.copy_(s)
    return FitReport(np.stack(history), best_epoch, start.cpu().numpy(), metrics)


# -- the agent ---------------------------------------------------------------------------------
class Pets(AgentBase):
    """The PETS agent (see :mod:`reverie.agents.base`): refits on all data every ``fit_every`` agent steps
    and acts with CEM on sampled particles."""

    name = "pets"

    def __init__(self, obs_spec: Mapping[str, ArraySpec], act_spec: ActionSpec, cfg: PetsConfig,
                 device: str | torch.device = "cpu"):
        super().__init__(obs_spec, act_spec, device)
        images = sorted(k for k, s in obs_spec.items() if s.is_image)
        if images:
            raise ConfigError(f"PETS learns from state vectors but the observations include images {images}; "
                              "use --obs state")
        self.cfg = cfg
        self.wm = EnsembleWorldModel(obs_spec, act_spec, cfg.model, cfg.particles).to(self.device)
        self.ensemble = self.wm.ensemble
        self.modules = {"ensemble": self.ensemble}
        self.optimizers = {"model_opt": self.ensemble.optimizer()}
        self.model = self.wm
        self.planner_defaults = {"cem": cfg.planner}
        self.schedule = Refit(cfg.fit_every)
        self.policy = PlannerPolicy(self.wm, "cem", cfg.planner, device=self.device, name="pets")
        self.fits = 0

    def init_state(self, batch: int) -> PlanState:
        return self.policy.init_state(batch)

    def act(self, step: dict[str, np.ndarray], state: PlanState, explore: bool) -> ActOutput:
        return self.policy.act(step, state, explore)

    def acting_parts(self) -> ActingParts:
        """Compiled acting compiles its CEM planner call (see :meth:`PlannerPolicy.acting_parts`); int8
        acting quantises its modules, which its planner plans on."""
        planner = self.policy.acting_parts().compiled
        return ActingParts("pets' planning", compiled=planner, quantised=dict(self.modules))

    def place_compiled(self, compiled: Mapping[str, Callable[..., Any]]) -> None:
        self.policy = self.policy.acting_copy(compiled=compiled)

    def refit(self, replay: Any) -> dict[str, float]:
        """Refit the ensemble on every transition in ``replay`` (held-out split, early stopping)."""
        cfg = self.cfg
        data = transitions_from_chunks(replay.chunks(overlap=True), self.wm.keys)
        if len(data) < 2:
            return {"model/transitions": float(len(data))}
        rng = np.random.default_rng([cfg.run.seed, self.fits])   # reproducible across resumption
        train, held = split_holdout(data, cfg.holdout, rng)
        report = fit_ensemble(self.ensemble, self.optimizers["model_opt"], train, held, max_epochs=cfg.max_epochs,
                              patience=cfg.patience, batch_size=cfg.batch_size,
                              min_improvement=cfg.min_improvement, metric=cfg.stop_metric, rng=rng)
        self.fits += 1
        return {**report.train_metrics, f"model/holdout_{cfg.stop_metric}": float(report.best_scores.mean()),
                "model/epochs": float(len(report.history)), "model/best_epoch": float(report.best_epoch.max()),
                "model/transitions": float(len(data)), "model/fits": float(self.fits)}

    def tensors(self) -> dict[str, dict[str, Any]]:
        return {**super().tensors(), "progress": {"fits": self.fits}}

    def load_tensors(self, tensors: dict[str, dict[str, Any]]) -> None:
        super().load_tensors(tensors)
        self.fits = int(tensors["progress"]["fits"])


__all__ = ["FitReport", "Pets", "PetsConfig", "Transitions", "fit_ensemble", "split_holdout",
           "transitions_from_chunks"]
