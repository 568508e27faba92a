"""The probabilistic ensemble of PETS (Chua et al., 2018): E Gaussian MLPs with trajectory sampling.

Each member maps (observation, action) to a diagonal Gaussian over
(observation change, reward). All members are evaluated together: every layer
is one batched matrix product over a leading member axis (weights ``[E, in,
out]``), never a Python loop over members.

- Inputs and targets are normalised by a mean and std fitted to the training
  data (:meth:`ProbabilisticEnsemble.fit_normaliser`); the networks and the
  NLL work in normalised units, predictions come back in the data's units.
- The log-variance is squeezed between learned soft bounds, as in PETS:
  ``logvar = max - softplus(max - raw)``, then ``min + softplus(logvar - min)``,
  and the loss adds ``bound_weight * (sum max - sum min)`` so the bounds
  tighten around the data instead of drifting apart. Members own their bounds
  (``[E, 1, out]``) so one member can be restored without touching the others.

Planning (the contract of :mod:`reverie.planning`): a state is a dict of
``obs [M, P, D]`` (P particles of each of M start states), ``member [M, P]``
(the ensemble member that propagates each particle) and ``reward [M, P]``
(the mean reward the member predicted for arriving there). ``step`` samples
every particle's next observation from its member's Gaussian; with
``propagation="ts1"`` every particle first draws a fresh member uniformly
(TS1), with ``"tsinf"`` it keeps the member it started with (TS-infinity).
``reward(state)`` is the particles' mean ``[M]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class EnsembleConfig:
    """Architecture and training of the probabilistic ensemble."""

    members: int = 5
    """Ensemble members E (PETS uses 5)."""
    units: int = 200
    """Width of every hidden layer."""
    layers: int = 4
    """Hidden layers per member (SiLU, i.e. swish, activations as in PETS)."""
    propagation: Literal["ts1", "tsinf"] = "tsinf"
    """Trajectory sampling: ts1 draws a new member per particle every step, tsinf keeps one per particle."""
    lr: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 5e-5
    """L2 penalty on the weight matrices (not on biases or log-variance bounds)."""
    max_logvar: float = 0.5
    """Initial upper soft bound of the normalised log-variance."""
    min_logvar: float = -10.0
    """Initial lower soft bound of the normalised log-variance."""
    bound_weight: float = 0.01
    """Weight of the penalty that pulls the log-variance bounds together."""

    def __post_init__(self) -> None:
        if self.members < 1 or self.units < 1 or self.layers < 1:
            raise ValueError(f"members, units and layers must be >= 1; got {self.members}, {self.units}, {self.layers}")
        if self.min_logvar >= self.max_logvar:
            raise ValueError(f"min_logvar ({self.min_logvar}) must be below max_logvar ({self.max_logvar})")


class ProbabilisticEnsemble(nn.Module):
    """E probabilistic MLPs predicting (observation change ``[D]``, reward) from (obs ``[D]``, action ``[A]``)."""

    # buffers: the data's statistics, set by :meth:`fit_normaliser`
    in_mean: Tensor
    in_std: Tensor
    out_mean: Tensor
    out_std: Tensor

    def __init__(self, obs_dim: int, action_dim: int, cfg: EnsembleConfig):
        super().__init__()
        self.cfg = cfg
        self.obs_dim, self.action_size = obs_dim, action_dim
        self.members = cfg.members
        self.propagation = cfg.propagation
        in_dim, out_dim = obs_dim + action_dim, obs_dim + 1
        dims = [in_dim] + [cfg.units] * cfg.layers + [2 * out_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(dims[:-1], dims[1:]):
            std = 1.0 / (2.0 * math.sqrt(fan_in))   # PETS' truncated-normal initialisation
            w = nn.init.trunc_normal_(torch.empty(cfg.members, fan_in, fan_out), std=std, a=-2 * std, b=2 * std)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.zeros(cfg.members, 1, fan_out)))
        self.max_logvar = nn.Parameter(torch.full((cfg.members, 1, out_dim), float(cfg.max_logvar)))
        self.min_logvar = nn.Parameter(torch.full((cfg.members, 1, out_dim), float(cfg.min_logvar)))
        self.register_buffer("in_mean", torch.zeros(in_dim))
        self.register_buffer("in_std", torch.ones(in_dim))
        self.register_buffer("out_mean", torch.zeros(out_dim))
        self.register_buffer("out_std", torch.ones(out_dim))

    # -- the networks --------------------------------------------------------------------------
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised inputs ``[E, M, in]`` (row block e goes through member e) -> normalised
        mean and bounded log-variance, each ``[E, M, out]``."""
        h = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w)   # [E, M, fan_out]: all members in one batched matmul
            if i < last:
                h = F.silu(h)
        mean, raw = h.chunk(2, -1)
        logvar = self.max_logvar - F.softplus(self.max_logvar - raw)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar

    def forward_rows(self, x: Tensor, member: Tensor) -> tuple[Tensor, Tensor]:
        """Each row through its own member: normalised inputs ``[R, in]``, member ``[R]`` (long)
        -> normalised mean and log-variance ``[R, out]``.

        Rows are sorted by member into a zero-padded ``[E, W, in]`` block (W the largest
        member count), so the cost is one batched pass however the members are assigned.
        """
        rows = x.shape[0]
        counts = torch.bincount(member, minlength=self.members)
        width = int(counts.max())
        order = torch.argsort(member, stable=True)
        sorted_member = member[order]
        first = torch.cumsum(counts, 0) - counts                                  # [E] first sorted row of each
        slot = sorted_member * width + torch.arange(rows, device=x.device) - first[sorted_member]   # [R]
        padded = x.new_zeros(self.members * width, x.shape[1]).index_copy(0, slot, x[order])
        mean, logvar = self.forward(padded.view(self.members, width, -1))
        unsort = torch.empty_like(order)
        unsort[order] = torch.arange(rows, device=x.device)
        pick = slot[unsort]                                                       # [R] padded slot of each row
        return mean.reshape(-1, mean.shape[-1])[pick], logvar.reshape(-1, logvar.shape[-1])[pick]

    # -- normalisation -------------------------------------------------------------------------
    @torch.no_grad()
    def fit_normaliser(self, inputs: Tensor, targets: Tensor) -> None:
        """Set the statistics from training data: inputs ``[M, D + A]``, targets ``[M, D + 1]``.
        Constant columns (e.g. an unused one-hot action) get std 1 instead of 0."""
        for data, mean, std in ((inputs, self.in_mean, self.in_std), (targets, self.out_mean, self.out_std)):
            m, s = data.mean(0), data.std(0, unbiased=False)
            mean.copy_(m)
            std.copy_(torch.where(s < 1e-6, torch.ones_like(s), s))

    def normalise_inputs(self, inputs: Tensor) -> Tensor:
        return (inputs - self.in_mean) / self.in_std

    def normalise_targets(self, targets: Tensor) -> Tensor:
        return (targets - self.out_mean) / self.out_std

    # -- prediction ----------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, obs: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        """Every member on every row: obs ``[N, D]``, action ``[N, A]`` -> mean and variance
        ``[E, N, D + 1]`` of (observation change, reward) in the data's units (no gradients)."""
        x = self.normalise_inputs(torch.cat([obs, action], -1))
        mean, logvar = self.forward(x.unsqueeze(0).expand(self.members, *x.shape))
        return mean * self.out_std + self.out_mean, logvar.exp() * self.out_std ** 2

    def mean_next(self, obs: Tensor, action: Tensor) -> Tensor:
        """The members' average predicted next observation: obs ``[N, D]``, action ``[N, A]`` -> ``obs +
        mean_e(mean change of member e)`` ``[N, D]`` in the data's units, differentiable (no sampling)."""
        x = self.normalise_inputs(torch.cat([obs, action.to(obs.dtype)], -1))
        mean, _ = self.forward(x.unsqueeze(0).expand(self.members, *x.shape))          # [E, N, D + 1]
        d = self.obs_dim
        return obs + (mean[..., :d] * self.out_std[:d] + self.out_mean[:d]).mean(0)

    def start_state(self, obs: Tensor, particles: int, generator: torch.Generator | None = None
                    ) -> dict[str, Tensor]:
        """P particles of each start observation ``[M, D]`` -> planning state (see module docstring).

        Particles are spread over the members as evenly as possible, in a random order
        of the members (shared by all start states, so candidates are compared on the
        same members).
        """
        if particles < 1:
            raise ValueError(f"particles must be >= 1; got {particles}")
        m = obs.shape[0]
        perm = torch.randperm(self.members, generator=generator, device=obs.device)
        member = perm[torch.arange(particles, device=obs.device) % self.members]
        return {"obs": obs[:, None].expand(m, particles, obs.shape[-1]).contiguous(),
                "member": member[None].expand(m, particles).contiguous(),
                "reward": obs.new_zeros(m, particles)}

    def step(self, state: Mapping[str, Tensor], action: Tensor) -> dict[str, Tensor]:
        """Planning step: state with ``obs [M, P, D]``, ``member [M, P]``; action ``[M, A]``."""
        obs, member = state["obs"], state["member"]
        m, p, d = obs.shape
        if self.propagation == "ts1":
            member = torch.randint(self.members, (m, p), device=obs.device)
        act = action.to(obs.dtype)[:, None].expand(m, p, action.shape[-1])
        x = self.normalise_inputs(torch.cat([obs, act], -1).reshape(m * p, -1))
        mean, logvar = self.forward_rows(x, member.reshape(-1))                       # [M * P, D + 1]
        sample = (mean + (0.5 * logvar).exp() * torch.randn_like(mean)) * self.out_std + self.out_mean
        reward = mean[:, d] * self.out_std[d] + self.out_mean[d]                     # the member's expected reward
        return {"obs": obs + sample[:, :d].reshape(m, p, d), "member": member, "reward": reward.reshape(m, p)}

    def reward(self, state: Mapping[str, Tensor]) -> Tensor:
        """Mean predicted reward over the particles ``[M]``."""
        return state["reward"].mean(-1)

    # -- training ------------------------------------------------------------------------------
    def loss(self, inputs: Tensor, targets: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Gaussian NLL of each member on its own minibatch: inputs ``[E, M, D + A]``, targets
        ``[E, M, D + 1]`` (raw units). Returns the scalar to minimise (NLL summed over members,
        averaged over rows and dimensions, without the constant log 2 pi, plus the bound penalty)
        and metrics."""
        mean, logvar = self.forward(self.normalise_inputs(inputs))
        error = (mean - self.normalise_targets(targets)) ** 2
        nll = 0.5 * (error * torch.exp(-logvar) + logvar).mean((1, 2))                # [E]
        bounds = self.cfg.bound_weight * (self.max_logvar.sum() - self.min_logvar.sum())
        metrics = {"model/train_nll": float(nll.detach().mean()), "model/train_mse": float(error.detach().mean())}
        return nll.sum() + bounds, metrics

    @torch.no_grad()
    def scores(self, inputs: Tensor, targets: Tensor, metric: Literal["mse", "nll"] = "mse") -> Tensor:
        """Held-out score of every member on the same rows ``[M, ...]`` (lower is better): the mean
        squared error of the normalised mean, or the Gaussian NLL. Returns ``[E]``."""
        x = self.normalise_inputs(inputs)
        mean, logvar = self.forward(x.unsqueeze(0).expand(self.members, *x.shape))
        error = (mean - self.normalise_targets(targets)) ** 2
        if metric == "mse":
            return error.mean((1, 2))
        return 0.5 * (error * torch.exp(-logvar) + logvar).mean((1, 2))

    def optimizer(self) -> torch.optim.Optimizer:
        """Adam with L2 on the weight matrices only (biases and log-variance bounds are free)."""
        rest = [*self.biases, self.max_logvar, self.min_logvar]
        return torch.optim.Adam([{"params": list(self.weights), "weight_decay": self.cfg.weight_decay},
                                 {"params": rest, "weight_decay": 0.0}], lr=self.cfg.lr)


__all__ = ["EnsembleConfig", "ProbabilisticEnsemble"]
