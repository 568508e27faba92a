"""Open-loop prediction error against the horizon, over many windows of real episodes.

Each *window* of a real episode observes ``context`` steps (the model filters
them from a fresh start, ``is_first`` at the window's first step) and then
imagines the next ``horizon`` steps with the prior alone, fed the actions that
were really taken. At every horizon ``h = 1 .. H`` (the ``h``-th imagined
step) the imagination is compared with what really happened, averaged over
windows. Each part asks the model only for the capability it needs:

==================  ============  ==================================================================
part                needs         what is compared at horizon h
==================  ============  ==================================================================
observations        ``decoder``   decoded vs real observation: MSE per dimension and overall for
                                  vectors; MSE (pixels scaled to [0, 1]) and PSNR ``10 log10(1/MSE)``
                                  dB for images (PSNR of the MSE averaged over windows)
reward              ``reward``    predicted vs real reward for arriving in the step: MSE
continuation        ``cont``      mean predicted continuation vs the real one (``1 - is_terminal``),
                                  and the Brier score ``mean (p - c)^2``
value               ``value``     predicted value vs the realised discounted return (below): MSE
latent consistency  (core)        ``|| features(imagined) - features(filtered) ||``, where *filtered*
                                  is the model filtering the real observations of the same steps
==================  ============  ==================================================================

Conventions (those of :mod:`reverie.models.base` and the training loop's step
dicts): ``action[t]`` led into step ``t``; ``reward[t]`` was received on
arriving in step ``t``; ``value(state_t)`` estimates
``G_t = sum_{k>=1} discount^(k-1) reward[t+k]``. The realised return is that
sum up to the episode's last step ``T-1``; a truncated (not terminal) episode
adds ``discount^(T-1-t) * V_T`` with ``V_T`` the model's value of its filtered
last step (the usual n-step bootstrap; ``value_bootstrap_weight`` reports how
much of the target that tail weighs, on average), a terminal one adds 0.

The relative latent distance divides by the mean distance between the
filtered features of two random windows' steps, so 1 means "as far off as an
unrelated visited state".

Pure: no files, clocks or environments; numpy out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from reverie.models.base import CONT, DECODER, REWARD, VALUE, has
from reverie.models.state import map_state, stack_states

__all__ = ["OpenLoopReport", "open_loop_error", "windows_of"]


@dataclass(frozen=True)
class OpenLoopReport:
    """Errors against the horizon ``h = 1 .. H`` (arrays ``[H]`` unless said), averaged over windows.

    A part the model cannot do is absent (empty dict or None) and ``skipped[part]`` says why.
    ``real``/``predicted`` hold the vector observations of every window ``{key: [W, H, D]}``
    (for spectra of real and predicted trajectories); images are not kept.
    """

    horizon: np.ndarray                      # [H] 1 .. H
    context: int
    n_windows: int
    obs_mse: dict = field(default_factory=dict)          # key -> [H], over every dimension
    obs_mse_per_dim: dict = field(default_factory=dict)  # vector key -> [H, D]
    psnr: dict = field(default_factory=dict)             # image key -> [H] dB
    reward_mse: np.ndarray | None = None
    cont_pred_mean: np.ndarray | None = None
    cont_real_mean: np.ndarray | None = None
    cont_brier: np.ndarray | None = None
    value_mse: np.ndarray | None = None
    value_bootstrap_weight: float | None = None          # mean discount^(T-1-t) over the targets
    latent_distance: np.ndarray | None = None
    latent_distance_relative: np.ndarray | None = None
    real: dict = field(default_factory=dict)             # vector key -> [W, H, D]
    predicted: dict = field(default_factory=dict)        # vector key -> [W, H, D]
    skipped: dict = field(default_factory=dict)          # part -> one sentence

    def summary(self) -> dict:
        """Every number as plain lists and floats (JSON-ready; NaN stays NaN)."""
        def arr(x):
            return None if x is None else np.asarray(x, dtype=np.float64).tolist()

        return {
            "horizon": arr(self.horizon), "context": self.context, "n_windows": self.n_windows,
            "obs_mse": {k: arr(v) for k, v in self.obs_mse.items()},
            "obs_mse_per_dim": {k: arr(v) for k, v in self.obs_mse_per_dim.items()},
            "psnr_db": {k: arr(v) for k, v in self.psnr.items()},
            "reward_mse": arr(self.reward_mse), "cont_pred_mean": arr(self.cont_pred_mean),
            "cont_real_mean": arr(self.cont_real_mean), "cont_brier": arr(self.cont_brier),
            "value_mse": arr(self.value_mse), "value_bootstrap_weight": self.value_bootstrap_weight,
            "latent_distance": arr(self.latent_distance),
            "latent_distance_relative": arr(self.latent_distance_relative),
            "skipped": dict(self.skipped),
        }


def windows_of(lengths: Sequence[int], context: int, horizon: int, stride: int | None = None,
               max_windows: int | None = None) -> list[tuple[int, int]]:
    """``(episode, start)`` pairs: imagination starts at ``start`` (``context <= start <= T - horizon``),
    every ``stride`` steps (default ``horizon``) and always at the last possible start (so windows that
    end at the episode's end, where terminations are, are included). At most ``max_windows``, evenly
    chosen."""
    stride = horizon if stride is None else int(stride)
    if context < 1 or horizon < 1 or stride < 1:
        raise ValueError(f"context, horizon and stride must be at least 1, got {context}, {horizon}, {stride}")
    out: list[tuple[int, int]] = []
    for e, length in enumerate(lengths):
        last = int(length) - horizon
        if last < context:
            continue
        starts = sorted(set(range(context, last + 1, stride)) | {last})
        out.extend((e, s) for s in starts)
    if max_windows is not None and len(out) > max_windows:
        pick = np.unique(np.linspace(0, len(out) - 1, int(max_windows)).round().astype(int))
        out = [out[i] for i in pick]
    return out


def _slice(episodes, keys, pairs, lo: int, hi: int) -> dict[str, np.ndarray]:
    """``{key: [W, hi - lo, ...]}``: steps ``start + lo .. start + hi - 1`` of every window."""
    return {k: np.stack([np.asarray(episodes[e][k])[s + lo:s + hi] for e, s in pairs]) for k in keys}


def _realised_returns(reward: np.ndarray, terminal_last: bool, bootstrap: float, discount: float):
    """``(G [T], tail weight [T])``: ``G_t = sum_{k>=1} discount^(k-1) reward[t+k] + discount^(T-1-t) V_T``."""
    length = reward.shape[0]
    g = np.zeros(length)
    tail = np.zeros(length)
    g[-1] = 0.0 if terminal_last else bootstrap
    tail[-1] = 0.0 if terminal_last else 1.0
    for t in range(length - 2, -1, -1):
        g[t] = reward[t + 1] + discount * g[t + 1]
        tail[t] = discount * tail[t + 1]
    return g, tail


@torch.no_grad()
def open_loop_error(model, episodes: Sequence[Mapping[str, np.ndarray]], context: int = 5, horizon: int = 15,
                    *, stride: int | None = None, max_windows: int | None = 256, discount: float = 0.99,
                    batch: int = 64, device: torch.device | str = "cpu", keep_trajectories: bool = True,
                    pair_sample: int = 2000, seed: int = 0) -> OpenLoopReport:
    """Open-loop errors of ``model`` on real ``episodes`` against the horizon.

    episodes: dicts with every key of ``model.obs_spec`` ``[T, ...]``, ``action [T, A]`` (model-space,
    ``action[t]`` led into step t), ``reward [T]`` and optionally ``is_terminal [T]`` (bool; continuation
    and value use it). Windows: :func:`windows_of` (``stride``, ``max_windows``). ``discount`` is the
    value's discount. ``batch`` windows are imagined at a time. ``seed`` draws the pairs that normalise
    the latent distance. Raises ValueError when no episode is as long as ``context + horizon``.
    """
    keys = list(model.obs_spec)
    lengths = [int(np.asarray(ep["action"]).shape[0]) for ep in episodes]
    pairs = windows_of(lengths, context, horizon, stride, max_windows)
    if not pairs:
        raise ValueError(f"no episode is long enough for {context} context + {horizon} imagined steps "
                         f"(longest: {max(lengths, default=0)} steps); collect longer episodes or shorten them")
    decoder, reward, cont, value = (has(model, c) for c in (DECODER, REWARD, CONT, VALUE))
    skipped = {}
    if not decoder:
        skipped["observations"] = f"{type(model).__name__} has no decoder, so it predicts no observations"
    for part, ok, cap in (("reward", reward, REWARD), ("continuation", cont, CONT), ("value", value, VALUE)):
        if not ok:
            skipped[part] = f"{type(model).__name__} has no '{cap}' capability"

    targets = None
    bootstrap_weight = None
    if value:
        targets, bootstrap_weight = _value_targets(model, episodes, keys, context, discount, device, pairs, horizon)
    if any("is_terminal" not in ep for ep in episodes) and cont:
        cont = False
        skipped["continuation"] = "the episodes carry no is_terminal flags to compare continuation with"

    acc: dict[str, list] = {}
    feats_filtered = []
    for lo in range(0, len(pairs), batch):
        chunk = pairs[lo:lo + batch]
        out = _imagine_chunk(model, episodes, keys, chunk, context, horizon, device, decoder, reward, cont, value)
        for k, v in out.items():
            acc.setdefault(k, []).append(v)
        feats_filtered.append(out["feat_filtered"])
    cat = {k: np.concatenate(v, 0) for k, v in acc.items()}        # every entry [W, H, ...]

    report: dict = {}
    if decoder:
        obs_mse, per_dim, psnr, real_keep, pred_keep = {}, {}, {}, {}, {}
        for k in keys:
            real, pred = cat[f"real/{k}"], cat[f"pred/{k}"]
            if model.obs_spec[k].is_image:
                err = ((pred - real) / 255.0) ** 2
                mse = err.reshape(*err.shape[:2], -1).mean((0, 2))
                obs_mse[k] = mse
                with np.errstate(divide="ignore"):
                    psnr[k] = 10.0 * np.log10(1.0 / mse)
            else:
                w, h = real.shape[:2]
                real, pred = real.reshape(w, h, -1), pred.reshape(w, h, -1)
                per_dim[k] = ((pred - real) ** 2).mean(0)               # [H, D]
                obs_mse[k] = per_dim[k].mean(1)
                if keep_trajectories:
                    real_keep[k], pred_keep[k] = real, pred
        report.update(obs_mse=obs_mse, obs_mse_per_dim=per_dim, psnr=psnr, real=real_keep, predicted=pred_keep)
    if reward:
        report["reward_mse"] = ((cat["reward_pred"] - cat["reward_real"]) ** 2).mean(0)
    if cont:
        p, c = cat["cont_pred"], cat["cont_real"]
        report.update(cont_pred_mean=p.mean(0), cont_real_mean=c.mean(0), cont_brier=((p - c) ** 2).mean(0))
    if value and targets is not None:
        real_v = np.stack([targets[e][s:s + horizon] for e, s in pairs])    # [W, H]
        report["value_mse"] = ((cat["value_pred"] - real_v) ** 2).mean(0)
        report["value_bootstrap_weight"] = bootstrap_weight
    dist = np.linalg.norm(cat["feat_imagined"] - cat["feat_filtered"], axis=-1)    # [W, H]
    report["latent_distance"] = dist.mean(0)
    flat = np.concatenate(feats_filtered, 0).reshape(-1, cat["feat_filtered"].shape[-1])
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, flat.shape[0], pair_sample), rng.integers(0, flat.shape[0], pair_sample)
    scale = float(np.linalg.norm(flat[i] - flat[j], axis=-1).mean())
    report["latent_distance_relative"] = dist.mean(0) / scale if scale > 0 else np.full(horizon, np.nan)
    return OpenLoopReport(horizon=np.arange(1, horizon + 1), context=int(context), n_windows=len(pairs),
                          skipped=skipped, **report)


def _tensors(arrays: Mapping[str, np.ndarray], device) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v, device=device) for k, v in arrays.items()}


def _filter(model, episodes, keys, pairs, lo: int, hi: int, device):
    """Filter steps ``start + lo .. start + hi - 1`` of each window from a fresh start:
    (states ``[W, hi - lo]``, last state ``[W]``)."""
    obs = _tensors(_slice(episodes, keys, pairs, lo, hi), device)
    action = torch.as_tensor(_slice(episodes, ["action"], pairs, lo, hi)["action"], device=device,
                             dtype=torch.float32)
    is_first = torch.zeros(action.shape[:2], dtype=torch.bool, device=device)
    is_first[:, 0] = True
    return model.observe(obs, action, is_first)


def _imagine_chunk(model, episodes, keys, pairs, context, horizon, device, decoder, reward, cont, value):
    """Imagine ``horizon`` steps after ``context`` observed ones for each window: numpy ``[W, H, ...]``."""
    _, state = _filter(model, episodes, keys, pairs, -context, 0, device)
    actions = torch.as_tensor(_slice(episodes, ["action"], pairs, 0, horizon)["action"], device=device,
                              dtype=torch.float32)                           # [W, H, A]
    imagined = []
    for h in range(horizon):
        state = model.step(state, actions[:, h])
        imagined.append(state)
    prior = stack_states(imagined, 1)                                         # [W, H]
    filtered, _ = _filter(model, episodes, keys, pairs, -context, horizon, device)
    filtered = map_state(lambda x: x[:, context:], filtered)                 # [W, H]

    def np_(x):
        return x.float().cpu().numpy().astype(np.float64)

    out = {"feat_imagined": np_(model.features(prior)), "feat_filtered": np_(model.features(filtered))}
    if decoder:
        decoded = model.decode(prior)
        real = _slice(episodes, keys, pairs, 0, horizon)
        for k in keys:
            out[f"real/{k}"] = np.asarray(real[k], dtype=np.float64)
            out[f"pred/{k}"] = np_(decoded[k])
    extra = _slice(episodes, ["reward"] + (["is_terminal"] if cont else []), pairs, 0, horizon)
    if reward:
        out["reward_pred"] = np_(model.reward(prior))
        out["reward_real"] = np.asarray(extra["reward"], dtype=np.float64)
    if cont:
        out["cont_pred"] = np_(model.cont(prior))
        out["cont_real"] = 1.0 - np.asarray(extra["is_terminal"], dtype=np.float64)
    if value:
        out["value_pred"] = np_(model.value(prior))
    return out


def _value_targets(model, episodes, keys, context, discount, device, pairs, horizon):
    """Realised discounted returns per episode ``[T]`` (bootstrapped at a truncation with the value of the
    filtered last step), and the mean bootstrap weight over the steps the windows compare."""
    used = sorted({e for e, _ in pairs})
    truncated = [e for e in used if not bool(np.asarray(episodes[e].get("is_terminal", [False]))[-1])]
    boot = {}
    if truncated:
        ends = [(e, int(np.asarray(episodes[e]["action"]).shape[0])) for e in truncated]
        span = min(context, min(length for _, length in ends))
        _, last = _filter(model, episodes, keys, ends, -span, 0, device)     # steps T - span .. T - 1
        values = model.value(last).float().cpu().numpy()
        boot = {e: float(v) for (e, _), v in zip(ends, values)}
    targets, tails = {}, {}
    for e in used:
        ep = episodes[e]
        terminal = bool(np.asarray(ep.get("is_terminal", [False]))[-1])
        targets[e], tails[e] = _realised_returns(np.asarray(ep["reward"], dtype=np.float64), terminal,
                                                 boot.get(e, 0.0), discount)
    return targets, float(np.mean([tails[e][s:s + horizon] for e, s in pairs]))
