"""TD-MPC2's implicit world model (Hansen et al., 2024): no decoder, a latent grounded by predicting itself.

Five networks on a latent ``z`` of size D (all MLPs with LayerNorm):

- encoder: observation -> ``z``, normalised by SimNorm (a softmax over each group of 8 entries), so
  that every latent lies on a product of simplices and cannot blow up or collapse to one point;
- dynamics: ``[z, a]`` -> next ``z`` (SimNorm again);
- reward: ``[z, a]`` -> the reward of that transition, a two-hot distribution over symlog bins;
- Q ensemble: ``num_q`` heads ``[z, a]`` -> two-hot return distributions, with dropout after the
  first layer, evaluated together as one batched product per layer;
- policy prior: ``z`` -> a tanh-squashed Gaussian, its log-std squeezed into [log_std_min, log_std_max].

The model learns only through :mod:`reverie.agents.tdmpc2` (latent consistency, reward and TD
losses); it has no ``decoder`` and no ``cont``.

Differences from the reference networks: vector observations go through reverie's
:class:`~reverie.models.codecs.MultiEncoder` (symlog inputs, SiLU where TD-MPC2 has Mish), and
images through its conv encoder; hidden layers are reverie's :class:`~reverie.nn.MLP` (SiLU).

State (world-model contract): ``latent [..., D]`` and ``reward [...]`` (the predicted reward of the
transition into this state; 0 for an observed one). Capabilities:

- ``reward``: that stored reward;
- ``value``: the mean of two randomly chosen Q heads at the policy's sampled action (what TD-MPC2's
  planner bootstraps with, ``return_type='avg'``); the TD target uses the minimum of two instead
  (:meth:`TDMPC2Model.q_value` does both);
- ``policy``: the policy prior; ``transition``: the dynamics network (already deterministic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reverie.config import ConfigError
from reverie.models.base import POLICY, REWARD, TRANSITION, VALUE, State, TransitionMap, transition_map
from reverie.models.codecs import MultiEncoder
from reverie.models.state import state_entries
from reverie.nn import MLP, SimNorm, TanhNormal, TwoHotDist, symlog_bins
from reverie.specs import ActionSpec, ArraySpec

__all__ = ["QEnsemble", "TDMPC2Model", "TDMPC2ModelConfig"]


@dataclass(frozen=True)
class TDMPC2ModelConfig:
    """Network sizes; the defaults are TD-MPC2's 5M model (``model_size: 5`` of its config)."""

    latent: int = 512
    """Size D of the latent (a multiple of ``simnorm_group``)."""
    simnorm_group: int = 8
    """Entries per SimNorm softmax group."""
    enc_units: int = 256
    """Width of the encoder's hidden layers."""
    enc_layers: int = 1
    """Hidden layers of the encoder before its latent layer (TD-MPC2's num_enc_layers=2 means one)."""
    units: int = 512
    """Width of the dynamics, reward, Q and policy MLPs (two hidden layers each)."""
    num_q: int = 5
    """Q heads in the ensemble."""
    dropout: float = 0.01
    """Dropout after the first layer of every Q head (while training)."""
    bins: int = 101
    """Bins of the two-hot reward and Q supports."""
    vmin: float = -10.0
    """Lowest bin, in symlog space."""
    vmax: float = 10.0
    """Highest bin, in symlog space."""
    log_std_min: float = -10.0
    """Lower bound of the policy's log-std."""
    log_std_max: float = 2.0
    """Upper bound of the policy's log-std."""
    cnn_depth: int = 32
    """Channels of the first conv layer (pixel observations only)."""


def _latent_layer(in_dim: int, cfg: TDMPC2ModelConfig) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, cfg.latent), nn.LayerNorm(cfg.latent), SimNorm(cfg.simnorm_group))


