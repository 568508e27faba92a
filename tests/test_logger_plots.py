"""Tests for the metrics logger and the figure/video writers."""

from __future__ import annotations

import json
import math

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from reverie.analysis import plot_dream_vectors, plot_learning_curve, write_dream_video
from reverie.training.logger import MetricsLogger, read_metrics


# ------------------------------------------------------------------- logger


def test_jsonl_rows_types_and_nan(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        log.log(10, {"train/loss": torch.tensor(0.5), "count": np.int64(3), "x": np.float32(0.25)})
        log.log(20, {"train/loss": float("nan"), "flag": True, "arr": np.array([1.5])})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"step": 10, "train/loss": 0.5, "count": 3, "x": 0.25},
        {"step": 20, "train/loss": None, "flag": 1, "arr": 1.5},
    ]
    rows = read_metrics(tmp_path)
    assert isinstance(rows[0]["count"], int)
    assert math.isnan(rows[1]["train/loss"])


def test_bad_metric_values_rejected(tmp_path):
    log = MetricsLogger(tmp_path, tensorboard=False)
    with pytest.raises(ValueError, match=r"metric 'v' has shape \[3\]; log a scalar"):
        log.log(1, {"v": torch.zeros(3)})
    with pytest.raises(ValueError, match="metric 's' is a str"):
        log.log(1, {"s": "hello"})
    with pytest.raises(ValueError, match="reserved"):
        log.log(1, {"step": 3})
    log.close()
    log.close()  # twice is fine
    with pytest.raises(ValueError, match="is closed"):
        log.log(2, {"a": 1.0})
    assert (tmp_path / "metrics.jsonl").read_text() == ""


def test_torn_last_line_is_skipped_and_cut_on_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "a": 1.0}\n{"step": 2, "a": 2.0}\n{"step": 3, "a"')
    assert [r["step"] for r in read_metrics(path)] == [1, 2]
    # Resuming appends after the intact lines: the fragment must not glue onto the next row.
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        log.log(3, {"a": 3.0})
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3]
    assert path.read_text().count("\n") == 3


def test_corrupt_middle_line_warns(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\ngarbage\n{"step": 2}\n')
    with pytest.warns(UserWarning, match=":2 is not a JSON object"):
        rows = read_metrics(path)
    assert [r["step"] for r in rows] == [1, 2]


def test_resume_step_drops_rows_of_the_lost_future(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        for step in (100, 200, 300):
            log.log(step, {"a": float(step)})
    with MetricsLogger(tmp_path, tensorboard=False, resume_step=200) as log:
        log.log(250, {"a": 2.5})
    assert [r["step"] for r in read_metrics(tmp_path)] == [100, 200, 250]


def test_tensorboard_event_file_holds_the_scalars(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=True) as log:
        log.log(5, {"train/loss": 1.5, "bad": float("inf")})
        log.log(6, {"train/loss": 0.5})
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert "bad" not in acc.Tags()["scalars"]  # non-finite values are not mirrored
    got = [(e.step, e.value) for e in acc.Scalars("train/loss")]
    assert got == [(5, 1.5), (6, 0.5)]


# -------------------------------------------------------------------- plots


def _png_rgb(path):
    image = imageio.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    return image[..., :3]


def test_learning_curve_png(tmp_path):
    metrics = [{"step": s, "train/episode_return": float(s % 7)} for s in range(0, 1000, 10)]
    metrics += [{"step": s, "eval/return": s / 10, "eval/return_std": 5.0} for s in range(0, 1000, 100)]
    out = plot_learning_curve(metrics, tmp_path / "plots" / "curve.png", title="test")
    image = _png_rgb(out)
    assert image.shape[:2] == (400, 700)
    assert image.std() > 5  # something was drawn
    assert not [p for p in out.parent.iterdir() if p.name != "curve.png"]  # no temp files
    # Early in training there may be no eval yet: the train returns alone are drawn.
    assert plot_learning_curve(metrics, tmp_path / "train_only.png", key="eval/score").is_file()
    evals = [row for row in metrics if "eval/return" in row]
    with pytest.raises(ValueError, match="no 'eval/score' values .*keys present: eval/return, eval/return_std"):
        plot_learning_curve(evals, tmp_path / "x.png", key="eval/score")


def test_dream_vectors_png_grid(tmp_path):
    rng = np.random.default_rng(0)
    real = rng.normal(size=(30, 5))
    samples = real[None] + rng.normal(scale=0.1, size=(8, 30, 5))
    out = plot_dream_vectors(real, samples, context=10, out_png=tmp_path / "vec.png", names=list("abcde"))
    # 5 dims -> 4 columns x 2 rows of (3.2 x 2.2 in) panels at 100 dpi.
    assert _png_rgb(out).shape[:2] == (480, 1280)
    out = plot_dream_vectors(real, real, context=30, out_png=tmp_path / "single.png")
    assert out.is_file()
    with pytest.raises(ValueError, match="context must be between 0 and T=30"):
        plot_dream_vectors(real, real, context=31, out_png=tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"imagined must be \[T, D\]"):
        plot_dream_vectors(real, real[:, :2], context=3, out_png=tmp_path / "bad.png")


def test_dream_video_gif_frames_and_borders(tmp_path):
    rng = np.random.default_rng(0)
    T, H, W = 7, 16, 16
    real = rng.integers(0, 256, size=(T, H, W, 3), dtype=np.uint8)
    imagined = real.copy()
    imagined[3:] = 0  # the dream goes dark after the context
    out = write_dream_video(real, imagined, context=3, out_path=tmp_path / "dream.gif", fps=5, scale=2)
    frames = imageio.mimread(out)
    assert len(frames) == T
    frame = np.asarray(frames[0])[..., :3]
    # Layout: 3 panels of 32 px + 2*3 px borders, 2 px gaps; height 32 + 6 + 6 px timeline.
    assert frame.shape == (44, 3 * 38 + 4, 3)
    # Border colour: green while observed, red once dreaming (GIF palettes are lossy: compare loosely).
    assert np.abs(frame[0, 0].astype(int) - (90, 170, 90)).max() < 20
    last = np.asarray(frames[-1])[..., :3]
    assert np.abs(last[0, 0].astype(int) - (220, 60, 60)).max() < 20
    # The error panel of a dreamed frame equals the real frame (imagined is all zeros there).
    err_panel = last[3:35, 2 * 40 + 3 : 2 * 40 + 35]
    real_up = real[-1].repeat(2, axis=0).repeat(2, axis=1)
    assert np.abs(err_panel.astype(int) - real_up.astype(int)).mean() < 12


def test_dream_video_rejects_bad_input(tmp_path):
    frames = np.zeros((4, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="must end in .gif or .mp4"):
        write_dream_video(frames, frames, 2, tmp_path / "x.avi")
    with pytest.raises(ValueError, match="uint8"):
        write_dream_video(frames.astype(np.float32), frames, 2, tmp_path / "x.gif")
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match=r"imageio-ffmpeg .*or save the video as .gif"):
            write_dream_video(frames, frames, 2, tmp_path / "x.mp4")
