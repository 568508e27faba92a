"""PlaNet (Hafner et al., 2019): a Gaussian RSSM learned from replay, actions planned with CEM in its latent space.

This file only composes parts: :class:`RSSMWorldModel` with a Gaussian latent
and PlaNet's sizes and KL, an Adam optimiser, and :class:`PlannerPolicy`
running CEM from the posterior state with one warm start per environment.

The KL term: PlaNet minimises ``max(KL(posterior || prior), free_nats)`` with
free nats 3 and no balancing. reverie's world model splits the KL into a
dynamics term (gradient into the prior only) and a representation term
(gradient into the posterior only), equal in value and clipped at the same
``free_nats``. With ``dyn_scale = rep_scale = 1`` the gradient of their sum is
exactly the gradient of the plain clipped KL (each term carries the
derivative through one of the two distributions), so training matches
PlaNet; only the logged ``loss/dyn`` + ``loss/rep`` count the KL twice.

Deviations from the paper, kept small: reverie's heads (symlog two-hot reward,
symlog MSE reconstruction, LayerNorm + SiLU MLPs) replace PlaNet's Gaussian
ones; the RSSM also learns a continuation probability, and CEM weighs
rewards by it (``planner.use_cont``), which changes nothing on PlaNet's
never-ending dm_control tasks but lets it plan on gym tasks that terminate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from reverie.agents.base import world_model_update
from reverie.agents.dreamer import batch_to_torch
from reverie.agents.planning_adapter import PlannerPolicy, PlanState, RSSMPlanningModel
from reverie.envs.spaces import ActionSpec, ArraySpec
from reverie.models import RSSMConfig, RSSMWorldModel, WorldModelConfig
from reverie.planning import PLANNERS, CEMSettings, PlannerSettings
from reverie.training.run_config import RunConfig


def planet_model() -> WorldModelConfig:
    """PlaNet's RSSM: deterministic 200, stochastic 30 (Gaussian, std floor 0.1), 200 units;
    Adam 1e-3 with eps 1e-4, gradient clip 1000; plain KL with free nats 3 (see the module docstring)."""
    return WorldModelConfig(rssm=RSSMConfig(deter=200, hidden=200, stoch=30, latent="gaussian", min_std=0.1),
                            units=200, layers=2, cnn_depth=32, free_nats=3.0, dyn_scale=1.0, rep_scale=1.0,
                            lr=1e-3, eps=1e-4, grad_clip=1000.0)


def planet_run() -> RunConfig:
    """Batches of 50 sequences of 50 steps, 5 random seed episodes, about 100 updates per
    1000 environment steps at action repeat 2 (PlaNet's collect interval)."""
    return RunConfig(env="dmc:cartpole-swingup", batch_size=50, seq_len=50, prefill=2500, train_ratio=500.0)


@dataclass(frozen=True)
class PlanetConfig:
    """Everything that defines a PlaNet run."""

    model: WorldModelConfig = field(default_factory=planet_model)
    """The RSSM world model (Gaussian latent, PlaNet's sizes and KL)."""
    planner: CEMSettings = field(default_factory=lambda: CEMSettings(use_cont=True))
    """CEM in latent space: PlaNet's horizon 12, 1000 candidates, top 100, 10 iterations
    (the action size and type come from the environment)."""
    explore_noise: float = 0.3
    """Std of the Gaussian noise added to planned actions while collecting (probability of a random
    action for discrete actions)."""
    run: RunConfig = field(default_factory=planet_run)
    """Environment, budget and bookkeeping."""


class Planet:
    """The PlaNet agent (see :class:`reverie.agents.base.Agent`)."""

    name = "planet"

    def __init__(self, obs_spec: dict[str, ArraySpec], act_spec: ActionSpec, cfg: PlanetConfig,
                 device: str | torch.device = "cpu"):
        self.cfg = cfg
        self.obs_spec = dict(obs_spec)
        self.act_spec = act_spec
        self.device = torch.device(device)
        self.wm = RSSMWorldModel(obs_spec, act_spec, cfg.model).to(self.device)
        self.opt = torch.optim.Adam(self.wm.parameters(), lr=cfg.model.lr, eps=cfg.model.eps)
        self.model = RSSMPlanningModel(self.wm, act_spec, device=self.device)
        self.policy = PlannerPolicy(self.model, act_spec, "cem", cfg.planner, explore_noise=cfg.explore_noise,
                                    device=self.device, name="planet")
        self.updates = 0

    def planning_view(self, planner: str) -> tuple[RSSMPlanningModel, PlannerSettings | None]:
        """The belief model for ``planner``: this agent's CEM settings for "cem", else that
        planner's defaults with the same continuation handling."""
        if planner == "cem":
            return self.model, self.cfg.planner
        return self.model, PLANNERS[planner][1](use_cont=self.cfg.planner.use_cont)

    # -- acting --------------------------------------------------------------------------------
    def init_state(self, batch: int) -> PlanState:
        return self.policy.init_state(batch)

    def act(self, step: dict[str, np.ndarray], state: PlanState, explore: bool
            ) -> tuple[np.ndarray, np.ndarray, PlanState]:
        return self.policy.act(step, state, explore)

    # -- learning ------------------------------------------------------------------------------
    def train(self, batch: dict[str, np.ndarray]) -> dict[str, float]:
        """One model update from a replay batch ``[B, T, ...]``."""
        data = batch_to_torch(batch, self.device)
        metrics, _ = world_model_update(self.wm, self.opt, data, self.cfg.model.grad_clip, self.cfg.run.precision)
        self.updates += 1
        return metrics

    # -- checkpointing -------------------------------------------------------------------------
    def tensors(self) -> dict[str, dict[str, Any]]:
        return {"wm": self.wm.state_dict(), "model_opt": self.opt.state_dict()}

    def load_tensors(self, tensors: dict[str, dict[str, Any]]) -> None:
        self.wm.load_state_dict(tensors["wm"])
        self.opt.load_state_dict(tensors["model_opt"])


__all__ = ["Planet", "PlanetConfig", "planet_model", "planet_run"]
