"""End-of-run artifacts a person looks at: the learning curve and a dream (for models with a decoder)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from reverie.agents.base import Agent
from reverie.analysis.dream import open_loop, prediction_error
from reverie.analysis.plots import plot_dream_vectors, plot_learning_curve, write_dream_video
from reverie.envs import Env
from reverie.io import atomic_write_text
from reverie.models.base import DECODER, CapabilityError, has, require
from reverie.training.evaluate import run_episodes
from reverie.training.logger import read_metrics


def write_end_of_run(run_dir: Path, agent: Agent, dream_env: Callable[[], Env] | None,
                     summary: dict[str, Any]) -> dict[str, Path]:
    """What a finished run leaves for a person: ``learning_curve.png``, a dream where the model decodes and an
    environment is known, and ``summary.json`` (``summary`` plus the dream's open-loop error and the files).
    Returns the files written by name."""
    files = {"learning_curve": write_learning_curve(run_dir)}
    errors = None
    if dream_env is not None and can_dream(agent):
        files["dream"], errors = write_dream(agent, dream_env, run_dir / "dream")
    record = {**summary, "dream/open_loop_mse": errors, "artifacts": {k: str(v) for k, v in files.items()}}
    atomic_write_text(run_dir / "summary.json", json.dumps(record, indent=1) + "\n")
    return files


def can_dream(agent: Agent) -> bool:
    """Whether the agent's model can decode observations and is driven by the environment's actions, which a
    dream of a real episode replays (a latent-action model's codes are not those actions)."""
    return agent.model is not None and has(agent.model, DECODER) and not agent.model.act_spec.latent


def write_learning_curve(run_dir: Path, out: Path | None = None) -> Path:
    metrics = read_metrics(run_dir / "metrics.jsonl")
    return plot_learning_curve(metrics, out or run_dir / "learning_curve.png", title=run_dir.name)


def write_dream(agent: Agent, make_env: Callable[[], Env], out: Path, context: int = 5,
                horizon: int = 45) -> tuple[Path, dict[str, float]]:
    """Run one greedy episode, predict its continuation open-loop, and write a video or plot.

    ``out`` without an extension gets ``.gif`` (pixels) or ``.png`` (vectors); an explicit one
    is kept (``.mp4`` needs imageio-ffmpeg; ``.svg``/``.pdf`` plots work).

    Returns (the file written, per-key open-loop MSE averaged over the imagined steps). Raises
    :class:`CapabilityError` if the agent's model cannot decode observations.
    """
    if agent.model is None:
        raise CapabilityError(f"agent '{agent.name}' has no world model to dream with")
    require(agent.model, [DECODER], "a dream (predicted observations)")
    _, episodes = run_episodes(agent, [make_env], explore=False, record=True)
    assert episodes is not None, "run_episodes returns the episodes it was asked to record"
    (episode,) = episodes
    length = episode["action"].shape[0]
    context = min(context, max(length - 1, 1))
    end = min(length, context + horizon)
    if end - context < 1:
        raise ValueError(f"the episode lasted {length} steps, too short for a dream after {context} context steps")
    obs = {k: episode[k][:end] for k in agent.obs_spec}
    pred = open_loop(agent.model, obs, episode["action"][:end], context, device=agent.device)
    errors = {k: float(prediction_error(obs[k][context:], pred[k][context:]).mean()) for k in obs}
    images = [k for k in obs if obs[k].dtype == np.uint8 and obs[k].ndim == 4]
    if images:
        k = images[0]
        path = write_dream_video(obs[k], pred[k], context, out if out.suffix else out.with_suffix(".gif"))
    else:
        keys = sorted(obs)
        real = np.concatenate([obs[k].reshape(end, -1) for k in keys], -1)
        imag = np.concatenate([pred[k].reshape(end, -1) for k in keys], -1)
        path = plot_dream_vectors(real, imag, context, out if out.suffix else out.with_suffix(".png"))
    return Path(path), errors
