"""Per-object frame fidelity: counts and scores of hand-built frames, the open-loop frames of an oracle model
whose every imagined frame is known, and the benchmark script end to end on tiny DIAMOND and Dreamer runs."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from reverie.analysis.object_fidelity import binarise, cell_counts, exact_frames, open_loop_frames, scores
from reverie.cli import main
from reverie.specs import ActionSpec, ArraySpec

REPO = Path(__file__).resolve().parents[1]


def test_counts_and_scores_per_channel_of_hand_built_frames():
    # two 2x2 frames, channels (paddle, ball); real: paddle on at (0, 0) in both, ball at (1, 1) in frame 0
    real = np.zeros((2, 2, 2, 2), bool)
    real[:, 0, 0, 0] = True
    real[0, 1, 1, 1] = True
    pred = real.copy()
    pred[1, 0, 1, 0] = True                 # a paddle cell too many in frame 1: fp
    pred[0, 1, 1, 1] = False                # the ball missed in frame 0: fn
    pred[1, 0, 0, 1] = True                 # a ball from nothing in frame 1: fp
    counts = cell_counts(pred, real)
    np.testing.assert_array_equal(counts, [[2, 1, 0], [0, 1, 1]])
    assert exact_frames(pred, real) == 0 and exact_frames(real, real) == 2
    s = scores(counts, ["paddle", "ball"])
    # over all channels: tp 2, fp 2, fn 1 -> precision 1/2, recall 2/3, F1 4 / 7
    assert s["precision"] == pytest.approx(0.5) and s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(4 / 7) and s["cells_on"] == 3
    assert s["channels"]["paddle"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "cells_on": 2})
    assert s["channels"]["ball"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "cells_on": 1}
    # a channel never on and never predicted is scored 1, not 0
    assert scores(np.zeros((1, 3), np.int64), ["trail"])["channels"]["trail"]["f1"] == 1.0
    assert binarise(np.array([0, 127, 128, 255])).tolist() == [False, False, True, True]
    with pytest.raises(ValueError, match="2 channel names for counts of shape"):
        scores(np.zeros((3, 3), np.int64), ["a", "b"])


class CountingModel(torch.nn.Module):
    """An oracle: its state is the last real frame and a running sum of the action indices taken since;
    its decoded frame is that frame with the sum written in cell (0, 0) of channel 0."""

    capabilities = frozenset({"decoder"})
    obs_spec = {"image": ArraySpec((3, 3, 2), np.dtype(np.uint8))}
    act_spec = ActionSpec(True, 3)
    feat_size = 1

    def initial(self, batch: int) -> dict[str, Tensor]:
        return {"frame": torch.zeros(batch, 3, 3, 2), "total": torch.zeros(batch)}

    def observe(self, obs, action, is_first, state=None):
        frames = obs["image"].float()                                           # [B, T, H, W, C]
        states = {"frame": frames, "total": torch.zeros(frames.shape[:2])}
        return states, {k: v[:, -1] for k, v in states.items()}

    def step(self, state, action):
        return {"frame": state["frame"], "total": state["total"] + action.argmax(-1).float()}

    def features(self, state):
        return state["total"][..., None]

    def decode(self, state):
        image = state["frame"].clone()
        image[..., 0, 0, 0] = state["total"]
        return {"image": image}


def test_open_loop_frames_start_from_the_filtered_step_and_take_the_actions_that_followed():
    steps = 9
    images = torch.zeros(steps, 3, 3, 2, dtype=torch.uint8)
    images[:, 2, 2, 1] = torch.arange(steps, dtype=torch.uint8) * 10                # which step a frame is
    index = torch.tensor([0, 2, 1, 1, 0, 2, 2, 1, 0])
    actions = torch.eye(3)[index]                                                   # action[t] led into t
    frames = open_loop_frames(CountingModel(), "image", images, actions, [1, 4], horizon=3)
    assert frames.shape == (2, 3, 3, 3, 2)
    for n, start in enumerate([1, 4]):
        for h in range(3):
            assert float(frames[n, h, 2, 2, 1]) == 10 * start                       # imagined from the start's frame
            assert float(frames[n, h, 0, 0, 0]) == float(index[start + 1:start + 2 + h].sum())
    with pytest.raises(ValueError, match=r"starts \[6\] with horizon 3 do not fit an episode of 9 steps"):
        open_loop_frames(CountingModel(), "image", images, actions, [6], horizon=3)


def fidelity_script():
    spec = importlib.util.spec_from_file_location("diamond_fidelity", REPO / "benchmarks" / "diamond_fidelity.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("agent, extra", [("diamond", []), ("dreamer", ["--obs", "pixels", "--env", "minatar:breakout",
                                                                       "model.image_loss=bernoulli"])])
def test_the_script_scores_each_channel_of_a_tiny_run(tmp_path, agent, extra):
    run = tmp_path / agent
    assert main(["train", agent, "--preset", "tiny", "--run-dir", str(run), "--steps", "60", *extra]) == 0
    script, out = fidelity_script(), tmp_path / "fid.json"
    args = [str(run), "--episodes", "20", "--horizons", "1", "2", "--json", str(out)]
    if agent == "diamond":
        args += ["--sampler-steps", "2"]
    assert script.main(args) == 0
    result = json.loads(out.read_text())
    assert result["channels"] == ["paddle", "ball", "trail", "brick"] and result["agent"] == agent
    assert result["starts"] > 0 and set(result["horizons"]) == {"1", "2"}
    assert (result["sampler_steps"], result["calls_per_frame"]) == ((2, 2) if agent == "diamond" else (None, None))
    for h in ("1", "2"):
        copy = result["horizons"][h]["copy_last_frame"]
        # bricks barely change in two steps: copying the last frame gets nearly all of them
        assert copy["channels"]["brick"]["f1"] > 0.9
        for part in (copy, result["horizons"][h]["model"]):
            assert part["frames"] == result["starts"] and 0 <= part["f1"] <= 1
            assert sum(c["cells_on"] for c in part["channels"].values()) == part["cells_on"]
    assert script.main([str(run), "--episodes", "2", "--horizons", "50"]) == 2


def test_the_speed_script_counts_the_denoisers_calls_per_frame(tmp_path):
    spec = importlib.util.spec_from_file_location("diamond_speed", REPO / "benchmarks" / "diamond_speed.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "speed.json"
    assert script.main(["--batch", "1", "--horizon", "2", "--repeats", "1", "--threads", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    calls = {r["name"]: r["calls_per_frame"] for r in rows}
    assert calls == {"DIAMOND EDM, 3 Euler steps": 3, "DIAMOND EDM, 10 Euler steps": 10, "DIAMOND DDPM, 3 steps": 3,
                     "Dreamer latent steps": None, "Dreamer steps with decoded frames": None,
                     "real minatar:breakout (random actions)": None}
    assert all(r["per_second"] > 0 and r["threads"] == 1 for r in rows)
