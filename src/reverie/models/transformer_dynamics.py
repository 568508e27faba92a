"""A causal transformer dynamics core (STORM-like) for the RSSM's deterministic path.

Each step's input token (the previous latent and action, embedded by the RSSM) attends to
itself and at most ``context - 1`` earlier tokens of the same episode, through
``torch.nn.functional.scaled_dot_product_attention``. Positions enter as a learned bias per
head and distance (``0 .. context - 1``; initialised ALiBi-like, one head at slope 0), which
depends only on how far back a token is, so the same weights serve a whole sequence and a
sliding cache.

Bounded context: a token sees a window of ``context`` tokens (itself and ``context - 1`` back), in
training as in imagination (a sliding window); older tokens drop out of the cache, oldest first.

Memory (entries of the RSSM state) is a fixed-size key/value cache in two parts, so every state has the same
shape and batches, repeats and slices like any other state:

- the *cache*: ``key{i}``, ``value{i} [.., heads, context, D / heads]`` for each layer i, right-aligned (the newest
  token last), and ``valid [.., context]``;
- the *recent* tokens added by :meth:`TransformerDynamics.step` since the cache was last rewritten: ``rkey{i}``,
  ``rvalue{i} [.., heads, recent, D / heads]``, right-aligned, and ``rvalid [.., recent]``.

``valid`` and ``rvalid`` are 1 where a slot holds a token of the current episode; the keys and values of the other
slots are never attended to and may differ between two states of the same history. The history a state stands
for is the cache's tokens followed by the recent ones, and a token attends to the last ``context`` of them. One
imagined step computes one new token per layer, appends it to the small recent part (a copy of ``recent``
tokens, not of the cache) and attends to both parts at once (one softmax over both); only when the recent part
is full is it folded into the cache (one copy of the cache every ``recent`` steps). With ``recent`` at least the
imagination horizon, a rollout never copies the cache it starts from. ``is_first`` empties both parts: in
:meth:`TransformerDynamics.sequence` an attention mask keeps every token inside its own episode, so an episode
start inside a batch row cuts all memory exactly there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reverie.config import ConfigError, PositiveInt, check_ranges
from reverie.models.sequence_core import CoreSettings, SequenceCore


@dataclass(frozen=True)
class TransformerConfig:
    """Sizes of the transformer dynamics (used when ``model.dynamics=transformer``)."""

    layers: PositiveInt = 2
    """Transformer blocks."""
    heads: PositiveInt = 4
    """Attention heads (must divide the RSSM's ``deter``)."""
    context: PositiveInt = 64
    """Tokens a token attends to, itself included (the cache length); older ones are dropped."""
    recent: PositiveInt = 16
    """Tokens a step appends beside the cache before they are folded into it (one copy of the cache every
    ``recent`` steps instead of every step); at least the imagination horizon, a rollout never copies it."""

    def __post_init__(self) -> None:
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

    def heads_of(self, t: Tensor) -> Tensor:
        """``[B, T, D]`` -> ``[B, H, T, D / H]``."""
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def finish(self, x: Tensor, att: Tensor) -> Tensor:
        """The residual attention output ``att [B, H, Tq, D / H]`` and MLP on tokens ``x [B, Tq, D]``."""
        x = x + self.attn_out(att.transpose(1, 2).flatten(-2).to(x.dtype))
        return x + self.mlp(self.norm2(x))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
        """Attention of queries ``q [B, Tq, D]`` over ``k, v [B, Tk, D]`` with additive ``bias [B, H, Tq, Tk]``
        (``-inf`` where masked) -> ``[B, H, Tq, D / H]``."""
        dtype = q.dtype
        return F.scaled_dot_product_attention(self.heads_of(q), self.heads_of(k.to(dtype)),
                                              self.heads_of(v.to(dtype)), attn_mask=bias.to(dtype))


def attend_two_parts(q: Tensor, k1: Tensor, v1: Tensor, k2: Tensor, v2: Tensor, bias: Tensor) -> Tensor:
    """Attention of ``q [N, H, Tq, d]`` over the keys ``k1`` then ``k2`` (``[N, H, T1 | T2, d]``, values alike)
    with additive ``bias [N, H, Tq, T1 + T2]``: one softmax over both parts, without concatenating them."""
    t1 = k1.shape[-2]
    q = q * q.shape[-1] ** -0.5
    scores = torch.cat([q @ k1.to(q.dtype).transpose(-1, -2), q @ k2.to(q.dtype).transpose(-1, -2)], -1)
    p = torch.softmax(scores.float() + bias, -1).to(q.dtype)
    return p[..., :t1] @ v1.to(q.dtype) + p[..., t1:] @ v2.to(q.dtype)


class TransformerDynamics(SequenceCore):
    """Causal transformer as a sequence core (:mod:`reverie.models.sequence_core`): inputs ``[.., hidden]`` ->
    deterministic states ``[.., deter]`` (memory: a KV cache), a whole sequence by masked attention; the
    posterior comes from the embedding alone."""

    parallel_posterior = True

    def __init__(self, cfg: TransformerConfig, hidden: int, deter: int):
        super().__init__(hidden, deter)
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
        n = range(cfg.layers)
        self.memory_keys = (*(f"key{i}" for i in n), *(f"value{i}" for i in n), "valid",
                            *(f"rkey{i}" for i in n), *(f"rvalue{i}" for i in n), "rvalid")

    @classmethod
    def build(cls, hidden: int, deter: int, settings: CoreSettings | None = None) -> TransformerDynamics:
        if settings is not None and not isinstance(settings, TransformerConfig):
            raise ConfigError(f"the transformer sequence core takes a TransformerConfig, got {type(settings).__name__}")
        return cls(settings or TransformerConfig(), hidden, deter)

    def initial_memory(self, batch: int, device: torch.device | str | None) -> dict[str, Tensor]:
        c, r, h, n = self.cfg.context, self.cfg.recent, self.cfg.heads, len(self.blocks)
        kv = torch.zeros(batch, h, c, self.dim // h, device=device)
        rkv = torch.zeros(batch, h, r, self.dim // h, device=device)
        return {**{f"key{i}": kv for i in range(n)}, **{f"value{i}": kv for i in range(n)},
                "valid": torch.zeros(batch, c, device=device),
                **{f"rkey{i}": rkv for i in range(n)}, **{f"rvalue{i}": rkv for i in range(n)},
                "rvalid": torch.zeros(batch, r, device=device)}

    def _bias(self, allowed: Tensor, dist: Tensor) -> Tensor:
        """``[B, 1, Tq, Tk]`` allowed mask and distances ``[Tq, Tk]`` (or per row, ``[B, Tq, Tk]``) -> additive
        bias ``[B, H, Tq, Tk]``."""
        table = self.rel_bias[:, dist.clamp(0, self.cfg.context - 1)].movedim(0, -3)   # [(B,) H, Tq, Tk]
        return table.masked_fill(~allowed, float("-inf"))

    def fold(self, memory: dict[str, Tensor]) -> dict[str, Tensor]:
        """The same history with the recent tokens moved into the cache (the last ``context`` tokens of the cache
        followed by the recent ones) and the recent part empty: one gather per row, whatever its fill."""
        c, r = self.cfg.context, self.cfg.recent
        m = (memory["rvalid"] > 0).sum(-1, keepdim=True)                   # [N, 1] recent tokens, right-aligned
        j = torch.arange(c, device=m.device)[None]
        idx = torch.where(j < c - m, j + m, r + j)                        # slot j's index in [cache, recent]
        out = {"valid": torch.cat([memory["valid"], memory["rvalid"]], -1).gather(-1, idx),
               "rvalid": torch.zeros_like(memory["rvalid"])}
        for i in range(len(self.blocks)):
            for name in ("key", "value"):
                both = torch.cat([memory[f"{name}{i}"], memory[f"r{name}{i}"]], -2)     # [N, H, C + R, d]
                out[f"{name}{i}"] = both.gather(-2, idx[:, None, :, None].expand(-1, both.shape[1], -1, both.shape[-1]))
                out[f"r{name}{i}"] = memory[f"r{name}{i}"]
        return out

    def sequence(self, x: Tensor, is_first: Tensor, memory: dict[str, Tensor]
                 ) -> tuple[Tensor, dict[str, Tensor]]:
        """Inputs ``x [B, T, hidden]``, ``is_first [B, T]``, memory before the sequence ``[B]`` ->
        (deter ``[B, T, D]``, memory after every step ``[B, T]``, its recent part empty), all tokens in parallel.

        Block-local attention: the sequence is cut into blocks of ``C = context`` queries, and each
        block attends to the ``2C`` keys from ``C`` before its first token to its last, which hold
        every window; the cost grows as ``T * C``, not ``T^2``."""
        b, t = x.shape[:2]
        c, dev = self.cfg.context, x.device
        memory = self.fold(memory)
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
        def windows(z: Tensor) -> Tensor:                                # [B, C + T', ...] -> [B, T, ..., C]
            return z.unfold(1, c, 1)[:, 1:t + 1]

        out = {"valid": (windows(key_valid) & (windows(key_episode) == episode[:, :t, None])).float(),
               "rvalid": memory["rvalid"][:, None].expand(b, t, -1)}
        for i, block in enumerate(cast("Iterable[Block]", self.blocks)):   # torch's ModuleList is untyped
            q, k, v = block.qkv_of(x)
            k = torch.cat([memory[f"key{i}"].transpose(1, 2).flatten(-2).to(k.dtype), k], 1)   # [B, C + T', D]
            v = torch.cat([memory[f"value{i}"].transpose(1, 2).flatten(-2).to(v.dtype), v], 1)
            for name, z in (("key", k), ("value", v)):
                out[f"{name}{i}"] = windows(z.unflatten(-1, (block.heads, -1))).transpose(-1, -2)  # [B, T, H, C, d]
                out[f"r{name}{i}"] = memory[f"r{name}{i}"][:, None].expand(b, t, *[-1] * 3)
            att = block.attend(q.reshape(b * blocks, c, -1), key_blocks(k).flatten(0, 1),
                               key_blocks(v).flatten(0, 1), bias)
            x = block.finish(x.reshape(b * blocks, c, -1), att).reshape(b, blocks * c, -1)
        return self.norm(x[:, :t]), out

    def step(self, x: Tensor, memory: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """One token: ``x [N, hidden]``, memory ``[N]`` -> (deter ``[N, D]``, memory with the token appended ``[N]``).

        The new token goes into the recent part (folded into the cache first where that part is full) and attends
        to both parts: no copy of the cache on most steps. A cache that is a view into a sequence's keys (the
        states :meth:`sequence` returns) is folded too, so it is copied once, not read strided at every step.
        Compiled code cannot branch on the data, so there every step folds (the same numbers, one copy of the
        cache per step)."""
        c, r = self.cfg.context, self.cfg.recent
        if (torch.compiler.is_compiling() or not memory["key0"].is_contiguous()
                or bool((memory["rvalid"][:, 0] > 0).any())):
            memory = {**memory, **self.fold(memory)}
        ones = torch.ones_like(memory["rvalid"][:, :1])
        rvalid = torch.cat([memory["rvalid"][:, 1:], ones], 1)           # [N, R], the new token last
        m = (rvalid > 0).sum(-1, keepdim=True)                            # [N, 1] recent tokens, the new one included
        dist = torch.cat([(c - 1 - torch.arange(c, device=x.device))[None] + m,
                          (r - 1 - torch.arange(r, device=x.device))[None].expand(m.shape[0], -1)], 1)  # [N, C + R]
        allowed = torch.cat([memory["valid"], rvalid], 1).gt(0) & (dist < c)                # the last C tokens
        bias = self._bias(allowed[:, None, None], dist[:, None])                         # [N, H, 1, C + R]
        x = self.inp(x)[:, None]                                          # [N, 1, D]
        out = {"valid": memory["valid"], "rvalid": rvalid}
        for i, block in enumerate(cast("Iterable[Block]", self.blocks)):   # torch's ModuleList is untyped
            q, k, v = block.qkv_of(x)
            rk = torch.cat([memory[f"rkey{i}"][:, :, 1:].to(k.dtype), block.heads_of(k)], 2)    # [N, H, R, d]
            rv = torch.cat([memory[f"rvalue{i}"][:, :, 1:].to(v.dtype), block.heads_of(v)], 2)
            out[f"key{i}"], out[f"value{i}"] = memory[f"key{i}"], memory[f"value{i}"]
            out[f"rkey{i}"], out[f"rvalue{i}"] = rk, rv
            x = block.finish(x, attend_two_parts(block.heads_of(q), memory[f"key{i}"], memory[f"value{i}"],
                                                 rk, rv, bias))
        return self.norm(x[:, 0]), out
