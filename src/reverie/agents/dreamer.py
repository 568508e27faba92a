"""DreamerV3: a world model learned from replay, behaviour learned inside it.

This file only composes parts: :class:`RSSMWorldModel` for the model,
:class:`ActorCritic` for the behaviour, and three Adam optimisers (model,
actor, critic) stepped once per replay batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from reverie.agents.base import ActingParts, ActOutput, AgentBase, DreamPolicy, ReplayRatio, observe_step, precision_context
from reverie.agents.base import to_env_action
from reverie.agents.compiled import compile_static, same_random_numbers_as_eager
from reverie.agents.rssm_update import LossCall, rssm_update
from reverie.behavior import ActorCritic, ActorCriticConfig, ImagineCall
from reverie.models import Batch, RSSMWorldModel, State, WorldModelConfig, with_heads
from reverie.models.state import flatten_batch, map_state
from reverie.run_config import RunConfig
from reverie.specs import ActionSpec, ArraySpec


@dataclass(frozen=True)
class DreamerConfig:
    """Everything that defines a Dreamer run."""

    model: WorldModelConfig = field(default_factory=WorldModelConfig)
    """The RSSM world model."""
    behavior: ActorCriticConfig = field(default_factory=ActorCriticConfig)
    """The actor-critic trained in imagination."""
    run: RunConfig = field(default_factory=RunConfig)
    """Environment, budget and bookkeeping."""


class Dreamer(AgentBase):
    """The DreamerV3 agent (see :mod:`reverie.agents.base`): model and behaviour updated on every batch."""

    name = "dreamer"
    schedule = ReplayRatio()
    compilable = True

    def __init__(self, obs_spec: Mapping[str, ArraySpec], act_spec: ActionSpec, cfg: DreamerConfig,
                 device: str | torch.device = "cpu"):
        super().__init__(obs_spec, act_spec, device)
        self.cfg = cfg
        self.wm = RSSMWorldModel(obs_spec, act_spec, cfg.model).to(self.device)
        self.ac = ActorCritic(self.wm.feat_size, act_spec, cfg.behavior).to(self.device)
        b = cfg.behavior
        self.modules = {"wm": self.wm, "ac": self.ac}
        self.optimizers = {
            "model_opt": torch.optim.Adam(self.wm.parameters(), lr=cfg.model.lr, eps=cfg.model.eps),
            "actor_opt": torch.optim.Adam(self.ac.actor.parameters(), lr=b.actor_lr, eps=b.eps),
            "critic_opt": torch.optim.Adam(self.ac.critic.parameters(), lr=b.critic_lr, eps=b.eps),
        }
        # planners see the world model with the critic as its value and the actor as its prior
        self.model = with_heads(self.wm, value=self.ac.value, policy=self.ac.policy)
        self.discount = b.gamma
        # what `act` calls, by name; an acting copy may call compiled versions instead (acting_parts)
        self.acting_calls: dict[str, Callable[..., Any]] = {"observe": self.wm.observe, "policy": self.ac.policy}
        self.updates = 0
        # what `update` calls in place of the world model's loss and the actor-critic's rollout (None:
        # the methods themselves); ``run.compile`` sets compiled versions
        self.loss_call: LossCall | None = None
        self.imagine_call: ImagineCall | None = None
        if cfg.run.compile:
            self._compile_update()

    def _compile_update(self) -> None:
        """``run.compile``: the world model's loss (observe loop, heads, KL) and the imagination rollout
        compiled for the run's static batch shape, drawing eager's random numbers, so an update computes
        what the eager one does; the backward passes and Adam steps stay eager."""
        same_random_numbers_as_eager()
        self.loss_call = compile_static(self.wm.loss)         # the modules themselves, their weights,
        self.imagine_call = compile_static(self.ac.imagine)   # state dicts and checkpoints do not change

    def _autocast(self):
        return precision_context(self.cfg.run.precision, self.device)

    # -- acting --------------------------------------------------------------------------------
    def init_state(self, batch: int) -> State:
        return self.wm.initial(batch)

    @torch.no_grad()
    def act(self, step: dict[str, np.ndarray], state: State, explore: bool) -> ActOutput:
        observe, policy = self.acting_calls["observe"], self.acting_calls["policy"]
        with self._autocast():
            state = observe_step(self.wm, step, state, self.device, observe)
            dist = policy(self.wm.features(state))
            model_action = dist.sample() if explore else dist.mode()
        model_action = model_action.detach().float()
        return ActOutput(to_env_action(model_action, self.act_spec), model_action.cpu().numpy(), state, {})

    def acting_parts(self) -> ActingParts:
        """Compiled acting compiles the world model's ``observe`` and the actor's ``policy``: on a trained
        Pendulum Dreamer (one thread, benchmarks/bench_acting.py) 0.70 ms a decision against 0.78 ms eager;
        compiling ``act`` whole (numpy in and out) was 1.25x slower. int8 acting quantises both modules."""
        return ActingParts("dreamer's policy", compiled=dict(self.acting_calls), quantised=dict(self.modules))

    def dream_policy(self) -> DreamPolicy:
        """The actor's mode on the dream's features (the greedy policy ``act`` uses in evaluation)."""

        @torch.no_grad()
        def policy(features: np.ndarray) -> np.ndarray:
            feat = torch.as_tensor(features, device=self.device, dtype=torch.float32)
            return to_env_action(self.ac.policy(feat).mode().float(), self.act_spec)
        return policy

    def place_compiled(self, compiled: Mapping[str, Callable[..., Any]]) -> None:
        self.acting_calls = {**self.acting_calls, **compiled}

    # -- learning ------------------------------------------------------------------------------
    def update(self, batch: Batch) -> dict[str, float]:
        metrics, post = rssm_update(self.wm, batch, self.optimizers["model_opt"], self.cfg.model,
                                    self.cfg.run.precision, self.loss_call)
        start = flatten_batch(map_state(torch.Tensor.detach, post))                  # [B * T]
        start_cont = 1.0 - batch.is_terminal.float().reshape(-1)
        with self._autocast():
            actor_loss, critic_loss, ac_metrics = self.ac.loss(self.wm, start, start_cont, self.imagine_call)
        clip = self.cfg.behavior.grad_clip
        actor_opt, critic_opt = self.optimizers["actor_opt"], self.optimizers["critic_opt"]
        actor_opt.zero_grad(set_to_none=True)
        critic_opt.zero_grad(set_to_none=True)
        (actor_loss + critic_loss).backward()   # disjoint parameters: one backward serves both
        metrics["ac/actor_grad_norm"] = float(nn.utils.clip_grad_norm_(self.ac.actor.parameters(), clip))
        metrics["ac/critic_grad_norm"] = float(nn.utils.clip_grad_norm_(self.ac.critic.parameters(), clip))
        actor_opt.step()
        critic_opt.step()
        self.ac.update_slow_critic()
        self.updates += 1
        metrics.update(ac_metrics)
        metrics["loss/actor"] = float(actor_loss.detach())
        metrics["loss/critic"] = float(critic_loss.detach())
        return metrics
