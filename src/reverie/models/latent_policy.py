"""A policy in latent-action space, decoded into real actions (LAPO's stages 2 and 3: Schmidt and Jiang, ICLR 2024).

:class:`LatentPolicy` reads one frame ``o_t`` and gives, through one network,

- ``latent(o_t) [N, D]``: the latent action it would take. It is cloned from videos without actions
  (:meth:`LatentPolicy.clone_loss`): regressed, by mean squared error as LAPO does, onto the code vector
  ``e_k`` that a latent-action model's IDM (:mod:`reverie.models.latent_action`) inferred for the
  transition ``o_t -> o_{t+1}`` in the video;
- action logits ``[N, A]``: a linear decoder of the latent (``W latent + b``), a multinomial logistic
  regression fitted on the IDM's code vectors of a few transitions whose actions are known
  (:func:`fit_linear_decoder`, loaded by :meth:`LatentPolicy.set_decoder`);
- a value ``[N]`` from the same torso, for online fine-tuning (:mod:`reverie.behavior.ppo`); cloning does not
  train it.

The same class with its initial weights is the from-scratch policy that the fine-tuned one is compared with:
the latent is then only a 16-wide bottleneck layer of an ordinary actor-critic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from torch import Tensor, nn

from reverie.config import ConfigError, PositiveInt, check_ranges
from reverie.models.latent_action import to_frames

__all__ = ["LatentPolicy", "LatentPolicyConfig", "fit_linear_decoder", "nearest_codes"]


@dataclass(frozen=True)
class LatentPolicyConfig:
    """Sizes of the policy network."""

    channels: PositiveInt = 16
    """Channels of its convolution."""
    hidden: PositiveInt = 128
    """Width of the torso's linear layer."""

    def __post_init__(self) -> None:
        check_ranges(self)


class LatentPolicy(nn.Module):
    """Frames ``uint8 [N, H, W, C]`` -> latent action ``[N, D]`` -> action logits ``[N, A]``, and a value ``[N]``
    (see the module docstring). A 3 x 3 convolution, then a linear layer over the whole frame (the policy must
    know where the paddle is: unlike the IDM, it reads positions)."""

    def __init__(self, frame_shape: tuple[int, int, int], latent_size: int, actions: int, cfg: LatentPolicyConfig):
        super().__init__()
        height, width, channels = frame_shape
        self.frame_shape, self.cfg = tuple(frame_shape), cfg
        self.torso = nn.Sequential(nn.Conv2d(channels, cfg.channels, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                   nn.Linear(cfg.channels * height * width, cfg.hidden), nn.ReLU())
        self.latent_head = nn.Linear(cfg.hidden, latent_size)
        self.decoder = nn.Linear(latent_size, actions)
        self.value_head = nn.Linear(cfg.hidden, 1)

    def _torso(self, image: Tensor) -> Tensor:
        if tuple(image.shape[1:]) != self.frame_shape:
            raise ValueError(f"the policy reads frames [N, {', '.join(map(str, self.frame_shape))}], got "
                             f"{tuple(image.shape)}")
        return self.torso(to_frames(image))

    def latent(self, image: Tensor) -> Tensor:
        """The latent action ``[N, D]`` for frames ``image [N, H, W, C]``."""
        return self.latent_head(self._torso(image))

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Action logits ``[N, A]`` and values ``[N]`` for frames ``image [N, H, W, C]``."""
        h = self._torso(image)
        return self.decoder(self.latent_head(h)), self.value_head(h).squeeze(-1)

    def clone_loss(self, image: Tensor, target: Tensor) -> Tensor:
        """Mean squared error (per latent dimension) of ``latent(image)`` against the IDM's code vectors
        ``target [N, D]``."""
        return F.mse_loss(self.latent(image), target)

    @torch.no_grad()
    def set_decoder(self, weight: np.ndarray, bias: np.ndarray) -> None:
        """Load the decoder ``logits = weight @ latent + bias`` (``weight [A, D]``, ``bias [A]``)."""
        self.decoder.weight.copy_(torch.as_tensor(weight, dtype=self.decoder.weight.dtype))
        self.decoder.bias.copy_(torch.as_tensor(bias, dtype=self.decoder.bias.dtype))


def nearest_codes(latents: Tensor, codebook: Tensor) -> Tensor:
    """``[N]``: the index of the code vector of ``codebook [K, D]`` nearest each of ``latents [N, D]``."""
    return torch.cdist(latents, codebook).argmin(-1)


def fit_linear_decoder(latents: np.ndarray, actions: np.ndarray, num_actions: int, seed: int = 0
                       ) -> tuple[np.ndarray, np.ndarray]:
    """``(weight [A, D], bias [A])``: multinomial logistic regression (L2 weight 1, on standardised inputs, the
    standardisation folded into the weights) from ``latents [N, D]`` to ``actions [N]`` in ``[0, A)``. An action
    absent from the labels gets logits 30 below the lowest of the others' (probability near 0)."""
    x, y = np.asarray(latents, np.float64), np.asarray(actions)
    if x.ndim != 2 or y.shape != (len(x),) or not len(x):
        raise ValueError(f"a decoder is fitted on latents [N, D] and actions [N], got {x.shape} and {y.shape}")
    if y.min() < 0 or y.max() >= num_actions:
        raise ValueError(f"actions must lie in [0, {num_actions}), got {y.min()} .. {y.max()}")
    present = np.unique(y)
    if len(present) < 2:
        raise ConfigError(f"the labelled transitions all have action {present[0]}; a decoder needs two actions "
                          "or more: label more transitions")
    mean, std = x.mean(0), x.std(0) + 1e-8
    model = LogisticRegression(max_iter=2000, random_state=seed).fit((x - mean) / std, y)
    coef, intercept = model.coef_, model.intercept_
    if len(present) == 2:   # scikit-learn gives one row, the logit of the second class against the first
        coef = np.concatenate([-coef / 2, coef / 2])
        intercept = np.concatenate([-intercept / 2, intercept / 2])
    weight = np.zeros((num_actions, x.shape[1]))
    bias = np.full(num_actions, -np.inf)
    weight[present] = coef / std
    bias[present] = intercept - (coef / std) @ mean
    bias[~np.isin(np.arange(num_actions), present)] = bias[present].min() - 30.0
    return weight, bias
