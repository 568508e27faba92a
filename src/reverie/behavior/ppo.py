"""Proximal policy optimisation (Schulman et al., 2017) for a discrete-action actor-critic, in the real environment.

LAPO (Schmidt and Jiang, ICLR 2024) fine-tunes its decoded latent policy online with PPO; this module is that
algorithm's pure part: generalised advantage estimation (:func:`gae`), the clipped surrogate loss
(:func:`ppo_loss`) and the epochs of minibatch updates on one rollout (:func:`ppo_update`). Collecting the
rollout (environments) is the shell's (:mod:`reverie.training.lapo_policy`).

Rollouts follow reverie's step dicts: row ``t`` of ``[T + 1, N]`` arrays is what environment n returned at its
t-th step (the reward that arrived with it, ``is_last``, ``is_terminal``), and the decision at row t is the action
taken from that observation. A row with ``is_last`` is no decision (the environment resets on the next step and
ignores the action): its advantage is not used (``valid``). Its observation is still the episode's last one, so a
cut episode (time limit, ``is_last`` without ``is_terminal``) is bootstrapped from its value, and an ended one is
not.
"""

from __future__ import annotations

from dataclasses import dataclass
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reverie.config import Fraction, NonNegativeFloat, PositiveFloat, PositiveInt, check_ranges

__all__ = ["PPOConfig", "Rollout", "gae", "ppo_loss", "ppo_update"]


@dataclass(frozen=True)
class PPOConfig:
    """PPO's settings (CleanRL's Atari defaults, scaled to a small network and MinAtar)."""

    envs: PositiveInt = 8
    """Environments stepped together."""
    steps: PositiveInt = 128
    """Steps per environment in a rollout (a rollout is ``envs * steps`` environment steps)."""
    epochs: PositiveInt = 4
    """Passes over a rollout."""
    minibatches: PositiveInt = 4
    """Minibatches per pass."""
    lr: PositiveFloat = 2.5e-4
    """Adam's learning rate (constant: a budget's result is that of a longer run stopped there)."""
    gamma: Fraction = 0.99
    """Discount."""
    lam: Fraction = 0.95
    """GAE's lambda."""
    clip: PositiveFloat = 0.2
    """The probability ratio is clipped to ``[1 - clip, 1 + clip]``."""
    value_coef: NonNegativeFloat = 0.5
    """Weight of the value loss."""
    entropy_coef: NonNegativeFloat = 0.01
    """Weight of the entropy bonus."""
    grad_clip: PositiveFloat = 0.5
    """Gradient-norm clip."""

    def __post_init__(self) -> None:
        check_ranges(self)


def gae(rewards: Tensor, values: Tensor, terminal: Tensor, last: Tensor, gamma: float, lam: float) -> Tensor:
    """Generalised advantage estimates ``[T, N]`` of the decisions at rows ``0 .. T-1`` from ``[T + 1, N]`` rows
    (see the module docstring): ``rewards`` (arrived with row t), ``values`` (of row t's observation),
    ``terminal`` and ``last`` (booleans). With ``delta_t = r_{t+1} + gamma (1 - terminal_{t+1}) V_{t+1} - V_t``,
    ``A_t = delta_t + gamma lam (1 - last_{t+1}) A_{t+1}``, ``A_T = 0``; rows with ``last`` get meaningless values
    (they are no decisions)."""
    if not (rewards.shape == values.shape == terminal.shape == last.shape) or rewards.dim() != 2:
        raise ValueError(f"gae needs [T + 1, N] rewards, values, terminal and last of one shape, got "
                         f"{tuple(rewards.shape)}, {tuple(values.shape)}, {tuple(terminal.shape)}, {tuple(last.shape)}")
    keep = 1.0 - terminal[1:].float()
    carry = 1.0 - last[1:].float()
    delta = rewards[1:] + gamma * keep * values[1:] - values[:-1]               # [T, N]
    advantages = torch.zeros_like(delta)
    running = torch.zeros_like(delta[0])
    for t in range(delta.shape[0] - 1, -1, -1):
        running = delta[t] + gamma * lam * carry[t] * running
        advantages[t] = running
    return advantages


def ppo_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, values: Tensor, returns: Tensor, entropy: Tensor,
             clip: float) -> dict[str, Tensor]:
    """The losses on one minibatch ``[M]``: ``policy``, the clipped surrogate
    ``-mean(min(rho A, clip(rho, 1 - clip, 1 + clip) A))`` with ``rho = exp(logp - old_logp)``; ``value``,
    ``mean((V - R)^2) / 2``; ``entropy``, minus the mean entropy (a loss: lower is more entropy); and, not to be
    minimised, ``clipped`` (the fraction of ratios outside the clip range) and ``approx_kl``
    (``mean((rho - 1) - log rho)``)."""
    log_ratio = logp - old_logp
    ratio = log_ratio.exp()
    surrogate = torch.minimum(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages)
    with torch.no_grad():
        clipped = ((ratio - 1).abs() > clip).float().mean()
        approx_kl = ((ratio - 1) - log_ratio).mean()
    return {"policy": -surrogate.mean(), "value": 0.5 * (values - returns).pow(2).mean(),
            "entropy": -entropy.mean(), "clipped": clipped, "approx_kl": approx_kl}


@dataclass(frozen=True)
class Rollout:
    """The decisions of one rollout, flattened: observations ``[M, ...]``, actions ``[M]`` long, their
    log-probabilities under the acting policy ``[M]``, advantages ``[M]`` and value targets ``[M]``."""

    obs: Tensor
    actions: Tensor
    logp: Tensor
    advantages: Tensor
    returns: Tensor

    def __len__(self) -> int:
        return len(self.actions)


def ppo_update(net: nn.Module, optimizer: torch.optim.Optimizer, rollout: Rollout, cfg: PPOConfig,
               generator: torch.Generator) -> dict[str, float]:
    """``cfg.epochs`` passes over ``rollout`` in ``cfg.minibatches`` shuffled minibatches (advantages
    standardised per minibatch), one Adam step each on ``policy + value_coef value + entropy_coef entropy``;
    ``net(obs) -> (logits [M, A], values [M])``. Returns the losses averaged over the steps."""
    n = len(rollout)
    size = max(n // cfg.minibatches, 1)
    sums: dict[str, float] = {}
    count = 0
    net.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - size + 1, size):
            idx = order[start:start + size]
            logits, values = net(rollout.obs[idx])
            log_probs = F.log_softmax(logits, -1)
            logp = log_probs.gather(-1, rollout.actions[idx, None]).squeeze(-1)
            entropy = -(log_probs.exp() * log_probs).sum(-1)
            adv = rollout.advantages[idx]
            adv = (adv - adv.mean()) / (adv.std(unbiased=False) + 1e-8)
            losses = ppo_loss(logp, rollout.logp[idx], adv, values, rollout.returns[idx], entropy, cfg.clip)
            total = losses["policy"] + cfg.value_coef * losses["value"] + cfg.entropy_coef * losses["entropy"]
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            norm = nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            optimizer.step()
            for k, v in {**losses, "grad_norm": norm}.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            count += 1
    net.eval()
    return {k: v / max(count, 1) for k, v in sums.items()}
