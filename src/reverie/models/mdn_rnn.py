"""The memory model of World Models: an LSTM with a mixture-density output, and the model it makes with the VAE.

:class:`MDNRNN` reads ``[z_t, a_{t+1}]`` and predicts the next code as a
mixture of ``mixtures`` Gaussians *per dimension* of z (the paper: 256 LSTM
units, 5 Gaussians), plus the reward from ``[z, h]`` and the episode's end. The end is read, by default
as in the reference implementation, from the LSTM's output h_t alone, *before* frame t is seen: "does the
step that leads into frame t end the episode". Read from ``[z_t, h_t]`` instead (``done_input="zh"``), the
head can learn the terminal frame's look (ViZDoom returns an all-black one) rather than the danger that
precedes it, and a dream, whose codes are sampled dimension by dimension, then almost never ends.
The rare end steps are weighted ``done_weight`` times in the loss (the reference: 10), which multiplies
the head's odds by that factor; ``cont`` either applies the reference's fixed threshold to them
(``dream_end="threshold"``: the dream ends when the weighted probability passes 1/2) or divides the factor
out again (``dream_end="sample"``: a calibrated probability for the dream to draw from).
Sampling at temperature ``tau`` divides the mixture logits by tau and
multiplies the standard deviations by sqrt(tau), as the paper does; tau = 0
returns the mean of the most likely component.

:class:`WorldModelsModel` is the VAE and the MDN-RNN behind reverie's
world-model contract (:mod:`reverie.models.base`). Its state after step t is
``{z, h, c}``: z_t the code of frame t (the VAE mean when observed, a mixture
sample when imagined) and (h_t, c_t) the LSTM after ``[z_{t-1}, action_t]``
(``action[t]`` leads into step t, reverie's convention), reset at ``is_first``.
Features are ``[z, h]`` (what the paper's CarRacing controller reads) or, built with
``features="zch"``, ``[z, c, h]`` (its take-cover controller's input). Capabilities:
reward, cont, decoder (the VAE's decoder on z) and transition (the LSTM state
``[h, c]`` stepped with the code at its mixture mean, for spectral analysis).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reverie.config import ConfigError, NonNegativeFloat, PositiveFloat, PositiveInt, check_ranges
from reverie.models.base import CONT, DECODER, REWARD, TRANSITION, State, TransitionMap, transition_map
from reverie.models.state import state_entries
from reverie.models.vae import ConvVAE, VAEConfig
from reverie.specs import ActionSpec, ArraySpec

__all__ = ["MDNRNN", "MDNRNNConfig", "MixtureParams", "WorldModelsModel", "mdn_log_prob", "mdn_sample"]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass(frozen=True)
class MDNRNNConfig:
    """The mixture-density LSTM and its optimiser."""

    hidden: PositiveInt = 256
    """LSTM units (the paper: 256)."""
    mixtures: PositiveInt = 5
    """Gaussians per dimension of z (the paper: 5)."""
    temperature: NonNegativeFloat = 1.0
    """tau used when the model imagines (``step``); 0 takes the most likely component's mean."""
    lr: PositiveFloat = 1e-3
    """Adam learning rate (the paper: 1e-3)."""
    batch_size: PositiveInt = 32
    """Sequences per gradient step."""
    reward_scale: NonNegativeFloat = 1.0
    """Weight of the reward's squared error in the loss."""
    done_scale: NonNegativeFloat = 1.0
    """Weight of the episode end's cross-entropy in the loss."""
    done_input: Literal["h", "zh"] = "h"
    """What the done head reads: h_t, the LSTM output before frame t is seen (the reference; the end frame
    is then also left out of the code's likelihood, as the reference never records it), or [z_t, h_t]."""
    done_weight: PositiveFloat = 10.0
    """Weight of the rare end steps in the done cross-entropy (the reference's restart factor: 10)."""
    dream_end: Literal["threshold", "sample"] = "threshold"
    """How ``cont`` reads the done head: 0 once the weighted probability passes 1/2, else 1 (the
    reference), or the calibrated probability (odds divided by done_weight) for the dream to sample."""
    grad_clip: PositiveFloat = 1.0
    """Gradient-norm clip."""

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass(frozen=True)
class MixtureParams:
    """A mixture of K Gaussians per dimension: ``logits``, ``mean``, ``log_std`` each ``[..., D, K]``."""

    logits: Tensor
    mean: Tensor
    log_std: Tensor


