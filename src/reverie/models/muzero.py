"""MuZero's value-equivalent model (Schrittwieser et al., 2020): no decoder, only what planning needs.

Three networks on a latent vector ``s`` of size D:

- representation ``h``: observation -> ``s`` (an MLP on symlog'd vectors; a
  residual conv tower for small images);
- dynamics ``g``: ``(s, a)`` -> (next ``s``, reward of the transition);
- prediction ``f``: ``s`` -> (policy logits, value).

Latents are min-max scaled to [0, 1] per sample, as in MuZero, so the
dynamics sees inputs on one scale however long it unrolls. Rewards and
values are two-hot distributions over symlog bins (as DreamerV3's heads).

The model is trained only to predict rewards, values and search policies
along sequences of real actions (:meth:`MuZeroModel.unroll_loss`), so its
latents mean nothing beyond that: it has no ``decoder`` and no ``cont``.

State (world-model contract): ``latent [..., D]`` plus what the networks
predicted for it, so that each capability is a read: ``reward [...]`` (of
the transition into this state; 0 for an observed state), ``value [...]``
and ``logits [..., K]``. Capabilities: reward, value, policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reverie.models.base import POLICY, REWARD, TRANSITION, VALUE, State, TransitionMap, transition_map
from reverie.models.codecs import split_keys
from reverie.models.state import state_entries
from reverie.nn import MLP, OneHotDist, ResidualTower, TwoHotDist, symlog, symlog_bins
from reverie.specs import ActionSpec, ArraySpec

__all__ = ["MuZeroModel", "MuZeroModelConfig", "scale_gradient"]


@dataclass(frozen=True)
class MuZeroModelConfig:
    """Sizes of MuZero's three networks and of the value and reward supports."""

    latent: int = 64
    """Size D of the latent state."""
    units: int = 128
    """Width of the MLPs of all three networks."""
    layers: int = 2
    """Hidden layers of each MLP."""
    channels: int = 32
    """Channels of the residual conv tower (image observations only)."""
    blocks: int = 1
    """Residual blocks per resolution of the tower."""
    bins: int = 101
    """Bins of the two-hot value and reward supports."""
    support: float = 8.0
    """The bins span [-support, support] in symlog space (|value| up to about e^support)."""
    scale_latent: bool = True
    """Min-max scale every latent to [0, 1] (MuZero); False leaves the dynamics' output as it is."""


def scale_gradient(x: Tensor, scale: float) -> Tensor:
    """``x`` in the forward pass; its gradient multiplied by ``scale`` in the backward pass."""
    return x * scale + x.detach() * (1.0 - scale)


def _minmax(x: Tensor) -> Tensor:
    low, high = x.min(-1, keepdim=True).values, x.max(-1, keepdim=True).values
    return (x - low) / (high - low).clamp(min=1e-5)