class QEnsemble(nn.Module):
    """``members`` MLPs ``[..., in] -> [members, ..., out]`` of two hidden layers (Linear -> dropout on the
    first -> LayerNorm -> SiLU), evaluated as one batched matrix product per layer. Output layers start at
    zero (TD-MPC2)."""

    def __init__(self, members: int, in_dim: int, units: int, out_dim: int, dropout: float = 0.0):
        super().__init__()
        dims = [in_dim, units, units, out_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            bound = 1.0 / math.sqrt(a)   # nn.Linear's default initialisation, per member
            last = i == len(dims) - 2
            self.weights.append(nn.Parameter(torch.zeros(members, a, b) if last
                                             else torch.empty(members, a, b).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.zeros(members, 1, b) if last
                                            else torch.empty(members, 1, b).uniform_(-bound, bound)))
        self.norm_weights = nn.Parameter(torch.ones(2, members, 1, units))
        self.norm_biases = nn.Parameter(torch.zeros(2, members, 1, units))
        self.members, self.dropout = members, dropout

    def forward(self, x: Tensor, members: Tensor | None = None) -> Tensor:
        """``x [..., in]`` -> ``[E, ..., out]``; with ``members [M]`` (indices) only those: ``[M, ..., out]``."""
        lead = x.shape[:-1]

        def pick(p: Tensor) -> Tensor:
            return p if members is None else p[members]

        count = self.members if members is None else members.shape[0]
        h = x.reshape(1, -1, x.shape[-1]).expand(count, -1, -1)                          # [E, N, in]
        for i in range(3):
            h = torch.baddbmm(pick(self.biases[i]), h, pick(self.weights[i]))
            if i < 2:
                if i == 0 and self.dropout > 0:
                    h = F.dropout(h, self.dropout, self.training)
                h = torch.addcmul(pick(self.norm_biases[i]), F.layer_norm(h, h.shape[-1:]), pick(self.norm_weights[i]))
                h = F.silu(h)
        return h.reshape(count, *lead, h.shape[-1])


class TDMPC2Model(nn.Module):
    """Implements :class:`reverie.models.base.WorldModel` (capabilities: reward, value, policy, transition)."""

    capabilities = frozenset({REWARD, VALUE, POLICY, TRANSITION})
    bins: Tensor
    """The two-hot support ``[bins]`` in symlog space (a buffer)."""

    def __init__(self, obs_spec: Mapping[str, ArraySpec], act_spec: ActionSpec, cfg: TDMPC2ModelConfig):
        super().__init__()
        if act_spec.discrete:
            raise ConfigError("TD-MPC2 plans and acts with continuous actions, but this environment's are "
                              "discrete; train dreamer or muzero on it")
        if cfg.latent % cfg.simnorm_group:
            raise ConfigError(f"model.latent ({cfg.latent}) must be a multiple of model.simnorm_group "
                              f"({cfg.simnorm_group})")
        if cfg.num_q < 2:
            raise ConfigError(f"model.num_q must be >= 2 (two random heads are compared); got {cfg.num_q}")
        self.obs_spec = dict(obs_spec)
        self.act_spec = act_spec
        self.cfg = cfg
        self.feat_size = cfg.latent
        a, d, u = act_spec.size, cfg.latent, cfg.units
        self.embed = MultiEncoder(self.obs_spec, cfg.enc_units, cfg.enc_layers, cfg.cnn_depth)
        self.to_latent = _latent_layer(self.embed.out_dim, cfg)
        self.dynamics = nn.Sequential(MLP(d + a, None, u, 2), _latent_layer(u, cfg))
        self.reward_head = MLP(d + a, cfg.bins, u, 2, zero_out=True)
        self.pi = MLP(d, 2 * a, u, 2)
        self.qs = QEnsemble(cfg.num_q, d + a, u, cfg.bins, cfg.dropout)
        self.register_buffer("bins", symlog_bins(cfg.bins, cfg.vmin, cfg.vmax), persistent=False)

    # -- the networks --------------------------------------------------------------------------
    def encoders(self) -> list[nn.Module]:
        """The modules that map observations to latents (TD-MPC2 trains them at a lower learning rate)."""
        return [self.embed, self.to_latent]

    def encode(self, obs: Mapping[str, Tensor]) -> Tensor:
        """Observations ``{key: [..., *shape]}`` -> latents ``[..., D]``."""
        return self.to_latent(self.embed(dict(obs)))

    def next(self, z: Tensor, action: Tensor) -> Tensor:
        """Dynamics: ``z [..., D]``, ``action [..., A]`` -> next ``z [..., D]``."""
        return self.dynamics(torch.cat([z, action.to(z.dtype)], -1))

    def reward_logits(self, z: Tensor, action: Tensor) -> Tensor:
        """``[..., bins]`` logits of the reward of taking ``action`` in ``z``."""
        return self.reward_head(torch.cat([z, action.to(z.dtype)], -1))

    def q_logits(self, z: Tensor, action: Tensor, heads: nn.Module | None = None,
                 members: Tensor | None = None) -> Tensor:
        """``[num_q, ..., bins]`` logits of every Q head, or ``[M, ..., bins]`` of heads ``members [M]``
        (``heads``: another ensemble of the same shape, e.g. an EMA target)."""
        return (heads or self.qs)(torch.cat([z, action.to(z.dtype)], -1), members)

    def expectation(self, logits: Tensor) -> Tensor:
        """The mean of two-hot distributions: ``[..., bins]`` -> ``[...]``."""
        return TwoHotDist(logits, self.bins).mean()

    def q_value(self, z: Tensor, action: Tensor, reduce: Literal["min", "mean"], heads: nn.Module | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        """The min or mean of two randomly chosen Q heads (one choice for the whole batch): ``[...]``."""
        pick = torch.randperm(self.cfg.num_q, generator=generator)[:2].to(z.device)
        q = self.expectation(self.q_logits(z, action, heads, pick))                   # [2, ...]
        return q.min(0).values if reduce == "min" else q.mean(0)

    def policy_dist(self, z: Tensor) -> TanhNormal:
        """The policy prior at latents ``z [..., D]``."""
        mean, raw = self.pi(z).chunk(2, -1)
        low, high = self.cfg.log_std_min, self.cfg.log_std_max
        return TanhNormal(mean, low + 0.5 * (high - low) * (torch.tanh(raw) + 1))

    # -- the world-model contract --------------------------------------------------------------
    def initial(self, batch: int) -> dict[str, Tensor]:
        """Uniform groups (the SimNorm of zeros) and no reward."""
        latent = torch.full((batch, self.cfg.latent), 1.0 / self.cfg.simnorm_group, device=self.bins.device)
        return {"latent": latent, "reward": torch.zeros(batch, device=latent.device)}

    def observe(self, obs: Mapping[str, Tensor], action: Tensor, is_first: Tensor,
                state: State | None = None) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Each step's latent is the encoding of its own observation: ``[B, T]`` and the last ``[B]``."""
        latent = self.encode(obs)
        states = {"latent": latent, "reward": torch.zeros(latent.shape[:-1], device=latent.device)}
        return states, {k: v[:, -1] for k, v in states.items()}

    def step(self, state: State, action: Tensor) -> dict[str, Tensor]:
        z = state_entries(state)["latent"]
        return {"latent": self.next(z, action), "reward": self.expectation(self.reward_logits(z, action))}

    def features(self, state: State) -> Tensor:
        return state_entries(state)["latent"]

    def transition(self, state: State, action: Tensor) -> tuple[Tensor, TransitionMap]:
        """``(latent [N, D], f)`` with ``f`` the dynamics network at ``action``."""
        return state_entries(state)["latent"], transition_map(self.next, action)

    def reward(self, state: State) -> Tensor:
        return state_entries(state)["reward"]

    def value(self, state: State) -> Tensor:
        """Mean of two random Q heads at an action sampled from the policy (TD-MPC2's terminal value)."""
        z = state_entries(state)["latent"]
        return self.q_value(z, self.policy_dist(z).sample(), "mean")

    def policy(self, state: State) -> TanhNormal:
        return self.policy_dist(state_entries(state)["latent"])
