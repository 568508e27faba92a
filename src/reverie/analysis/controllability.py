"""Genie's controllability metric for a latent-action model: how much better the dream follows a real video
when it is driven by the latent actions inferred from that video than by random ones.

Genie (Bruce et al., 2024, section 3.1) measures it as Delta_t PSNR: from one start, the forward model is rolled
``t`` steps under the latent actions its IDM infers from the real frames, and again under latent actions drawn
at random; Delta_t PSNR = PSNR(real frame t, frame predicted with the inferred actions) - PSNR(real frame t,
frame predicted with the random ones). A model whose predictions do not depend on the code has Delta_t PSNR = 0
at every t; the more the codes control the dream, the larger it is.

- :func:`psnr`: per-frame PSNR of frames in [0, 1] (peak 1), the mean squared error clipped below at
  ``floor`` so that an exact prediction has a finite PSNR (``10 log10(1 / floor)``, 100 dB at the default);
- :func:`delta_psnr`: Delta_t PSNR for t = 1 .. H from both rollouts and the real frames, with a bootstrap
  confidence interval of its mean over the starts (scipy's BCa bootstrap of the per-start differences:
  the two rollouts of a start are paired);
- :func:`rollout`: the forward model rolled autoregressively under given codes (its predicted frames fed back);
- :func:`rollout_starts` / :func:`controllability_report`: the above on held-out windows of a trained
  :class:`~reverie.models.latent_action.LatentActionModel`, starts spaced a horizon apart so that no two
  rollouts share a frame to predict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy.stats import bootstrap
from torch import Tensor

from reverie.models.latent_action import LatentActionModel, to_frames

__all__ = ["Controllability", "controllability_report", "delta_psnr", "psnr", "rollout", "rollout_starts"]

MSE_FLOOR = 1e-10
"""The mean squared error below which a prediction counts as exact (PSNR 100 dB)."""


def psnr(prediction: np.ndarray, target: np.ndarray, floor: float = MSE_FLOOR) -> np.ndarray:
    """``[...]``: the PSNR in dB of each frame ``[C, H, W]`` (the last three axes, values in [0, 1], peak 1) of
    ``prediction`` against ``target`` (both ``[..., C, H, W]``), ``10 log10(1 / max(MSE, floor))``."""
    p, t = np.asarray(prediction, np.float64), np.asarray(target, np.float64)
    if p.shape != t.shape or p.ndim < 3:
        raise ValueError(f"predictions {p.shape} and targets {t.shape} must have one shape, [..., C, H, W]")
    if not floor > 0:
        raise ValueError(f"the mean squared error floor must be positive, got {floor}")
    mse = ((p - t) ** 2).mean((-3, -2, -1))
    return 10.0 * np.log10(1.0 / np.maximum(mse, floor))


@dataclass(frozen=True)
class Controllability:
    """Delta_t PSNR for t = 1 .. H (arrays ``[H]``) over ``windows`` starts."""

    delta: np.ndarray
    """Mean over the starts of PSNR(inferred) - PSNR(random) at each horizon, dB."""
    low: np.ndarray
    """Lower end of the bootstrap confidence interval of ``delta``."""
    high: np.ndarray
    """Upper end of the bootstrap confidence interval of ``delta``."""
    inferred: np.ndarray
    """Mean PSNR of the frames predicted under the inferred codes, dB."""
    random: np.ndarray
    """Mean PSNR of the frames predicted under random codes, dB."""
    windows: int
    """Starts (rollouts) averaged."""
    confidence: float
    """Level of the interval."""

    def metrics(self, prefix: str) -> dict[str, float]:
        """Flat metrics ``{prefix + "dpsnr/<t>": ..., ".../low", ".../high", "psnr_inferred/<t>", ...}``."""
        out = {"windows": float(self.windows)}
        for t in range(len(self.delta)):
            out.update({f"dpsnr/{t + 1}": float(self.delta[t]), f"dpsnr/{t + 1}/low": float(self.low[t]),
                        f"dpsnr/{t + 1}/high": float(self.high[t]), f"psnr_inferred/{t + 1}": float(self.inferred[t]),
                        f"psnr_random/{t + 1}": float(self.random[t])})
        return {prefix + k: v for k, v in out.items()}


def delta_psnr(inferred: np.ndarray, random: np.ndarray, target: np.ndarray, confidence: float = 0.95,
               resamples: int = 2000, seed: int = 0, floor: float = MSE_FLOOR) -> Controllability:
    """Delta_t PSNR from frames predicted under inferred codes, under random codes, and the real frames, each
    ``[S, H, C, H', W']`` in [0, 1] (S starts, horizons 1 .. H), with a BCa bootstrap interval (``resamples``
    resamples of the starts, seeded by ``seed``) at ``confidence``. Where every start has the same difference
    (a model that ignores the code: all exactly 0), the interval is that value."""
    if not np.shape(target)[:1] or np.shape(target)[0] < 2 or np.ndim(target) != 5:
        raise ValueError(f"Delta PSNR needs frames [S, H, C, H, W] of at least 2 starts, got {np.shape(target)}")
    if not 0 < confidence < 1:
        raise ValueError(f"the confidence level must be in (0, 1), got {confidence}")
    good, bad = psnr(inferred, target, floor), psnr(random, target, floor)        # [S, H]
    diff = good - bad
    mean = diff.mean(0)
    low, high = mean.copy(), mean.copy()
    varies = np.ptp(diff, 0) > 0
    if varies.any():
        ci = bootstrap((diff[:, varies],), np.mean, confidence_level=confidence, n_resamples=resamples,
                       method="BCa", axis=0, random_state=np.random.default_rng(seed)).confidence_interval
        low[varies], high[varies] = ci.low, ci.high
    return Controllability(mean, low, high, good.mean(0), bad.mean(0), len(diff), confidence)


def rollout(step: Callable[[Tensor, Tensor], Tensor], past: Tensor, codes: Tensor) -> Tensor:
    """``[S, H, *frame]``: the frames a forward model predicts from ``past [S, L, *frame]`` under ``codes [S, H]``
    (long), each prediction appended to the window for the next: ``step(window [S, L, *frame], code [S])`` gives
    the next frame ``[S, *frame]``."""
    if codes.ndim != 2 or codes.shape[0] != past.shape[0]:
        raise ValueError(f"codes must be [S, H] for {past.shape[0]} starts, got {tuple(codes.shape)}")
    window, out = past, []
    for h in range(codes.shape[1]):
        nxt = step(window, codes[:, h])
        out.append(nxt)
        window = torch.cat([window[:, 1:], nxt[:, None]], 1)
    return torch.stack(out, 1)


def rollout_starts(rows: Tensor, first: int, horizon: int, limit: int) -> np.ndarray:
    """Up to ``limit`` window indexes ``i >= first`` whose windows ``i .. i + horizon - 1`` are consecutive steps
    of one episode (their last rows are consecutive: a window per step that does not start an episode, see
    :func:`reverie.agents.latent_action.windows_of`), each the step after the previous start's last one."""
    if horizon < 1 or limit < 1:
        raise ValueError(f"horizon and limit must be at least 1, got {horizon} and {limit}")
    last = rows[:, -1].cpu().numpy()
    starts: list[int] = []
    i = first
    while i + horizon <= len(last) and len(starts) < limit:
        if last[i + horizon - 1] - last[i] == horizon - 1:
            starts.append(i)
            i += horizon
        else:
            i += 1
    return np.asarray(starts, np.int64)