def mdn_log_prob(mix: MixtureParams, z: Tensor) -> Tensor:
    """log p(z) ``[...]`` of codes ``z [..., D]``: per dimension log sum_k pi_k N(z; mu_k, sigma_k), summed."""
    x = z.unsqueeze(-1)
    log_normal = -0.5 * ((x - mix.mean) * torch.exp(-mix.log_std)).pow(2) - mix.log_std - _LOG_SQRT_2PI
    return torch.logsumexp(F.log_softmax(mix.logits, -1) + log_normal, -1).sum(-1)


def mdn_sample(mix: MixtureParams, tau: float, generator: torch.Generator | None = None) -> Tensor:
    """A code ``[..., D]`` at temperature ``tau``: component k ~ softmax(logits / tau), then
    z ~ N(mu_k, tau * sigma_k^2). ``tau == 0`` gives the mean of each dimension's most likely component."""
    if tau == 0:
        k = mix.logits.argmax(-1, keepdim=True)
        return mix.mean.gather(-1, k).squeeze(-1)
    probs = F.softmax(mix.logits / tau, -1)
    flat = probs.reshape(-1, probs.shape[-1])
    k = torch.multinomial(flat, 1, generator=generator).reshape(*probs.shape[:-1], 1)
    mean = mix.mean.gather(-1, k).squeeze(-1)
    std = mix.log_std.gather(-1, k).squeeze(-1).exp() * math.sqrt(tau)
    noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + std * noise


