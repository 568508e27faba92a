"""Recurrent state-space model: a deterministic memory plus a stochastic latent.

The deterministic path is a sequence core (:mod:`reverie.models.sequence_core`) built by name from
:mod:`reverie.models.cores`: DreamerV3's GRU, a diagonal SSM or a causal transformer.

Two latent families share the code path:

- ``categorical`` (DreamerV2/V3): ``stoch`` groups of ``classes`` one-hot
  variables, sampled with straight-through gradients and a uniform mix
  (``unimix``) in the probabilities;
- ``gaussian`` (PlaNet/DreamerV1): a diagonal Normal with a softplus std
  floored at ``min_std``, sampled with the reparameterisation trick.

State keys: ``deter [.., D]``, ``stoch [.., S, C]`` (categorical) or
``[.., S]`` (gaussian), plus the distribution parameters ``logit [.., S, C]``
or ``mean``/``std [.., S]``, plus the core's ``memory_keys``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reverie.models.cores import build_core
from reverie.models.sequence_core import CoreSettings
from reverie.models.state import State, stack_states, state_entries
from reverie.nn import MLP, OneHotDist, categorical_kl


@dataclass(frozen=True)
class RSSMConfig:
    """Sizes of the recurrent state-space model."""

    deter: int = 512
    """Size of the deterministic state."""
    hidden: int = 512
    """Width of the layers around the sequence core."""
    stoch: int = 32
    """Number of stochastic variables (categorical groups or Gaussian dims)."""
    classes: int = 32
    """Classes per categorical variable (ignored for the Gaussian latent)."""
    latent: Literal["categorical", "gaussian"] = "categorical"
    """Latent family: categorical (DreamerV2/V3) or gaussian (PlaNet/DreamerV1)."""
    unimix: float = 0.01
    """Uniform mixture in the categorical probabilities."""
    min_std: float = 0.1
    """Floor of the Gaussian latent's standard deviation."""
    r2i: bool = False
    """R2I's design (Samsonov et al., 2024) for any sequence core: the posterior from the observation's
    embedding alone, never from ``deter``, so the core runs over a training sequence's inputs
    ``[z_{t-1}, a_{t-1}]`` at once (the SSM by a parallel scan whose memory is linear in T, resets inside the
    sequence handled by the scan; the GRU still steps). Off: the core decides (the GRU's posterior sees
    ``deter``; the SSM's and transformer's do not, the SSM scanning with Hillis-Steele)."""


