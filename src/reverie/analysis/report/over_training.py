"""The section of ``reverie analyze`` over training: the same real episodes through the pinned checkpoints.

Over the checkpoints pinned during training (``run.keep_checkpoints``, at least two), and the analysed
one when it is newer: :func:`~reverie.analysis.fourier.learning_order` per frequency band of the
open-loop predicted observations, and the spectral radius of the learned transition per checkpoint.
The checkpoints are loaded through a :class:`Checkpoints` the caller hands in (the run shell,
:mod:`.run`); the agent's own weights are restored afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reverie.agents.base import Agent
from reverie.analysis import fourier, spectral
from reverie.analysis.open_loop import OpenLoopReport
from reverie.analysis.report import figures as figs
from reverie.analysis.report.sections import (
    TITLES,
    Section,
    _fmt,
    band_edges,
    filter_episodes,
    seeded_open_loop,
    visited,
)
from reverie.models.base import DECODER, TRANSITION, has

__all__ = ["Checkpoints", "checkpoints_section"]


@dataclass(frozen=True)
class Checkpoints:
    """A run's checkpoints as the section needs them: step -> path of every complete one, the pinned steps
    (oldest first), and ``load(path) -> tensors`` for the run's agent."""

    paths: dict[int, Path]
    pinned: list[int]
    load: Callable[[Path], dict[str, dict[str, Any]]]


def checkpoints_section(agent: Agent, ckpts: Checkpoints, episodes: list[dict[str, np.ndarray]],
                        r: OpenLoopReport | None, discount: float, dt: float | None, current_step: int,
                        current_tensors: dict[str, dict[str, Any]], max_states: int, seed: int) -> Section:
    steps = ckpts.pinned
    if len(steps) < 2:
        return Section("checkpoints", TITLES["checkpoints"], False,
                       f"Not available: the run has {len(steps)} pinned checkpoint(s); train with "
                       "run.keep_checkpoints=N (N >= 2) to keep evenly spaced ones for this analysis.")
    model = agent.model
    if model is None:
        return Section("checkpoints", TITLES["checkpoints"], False,
                       f"Not available: agent '{agent.name}' has no world model.")
    # the open-loop windows replayed through every checkpoint: only where the model decodes vector observations
    opened = r if has(model, DECODER) and r is not None and r.real else None
    can_spectrum = has(model, TRANSITION)
    preds: list[tuple[int, np.ndarray]] = []
    radius: list[tuple[int, float, float, float]] = []
    mse: list[float] = []
    try:
        # the analysed checkpoint joins the pinned ones when it is newer (the run's latest state)
        for step in steps + ([current_step] if current_step > steps[-1] else []):
            if step == current_step:
                agent.load_tensors(current_tensors)
            elif step in ckpts.paths:
                agent.load_tensors(ckpts.load(ckpts.paths[step]))
            else:                      # pruned meanwhile (should not happen to a pinned one)
                continue
            if opened is not None:
                rr = seeded_open_loop(model, episodes, opened.context, opened.horizon.size, discount, agent.device)
                preds.append((step, np.concatenate([rr.predicted[k] for k in sorted(rr.predicted)], -1)))
                mse.append(float(np.mean([v.mean() for v in rr.obs_mse.values()])))
            if can_spectrum:
                states = filter_episodes(model, episodes, agent.device)
                picked = visited(model, episodes, states, max_states, seed)
                if picked is not None:
                    st, act, _ = picked
                    s = spectral.model_spectrum(model, st, torch.as_tensor(act, device=agent.device,
                                                                          dtype=torch.float32), dt=dt)
                    radius.append((step, s.radius_distribution["median"], s.radius_distribution["q05"],
                                   s.radius_distribution["q95"]))
    finally:
        agent.load_tensors(current_tensors)
    data: dict = {"steps": [s for s, _ in preds] or [s for s, *_ in radius], "analysed_step": current_step}
    facts = {"pinned checkpoints": ", ".join(map(str, steps))
             + (f" (and the analysed {current_step})" if current_step > steps[-1] else "")}
    text = "The same real episodes, replayed through the checkpoints kept during training."
    order = None
    if opened is not None and preds:
        real = np.concatenate([opened.real[k] for k in sorted(opened.real)], -1)
        order = fourier.learning_order(preds, real, dt=dt or 1.0, band_edges=band_edges(real.shape[1], dt))
        unit = "Hz" if dt else "cycles/step"
        data.update(band_edges=order.band_edges.tolist(), relative_error=order.relative_error.tolist(),
                    threshold=order.threshold, first_below=list(order.first_below),
                    low_before_high=order.low_before_high, open_loop_mse=mse, unit=unit)
        verdict = {True: "yes", False: "no", None: "no band reached the threshold"}[order.low_before_high]
        facts["low frequencies learned before high ones"] = verdict
        for (lo, hi), first in zip(zip(order.band_edges[:-1], order.band_edges[1:]), order.first_below):
            facts[f"band {lo:.3g}-{hi:.3g} {unit} first below {order.threshold:g}"] = (
                f"step {first}" if first is not None else "never")
        # an order relative to where each band started, for models that reach the absolute threshold in no band
        halved: list[int | None] = []
        for b in range(order.relative_error.shape[1]):
            hit = np.flatnonzero(order.relative_error[:, b] <= 0.5 * order.relative_error[0, b])
            halved.append(int(order.steps[hit[0]]) if hit.size and order.relative_error[0, b] > 0 else None)
        data["halved_by"] = halved
        for (lo, hi), when in zip(zip(order.band_edges[:-1], order.band_edges[1:]), halved):
            facts[f"band {lo:.3g}-{hi:.3g} {unit} error halved (vs first pinned) by"] = (
                f"step {when}" if when is not None else "never")
        text += (" Which frequency bands of the observations the model predicted well first (relative error "
                 f"per band below {order.threshold:g}, and halved from the first pinned checkpoint), the "
                 "spectral-bias question.")
    else:
        text += " (No learning order by frequency: the model has no decoder or no vector observations.)"
    if radius:
        data["spectral_radius"] = [{"step": s, "median": m, "q05": lo, "q95": hi} for s, m, lo, hi in radius]
        facts["median spectral radius, first / last checkpoint"] = f"{_fmt(radius[0][1], 4)} / {_fmt(radius[-1][1], 4)}"
        text += " The spectral radius of the learned transition at the visited states, per checkpoint."
    return Section("checkpoints", TITLES["checkpoints"], True, text, facts,
                   {"checkpoints": figs.checkpoints(order, radius, mse)}, data)
