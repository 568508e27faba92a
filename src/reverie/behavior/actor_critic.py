"""Actor and critic learned from imagined rollouts of a world model (DreamerV3).

The critic predicts lambda-returns as a symlog two-hot distribution and is
regularised towards a slowly updated copy of itself. The actor maximises
returns normalised by the 5th-95th percentile range (only scaled down, never
up, so small rewards are not amplified into noise) plus an entropy bonus.
Gradients reach the actor by REINFORCE, or for continuous actions optionally
by backpropagating through the model's dynamics.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Literal, Mapping, cast

import torch
from torch import Tensor, nn

from reverie.specs import ActionSpec
from reverie.models.base import (CONT, REWARD, HasCont, HasReward, State, WorldModel, has, require, stack_states,
                                 without_memory)
from reverie.nn import MLP, BoundedNormal, OneHotDist, TwoHotDist, lambda_returns, polyak_update, symlog_bins


ImagineCall = Callable[[WorldModel, State, int], tuple[State, Tensor, Tensor]]
"""What :meth:`ActorCritic.imagine` is: (model, start states, horizon) -> (states, actions, raw outputs)."""


@dataclass(frozen=True)
class ActorCriticConfig:
    """Behaviour learning in imagination."""

    horizon: int = 15
    """Imagined steps per rollout."""
    gamma: float = 0.997
    """Discount per step (DreamerV3: 1 - 1/333)."""
    lam: float = 0.95
    """Lambda of the TD(lambda) returns."""
    entropy: float = 3e-4
    """Weight of the actor's entropy bonus."""
    units: int = 512
    """Width of the actor and critic MLPs."""
    layers: int = 2
    """Hidden layers of the actor and critic MLPs."""
    actor_lr: float = 3e-5
    """Adam learning rate of the actor."""
    critic_lr: float = 3e-5
    """Adam learning rate of the critic."""
    eps: float = 1e-5
    """Adam epsilon of actor and critic."""
    grad_clip: float = 100.0
    """Global gradient-norm clip of actor and critic."""
    slow_critic_decay: float = 0.98
    """EMA decay of the slow critic, updated after every critic step."""
    slow_reg: float = 1.0
    """Weight of the critic's regulariser towards the slow critic's predictions."""
    return_norm_decay: float = 0.99
    """EMA decay of the return percentiles used to normalise advantages."""
    unimix: float = 0.01
    """Uniform mixture in the discrete actor's probabilities."""
    min_std: float = 0.1
    """Smallest std of the continuous actor."""
    max_std: float = 1.0
    """Largest std of the continuous actor."""
    critic_bins: int = 255
    """Bins of the two-hot critic."""
    actor_grad: Literal["auto", "reinforce", "dynamics"] = "auto"
    """How returns reach the actor: REINFORCE, backpropagation through the model's dynamics
    (continuous only), or auto: REINFORCE for discrete and dynamics for continuous actions."""