class RSSM(nn.Module):
    """The recurrent state-space model; see the module docstring for the state layout.

    ``dynamics`` names the sequence core in :mod:`reverie.models.cores`; ``settings`` is its config section
    (``model.ssm``, ``model.transformer``; None: its defaults).
    """

    def __init__(self, cfg: RSSMConfig, embed_dim: int, action_dim: int, dynamics: str = "gru",
                 settings: CoreSettings | None = None):
        super().__init__()
        self.cfg = cfg
        self.dynamics = dynamics
        self.action_dim = action_dim
        stoch_flat = cfg.stoch * cfg.classes if cfg.latent == "categorical" else cfg.stoch
        dist_out = stoch_flat if cfg.latent == "categorical" else 2 * cfg.stoch
        self.img_in = MLP(stoch_flat + action_dim, None, cfg.hidden, 1)
        self.core = build_core(dynamics, cfg.hidden, cfg.deter, settings)
        self.prior_head = MLP(cfg.deter, dist_out, cfg.hidden, 1)
        self.core.lean_memory = cfg.r2i
        self.embed_posterior = cfg.r2i or self.core.parallel_posterior
        """Whether the posterior sees the embedding alone (R2I, or a core with ``parallel_posterior``)."""
        post_in = embed_dim if self.embed_posterior else cfg.deter + embed_dim
        self.post_head = MLP(post_in, dist_out, cfg.hidden, 1)
        self.feat_dim = cfg.deter + stoch_flat

    def _load_from_state_dict(self, state_dict: dict[str, Tensor], prefix: str, local_metadata: dict[str, object],
                              strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        # Checkpoints from before the GRU became a sequence core hold it as ``gru.*``; it is ``core.cell.*`` now
        # (the same parameters in the same order, so optimiser states still line up).
        for key in [k for k in state_dict if k.startswith(prefix + "gru.")]:
            state_dict[f"{prefix}core.cell.{key[len(prefix) + 4:]}"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    # -- state helpers -------------------------------------------------------------------------
    def initial(self, batch: int, device: torch.device | str | None = None) -> dict[str, Tensor]:
        device = device or next(self.parameters()).device
        cfg = self.cfg
        memory = self.core.initial(batch, device)
        deter = memory.pop("deter")
        if cfg.latent == "categorical":
            z = torch.zeros(batch, cfg.stoch, cfg.classes, device=device)
            return {"deter": deter, "stoch": z, "logit": z, **memory}
        z = torch.zeros(batch, cfg.stoch, device=device)
        return {"deter": deter, "stoch": z, "mean": z, "std": torch.ones_like(z), **memory}

    def _memory(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The sequence core's memory in ``state``: ``deter`` and the core's ``memory_keys``."""
        return {"deter": state["deter"], **{k: state[k] for k in self.core.memory_keys}}

    def _reset(self, state: Mapping[str, Tensor], keep: Tensor) -> dict[str, Tensor]:
        """Replace the states where ``keep [N]`` is 0 by the initial state."""
        init = self.initial(keep.shape[0], keep.device)
        return {k: torch.where(keep.view(-1, *[1] * (v.dim() - 1)) > 0, v, init[k]) for k, v in state.items()}

    def features(self, state: State) -> Tensor:
        entries = state_entries(state)
        stoch = entries["stoch"]
        if self.cfg.latent == "categorical":
            stoch = stoch.flatten(-2)
        return torch.cat([entries["deter"], stoch], -1)

    def _dist_state(self, raw: Tensor, sample: bool, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Turn a head's raw output ``[N, dist_out]`` into latent entries of a state."""
        cfg = self.cfg
        if cfg.latent == "categorical":
            logit = raw.float().reshape(*raw.shape[:-1], cfg.stoch, cfg.classes)
            dist = OneHotDist(logit, cfg.unimix)
            stoch = dist.sample(generator) if sample else dist.mode()
            return {"stoch": stoch, "logit": dist.logits}
        mean, std = raw.float().chunk(2, -1)
        std = F.softplus(std) + cfg.min_std
        if sample:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device)
            stoch = mean + std * noise
        else:
            stoch = mean
        return {"stoch": stoch, "mean": mean, "std": std}

    # -- transitions ---------------------------------------------------------------------------
    def _advance(self, state: Mapping[str, Tensor], action: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The deterministic part of one step: (new ``deter [N, D]``, the core's new ``memory_keys`` entries)."""
        stoch = state["stoch"].flatten(-2) if self.cfg.latent == "categorical" else state["stoch"]
        x = self.img_in(torch.cat([stoch, action], -1))
        return self.core.step(x, self._memory(state))

    def img_step(self, state: State, action: Tensor, sample: bool = True,
                 generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Prior step: state ``[N]``, action ``[N, A]`` -> next state ``[N]``."""
        deter, memory = self._advance(state_entries(state), action)
        return {"deter": deter, **self._dist_state(self.prior_head(deter), sample, generator), **memory}

    def mean_step(self, deter: Tensor, action: Tensor) -> Tensor:
        """The deterministic part of the prior step, ``deter [N, D]`` -> ``[N, D]``, with the stochastic
        latent at its prior expectation (class probabilities, or the Gaussian's mean): differentiable
        everywhere, unlike a sample or a one-hot mode, so its Jacobian carries the loop through the
        stochastic latent that the dynamics of the system run through. Only a core without memory beside
        ``deter`` has such a map (the GRU): the SSM's and transformer's next ``deter`` depends on their memory."""
        if not self.core.markov_in_deter:
            raise ValueError(f"the {self.dynamics} dynamics has no deterministic map on deter alone (its recurrent "
                             "state is its memory); use model.dynamics=gru for the transition map")
        raw = self.prior_head(deter)
        raw = raw.float() if raw.dtype in (torch.float16, torch.bfloat16) else raw   # keep float64 for analysis
        if self.cfg.latent == "categorical":
            logit = raw.reshape(*raw.shape[:-1], self.cfg.stoch, self.cfg.classes)
            stoch = OneHotDist(logit, self.cfg.unimix).probs
        else:
            stoch = raw.chunk(2, -1)[0]
        return self._advance({"deter": deter, "stoch": stoch}, action)[0]

    def prior(self, deter: Tensor, sample: bool = True) -> dict[str, Tensor]:
        """Prior latent for given deterministic states ``[..., D]`` (any leading axes)."""
        return {"deter": deter, **self._dist_state(self.prior_head(deter), sample)}

    def observe(self, embed: Tensor, action: Tensor, is_first: Tensor, state: State | None = None,
                sample: bool = True) -> tuple[dict[str, Tensor], Mapping[str, Tensor]]:
        """Posterior filtering over a sequence.

        embed ``[B, T, E]``, action ``[B, T, A]`` (leading into step t), is_first ``[B, T]``.
        Returns (posterior states ``[B, T]``, last posterior state ``[B]``). The prior is not
        computed inside the loop: only ``deter`` is sequential, so :meth:`prior` can be applied
        to all posterior ``deter`` at once afterwards. Where the posterior sees only the embedding
        (``r2i``, or a core with ``parallel_posterior``) the core runs over the whole sequence at once;
        otherwise the posterior at step t feeds the core's input at t + 1, and filtering steps through time.
        """
        b, t = embed.shape[:2]
        current = self.initial(b, embed.device) if state is None else state_entries(state)
        if self.embed_posterior:
            return self._observe_parallel(embed, action, is_first, current, sample)
        keep = (~is_first.bool()).float()  # [B, T]
        # One host sync per sequence to learn where episodes start, instead of masking every step. Compiled
        # code cannot branch on data (each reset pattern would be a new graph): it masks every step, which
        # computes the same numbers (state * 1 + initial * 0 where no episode starts).
        resets = [True] * t if torch.compiler.is_compiling() else is_first.bool().any(0).tolist()
        posts = []
        for i in range(t):
            act = action[:, i]
            if resets[i]:
                # An episode starts here: its memory and incoming action start from zero (the initial state).
                m = keep[:, i]
                current = self._reset(current, m)
                act = act * m[:, None]
            deter, memory = self._advance(current, act)
            raw = self.post_head(torch.cat([deter, embed[:, i]], -1))
            current = {"deter": deter, **self._dist_state(raw, sample), **memory}
            posts.append(current)
        return stack_states(posts, 1), current

    def _observe_parallel(self, embed: Tensor, action: Tensor, is_first: Tensor, state: Mapping[str, Tensor],
                          sample: bool) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """:meth:`observe` where the posterior sees the embedding alone (``r2i``; the SSM, the transformer):
        posteriors from the embeddings, then the core's :meth:`~SequenceCore.sequence` over all inputs
        ``[z_{t-1}, a_{t-1}]`` at once (zeroed at episode starts, like the stepped filter's)."""
        post = self._dist_state(self.post_head(embed), sample)                      # [B, T, ...]
        keep = (~is_first.bool()).to(embed.dtype)                                   # [B, T]
        prev = torch.cat([state["stoch"][:, None].to(post["stoch"].dtype), post["stoch"][:, :-1]], 1)
        prev = prev.flatten(-2) if self.cfg.latent == "categorical" else prev
        x = self.img_in(torch.cat([prev * keep[..., None], action * keep[..., None]], -1))
        deter, memory = self.core.sequence(x, is_first, self._memory(state))
        posts = {"deter": deter, **post, **memory}
        return posts, {k: v[:, -1] for k, v in posts.items()}

    # -- divergences ---------------------------------------------------------------------------
    def kl(self, post: State, prior: State) -> tuple[Tensor, Tensor]:
        """(dynamics KL, representation KL) per step ``[...]``, summed over latent variables.

        Both equal KL(post || prior) in value; the dynamics term only trains the prior
        and the representation term only trains the posterior (stop-gradients differ).
        """
        post, prior = state_entries(post), state_entries(prior)
        if self.cfg.latent == "categorical":
            dyn = categorical_kl(post["logit"].detach(), prior["logit"]).sum(-1)
            rep = categorical_kl(post["logit"], prior["logit"].detach()).sum(-1)
            return dyn, rep

        def gauss_kl(m1: Tensor, s1: Tensor, m2: Tensor, s2: Tensor) -> Tensor:
            return (torch.log(s2 / s1) + (s1 ** 2 + (m1 - m2) ** 2) / (2 * s2 ** 2) - 0.5).sum(-1)

        dyn = gauss_kl(post["mean"].detach(), post["std"].detach(), prior["mean"], prior["std"])
        rep = gauss_kl(post["mean"], post["std"], prior["mean"].detach(), prior["std"].detach())
        return dyn, rep
