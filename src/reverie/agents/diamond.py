"""DIAMOND (Alonso et al., 2024): behaviour learned inside a diffusion model of the next frame.

This file composes parts: :class:`~reverie.models.diffusion.DiffusionWorldModel` (denoiser and
reward/end model, each with its own AdamW, as DIAMOND's) learned from replay batches, and
:class:`~reverie.behavior.ActorCritic` trained on imagined trajectories of that model: REINFORCE with
lambda-returns (DIAMOND's horizon 15, gamma 0.985, lambda 0.95, entropy weight 0.001).

Where this differs from DIAMOND, and why:

- DIAMOND's actor-critic is its own CNN+LSTM on frames, burnt in on real frames. Here the actor and critic
  are reverie's MLPs on the model's features (the newest frame and the reward model's LSTM memory, which
  has read every transition so far): the contract's one behaviour learner, and small frames (MinAtar's
  10x10) need no CNN to be read. Its critic is DreamerV3's two-hot one, not DIAMOND's MSE value.
- Imagination starts from states filtered on the replay batch whose frame window is complete (the
  burn-in DIAMOND does with L real frames), ``imagine_starts`` of them drawn at random per update.
- The three parts are updated together on every batch, not in DIAMOND's alternating epochs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch
from torch import nn

from reverie.agents.base import ActOutput, AgentBase, ReplayRatio, observe_step, precision_context, to_env_action
from reverie.behavior import ActorCritic, ActorCriticConfig
from reverie.config import ConfigError, NonNegativeFloat, PositiveFloat, PositiveInt, check_ranges
from reverie.models import Batch, State, with_heads
from reverie.models.diffusion import DiffusionModelConfig, DiffusionWorldModel
from reverie.models.state import flatten_batch, map_state, take_rows
from reverie.run_config import RunConfig
from reverie.specs import ActionSpec, ArraySpec

__all__ = ["Diamond", "DiamondConfig"]


def _diamond_behavior() -> ActorCriticConfig:
    return ActorCriticConfig(horizon=15, gamma=0.985, lam=0.95, entropy=1e-3, units=256, layers=2, actor_lr=1e-4,
                             critic_lr=1e-4, actor_grad="reinforce")


@dataclass(frozen=True)
class DiamondConfig:
    """Everything that defines a DIAMOND run."""

    model: DiffusionModelConfig = field(default_factory=DiffusionModelConfig)
    """The diffusion world model and its reward/end model."""
    behavior: ActorCriticConfig = field(default_factory=_diamond_behavior)
    """The actor-critic trained in imagination."""
    denoiser_lr: PositiveFloat = 1e-4
    """AdamW learning rate of the denoiser (DIAMOND's)."""
    reward_lr: PositiveFloat = 1e-4
    """AdamW learning rate of the reward/end model."""
    weight_decay: NonNegativeFloat = 1e-2
    """AdamW weight decay of both models (DIAMOND's)."""
    grad_clip: PositiveFloat = 10.0
    """Gradient-norm clip of the world model's parts (DIAMOND's)."""
    imagine_starts: PositiveInt = 32
    """Imagined trajectories per update, each from a filtered replay state (DIAMOND's batch of 32)."""
    run: RunConfig = field(default_factory=RunConfig)
    """Environment, budget and bookkeeping."""

    def __post_init__(self) -> None:
        check_ranges(self)


class Diamond(AgentBase):
    """The DIAMOND agent (see the module docstring): world model and behaviour updated on every batch."""

    name = "diamond"
    schedule = ReplayRatio()

    def __init__(self, obs_spec: Mapping[str, ArraySpec], act_spec: ActionSpec, cfg: DiamondConfig,
                 device: str | torch.device = "cpu"):
        super().__init__(obs_spec, act_spec, device)
        context = cfg.model.context
        if cfg.run.seq_len < context + 1:
            raise ConfigError(f"DIAMOND conditions each frame on model.context={context} frames before it, so it "
                              f"needs run.seq_len >= {context + 1}; got {cfg.run.seq_len}")
        if cfg.run.time_limit is not None and cfg.run.time_limit <= context:
            raise ConfigError(f"model.context={context} frames is longer than any episode (run.time_limit="
                              f"{cfg.run.time_limit} steps): no imagined step would start from a real context; "
                              f"lower model.context or raise run.time_limit")
        self.cfg = cfg
        self.wm = DiffusionWorldModel(obs_spec, act_spec, cfg.model).to(self.device)
        self.ac = ActorCritic(self.wm.feat_size, act_spec, cfg.behavior).to(self.device)
        b = cfg.behavior
        self.modules = {"wm": self.wm, "ac": self.ac}
        self.optimizers = {
            "denoiser_opt": torch.optim.AdamW(self.wm.denoiser.parameters(), lr=cfg.denoiser_lr,
                                              weight_decay=cfg.weight_decay),
            "reward_opt": torch.optim.AdamW(self.wm.reward_model.parameters(), lr=cfg.reward_lr,
                                            weight_decay=cfg.weight_decay),
            "actor_opt": torch.optim.Adam(self.ac.actor.parameters(), lr=b.actor_lr, eps=b.eps),
            "critic_opt": torch.optim.Adam(self.ac.critic.parameters(), lr=b.critic_lr, eps=b.eps),
        }
        self.model = with_heads(self.wm, value=self.ac.value, policy=self.ac.policy)
        self.discount = b.gamma
        self.updates = 0

    # -- acting --------------------------------------------------------------------------------
    def init_state(self, batch: int) -> State:
        return self.wm.initial(batch)

    @torch.no_grad()
    def act(self, step: dict[str, np.ndarray], state: State, explore: bool) -> ActOutput:
        with precision_context(self.cfg.run.precision, self.device):
            state = observe_step(self.wm, step, state, self.device)
            dist = self.ac.policy(self.wm.features(state))
            model_action = (dist.sample() if explore else dist.mode()).detach().float()
        return ActOutput(to_env_action(model_action, self.act_spec), model_action.cpu().numpy(), state, {})

    # -- learning ------------------------------------------------------------------------------
    def _step(self, names: tuple[str, ...], params: list[nn.Parameter], clip: float) -> float:
        norm = float(nn.utils.clip_grad_norm_(params, clip))
        for name in names:
            self.optimizers[name].step()
        return norm

    def update(self, batch: Batch) -> dict[str, float]:
        cfg = self.cfg
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        with precision_context(cfg.run.precision, self.device):
            out = self.wm.loss(batch)
        torch.stack(list(out.losses.values())).sum().backward()   # disjoint parameters: denoiser's, reward model's
        metrics = {f"loss/{k}": float(v.detach()) for k, v in out.losses.items()}
        metrics["wm/denoiser_grad_norm"] = self._step(("denoiser_opt",), list(self.wm.denoiser.parameters()),
                                                      cfg.grad_clip)
        metrics["wm/reward_grad_norm"] = self._step(("reward_opt",), list(self.wm.reward_model.parameters()),
                                                    cfg.grad_clip)
        # imagination starts: filtered states with a complete frame window that are not terminal
        states = flatten_batch(map_state(torch.Tensor.detach, out.states))       # [B * T]
        ok = (out.complete & ~batch.is_terminal).reshape(-1).nonzero().squeeze(-1)
        if ok.numel() > 0:
            pick = ok[torch.randperm(ok.numel(), device=ok.device)[:cfg.imagine_starts]]
            start = take_rows(states, pick)
            with precision_context(cfg.run.precision, self.device):
                actor_loss, critic_loss, ac_metrics = self.ac.loss(self.wm, start, torch.ones(pick.numel(),
                                                                                              device=self.device))
            (actor_loss + critic_loss).backward()
            b = cfg.behavior
            metrics["ac/actor_grad_norm"] = self._step(("actor_opt",), list(self.ac.actor.parameters()), b.grad_clip)
            metrics["ac/critic_grad_norm"] = self._step(("critic_opt",), list(self.ac.critic.parameters()),
                                                        b.grad_clip)
            self.ac.update_slow_critic()
            metrics.update(ac_metrics)
            metrics["loss/actor"] = float(actor_loss.detach())
            metrics["loss/critic"] = float(critic_loss.detach())
        self.updates += 1
        return metrics
