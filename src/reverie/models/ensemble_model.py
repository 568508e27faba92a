"""PETS' probabilistic ensemble as a world model: particles of the observation vector.

PETS assumes the environment is fully observed, so filtering is trivial: the
state after observing step t is P particles sitting at the observation
vector of step t. Imagination moves every particle with its ensemble member
(see :mod:`reverie.models.ensemble` for TS1 / TS-infinity propagation).

State (leaves share the batch axes ``[...]``): ``obs [..., P, D]`` particle
observation vectors, ``member [..., P]`` the member propagating each particle,
``reward [..., P]`` the reward each member predicted for arriving there.
Capabilities: ``reward`` (the particles' mean), ``decoder`` (the particles'
mean observation, split back into the observation keys) and ``transition``
(``z`` the particles' mean observation, ``f(z)`` the members' average
predicted mean of the next observation: the ensemble without its sampling).
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import Tensor, nn

from reverie.models.base import DECODER, REWARD, TRANSITION, State, TransitionMap, transition_map
from reverie.models.ensemble import EnsembleConfig, ProbabilisticEnsemble
from reverie.models.state import state_entries
from reverie.specs import ActionSpec, ArraySpec

__all__ = ["EnsembleWorldModel", "flat_obs_tensor"]


def flat_obs_tensor(obs: Mapping[str, Tensor], keys: list[str], lead: int) -> Tensor:
    """Concatenate vector observations ``{key: [*lead_shape, ...]}`` into float32 ``[*lead_shape, D]``."""
    first = obs[keys[0]]
    shape = tuple(first.shape[:lead])
    return torch.cat([obs[k].float().reshape(*shape, -1) for k in keys], -1)


class EnsembleWorldModel(nn.Module):
    """Implements :class:`reverie.models.base.WorldModel` with a probabilistic ensemble and P particles."""

    capabilities = frozenset({REWARD, DECODER, TRANSITION})

    def __init__(self, obs_spec: Mapping[str, ArraySpec], act_spec: ActionSpec, cfg: EnsembleConfig,
                 particles: int):
        super().__init__()
        images = sorted(k for k, s in obs_spec.items() if s.is_image)
        if images:
            raise ValueError(f"the ensemble models state vectors, but the observations include images {images}")
        if particles < 1:
            raise ValueError(f"particles must be >= 1; got {particles}")
        self.obs_spec = dict(obs_spec)
        self.act_spec = act_spec
        self.keys = sorted(obs_spec)
        self.particles = particles
        obs_dim = sum(math.prod(s.shape) for s in obs_spec.values())
        self.ensemble = ProbabilisticEnsemble(obs_dim, act_spec.size, cfg)
        self.feat_size = obs_dim

    # -- the core ------------------------------------------------------------------------------
    def initial(self, batch: int) -> dict[str, Tensor]:
        """Particles at the zero vector, members in a fixed order: stand-ins until the first observation
        (drawing nothing from the random generator, so creating it leaves the random stream alone)."""
        device = self.ensemble.in_mean.device
        member = torch.arange(self.particles, device=device) % self.ensemble.members
        return {"obs": torch.zeros(batch, self.particles, self.feat_size, device=device),
                "member": member.expand(batch, self.particles).contiguous(),
                "reward": torch.zeros(batch, self.particles, device=device)}

    def observe(self, obs: Mapping[str, Tensor], action: Tensor, is_first: Tensor,
                state: State | None = None) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """obs ``{key: [B, T, ...]}`` -> (states ``[B, T]``, last state ``[B]``): P particles at each observation,
        spread over the members in one random order shared by the whole call."""
        b, t = action.shape[:2]
        vec = flat_obs_tensor(obs, self.keys, 2)                                      # [B, T, D]
        start = self.ensemble.start_state(vec.reshape(b * t, -1), self.particles)
        states = {k: v.reshape(b, t, *v.shape[1:]) for k, v in start.items()}
        return states, {k: v[:, -1] for k, v in states.items()}

    def step(self, state: State, action: Tensor) -> dict[str, Tensor]:
        return self.ensemble.step(state_entries(state), action)

    def features(self, state: State) -> Tensor:
        """The particles' mean observation vector ``[..., D]``."""
        return state_entries(state)["obs"].mean(-2)

    # -- capabilities --------------------------------------------------------------------------
    def reward(self, state: State) -> Tensor:
        return state_entries(state)["reward"].mean(-1)

    def decode(self, state: State) -> dict[str, Tensor]:
        """``{key: [..., *shape]}`` from the particles' mean observation."""
        mean = self.features(state)
        lead = mean.shape[:-1]
        sizes = [math.prod(self.obs_spec[k].shape) for k in self.keys]
        return {k: part.reshape(*lead, *self.obs_spec[k].shape) for k, part in zip(self.keys, mean.split(sizes, -1))}

    def transition(self, state: State, action: Tensor) -> tuple[Tensor, TransitionMap]:
        """``(z [N, D], f)``: the particles' mean observation and the members' average predicted mean next
        observation at ``action`` (:meth:`ProbabilisticEnsemble.mean_next`)."""
        return self.features(state), transition_map(self.ensemble.mean_next, action)