class ActorCritic(nn.Module):
    """Policy and value heads on world-model features ``[..., F]``."""

    # buffers: the critic's two-hot support, and the EMA of the return percentiles (set once ret_init is True)
    bins: Tensor
    ret_low: Tensor
    ret_high: Tensor
    ret_init: Tensor

    def __init__(self, feat_dim: int, act_spec: ActionSpec, cfg: ActorCriticConfig):
        super().__init__()
        if cfg.actor_grad == "dynamics" and act_spec.discrete:
            raise ValueError("actor_grad='dynamics' needs continuous actions; use 'reinforce' for discrete ones")
        self.cfg = cfg
        self.act_spec = act_spec
        self.backprop = cfg.actor_grad == "dynamics" or (cfg.actor_grad == "auto" and not act_spec.discrete)
        out = act_spec.size if act_spec.discrete else 2 * act_spec.size
        self.actor = MLP(feat_dim, out, cfg.units, cfg.layers)
        self.critic = MLP(feat_dim, cfg.critic_bins, cfg.units, cfg.layers, zero_out=True)
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.register_buffer("bins", symlog_bins(cfg.critic_bins), persistent=False)
        self.register_buffer("ret_low", torch.zeros(()))
        self.register_buffer("ret_high", torch.zeros(()))
        self.register_buffer("ret_init", torch.zeros((), dtype=torch.bool))

    # -- heads ---------------------------------------------------------------------------------
    def policy(self, feat: Tensor) -> OneHotDist | BoundedNormal:
        return self._dist(self.actor(feat))

    def _dist(self, raw: Tensor) -> OneHotDist | BoundedNormal:
        if self.act_spec.discrete:
            return OneHotDist(raw, self.cfg.unimix)
        mean, std = raw.chunk(2, -1)
        return BoundedNormal(mean, std, self.cfg.min_std, self.cfg.max_std)

    def value(self, feat: Tensor, slow: bool = False) -> Tensor:
        """Expected return ``[...]`` of states with features ``[..., F]``."""
        net = self.slow_critic if slow else self.critic
        return TwoHotDist(net(feat), self.bins).mean()

    # -- imagination ---------------------------------------------------------------------------
    def imagine(self, wm: WorldModel, start: State, horizon: int) -> tuple[State, Tensor, Tensor]:
        """Roll the policy out in the model.

        Returns states ``[H + 1, N]`` (start first), actions ``[H, N, A]`` and the actor's raw
        outputs ``[H, N, O]``. The actor's forward pass always records gradients (it is reused
        for the loss, so the policy is evaluated once per state); the model's steps record them
        only if the caller enabled gradients. The returned states keep no sequence memory (the model's
        ``memory_keys``): only the step being taken needs it.
        """
        states, actions, raws = [without_memory(wm, start)], [], []
        state = start
        for _ in range(horizon):
            with torch.enable_grad():
                raw = self.actor(wm.features(state).detach())
            action = self._dist(raw).sample()
            if not torch.is_grad_enabled():
                action = action.detach()
            state = wm.step(state, action)
            states.append(without_memory(wm, state))
            actions.append(action)
            raws.append(raw)
        with torch.enable_grad():
            raw = torch.stack(raws)
        return stack_states(states, 0), torch.stack(actions), raw

    def _normalise(self, ret: Tensor) -> Tensor:
        """Update the percentile EMA with ``ret`` and return the scale ``max(1, P95 - P5)``."""
        flat = ret.detach().float().flatten()
        low, high = torch.quantile(flat, 0.05), torch.quantile(flat, 0.95)
        d = self.cfg.return_norm_decay
        if not bool(self.ret_init):
            self.ret_low.copy_(low)
            self.ret_high.copy_(high)
            self.ret_init.fill_(True)
        else:
            self.ret_low.mul_(d).add_((1 - d) * low)
            self.ret_high.mul_(d).add_((1 - d) * high)
        return torch.clamp(self.ret_high - self.ret_low, min=1.0)

    def loss(self, wm: WorldModel, start: State, start_cont: Tensor, imagine: ImagineCall | None = None
             ) -> tuple[Tensor, Tensor, dict[str, float]]:
        """(actor loss, critic loss, metrics) from rollouts starting at ``start`` ``[N]``.

        start_cont ``[N]``: 1 where the start state is not terminal, so rollouts from
        terminal states carry no weight. ``wm`` needs the ``reward`` capability; without ``cont``
        imagined episodes never end. ``imagine`` rolls out in place of :meth:`imagine` (a compiled
        version of it).
        """
        require(wm, [REWARD], "learning behaviour in imagination")
        cfg = self.cfg
        backprop = self.backprop
        with torch.set_grad_enabled(backprop):
            traj, actions, raw = (imagine or self.imagine)(wm, start, cfg.horizon)
            feat = wm.features(traj)                                   # [H + 1, N, F]
            after = {k: v[1:] for k, v in cast("Mapping[str, Tensor]", traj).items()}   # a flat dict state
            reward = cast(HasReward, wm).reward(after)                 # [H, N]
            cont = cast(HasCont, wm).cont(after) if has(wm, CONT) else torch.ones_like(reward)
        critic_logits = self.critic(feat.detach())                     # [H + 1, N, bins], one pass for both uses
        if backprop:
            # The bootstrap values pass gradient to the imagined features (and so to the actions),
            # but never to the critic's weights: those are called here as constants.
            frozen = {name: p.detach() for name, p in self.critic.named_parameters()}
            value = TwoHotDist(torch.func.functional_call(self.critic, frozen, (feat,)), self.bins).mean()
        else:
            value = TwoHotDist(critic_logits.detach(), self.bins).mean()            # [H + 1, N]
        with torch.no_grad():
            slow_target = self.value(feat[:-1].detach(), slow=True)                 # [H, N]
            # weight[t]: probability that step t of the rollout is still inside the episode.
            weight = torch.cumprod(torch.cat([start_cont[None], cont[:-1].detach()], 0), 0)  # [H, N]
        ret = lambda_returns(reward, value, cfg.gamma * cont, cfg.lam)            # [H, N]
        scale = self._normalise(ret)
        dist = self._dist(raw)
        entropy = dist.entropy()                                                 # [H, N]
        if backprop:
            objective = ret / scale
        else:
            adv = (ret - value[:-1]).detach() / scale
            objective = dist.log_prob(actions.detach()) * adv
        actor_loss = -(weight * (objective + cfg.entropy * entropy)).mean()
        critic_dist = TwoHotDist(critic_logits[:-1], self.bins)
        target = ret.detach()
        value = value.detach()
        critic_loss = (weight * (critic_dist.loss(target) + cfg.slow_reg * critic_dist.loss(slow_target))).mean()
        metrics = {
            "ac/return": float(ret.detach().mean()), "ac/value": float(value.mean()),
            "ac/entropy": float(entropy.detach().mean()), "ac/return_scale": float(scale),
            "ac/imag_reward": float(reward.detach().mean()),
        }
        return actor_loss, critic_loss, metrics

    def update_slow_critic(self) -> None:
        polyak_update(self.slow_critic, self.critic, 1 - self.cfg.slow_critic_decay)
