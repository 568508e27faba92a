"""Distribution objects with ``mode``, ``sample``, ``log_prob``, ``entropy`` and ``loss``.

They are deliberately small: each holds tensors of one batch shape and
offers what the world model and actor-critic need, nothing more.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from reverie.nn.functional import symexp, symlog, twohot


class OneHotDist:
    """Categorical over the last axis, sampled as straight-through one-hot vectors.

    logits: ``[..., K]``. ``unimix`` mixes the probabilities with a uniform
    distribution (DreamerV3 uses 1%) so no class ever has zero probability,
    which keeps KL terms and policy log-probabilities bounded.
    """

    def __init__(self, logits: Tensor, unimix: float = 0.0):
        logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits   # fp32 or fp64
        self._probs: Tensor | None = None
        if unimix > 0:
            probs = (1 - unimix) * F.softmax(logits, -1) + unimix / logits.shape[-1]
            self._probs = probs
            self.logits = torch.log(probs)  # already normalised: the mixture sums to one
        else:
            self.logits = torch.log_softmax(logits, -1)

    @property
    def probs(self) -> Tensor:
        if self._probs is None:
            self._probs = self.logits.exp()
        return self._probs

    def mode(self) -> Tensor:
        idx = self.logits.argmax(-1)
        hard = F.one_hot(idx, self.logits.shape[-1]).to(self.logits.dtype)
        return hard + self.probs - self.probs.detach()

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """One-hot sample whose gradient flows into the probabilities (straight-through)."""
        probs = self.probs
        k = probs.shape[-1]
        # Inverse-CDF sampling: one uniform number per variable; cheaper than multinomial on CPU.
        u = torch.rand(*probs.shape[:-1], 1, generator=generator, device=probs.device)
        idx = (probs.detach().cumsum(-1) < u).sum(-1).clamp_(max=k - 1)
        hard = F.one_hot(idx, k).to(probs.dtype)
        return hard + probs - probs.detach()

    def log_prob(self, onehot: Tensor) -> Tensor:
        return (onehot * self.logits).sum(-1)

    def entropy(self) -> Tensor:
        return -(self.probs * self.logits).sum(-1)


def categorical_kl(lhs_logits: Tensor, rhs_logits: Tensor) -> Tensor:
    """KL(lhs || rhs) for log-softmax logits ``[..., K]``, summed over the last axis."""
    return (lhs_logits.exp() * (lhs_logits - rhs_logits)).sum(-1)


class TwoHotDist:
    """A scalar predicted as a distribution over symlog-spaced bins (DreamerV3).

    logits: ``[..., K]``; bins: ``[K]`` in symlog space. ``mode`` returns the
    expected value transformed back with symexp. ``loss(target)`` is the
    cross-entropy against the two-hot encoding of ``symlog(target)``.
    """

    def __init__(self, logits: Tensor, bins: Tensor):
        self.logits = logits.float()
        self.bins = bins

    def mean(self) -> Tensor:
        """Expected value in the original (symexp'd) space, ``[...]``."""
        return symexp((F.softmax(self.logits, -1) * self.bins).sum(-1))

    mode = mean

    def log_prob(self, target: Tensor) -> Tensor:
        enc = twohot(symlog(target.float()), self.bins)
        return (enc * torch.log_softmax(self.logits, -1)).sum(-1)

    def loss(self, target: Tensor) -> Tensor:
        return -self.log_prob(target)


class SymlogMSE:
    """A deterministic prediction in symlog space; ``loss`` is squared error summed over event dims."""

    def __init__(self, pred: Tensor, event_dims: int = 1):
        self.pred = pred.float()
        self.dims = tuple(range(-event_dims, 0))

    def mode(self) -> Tensor:
        return symexp(self.pred)

    def loss(self, target: Tensor) -> Tensor:
        return ((self.pred - symlog(target.float())) ** 2).sum(self.dims)


class ImageMSE:
    """Images predicted in [-0.5, 0.5]; ``loss`` is squared error summed over H, W, C."""

    def __init__(self, pred: Tensor):
        self.pred = pred.float()

    def mode(self) -> Tensor:
        return self.pred

    def loss(self, target: Tensor) -> Tensor:
        return ((self.pred - target.float()) ** 2).sum((-3, -2, -1))


class ImageBernoulli:
    """Binary images (each cell and channel off or on, as MinAtar's 0/255 object channels) from logits
    ``[..., H, W, C]``, in :class:`ImageMSE`'s range: ``mode`` is -0.5 (off) or 0.5 (on), ``loss`` takes a
    target in [-0.5, 0.5] and is the binary cross-entropy summed over H, W, C."""

    def __init__(self, logits: Tensor):
        self.logits = logits.float()

    def mode(self) -> Tensor:
        return (self.logits > 0).float() - 0.5

    def loss(self, target: Tensor) -> Tensor:
        bce = F.binary_cross_entropy_with_logits(self.logits, target.float() + 0.5, reduction="none")
        return bce.sum((-3, -2, -1))


class Bernoulli:
    """Binary outcome from a logit ``[...]``; ``mode`` is the probability-thresholded value."""

    def __init__(self, logits: Tensor):
        self.logits = logits.float()

    @property
    def probs(self) -> Tensor:
        return torch.sigmoid(self.logits)

    def mode(self) -> Tensor:
        return (self.logits > 0).float()

    def loss(self, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(self.logits, target.float(), reduction="none")


class BoundedNormal:
    """Diagonal Normal for actions in [-1, 1] (DreamerV3's actor head).

    mean = tanh(raw_mean); std = (max_std - min_std) * sigmoid(raw_std + 2) + min_std.
    Samples are clipped to [-1, 1] with a straight-through gradient.
    """

    def __init__(self, raw_mean: Tensor, raw_std: Tensor, min_std: float = 0.1, max_std: float = 1.0):
        self.loc = torch.tanh(raw_mean.float())
        self.scale = (max_std - min_std) * torch.sigmoid(raw_std.float() + 2.0) + min_std

    def mode(self) -> Tensor:
        return self.loc

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        eps = torch.randn(self.loc.shape, generator=generator, device=self.loc.device, dtype=self.loc.dtype)
        x = self.loc + self.scale * eps
        return x + (x.clamp(-1, 1) - x).detach()

    def log_prob(self, x: Tensor) -> Tensor:
        z = (x - self.loc) / self.scale
        return (-0.5 * z ** 2 - torch.log(self.scale) - 0.5 * math.log(2 * math.pi)).sum(-1)

    def entropy(self) -> Tensor:
        return (0.5 + 0.5 * math.log(2 * math.pi) + torch.log(self.scale)).sum(-1)


class TanhNormal:
    """A diagonal Gaussian squashed by tanh: actions in (-1, 1) (SAC's and TD-MPC2's policy).

    ``mean``, ``log_std``: ``[..., A]`` of the Gaussian before the squash. ``sample`` is reparameterised
    (gradients flow into mean and std); :meth:`sample_with_log_prob` also returns the log-density computed
    from the drawn noise, which stays finite where ``atanh`` of a saturated action would not.

    ``mask [..., A]`` (0 or 1; a multitask run's padded action dimensions): actions are 0 where it is 0,
    and only the dimensions where it is 1 count in the log-density (TD-MPC2 masks its multitask policy so).
    """

    def __init__(self, mean: Tensor, log_std: Tensor, mask: Tensor | None = None):
        self.mean = mean.float()
        self.log_std = log_std.float()
        self.mask = None if mask is None else mask.float()

    def _masked(self, x: Tensor) -> Tensor:
        return x if self.mask is None else x * self.mask

    def mode(self) -> Tensor:
        return self._masked(torch.tanh(self.mean))

    def sample_with_log_prob(self, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(action ``[..., A]``, its log-density ``[...]``)."""
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        action = self._masked(torch.tanh(self.mean + eps * self.log_std.exp()))
        return action, self._log_prob(eps, action)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        return self.sample_with_log_prob(generator)[0]

    def _log_prob(self, eps: Tensor, action: Tensor) -> Tensor:
        gaussian = self._masked(-0.5 * eps ** 2 - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        return gaussian - self._masked(torch.log(F.relu(1 - action ** 2) + 1e-6)).sum(-1)

    def log_prob(self, action: Tensor) -> Tensor:
        action = action.float().clamp(-1 + 1e-6, 1 - 1e-6)
        eps = (torch.atanh(action) - self.mean) / self.log_std.exp()
        return self._log_prob(eps, action)

    def entropy(self) -> Tensor:
        """A one-sample estimate ``-log p(a)`` of the entropy (the squash has no closed form)."""
        return -self.sample_with_log_prob()[1]
