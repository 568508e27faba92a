"""DIAMOND's reward and termination model: a CNN over each transition's frames and an LSTM over time.

Each step reads a transition, the frame before, the action taken and the frame after (both frames
stacked on the channel axis, ``[N, 2C, H, W]``, in [-1, 1]): a stride-2 convolution stack and the action's
embedding feed an LSTM cell, whose output gives the reward as three classes (negative, zero, positive:
DIAMOND's clipped Atari rewards) and the episode's end as one logit. The LSTM carries what one
transition cannot show (a ball that left the screen).

Shapes: ``prev, nxt [N, C, H, W]``, ``action [N, A]``, memory ``(h, c)`` each ``[N, D]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["RewardEndModel", "reward_class", "REWARD_VALUES"]

#: The reward each class stands for.
REWARD_VALUES = (-1.0, 0.0, 1.0)


def reward_class(reward: Tensor) -> Tensor:
    """The class (0: negative, 1: zero, 2: positive) of rewards ``[...]``, as long."""
    return (torch.sign(reward) + 1).long()


class RewardEndModel(nn.Module):
    """Reward classes and end logit of transitions, recurrent over a trajectory (see the module docstring).

    Args:
        channels: image channels C of one frame.
        size: ``(H, W)`` of a frame.
        act_size: A, the model-space action size.
        conv: channels of the stride-2 convolutions (DIAMOND: 32 per level).
        memory: LSTM units D (DIAMOND: 512).
    """

    values: Tensor

    def __init__(self, channels: int, size: tuple[int, int], act_size: int, conv: tuple[int, ...], memory: int):
        super().__init__()
        layers: list[nn.Module] = []
        width = 2 * channels
        for ch in conv:
            layers += [nn.Conv2d(width, ch, 3, stride=2, padding=1), nn.GroupNorm(1, ch), nn.SiLU()]
            width = ch
        self.encoder = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            flat = self.encoder(torch.zeros(1, 2 * channels, *size)).shape[1]
        self.action = nn.Linear(act_size, memory)
        self.project = nn.Linear(flat, memory)
        self.cell = nn.LSTMCell(memory, memory)
        self.reward_head = nn.Sequential(nn.Linear(memory, memory), nn.SiLU(), nn.Linear(memory, len(REWARD_VALUES)))
        self.end_head = nn.Sequential(nn.Linear(memory, memory), nn.SiLU(), nn.Linear(memory, 1))
        self.memory = memory
        self.register_buffer("values", torch.tensor(REWARD_VALUES), persistent=False)

    def forward(self, prev: Tensor, action: Tensor, nxt: Tensor, h: Tensor, c: Tensor
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One transition: returns (reward logits ``[N, 3]``, end logit ``[N]``, h, c)."""
        x = F.silu(self.project(self.encoder(torch.cat([prev, nxt], 1))) + self.action(action))
        h, c = self.cell(x, (h, c))
        return self.reward_head(h), self.end_head(h).squeeze(-1), h, c

    def expected_reward(self, logits: Tensor) -> Tensor:
        """The mean reward ``[...]`` under the classes' probabilities ``logits [..., 3]``."""
        return logits.softmax(-1) @ self.values