class MuZeroModel(nn.Module):
    """Implements :class:`reverie.models.base.WorldModel` (capabilities: reward, value, policy, transition)."""

    capabilities = frozenset({REWARD, VALUE, POLICY, TRANSITION})
    bins: Tensor
    """The two-hot support ``[bins]`` in symlog space (a buffer)."""

    def __init__(self, obs_spec: Mapping[str, ArraySpec], act_spec: ActionSpec, cfg: MuZeroModelConfig):
        super().__init__()
        self.obs_spec = dict(obs_spec)
        self.act_spec = act_spec
        self.cfg = cfg
        self.feat_size = cfg.latent
        self.vector_keys, self.image_keys = split_keys(self.obs_spec)
        embed = 0
        self.vectors: MLP | None = None
        self.tower: ResidualTower | None = None
        if self.vector_keys:
            size = sum(math.prod(self.obs_spec[k].shape) for k in self.vector_keys)
            self.vectors = MLP(size, None, cfg.units, cfg.layers)
            embed += cfg.units
        if self.image_keys:
            h, w = self.obs_spec[self.image_keys[0]].shape[:2]
            channels = sum(self.obs_spec[k].shape[2] for k in self.image_keys)
            self.tower = ResidualTower((h, w, channels), cfg.channels, cfg.blocks)
            embed += self.tower.out_dim
        self.to_latent = nn.Linear(embed, cfg.latent)
        self.dynamics = MLP(cfg.latent + act_spec.size, None, cfg.units, cfg.layers)
        self.next_latent = nn.Linear(cfg.units, cfg.latent)
        self.reward_head = MLP(cfg.units, cfg.bins, cfg.units, 0, zero_out=True)
        self.prediction = MLP(cfg.latent, None, cfg.units, cfg.layers)
        self.value_head = MLP(cfg.units, cfg.bins, cfg.units, 0, zero_out=True)
        self.policy_head = MLP(cfg.units, act_spec.size, cfg.units, 0, zero_out=True)
        self.register_buffer("bins", symlog_bins(cfg.bins, -cfg.support, cfg.support), persistent=False)

    # -- the three networks --------------------------------------------------------------------
    def represent(self, obs: Mapping[str, Tensor]) -> Tensor:
        """h: observations ``{key: [..., *shape]}`` -> latent ``[..., D]``."""
        parts, lead = [], None
        if self.vectors is not None:
            first = self.vector_keys[0]
            lead = obs[first].shape[:obs[first].dim() - len(self.obs_spec[first].shape)]
            x = torch.cat([obs[k].reshape(*lead, -1).float() for k in self.vector_keys], -1)
            parts.append(self.vectors(symlog(x)))
        if self.tower is not None:
            img = torch.cat([obs[k] for k in self.image_keys], -1)          # [..., H, W, C]
            lead = img.shape[:-3]
            parts.append(self.tower(img.reshape(-1, *img.shape[-3:])).reshape(*lead, -1))
        return self._scale(self.to_latent(torch.cat(parts, -1)))

    def recurrent(self, latent: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        """g: latent ``[N, D]``, action ``[N, A]`` -> (next latent ``[N, D]``, reward logits ``[N, bins]``)."""
        hidden = self.dynamics(torch.cat([latent, action.to(latent.dtype)], -1))
        return self._scale(self.next_latent(hidden)), self.reward_head(hidden)

    def predict(self, latent: Tensor) -> tuple[Tensor, Tensor]:
        """f: latent ``[..., D]`` -> (policy logits ``[..., K]``, value logits ``[..., bins]``)."""
        hidden = self.prediction(latent)
        return self.policy_head(hidden), self.value_head(hidden)

    def _scale(self, latent: Tensor) -> Tensor:
        return _minmax(latent) if self.cfg.scale_latent else latent

    def expectation(self, logits: Tensor) -> Tensor:
        """The mean of a two-hot reward or value distribution: logits ``[..., bins]`` -> ``[...]``."""
        return TwoHotDist(logits, self.bins).mean()

    def _state(self, latent: Tensor, reward: Tensor) -> dict[str, Tensor]:
        logits, value_logits = self.predict(latent)
        return {"latent": latent, "reward": reward, "value": self.expectation(value_logits), "logits": logits}

    # -- the world-model contract --------------------------------------------------------------
    def initial(self, batch: int) -> dict[str, Tensor]:
        latent = torch.zeros(batch, self.cfg.latent, device=self.bins.device)
        return self._state(latent, torch.zeros(batch, device=latent.device))

    def observe(self, obs: Mapping[str, Tensor], action: Tensor, is_first: Tensor,
                state: State | None = None) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Each step's state is the representation of its own observation: ``[B, T]`` and the last ``[B]``."""
        latent = self.represent(obs)                                           # [B, T, D]
        states = self._state(latent, torch.zeros(latent.shape[:-1], device=latent.device))
        return states, {k: v[:, -1] for k, v in states.items()}

    def step(self, state: State, action: Tensor) -> dict[str, Tensor]:
        latent, reward_logits = self.recurrent(state_entries(state)["latent"], action)
        return self._state(latent, self.expectation(reward_logits))

    def features(self, state: State) -> Tensor:
        return state_entries(state)["latent"]

    def transition(self, state: State, action: Tensor) -> tuple[Tensor, TransitionMap]:
        """``(latent [N, L], f)``: the hidden state and the dynamics network's next hidden state at ``action``
        (deterministic already)."""
        return state_entries(state)["latent"], transition_map(lambda z, a: self.recurrent(z, a)[0], action)

    def reward(self, state: State) -> Tensor:
        return state_entries(state)["reward"]

    def value(self, state: State) -> Tensor:
        return state_entries(state)["value"]

    def policy(self, state: State) -> OneHotDist:
        return OneHotDist(state_entries(state)["logits"])

    # -- training ------------------------------------------------------------------------------
    def unroll_loss(self, obs: Mapping[str, Tensor], actions: Tensor, value: Tensor, reward: Tensor,
                    policy: Tensor, value_mask: Tensor, reward_mask: Tensor, policy_mask: Tensor,
                    dynamics_grad: float = 0.5) -> tuple[dict[str, Tensor], dict[str, float]]:
        """MuZero's loss along K real actions from the observation at the start.

        obs: ``{key: [B, *shape]}`` at the start; actions ``[B, K, A]`` taken at unroll steps 0 .. K-1;
        targets value ``[B, K + 1]``, reward ``[B, K + 1]`` (entry k for the transition into step k; entry
        0 unused), policy ``[B, K + 1, A]``; masks of the same leading shapes (1 where the target counts).
        The gradient into the dynamics is scaled by ``dynamics_grad`` at every step and each unrolled
        step's loss by 1 / K, as in the paper.

        Returns per-row losses ``{value, reward, policy}`` each ``[B]`` (unweighted) and metrics.
        """
        b, k = actions.shape[:2]
        latent = self.represent(obs)
        # per-row sums [B] over the unroll steps
        terms = {name: torch.zeros(b, device=latent.device) for name in ("value", "reward", "policy")}
        metrics: dict[str, float] = {}
        for step in range(k + 1):
            if step:
                latent, reward_logits = self.recurrent(latent, actions[:, step - 1])
                latent = scale_gradient(latent, dynamics_grad)
                terms["reward"] = terms["reward"] + reward_mask[:, step] * TwoHotDist(
                    reward_logits, self.bins).loss(reward[:, step]) / k
            logits, value_logits = self.predict(latent)
            weight = 1.0 / k if step else 1.0
            value_dist = TwoHotDist(value_logits, self.bins)
            terms["value"] = terms["value"] + weight * value_mask[:, step] * value_dist.loss(value[:, step])
            cross_entropy = -(policy[:, step] * F.log_softmax(logits.float(), -1)).sum(-1)
            terms["policy"] = terms["policy"] + weight * policy_mask[:, step] * cross_entropy
            if step == 0:
                value_error = (value_dist.mean().detach() - value[:, 0]).abs()[value_mask[:, 0] > 0]
                metrics["model/value_error"] = float(value_error.mean()) if value_error.numel() else float("nan")
        return terms, metrics
