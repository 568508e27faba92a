"""MuZero's training targets from a replay sequence: n-step values, rewards and search policies.

A sampled sequence ``[B, T]`` with ``T >= 1 + K + n`` is unrolled from its first step for K steps. For
unroll step k (0 .. K), within the episode the sequence starts in:

- value ``z_k = sum_{i=1..m} gamma^(i-1) r_{k+i} + gamma^m v_{k+m}`` with ``m = n``, or fewer steps
  where the episode ends first: no bootstrap after a terminal step, the stored search value of the last
  step after a truncated one (``v`` is the root value the search stored beside each step);
- reward of the transition into step k: ``r_k``;
- policy: the search policy stored beside step k (masked on the episode's last step, where no action
  mattered, and on steps collected before the agent acted, whose stored policy is all zeros).

Past the end of a *terminated* episode the model must learn an absorbing state: value and reward 0
(policy masked). Past the end of a *truncated* episode the future is unknown: every target is masked.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from reverie.models.batch import Batch

__all__ = ["UnrollTargets", "unroll_targets"]


@dataclass(frozen=True)
class UnrollTargets:
    """Targets for K unroll steps of B sequences (index k = 0 .. K)."""

    actions: Tensor
    """[B, K, A] the actions taken at steps 0 .. K-1."""
    value: Tensor
    """[B, K + 1]"""
    reward: Tensor
    """[B, K + 1] (entry 0 unused)"""
    policy: Tensor
    """[B, K + 1, A]"""
    value_mask: Tensor
    """[B, K + 1] 1 where the value target counts."""
    reward_mask: Tensor
    """[B, K + 1] (entry 0 is 0)"""
    policy_mask: Tensor
    """[B, K + 1]"""


def unroll_targets(batch: Batch, root_value: Tensor, search_policy: Tensor, unroll: int, td_steps: int,
                   discount: float) -> UnrollTargets:
    """Targets for unrolling K = ``unroll`` steps from step 0 of each sequence, with n = ``td_steps``.

    batch: ``[B, T]`` with ``T >= 1 + K + n``; root_value ``[B, T]`` and search_policy ``[B, T, A]`` as the
    search stored them (or as a fresh search recomputed them: reanalysis).
    """
    b, t = batch.shape
    k_max, n = unroll, td_steps
    if t < 1 + k_max + n:
        raise ValueError(f"MuZero needs sequences of at least 1 + unroll + td_steps = {1 + k_max + n} steps, "
                         f"got {t}; set run.seq_len={1 + k_max + n}")
    device = batch.reward.device
    steps = torch.arange(t, device=device)
    # the first step of the sequence's episode that is its last (T where it does not end inside the window);
    # a step followed by a new episode's first step is a last step too (a run resumed after a kill
    # restarts its environments without ending their episodes)
    last = batch.is_last.clone()
    last[:, :-1] |= batch.is_first[:, 1:]
    end = torch.where(last.any(1), last.float().argmax(1), torch.full((b,), t, device=device))    # [B]
    ended = end < t
    terminal = ended & batch.is_terminal.gather(1, end.clamp(max=t - 1)[:, None])[:, 0]           # [B]
    inside = steps[None] <= end[:, None]                                                         # [B, T]
    reward = batch.reward.float() * inside                                                       # 0 past the end
    value = root_value.float()

    values, value_masks = [], []
    for k in range(k_max + 1):
        stop = torch.minimum(torch.full_like(end, k + n), end)                                   # [B] m = stop - k
        z = torch.zeros(b, device=device)
        for i in range(1, n + 1):
            z = z + (k + i <= stop) * discount ** (i - 1) * reward[:, min(k + i, t - 1)]
        bootstrap = value.gather(1, stop.clamp(max=t - 1)[:, None])[:, 0]
        bootstrap = torch.where(terminal & (stop == end), torch.zeros_like(bootstrap), bootstrap)
        z = z + discount ** (stop - k).clamp(min=0).float() * bootstrap
        past = k > end
        values.append(torch.where(past, torch.zeros_like(z), z))
        # past a terminal end the absorbing state's value 0 is known; past a truncation nothing is
        value_masks.append((~past | terminal).float())
    rewards = [torch.zeros(b, device=device)] + [reward[:, k] for k in range(1, k_max + 1)]
    reward_masks = [torch.zeros(b, device=device)] + [((k <= end) | terminal).float() for k in range(1, k_max + 1)]
    policy = search_policy[:, :k_max + 1].float()
    acted = policy.sum(-1) > 0                                                                   # [B, K + 1]
    policy_mask = (acted & (steps[None, :k_max + 1] < end[:, None])).float()
    return UnrollTargets(
        actions=batch.action[:, 1:k_max + 1].float(),
        value=torch.stack(values, 1), reward=torch.stack(rewards, 1), policy=policy,
        value_mask=torch.stack(value_masks, 1), reward_mask=torch.stack(reward_masks, 1), policy_mask=policy_mask,
    )
