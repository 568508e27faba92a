"""DreamerV3: a world model learned from replay, behaviour learned inside it.

This file only composes parts: :class:`RSSMWorldModel` for the model,
:class:`ActorCritic` for the behaviour, Adam optimisers, and the conversion
between replay batches (numpy) and tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from reverie.agents.base import precision_context, to_env_action, world_model_update
from reverie.behavior import ActorCritic, ActorCriticConfig
from reverie.envs.spaces import ActionSpec, ArraySpec
from reverie.models import RSSMWorldModel, State, WorldModelConfig
from reverie.training.run_config import RunConfig


@dataclass(frozen=True)
class DreamerConfig:
    """Everything that defines a Dreamer run."""

    model: WorldModelConfig = field(default_factory=WorldModelConfig)
    """The RSSM world model."""
    behavior: ActorCriticConfig = field(default_factory=ActorCriticConfig)
    """The actor-critic trained in imagination."""
    run: RunConfig = field(default_factory=RunConfig)
    """Environment, budget and bookkeeping."""


def batch_to_torch(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """numpy replay batch -> tensors on ``device`` (uint8 images stay uint8 until the encoder)."""
    return {k: torch.as_tensor(v, device=device) for k, v in batch.items()}


class Dreamer:
    """The DreamerV3 agent (see :class:`reverie.agents.base.Agent`)."""

    name = "dreamer"

    def __init__(self, obs_spec: dict[str, ArraySpec], act_spec: ActionSpec, cfg: DreamerConfig,
                 device: str | torch.device = "cpu"):
        self.cfg = cfg
        self.obs_spec = dict(obs_spec)
        self.act_spec = act_spec
        self.device = torch.device(device)
        self.wm = RSSMWorldModel(obs_spec, act_spec, cfg.model).to(self.device)
        self.ac = ActorCritic(self.wm.rssm.feat_dim, act_spec, cfg.behavior).to(self.device)
        b = cfg.behavior
        self.opts = {
            "model_opt": torch.optim.Adam(self.wm.parameters(), lr=cfg.model.lr, eps=cfg.model.eps),
            "actor_opt": torch.optim.Adam(self.ac.actor.parameters(), lr=b.actor_lr, eps=b.eps),
            "critic_opt": torch.optim.Adam(self.ac.critic.parameters(), lr=b.critic_lr, eps=b.eps),
        }
        self.updates = 0

    def _autocast(self):
        return precision_context(self.cfg.run.precision, self.device)

    # -- acting --------------------------------------------------------------------------------
    def init_state(self, batch: int) -> State:
        return self.wm.initial(batch)

    @torch.no_grad()
    def act(self, step: dict[str, np.ndarray], state: State, explore: bool
            ) -> tuple[np.ndarray, np.ndarray, State]:
        obs = {k: torch.as_tensor(step[k], device=self.device)[:, None] for k in self.obs_spec}
        action = torch.as_tensor(step["action"], device=self.device, dtype=torch.float32)[:, None]
        is_first = torch.as_tensor(step["is_first"], device=self.device)[:, None]
        with self._autocast():
            _, state = self.wm.observe(obs, action, is_first, state)
            dist = self.ac.policy(self.wm.features(state))
            model_action = dist.sample() if explore else dist.mode()
        model_action = model_action.detach().float()
        return to_env_action(model_action, self.act_spec), model_action.cpu().numpy(), state

    # -- learning ------------------------------------------------------------------------------
    def train(self, batch: dict[str, np.ndarray]) -> dict[str, float]:
        data = batch_to_torch(batch, self.device)
        metrics, post = world_model_update(self.wm, self.opts["model_opt"], data, self.cfg.model.grad_clip,
                                           self.cfg.run.precision)
        start = {k: v.detach().reshape(-1, *v.shape[2:]) for k, v in post.items()}   # [B * T]
        start_cont = 1.0 - data["is_terminal"].float().reshape(-1)
        with self._autocast():
            actor_loss, critic_loss, ac_metrics = self.ac.loss(self.wm, start, start_cont)
        clip = self.cfg.behavior.grad_clip
        self.opts["actor_opt"].zero_grad(set_to_none=True)
        self.opts["critic_opt"].zero_grad(set_to_none=True)
        (actor_loss + critic_loss).backward()   # disjoint parameters: one backward serves both
        metrics["ac/actor_grad_norm"] = float(nn.utils.clip_grad_norm_(self.ac.actor.parameters(), clip))
        metrics["ac/critic_grad_norm"] = float(nn.utils.clip_grad_norm_(self.ac.critic.parameters(), clip))
        self.opts["actor_opt"].step()
        self.opts["critic_opt"].step()
        self.ac.update_slow_critic()
        self.updates += 1
        metrics.update(ac_metrics)
        metrics["loss/actor"] = float(actor_loss.detach())
        metrics["loss/critic"] = float(critic_loss.detach())
        return metrics

    # -- checkpointing -------------------------------------------------------------------------
    def tensors(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {"wm": self.wm.state_dict(), "ac": self.ac.state_dict()}
        out.update({name: opt.state_dict() for name, opt in self.opts.items()})
        return out

    def load_tensors(self, tensors: dict[str, dict[str, Any]]) -> None:
        self.wm.load_state_dict(tensors["wm"])
        self.ac.load_state_dict(tensors["ac"])
        for name, opt in self.opts.items():
            opt.load_state_dict(tensors[name])