class MDNRNN(nn.Module):
    """LSTM over ``[z_{t-1}, a_t]`` with a per-dimension Gaussian-mixture head for z_t and reward/done heads
    on ``[z_t, h_t]``."""

    def __init__(self, z_size: int, act_size: int, cfg: MDNRNNConfig):
        super().__init__()
        self.cfg, self.z_size, self.act_size = cfg, z_size, act_size
        self.cell = nn.LSTMCell(z_size + act_size, cfg.hidden)
        self.mdn = nn.Linear(cfg.hidden, 3 * z_size * cfg.mixtures)
        self.reward_head = nn.Linear(z_size + cfg.hidden, 1)
        self.done_head = nn.Linear((z_size if cfg.done_input == "zh" else 0) + cfg.hidden, 1)

    def recur(self, z: Tensor, action: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """One LSTM step on ``[z, action]``: ``(h, c)`` each ``[N, hidden]``."""
        return self.cell(torch.cat([z, action], -1), (h, c))

    def mixture(self, h: Tensor) -> MixtureParams:
        """The distribution of the code that goes with hidden state ``h [..., hidden]``: ``[..., D, K]``."""
        raw = self.mdn(h).reshape(*h.shape[:-1], self.z_size, 3, self.cfg.mixtures)
        return MixtureParams(raw[..., 0, :], raw[..., 1, :], raw[..., 2, :].clamp(-7.0, 5.0))

    def reward(self, z: Tensor, h: Tensor) -> Tensor:
        return self.reward_head(torch.cat([z, h], -1)).squeeze(-1)

    def done_logit(self, z: Tensor, h: Tensor) -> Tensor:
        """The done head's logit ``[...]`` (trained with the end steps weighted ``done_weight`` times)."""
        x = torch.cat([z, h], -1) if self.cfg.done_input == "zh" else h
        return self.done_head(x).squeeze(-1)

    def cont(self, z: Tensor, h: Tensor) -> Tensor:
        """The probability ``[...]`` that the episode goes on through this step (see ``dream_end``)."""
        logit = self.done_logit(z, h)
        if self.cfg.dream_end == "threshold":
            return (logit <= 0).to(h.dtype)
        # the weighted loss learns odds done_weight times the true ones: divide them out
        return torch.sigmoid(math.log(self.cfg.done_weight) - logit)

    def filter(self, z: Tensor, action: Tensor, is_first: Tensor, h: Tensor, c: Tensor,
               prev: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """LSTM states ``(hs, cs)`` each ``[B, T, H]`` for codes ``z [B, T, D]``: step t reads
        ``[z_{t-1}, action_t]`` (``prev`` before the window; zeros and a reset state where ``is_first``)."""
        hs, cs = [], []
        prev = torch.zeros_like(z[:, 0]) if prev is None else prev
        for t in range(z.shape[1]):
            keep = (~is_first[:, t]).to(z.dtype)[:, None]
            h, c = self.recur(prev * keep, action[:, t] * keep, h * keep, c * keep)
            hs.append(h)
            cs.append(c)
            prev = z[:, t]
        return torch.stack(hs, 1), torch.stack(cs, 1)

    def loss(self, z: Tensor, action: Tensor, is_first: Tensor, reward: Tensor, terminal: Tensor,
             mask: Tensor, start: tuple[Tensor, Tensor, Tensor] | None = None
             ) -> tuple[Tensor, dict[str, float], tuple[Tensor, Tensor, Tensor]]:
        """Negative log-likelihood of codes ``z [B, T, D]`` (per dimension, as the paper's loss) plus the
        weighted reward squared error and done cross-entropy, averaged over the steps where ``mask [B, T]``;
        and the state ``(z, h, c)`` after the window (detached), to carry into the next one.

        ``start``: ``(z, h, c)`` before the window (the code before its first step and the LSTM state),
        zeros if None. With ``done_input="h"`` the end frames are left out of the codes' likelihood."""
        B = z.shape[0]
        if start is None:
            zeros = z.new_zeros(B, self.cfg.hidden)
            start = (torch.zeros_like(z[:, 0]), zeros, zeros)
        hs, cs = self.filter(z, action, is_first, start[1], start[2], prev=start[0])
        m = mask.to(z.dtype)
        m_z = m * (~terminal).to(z.dtype) if self.cfg.done_input == "h" else m
        nll = -mdn_log_prob(self.mixture(hs), z) / self.z_size
        rew = (self.reward(z, hs) - reward).pow(2)
        weight = torch.as_tensor(self.cfg.done_weight, dtype=z.dtype, device=z.device)
        done = F.binary_cross_entropy_with_logits(self.done_logit(z, hs), terminal.to(z.dtype), reduction="none",
                                                  pos_weight=weight)
        n = m.sum().clamp(min=1.0)
        terms = {"mdn/z_nll": (nll * m_z).sum() / m_z.sum().clamp(min=1.0), "mdn/reward_mse": (rew * m).sum() / n,
                 "mdn/done_bce": (done * m).sum() / n}
        total = terms["mdn/z_nll"] + self.cfg.reward_scale * terms["mdn/reward_mse"] \
            + self.cfg.done_scale * terms["mdn/done_bce"]
        metrics = {**{k: float(v.detach()) for k, v in terms.items()}, "mdn/loss": float(total.detach())}
        return total, metrics, (z[:, -1].detach(), hs[:, -1].detach(), cs[:, -1].detach())


class WorldModelsModel(nn.Module):
    """The VAE and the MDN-RNN as a reverie world model (see the module docstring)."""

    capabilities = frozenset({REWARD, CONT, DECODER, TRANSITION})

    def __init__(self, obs_spec: Mapping[str, ArraySpec], act_spec: ActionSpec, vae: VAEConfig,
                 rnn: MDNRNNConfig, features: Literal["zh", "zch"] = "zh"):
        super().__init__()
        if features not in ("zh", "zch"):
            raise ConfigError(f"features must be 'zh' or 'zch', got {features!r}")
        images = [k for k, s in obs_spec.items() if s.is_image]
        if len(images) != 1 or len(obs_spec) != 1:
            raise ConfigError(f"World Models sees exactly one image observation, but the environment gives "
                              f"{sorted(obs_spec)}; use --obs pixels (or an environment whose observation is a frame)")
        self.key = images[0]
        self.obs_spec = {self.key: obs_spec[self.key]}
        self.act_spec = act_spec
        height, width, channels = obs_spec[self.key].shape
        self.vae = ConvVAE((height, width, channels), vae)
        self.rnn = MDNRNN(vae.z_size, act_spec.size, rnn)
        self.z_size, self.hidden = vae.z_size, rnn.hidden
        self.feature_parts = features
        self.feat_size = vae.z_size + rnn.hidden * (2 if features == "zch" else 1)
        self.temperature = float(rnn.temperature)
        """tau of :meth:`step`; set it to imagine at another temperature."""

    def _device(self) -> torch.device:
        return self.rnn.mdn.weight.device

    def initial(self, batch: int) -> dict[str, Tensor]:
        d = self._device()
        return {"z": torch.zeros(batch, self.z_size, device=d), "h": torch.zeros(batch, self.hidden, device=d),
                "c": torch.zeros(batch, self.hidden, device=d)}

    def observe(self, obs: Mapping[str, Tensor], action: Tensor, is_first: Tensor,
                state: State | None = None) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        image = obs[self.key]
        B, T = image.shape[:2]
        z, _ = self.vae.encode(image.reshape(B * T, *image.shape[2:]))
        z = z.reshape(B, T, -1)
        start = self.initial(B) if state is None else state_entries(state)
        hs, cs = self.rnn.filter(z, action, is_first, start["h"], start["c"], prev=start["z"])
        states = {"z": z, "h": hs, "c": cs}
        return states, {"z": z[:, -1], "h": hs[:, -1], "c": cs[:, -1]}

    def step(self, state: State, action: Tensor) -> dict[str, Tensor]:
        entries = state_entries(state)
        h, c = self.rnn.recur(entries["z"], action, entries["h"], entries["c"])
        z = mdn_sample(self.rnn.mixture(h), self.temperature)
        return {"z": z, "h": h, "c": c}

    def features(self, state: State) -> Tensor:
        """``[..., feat_size]``: ``[z, h]``, or ``[z, c, h]`` (h is always last)."""
        entries = state_entries(state)
        if self.feature_parts == "zch":
            return torch.cat([entries["z"], entries["c"], entries["h"]], -1)
        return torch.cat([entries["z"], entries["h"]], -1)

    def _mean_step(self, hc: Tensor, action: Tensor) -> Tensor:
        h, c = hc.split(self.hidden, -1)
        mix = self.rnn.mixture(h)
        z = (torch.softmax(mix.logits, -1) * mix.mean).sum(-1)
        return torch.cat(self.rnn.recur(z, action, h, c), -1)

    def transition(self, state: State, action: Tensor) -> tuple[Tensor, TransitionMap]:
        """``([h, c] [N, 2H], f)``: the LSTM state, and one step of it with the code at its mixture mean."""
        entries = state_entries(state)
        return torch.cat([entries["h"], entries["c"]], -1), transition_map(self._mean_step, action)

    def reward(self, state: State) -> Tensor:
        entries = state_entries(state)
        return self.rnn.reward(entries["z"], entries["h"])

    def cont(self, state: State) -> Tensor:
        entries = state_entries(state)
        return self.rnn.cont(entries["z"], entries["h"])

    def decode(self, state: State) -> dict[str, Tensor]:
        return {self.key: self.vae.decode(state_entries(state)["z"])}
