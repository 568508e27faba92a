"""Figures and videos a person looks at: learning curves, dreamed state trajectories, dream videos.

Every function takes plain data (metric rows, numpy arrays), writes one file
atomically (temp file, then rename) and returns its path. Figures are drawn
on matplotlib's Agg canvas directly, never through ``pyplot``, so they work
headless and leave an interactive user's backend alone.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from reverie.io import atomic_path

__all__ = ["channels_as_rgb", "plot_dream_vectors", "plot_learning_curve", "write_dream_video"]

# Colours: observed (context) frames vs. open-loop imagination.
_CONTEXT_RGB = (90, 170, 90)
_DREAM_RGB = (220, 60, 60)


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig, out_png: str | os.PathLike) -> Path:
    out = Path(out_png)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=out.suffix.lstrip(".") or "png")
    return out


def _series(metrics: Sequence[dict[str, Any]], key: str, *extra: str) -> tuple[np.ndarray, ...]:
    """Steps and values of rows where ``key`` is a finite number; extra keys aligned (NaN if absent)."""
    cols: list[list[float]] = [[] for _ in range(2 + len(extra))]
    for row in metrics:
        value = row.get(key)
        if value is None or "step" not in row or not math.isfinite(float(value)):
            continue
        cols[0].append(float(row["step"]))
        cols[1].append(float(value))
        for i, k in enumerate(extra):
            v = row.get(k)
            cols[2 + i].append(math.nan if v is None else float(v))
    return tuple(np.asarray(c, dtype=np.float64) for c in cols)


def plot_learning_curve(
    metrics: Sequence[dict[str, Any]],
    out_png: str | os.PathLike,
    key: str = "eval/return",
    title: str = "",
) -> Path:
    """Plot ``key`` against ``step`` from metric rows (as :func:`read_metrics` returns them).

    Draws ``key`` as a line with markers, shaded by ``± {key}_std`` where rows
    carry it, and ``train/episode_return`` as faint dots behind it if present.
    Raises ValueError if neither series has any finite value.
    """
    steps, values, stds = _series(metrics, key, f"{key}_std")
    train_steps, train_values = _series(metrics, "train/episode_return")
    if len(steps) == 0 and len(train_steps) == 0:
        present = sorted({k for row in metrics for k in row} - {"step"})
        shown = ", ".join(present[:10]) + (", ..." if len(present) > 10 else "")
        raise ValueError(f"no '{key}' values in the metrics to plot; keys present: {shown or 'none'}")
    order = np.argsort(steps, kind="stable")
    steps, values, stds = steps[order], values[order], stds[order]

    fig = _new_figure(7, 4)
    ax = fig.add_subplot()
    if len(train_steps):
        ax.scatter(train_steps, train_values, s=6, alpha=0.25, color="tab:gray", label="train/episode_return")
    if len(steps):
        ax.plot(steps, values, marker="o", markersize=3, color="tab:blue", label=key)
        has_std = np.isfinite(stds)
        if has_std.any():
            ax.fill_between(
                steps[has_std], (values - stds)[has_std], (values + stds)[has_std],
                color="tab:blue", alpha=0.2, linewidth=0, label=f"± {key}_std",
            )
    ax.set_xlabel("step")
    ax.set_ylabel(key if len(steps) else "train/episode_return")
    ax.set_title(title or key)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return _save_figure(fig, out_png)


def plot_dream_vectors(
    real: np.ndarray,
    imagined: np.ndarray,
    context: int,
    out_png: str | os.PathLike,
    names: Sequence[str] | None = None,
    title: str = "",
    max_dims: int = 12,
) -> Path:
    """Real vs. imagined state trajectories, one subplot per dimension.

    ``real``: [T, D]. ``imagined``: [T, D], or [S, T, D] samples (drawn as the
    median with a 10-90 % band and a few faint sample lines). The first
    ``context`` steps were observed; a dashed line marks where the open-loop
    imagination starts and that region is shaded. At most ``max_dims``
    dimensions are drawn (the first ones).
    """
    real = np.asarray(real, dtype=np.float64)
    imagined = np.asarray(imagined, dtype=np.float64)
    if real.ndim != 2:
        raise ValueError(f"real must be [T, D], got shape {real.shape}")
    if imagined.ndim == 2:
        imagined = imagined[None]
    if imagined.ndim != 3 or imagined.shape[1:] != real.shape:
        raise ValueError(f"imagined must be [T, D] or [S, T, D] matching real {real.shape}, got {imagined.shape}")
    steps, dims = real.shape
    if not 0 <= context <= steps:
        raise ValueError(f"context must be between 0 and T={steps}, got {context}")
    if names is not None and len(names) != dims:
        raise ValueError(f"names has {len(names)} entries but the states have D={dims} dimensions")
    shown = min(dims, max_dims)
    cols = min(4, shown)
    rows = math.ceil(shown / cols)
    fig = _new_figure(3.2 * cols, 2.2 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True)
    t = np.arange(steps)
    samples = imagined.shape[0]
    for d in range(rows * cols):
        ax = axes[d // cols][d % cols]
        if d >= shown:
            ax.set_visible(False)
            continue
        if context < steps:
            ax.axvspan(context - 0.5, steps - 0.5, color="tab:red", alpha=0.06, linewidth=0)
            ax.axvline(context - 0.5, color="tab:red", linestyle="--", linewidth=1)
        ax.plot(t, real[:, d], color="black", linewidth=1.5, label="real")
        if samples == 1:
            ax.plot(t, imagined[0, :, d], color="tab:red", linewidth=1.2, label="imagined")
        else:
            lo, mid, hi = np.percentile(imagined[:, :, d], [10, 50, 90], axis=0)
            for s in range(min(samples, 5)):
                ax.plot(t, imagined[s, :, d], color="tab:red", linewidth=0.5, alpha=0.3)
            ax.fill_between(t, lo, hi, color="tab:red", alpha=0.2, linewidth=0, label="imagined 10-90%")
            ax.plot(t, mid, color="tab:red", linewidth=1.2, label="imagined median")
        ax.set_title(names[d] if names is not None else f"dim {d}", fontsize="small")
        ax.grid(alpha=0.3)
        if d == 0:
            ax.legend(fontsize="x-small", loc="best")
    for ax in axes[-1]:
        ax.set_xlabel("step")
    heading = title or f"open-loop imagination after {context} observed steps"
    if shown < dims:
        heading += f" (first {shown} of {dims} dims)"
    fig.suptitle(heading, fontsize="medium")
    return _save_figure(fig, out_png)


def channels_as_rgb(frames: np.ndarray) -> np.ndarray:
    """uint8 images ``[..., H, W, C]`` of any channel count as RGB ``[..., H, W, 3]``: three channels as they are,
    one as grey, any other count as object channels (MinAtar's grids): each cell the colour of the
    highest-numbered channel that is on (above 127) in it, from matplotlib's cubehelix colour map, black if none."""
    channels = frames.shape[-1]
    if channels == 3:
        return frames
    if channels == 1:
        return np.repeat(frames, 3, axis=-1)
    from matplotlib import colormaps

    palette = np.concatenate([np.zeros((1, 3)), colormaps["cubehelix"](np.linspace(0.15, 0.85, channels))[:, :3]])
    front = ((frames > 127) * np.arange(1, channels + 1, dtype=np.int64)).max(-1)
    return (palette[front] * 255).round().astype(np.uint8)


def _dream_frames(real: np.ndarray, imagined: np.ndarray, context: int, scale: int) -> np.ndarray:
    """[T, H', W', 3] uint8 frames: real | imagined | |error|, bordered and with a timeline bar."""
    steps, height, width, _ = real.shape
    error = np.abs(real.astype(np.int16) - imagined.astype(np.int16)).astype(np.uint8)
    panels = np.stack([real, imagined, error], axis=1)  # [T, 3, H, W, 3]
    if scale > 1:
        panels = panels.repeat(scale, axis=2).repeat(scale, axis=3)
    border, gap, bar = 3, 2, 6
    ph, pw = height * scale, width * scale
    out_h = ph + 2 * border + bar
    out_w = 3 * (pw + 2 * border) + 2 * gap
    frames = np.full((steps, out_h, out_w, 3), 255, dtype=np.uint8)
    for i in range(steps):
        colour = _CONTEXT_RGB if i < context else _DREAM_RGB
        for p in range(3):
            x0 = p * (pw + 2 * border + gap)
            frames[i, : ph + 2 * border, x0 : x0 + pw + 2 * border] = colour
            frames[i, border : border + ph, x0 + border : x0 + border + pw] = panels[i, p]
        # Timeline under the panels: filled up to this frame, a tick where the dream starts.
        filled = round(out_w * (i + 1) / steps)
        frames[i, -bar + 1 :, :filled] = colour
        frames[i, -bar + 1 :, filled:] = 220
        tick = min(out_w - 1, round(out_w * context / steps))
        frames[i, -bar:, tick] = 0
    return frames


def write_dream_video(
    real: np.ndarray,
    imagined: np.ndarray,
    context: int,
    out_path: str | os.PathLike,
    fps: int = 10,
    scale: int | None = None,
) -> Path:
    """Write a video of real | imagined | |real - imagined| frames, one per step.

    ``real``, ``imagined``: [T, H, W, C] uint8, shown through :func:`channels_as_rgb` where C is not 3. The first ``context`` frames
    (observed) get a green border, the open-loop ones a red border, and a
    timeline bar under the panels shows progress with a tick at ``context``.
    ``scale``: integer upscaling (default: enough to make panels ~128 px tall).
    ``.gif`` is always available; ``.mp4`` needs the imageio-ffmpeg package.
    """
    real, imagined = np.asarray(real), np.asarray(imagined)
    if real.ndim != 4 or real.dtype != np.uint8:
        raise ValueError(f"real must be uint8 [T, H, W, C], got {real.dtype} {real.shape}")
    if imagined.shape != real.shape or imagined.dtype != np.uint8:
        raise ValueError(f"imagined must be uint8 {real.shape} like real, got {imagined.dtype} {imagined.shape}")
    if real.shape[0] == 0:
        raise ValueError("cannot write a dream video with no frames (T=0)")
    if not 0 <= context <= real.shape[0]:
        raise ValueError(f"context must be between 0 and T={real.shape[0]}, got {context}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    real, imagined = channels_as_rgb(real), channels_as_rgb(imagined)
    scale = scale or max(1, 128 // real.shape[1])
    out = Path(out_path)
    suffix = out.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise ValueError(f"dream video {out} must end in .gif or .mp4")
    if suffix == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise ValueError(
                f"writing {out.name} needs the imageio-ffmpeg package (pip install imageio-ffmpeg); "
                "or save the video as .gif"
            ) from None
    frames = _dream_frames(real, imagined, context, scale)
    import imageio.v2 as imageio

    with atomic_path(out) as tmp:
        if suffix == ".gif":
            # Pillow's GIF writer takes the frame duration in milliseconds.
            imageio.mimwrite(tmp, list(frames), format="GIF", duration=1000.0 / fps, loop=0)
        else:
            # yuv420p (playable everywhere) needs even sizes: pad by one pixel where odd.
            h, w = frames.shape[1:3]
            frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), constant_values=255)
            imageio.mimwrite(tmp, list(frames), format="FFMPEG", fps=fps, macro_block_size=1)
    return Path(out)