@torch.no_grad()
def controllability_report(model: LatentActionModel, frames: Tensor, rows: Tensor, first: int, horizon: int = 10,
                           limit: int = 500, seed: int = 0, chunk: int = 256) -> Controllability:
    """Delta_t PSNR of ``model`` on held-out windows: frames ``[F, H, W, C]`` (uint8) and rows ``[N, L + 1]``
    as :func:`reverie.analysis.latent_actions.held_out_report` takes them, starts from :func:`rollout_starts`
    (indexes from ``first``, the first held-out window). The inferred codes are the IDM's on the real windows
    of each step; the random ones uniform over the K codes (a generator seeded by ``seed``)."""
    starts = rollout_starts(rows, first, horizon, limit)
    if len(starts) < 2:
        raise ValueError(f"Delta PSNR needs at least 2 held-out rollouts of {horizon} steps in one episode, found "
                         f"{len(starts)}; lower the horizon")
    model.eval()
    device = model.quantizer.codebook.device
    rng = np.random.default_rng([seed, 5])
    random_codes = torch.as_tensor(rng.integers(0, model.cfg.codes, (len(starts), horizon)), device=device)
    codebook = model.quantizer.codebook

    def step(window: Tensor, code: Tensor) -> Tensor:
        return torch.sigmoid(model.predict(window, codebook[code]))

    parts: dict[str, list[np.ndarray]] = {"inferred": [], "random": [], "target": []}
    for s in range(0, len(starts), chunk):
        idx = torch.as_tensor(starts[s:s + chunk])[:, None] + torch.arange(horizon)      # [n, H] windows
        real = to_frames(frames[rows[idx]].to(device))                                    # [n, H, L + 1, C, H, W]
        codes = model.infer(real.flatten(0, 1)).codes.reshape(idx.shape)
        past = real[:, 0, :-1]
        parts["inferred"].append(rollout(step, past, codes).cpu().numpy())
        parts["random"].append(rollout(step, past, random_codes[s:s + chunk]).cpu().numpy())
        parts["target"].append(real[:, :, -1].cpu().numpy())
    out = {k: np.concatenate(v) for k, v in parts.items()}
    return delta_psnr(out["inferred"], out["random"], out["target"], seed=seed)
