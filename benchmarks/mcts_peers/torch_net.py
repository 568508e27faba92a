"""The benchmark network in PyTorch (reverie's side and LightZero's side run this same code).

One batched call per simulation: [B, D] latents and [B] actions in, next
latents, rewards, values and policy logits out. See net.py for the formula.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


class TorchNet:
    def __init__(self, w: dict[str, np.ndarray]):
        t = {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in w.items()}
        self.W1, self.b1, self.W2, self.b2 = t["W1"], t["b1"], t["W2"], t["b2"]
        self.w_r, self.w_v, self.W_p = t["w_r"], t["w_v"], t["W_p"]
        self.k = self.W_p.shape[0]
        self.root_embedding, self.root_logits, self.root_value = t["root_embedding"], t["root_logits"], t["root_value"]

    def recurrent(self, latent: Tensor, action: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """latent [B, D], action [B] int64 -> (next [B, D], reward [B], value [B], logits [B, K])."""
        x = torch.cat([latent, F.one_hot(action, self.k).to(latent.dtype)], -1)
        nxt = torch.tanh(F.linear(torch.relu(F.linear(x, self.W1, self.b1)), self.W2, self.b2))
        return nxt, nxt @ self.w_r, nxt @ self.w_v, F.linear(nxt, self.W_p)
