"""The analyses of ``reverie analyze``, one :class:`Section` each: numbers, a plain sentence, a figure.

Each builder takes a model and data already in memory (episodes, visited states) and calls the pure
computations of :mod:`reverie.analysis`; it asks the model only for the capabilities it needs and, where
one is missing, returns a section that says which. No files, no environments: :mod:`.run` brings the
data, :mod:`.html` writes the results. The spectral section is in :mod:`.dynamics`, the one over
training in :mod:`.over_training`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from reverie.analysis import fourier, projection
from reverie.analysis.open_loop import OpenLoopReport, open_loop_error
from reverie.analysis.report import figures as figs
from reverie.models.base import DECODER, VALUE, State, WorldModel, has, value_head
from reverie.models.state import cat_states, map_state

__all__ = [
    "ANALYSES",
    "TITLES",
    "Section",
    "band_edges",
    "filter_episodes",
    "fourier_section",
    "open_loop_section",
    "projection_section",
    "seeded",
    "seeded_open_loop",
    "visited",
]

ANALYSES = ("open_loop", "spectral", "fourier", "projection", "checkpoints", "fidelity", "experts")
TITLES = {"open_loop": "Open-loop prediction", "spectral": "Oscillations and spectrum of the learned dynamics",
          "fourier": "Fourier analysis of trajectories", "projection": "Random projections of latent states",
          "checkpoints": "Over training (pinned checkpoints)",
          "fidelity": "Dream fidelity: policies ranked in the dream and in reality",
          "experts": "Mixture of experts: who routes where"}


@dataclass
class Section:
    """One analysis: what it shows (or why it does not apply), key facts, figures and every number."""

    name: str
    title: str
    applies: bool
    text: str                                   # one or two plain sentences
    facts: dict[str, str] = field(default_factory=dict)       # label -> formatted value
    figures: dict[str, Figure] = field(default_factory=dict)  # figure name -> matplotlib Figure
    data: dict[str, Any] = field(default_factory=dict)        # every number, JSON-ready


@torch.no_grad()
def filter_episodes(model: WorldModel, episodes: list[dict], device: torch.device | str) -> list[State]:
    """The model's filtered states ``[T]`` of each whole episode."""
    out = []
    for ep in episodes:
        obs = {k: torch.as_tensor(ep[k][None], device=device) for k in model.obs_spec}
        action = torch.as_tensor(ep["action"][None], device=device, dtype=torch.float32)
        is_first = torch.zeros(action.shape[:2], dtype=torch.bool, device=device)
        is_first[:, 0] = True
        states, _ = model.observe(obs, action, is_first)
        out.append(map_state(lambda x: x[0], states))
    return out


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}g}"


def _unit(dt: float | None) -> str:
    return "s" if dt is not None else "steps"


