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
from typing import Any, Callable, Mapping

import numpy as np
import torch

from reverie.agents.base import ActingParts, ActOutput, AgentBase, ReplayRatio
from reverie.agents.planner_policy import PlannerPolicy, PlanState
from reverie.agents.rssm_update import rssm_update
from reverie.config import NonNegativeFloat, check_ranges
from reverie.models import Batch, RSSMConfig, RSSMWorldModel, WorldModelConfig
from reverie.planning import CEMSettings
from reverie.run_config import RunConfig
from reverie.specs import ActionSpec, ArraySpec


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
    explore_noise: NonNegativeFloat = 0.3
    """Std of the Gaussian noise added to planned actions while collecting (probability of a random
    action for discrete actions)."""
    run: RunConfig = field(default_factory=planet_run)
    """Environment, budget and bookkeeping."""

    def __post_init__(self):
        check_ranges(self)


class Planet(AgentBase):
    """The PlaNet agent (see :mod:`reverie.agents.base`): a model update per replay batch, CEM to act."""

    name = "planet"
    schedule = ReplayRatio()

    def __init__(self, obs_spec: Mapping[str, ArraySpec], act_spec: ActionSpec, cfg: PlanetConfig,
                 device: str | torch.device = "cpu"):
        super().__init__(obs_spec, act_spec, device)
        self.cfg = cfg
        self.wm = RSSMWorldModel(obs_spec, act_spec, cfg.model).to(self.device)
        self.modules = {"wm": self.wm}
        self.optimizers = {"model_opt": torch.optim.Adam(self.wm.parameters(), lr=cfg.model.lr, eps=cfg.model.eps)}
        self.model = self.wm
        self.planner_defaults = {"cem": cfg.planner}
        self.policy = PlannerPolicy(self.wm, "cem", cfg.planner, explore_noise=cfg.explore_noise,
                                    device=self.device, name="planet")
        self.updates = 0

    # -- acting --------------------------------------------------------------------------------
    def init_state(self, batch: int) -> PlanState:
        return self.policy.init_state(batch)

    def act(self, step: dict[str, np.ndarray], state: PlanState, explore: bool) -> ActOutput:
        return self.policy.act(step, state, explore)

    def acting_parts(self) -> ActingParts:
        """Compiled acting compiles its CEM planner call (see :meth:`PlannerPolicy.acting_parts`); int8
        acting quantises its modules, which its planner plans on."""
        planner = self.policy.acting_parts().compiled
        return ActingParts("planet's planning", compiled=planner, quantised=dict(self.modules))

    def place_compiled(self, compiled: Mapping[str, Callable[..., Any]]) -> None:
        self.policy = self.policy.acting_copy(compiled=compiled)

    # -- learning ------------------------------------------------------------------------------
    def update(self, batch: Batch) -> dict[str, float]:
        """One model update from a replay batch ``[B, T]``."""
        metrics, _ = rssm_update(self.wm, batch, self.optimizers["model_opt"], self.cfg.model, self.cfg.run.precision)
        self.updates += 1
        return metrics


__all__ = ["Planet", "PlanetConfig", "planet_model", "planet_run"]
