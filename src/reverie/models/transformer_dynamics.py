"""A causal transformer dynamics core (STORM-like) for the RSSM's deterministic path.

Each step's input token (the previous latent and action, embedded by the RSSM) attends to
itself and at most ``context - 1`` earlier tokens of the same episode, through
``torch.nn.functional.scaled_dot_product_attention``. Positions enter as a learned bias per
head and distance (``0 .. context - 1``; initialised ALiBi-like, one head at slope 0), which
depends only on how far back a token is, so the same weights serve a whole sequence and a
sliding cache.

Bounded context: a token sees a window of ``context`` tokens (itself and ``context - 1`` back), in
training as in imagination (a sliding window); older tokens drop out of the cache, oldest first.

Memory (entries of the RSSM state) is a fixed-size key/value cache, right-aligned (the
newest token last), so every state has the same shape and batches, repeats and slices like
any other state: ``key{i}`` and ``value{i} [.., context, D]`` for each layer i and ``valid [.., context]``
(1 where the slot holds a token of the current episode; the keys and values of the other slots are
never attended to and may differ between two states of the same history). One imagined step computes one new
token per layer, shifts the cache by one and attends to it. ``is_first`` empties the cache: in
:meth:`TransformerDynamics.sequence` an attention mask keeps every token inside its own
episode, so an episode start inside a batch row cuts all memory exactly there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reverie.config import ConfigError, PositiveInt, check_ranges


@dataclass(frozen=True)
class TransformerConfig:
    """Sizes of the transformer dynamics (used when ``model.dynamics=transformer``)."""

    layers: PositiveInt = 2
    """Transformer blocks."""
    heads: PositiveInt = 4
    """Attention heads (must divide the RSSM's ``deter``)."""
    context: PositiveInt = 64
    """Tokens a token attends to, itself included (the cache length); older ones are dropped."""

    def __post_init__(self):
        check_ranges(self)


class Block(nn.Module):
    """Pre-norm attention + MLP block over ``[.., D]`` tokens."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-3)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-3)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def qkv_of(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.qkv(self.norm1(x)).chunk(3, -1)

    def finish(self, x: Tensor, q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
        """Attention of queries ``q [B, Tq, D]`` over ``k, v [B, Tk, D]`` with additive ``bias
        [B, H, Tq, Tk]`` (``-inf`` where masked), then the residual MLP."""
        def split(t: Tensor) -> Tensor:
            return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)     # [B, H, T, d]
        dtype = q.dtype
        att = F.scaled_dot_product_attention(split(q), split(k.to(dtype)), split(v.to(dtype)),
                                             attn_mask=bias.to(dtype))
        x = x + self.attn_out(att.transpose(1, 2).flatten(-2))
        return x + self.mlp(self.norm2(x))


class TransformerDynamics(nn.Module):
    """Causal transformer: inputs ``[.., hidden]`` -> deterministic states ``[.., deter]`` (memory: a KV cache)."""


    def __init__(self, cfg: TransformerConfig, hidden: int, deter: int):
        super().__init__()
        if deter % cfg.heads:
            raise ConfigError(f"model.transformer.heads={cfg.heads} must divide model.rssm.deter={deter}")
        self.cfg = cfg
        self.dim = deter
        self.inp = nn.Linear(hidden, deter)
        self.blocks = nn.ModuleList(Block(deter, cfg.heads, hidden) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(deter, eps=1e-3)
        slopes = torch.tensor([2.0 ** (-8.0 * (h + 1) / cfg.heads) for h in range(cfg.heads)])
        slopes[-1] = 0.0                                                  # one head sees all distances alike
        self.rel_bias = nn.Parameter(-slopes[:, None] * torch.arange(float(cfg.context)))  # [H, context]
        self.memory_keys = (*(f"key{i}" for i in range(cfg.layers)), *(f"value{i}" for i in range(cfg.layers)),
                            "valid")

    def initial(self, batch: int, device: torch.device | str | None) -> dict[str, Tensor]:
        c, n = self.cfg.context, len(self.blocks)
        kv = torch.zeros(batch, c, self.dim, device=device)
        return {**{f"key{i}": kv for i in range(n)}, **{f"value{i}": kv for i in range(n)},
                "valid": torch.zeros(batch, c, device=device)}

    def _bias(self, allowed: Tensor, dist: Tensor) -> Tensor:
        """``[B, 1, Tq, Tk]`` allowed mask and ``[Tq, Tk]`` distances -> additive bias ``[B, H, Tq, Tk]``."""
        table = self.rel_bias[:, dist.clamp(0, self.cfg.context - 1)]    # [H, Tq, Tk]
        return table[None].masked_fill(~allowed, float("-inf"))

    def sequence(self, x: Tensor, is_first: Tensor, memory: dict[str, Tensor]
                 ) -> tuple[Tensor, dict[str, Tensor]]:
        """Inputs ``x [B, T, hidden]``, ``is_first [B, T]``, cache before the sequence ``[B]`` ->
        (deter ``[B, T, D]``, cache after every step ``[B, T]``), all tokens in parallel.

        Block-local attention: the sequence is cut into blocks of ``C = context`` queries, and each
        block attends to the ``2C`` keys from ``C`` before its first token to its last, which hold
        every window; the cost grows as ``T * C``, not ``T^2``."""
        b, t = x.shape[:2]
        c, dev = self.cfg.context, x.device
        blocks = -(-t // c)
        pad = blocks * c - t                                             # queries padded to whole blocks
        first = F.pad(is_first.bool(), (0, pad))
        episode = torch.cumsum(first.long(), 1)                          # [B, T']; the cache is episode 0
        key_episode = torch.cat([torch.zeros(b, c, dtype=torch.long, device=dev), episode], 1)  # [B, C + T']
        key_valid = torch.cat([memory["valid"] > 0, torch.ones(b, t, dtype=torch.bool, device=dev),
                               torch.zeros(b, pad, dtype=torch.bool, device=dev)], 1)

        def key_blocks(z: Tensor) -> Tensor:                             # [B, C + T', ...] -> [B, n, 2C, ...]
            return z.unfold(1, 2 * c, c).movedim(-1, 2)

        local = torch.arange(c, device=dev)[:, None] + c - torch.arange(2 * c, device=dev)[None]  # [C, 2C]
        allowed = (((local >= 0) & (local < c))[None, None] & key_blocks(key_valid)[:, :, None]
                   & (key_blocks(key_episode)[:, :, None] == episode.view(b, blocks, c, 1))) | (local == 0)
        bias = self._bias(allowed.flatten(0, 1)[:, None], local)          # [B n, H, C, 2C]
        x = F.pad(self.inp(x), (0, 0, 0, pad))

        # the cache after step j: tokens j - C + 1 .. j (combined positions j + 1 .. j + C); views into the
        # keys and values of the whole sequence, copied only if a state is used. Slots with valid = 0 may
        # hold tokens of an earlier episode, which attention never sees.
        def windows(z: Tensor) -> Tensor:                                # [B, C + T', ...] -> [B, T, C, ...]
            return z.unfold(1, c, 1)[:, 1:t + 1].movedim(-1, 2)

        out = {"valid": (windows(key_valid) & (windows(key_episode) == episode[:, :t, None])).float()}
        for i, block in enumerate(self.blocks):
            q, k, v = block.qkv_of(x)
            k = torch.cat([memory[f"key{i}"].to(k.dtype), k], 1)         # [B, C + T', D]
            v = torch.cat([memory[f"value{i}"].to(v.dtype), v], 1)
            out[f"key{i}"], out[f"value{i}"] = windows(k), windows(v)    # [B, T, C, D]
            x = block.finish(x.reshape(b * blocks, c, -1), q.reshape(b * blocks, c, -1),
                             key_blocks(k).flatten(0, 1), key_blocks(v).flatten(0, 1), bias).reshape(b, blocks * c, -1)
        return self.norm(x[:, :t]), out

    def step(self, x: Tensor, memory: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """One token: ``x [N, hidden]``, cache ``[N]`` -> (deter ``[N, D]``, cache shifted by one ``[N]``).

        The new token goes into the last slot, the oldest drops out, and the token attends to the new cache
        (one copy of the cache per step)."""
        c = self.cfg.context
        ones = torch.ones_like(memory["valid"][:, :1])
        valid = torch.cat([memory["valid"][:, 1:], ones], 1)             # [N, C]
        dist = (c - 1 - torch.arange(c, device=x.device))[None]          # [1, C]
        bias = self._bias(valid[:, None, None] > 0, dist)
        x = self.inp(x)[:, None]                                          # [N, 1, D]
        out = {"valid": valid}
        for i, block in enumerate(self.blocks):
            q, k, v = block.qkv_of(x)
            k = torch.cat([memory[f"key{i}"][:, 1:].to(k.dtype), k], 1)  # [N, C, D]
            v = torch.cat([memory[f"value{i}"][:, 1:].to(v.dtype), v], 1)
            out[f"key{i}"], out[f"value{i}"] = k, v
            x = block.finish(x, q, k, v, bias)
        return self.norm(x[:, 0]), out