@contextlib.contextmanager
def seeded(device: torch.device | str, seed: int = 0) -> Iterator[None]:
    """Torch's random generator seeded inside, restored after: imagination samples the prior (an RSSM draws
    its stochastic latent), so the same model gives the same numbers every time."""
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def seeded_open_loop(model: WorldModel, episodes: list[dict], context: int, horizon: int, discount: float,
                     device: torch.device | str, seed: int = 0) -> OpenLoopReport:
    """:func:`open_loop_error` under :func:`seeded`."""
    with seeded(device, seed):
        # windows start every horizon/4 steps (overlapping): more of them average out the sampled imagination
        return open_loop_error(model, episodes, context, horizon, discount=discount, device=device,
                               stride=max(1, horizon // 4), max_windows=128)


def open_loop_section(model: WorldModel, episodes: list[dict], context: int, horizon: int, discount: float,
                      device: torch.device | str) -> tuple[Section, OpenLoopReport | None]:
    longest = max(len(ep["action"]) for ep in episodes)
    if longest < context + 2:     # short episodes (an untrained CartPole's): observe less before imagining
        context = max(1, longest // 3)
    horizon = min(horizon, longest - context)
    if horizon < 2:
        return Section("open_loop", TITLES["open_loop"], False,
                       f"The longest episode lasted {longest} steps, too short for {context} observed and 2 "
                       "imagined steps; collect longer episodes."), None
    r = seeded_open_loop(model, episodes, context, horizon, discount, device)
    facts = {"windows": str(r.n_windows), "context / horizon": f"{context} / {horizon} steps"}
    for k, mse in r.obs_mse.items():
        facts[f"obs '{k}' MSE at h=1 / h={horizon}"] = f"{_fmt(mse[0])} / {_fmt(mse[-1])}"
    for k, p in r.psnr.items():
        facts[f"'{k}' PSNR at h=1 / h={horizon}"] = f"{_fmt(p[0])} / {_fmt(p[-1])} dB"
    if r.reward_mse is not None:
        facts[f"reward MSE at h=1 / h={horizon}"] = f"{_fmt(r.reward_mse[0])} / {_fmt(r.reward_mse[-1])}"
    if r.cont_brier is not None:
        facts["continuation Brier score (mean over h)"] = _fmt(float(r.cont_brier.mean()))
    if r.value_mse is not None:
        facts[f"value MSE at h=1 / h={horizon}"] = f"{_fmt(r.value_mse[0])} / {_fmt(r.value_mse[-1])}"
    if r.latent_distance_relative is not None:
        facts[f"latent distance (relative) at h=1 / h={horizon}"] = (
            f"{_fmt(r.latent_distance_relative[0])} / {_fmt(r.latent_distance_relative[-1])}")
    what = ("The model observes a few real steps, then imagines the rest of each window with the actions really "
            "taken; these curves show how its error grows with the number of imagined steps.")
    if r.skipped:
        what += " Not measured: " + "; ".join(f"{k} ({v})" for k, v in r.skipped.items()) + "."
    data = r.summary()
    return Section("open_loop", TITLES["open_loop"], True, what, facts, {"open_loop": figs.open_loop(r)},
                   data), r


def visited(model: WorldModel, episodes: list[dict], states: list[State], max_states: int,
            seed: int) -> tuple[State, np.ndarray, np.ndarray] | None:
    """A subsample of the visited states ``[N]`` with the action taken next ``[N, A]``, the real reward of
    arriving in each, and their features ``[N, F]``."""
    keep_states: list[State] = []
    actions: list[np.ndarray] = []
    rewards: list[np.ndarray] = []
    for ep, st in zip(episodes, states):
        length = len(ep["action"])
        if length < 2:
            continue
        keep_states.append(map_state(lambda x: x[:length - 1], st))   # applied at once, to this length
        actions.append(ep["action"][1:])
        rewards.append(ep["reward"][:length - 1])
    if not keep_states:
        return None
    state = cat_states(keep_states, 0)
    action = np.concatenate(actions)
    reward = np.concatenate(rewards)
    n = action.shape[0]
    idx = np.sort(np.random.default_rng(seed).choice(n, size=min(n, max_states), replace=False))
    state = map_state(lambda x: x[torch.as_tensor(idx, device=x.device)], state)
    return state, action[idx], reward[idx]


def band_edges(steps: int, dt: float | None, n_bands: int = 3) -> np.ndarray:
    """Frequency bands evenly spaced in log frequency from the lowest a ``steps``-long window resolves,
    ``1 / (steps dt)``, to Nyquist ``1 / (2 dt)``; the first band starts at 0. (Thirds of Nyquist would put
    all of a slow system's motion into the first band.)"""
    dt = dt or 1.0
    low, nyquist = 1.0 / (steps * dt), 0.5 / dt
    inner = np.geomspace(low, nyquist, n_bands + 1)[1:-1]
    return np.concatenate([[0.0], inner, [nyquist]])


def fourier_section(model: WorldModel, r: OpenLoopReport | None, dt: float | None) -> Section:
    if not has(model, DECODER):
        return Section("fourier", TITLES["fourier"], False,
                       f"Not available: the model ({type(model).__name__}) has no decoder, so it predicts no "
                       "trajectories of observations to take spectra of.")
    if r is None or not r.real:
        why = ("the observations are images (pixels are skipped: only vector observations are analysed)"
               if r is not None else "there was no open-loop prediction (episodes too short)")
        return Section("fourier", TITLES["fourier"], False, f"Not available: {why}.")
    keys = sorted(r.real)
    real = np.concatenate([r.real[k] for k in keys], -1)
    pred = np.concatenate([r.predicted[k] for k in keys], -1)
    c = fourier.compare_spectra(real, pred, dt=dt or 1.0, band_edges=band_edges(real.shape[1], dt))
    unit = "Hz" if dt else "cycles/step"
    bands = [f"{lo:.3g}-{hi:.3g} {unit}" for lo, hi in zip(c.band_edges[:-1], c.band_edges[1:])]
    rel = c.relative_error_total
    facts = {f"relative error, band {b}": _fmt(float(e)) for b, e in zip(bands, rel)}
    power = c.real_psd.sum(1)
    peak = float(c.freqs[1:][np.argmax(power[1:])]) if c.freqs.size > 1 else float("nan")
    facts["strongest real frequency (above 0)"] = f"{_fmt(peak)} {unit}"
    worst = int(np.nanargmax(rel)) if np.isfinite(rel).any() else None
    text = ("Power spectra (Welch) of the real and the open-loop predicted observations over the imagined "
            "steps, and the prediction error's power per frequency band (bands evenly spaced in log frequency "
            "up to Nyquist) relative to the real signal's (0: the band is reproduced, 1: as much error as "
            "signal).")
    if worst is not None:
        text += f" The error is largest, relative to the signal, in the band {bands[worst]}."
    data = {"freqs": c.freqs.tolist(), "real_psd": c.real_psd.sum(1).tolist(), "pred_psd": c.pred_psd.sum(1).tolist(),
            "error_psd": c.error_psd.sum(1).tolist(), "band_edges": c.band_edges.tolist(),
            "relative_error_total": rel.tolist(), "relative_error_per_dim": c.relative_error.tolist(),
            "unit": unit, "keys": keys}
    return Section("fourier", TITLES["fourier"], True, text, facts, {"fourier": figs.fourier(c, unit)}, data)


def _ks(features: int, jl_k: int) -> list[int]:
    """Target dimensions: geometric from 2 to past both the feature size and the JL formula's k (<= 8192)."""
    top = min(max(2 * features, jl_k, 8), 8192)
    ks = np.unique(np.geomspace(2, top, 20).round().astype(int))
    return sorted(set(ks.tolist()) | {features})


def projection_section(model: WorldModel, state: State, reward: np.ndarray, eps: float = 0.1,
                       seed: int = 0) -> Section:
    with torch.no_grad():
        x = model.features(state).float().cpu().numpy().astype(np.float64)
    n, f = x.shape
    if n < 8:
        return Section("projection", TITLES["projection"], False,
                       f"Not available: only {n} visited states; collect more episodes.")
    from sklearn.random_projection import johnson_lindenstrauss_min_dim

    jl_k = int(johnson_lindenstrauss_min_dim(n, eps=eps))
    ks = _ks(f, jl_k)
    # 5000 pairs keep the [pairs, k] differences at k ~ 5000 (the JL k of a few hundred states) near 200 MB
    d = projection.projection_distortion(x, ks, eps=eps, random_state=seed, max_pairs=5000)
    q90 = d.quantiles["q90"]

    def first_k(ok: np.ndarray) -> int | None:
        hit = np.flatnonzero(ok)
        return int(d.ks[hit[0]]) if hit.size else None

    k_all, k_90 = first_k(d.max_distortion <= eps), first_k(q90 <= eps)
    targets = {"reward (real)": np.asarray(reward, dtype=np.float64)}
    if has(model, VALUE):
        with torch.no_grad():
            value = value_head(model, "the projection section's value regression")(state)
            targets["value (model)"] = value.float().cpu().numpy().astype(np.float64)
    small = [k for k in ks if k <= f] or ks[:1]
    r2 = {name: projection.projection_r2(x, y, small, random_state=seed) for name, y in targets.items()
          if np.std(y) > 0}
    facts = {"visited states N / feature size D": f"{n} / {f}",
             f"k for {eps:.0%} distortion, every pair measured": str(k_all) if k_all else f"> {max(ks)}",
             f"k for {eps:.0%} distortion, 90% of pairs": str(k_90) if k_90 else f"> {max(ks)}",
             f"JL bound for N={n}, eps={eps:g}": str(jl_k)}
    keeps: dict[str, int | None] = {}
    for name, rep in r2.items():
        within = np.flatnonzero(rep.r2 >= rep.full_r2 - 0.05)
        keeps[name] = int(rep.ks[within[0]]) if within.size else None
        facts[f"R^2 of {name} from all D features"] = _fmt(rep.full_r2)
        facts[f"smallest k keeping R^2 of {name} within 0.05"] = str(keeps[name]) if keeps[name] else "none"
    text = ("Visited latent features projected to k random directions (scikit-learn's Gaussian random "
            "projection): how much pairwise distances bend, next to the Johnson-Lindenstrauss guarantee, and "
            "how well a ridge regression still reads the reward (and value) from the projection.")
    missing = [name for name, y in targets.items() if np.std(y) == 0]
    if missing:
        text += f" Not regressed (constant over the visited states): {', '.join(missing)}."
    data = {"ks": d.ks.tolist(), "max_distortion": d.max_distortion.tolist(),
            "mean_distortion": d.mean_distortion.tolist(),
            "q90_distortion": q90.tolist(), "jl_eps": d.jl_eps.tolist(), "eps": eps, "jl_min_dim": jl_k,
            "k_every_pair": k_all, "k_90_percent": k_90, "n_states": n, "n_features": f, "n_pairs": d.n_pairs,
            "r2": {name: {"ks": rep.ks.tolist(), "r2": rep.r2.tolist(), "full_r2": rep.full_r2,
                          "smallest_k_within_0.05": keeps[name]} for name, rep in r2.items()}}
    return Section("projection", TITLES["projection"], True, text, facts,
                   {"projection": figs.projection(d, r2, eps)}, data)
