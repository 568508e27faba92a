"""DIAMOND through the one driver: train, resume, evaluate, plan and dream on MinAtar from the command line,
the dream as a gymnasium environment, and the bad inputs that are one sentence."""

import json

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from reverie.agents.diamond import Diamond
from reverie.agents.registry import resolve_config
from reverie.cli import main
from reverie.envs.dream_env import DreamEnv
from reverie.specs import ActionSpec, ArraySpec

OBS = {"image": ArraySpec((10, 10, 4), np.dtype(np.uint8))}


def test_the_cli_trains_resumes_evaluates_plans_and_dreams_with_diamond(tmp_path, capsys):
    run = tmp_path / "diamond"
    assert main(["train", "diamond", "--preset", "tiny", "--run-dir", str(run), "--steps", "80"]) == 0
    first = json.loads((run / "summary.json").read_text())
    assert first["agent"] == "diamond" and first["env_steps"] == 80 and first["updates"] > 0
    assert (run / "dream.gif").stat().st_size > 0
    losses = [m for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "train/loss/denoise" in m]
    assert losses and all(np.isfinite(m["train/loss/denoise"]) and np.isfinite(m["train/loss/actor"]) for m in losses)
    assert main(["train", "diamond", "--preset", "tiny", "--run-dir", str(run), "--steps", "120"]) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "at step 80" in out
    assert json.loads((run / "summary.json").read_text())["updates"] > first["updates"]
    for planner in ("policy", "shooting"):
        assert main(["eval", str(run), "--episodes", "1", "--planner", planner, "--planner-arg", "horizon=2"]
                    if planner != "policy" else ["eval", str(run), "--episodes", "1"]) == 0
        result = json.loads(capsys.readouterr().out.splitlines()[-1])
        assert np.isfinite(result["return_mean"])
    assert main(["dream", str(run), "--context", "3", "--horizon", "4", "--out", str(tmp_path / "d.gif")]) == 0
    dream = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert dream["file"].endswith("d.gif") and (tmp_path / "d.gif").stat().st_size > 0


@pytest.mark.parametrize("args, sentence", [
    (["--obs", "state"], r"DIAMOND's diffusion model needs images: it generates one image observation, but this "
                         r"environment's observations are vectors \['vector'\]; use --obs pixels or an image "
                         r"environment"),
    (["run.seq_len=2"], r"DIAMOND conditions each frame on model.context=2 frames before it, so it needs "
                        r"run.seq_len >= 3; got 2"),
    (["run.time_limit=2"], r"model.context=2 frames is longer than any episode \(run.time_limit=2 steps\)"),
    (["--env", "minatar:brekout"], r"^error: MinAtar has no game 'brekout'; did you mean 'breakout'\?$"),
    (["--env", "atari:NoSuchGame"], r"^error: ale-py has no Atari game 'NoSuchGame'; did you mean 'NameThisGame'\?$"),
])
def test_bad_input_is_one_sentence(tmp_path, capsys, args, sentence):
    assert main(["train", "diamond", "--preset", "tiny", "--run-dir", str(tmp_path / "x"), "--steps", "40", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert __import__("re").search(sentence, err), err


def test_an_atari_game_whose_rom_is_absent_is_one_sentence(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ALE_ROMS_DIR", str(tmp_path))                  # a ROM folder without pong.bin
    assert main(["train", "diamond", "--preset", "tiny", "--run-dir", str(tmp_path / "x"), "--steps", "40",
                 "--env", "atari:Pong"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("error: ale-py cannot load the ROM of atari:Pong (") and "pong.bin" in err, err
    assert err.endswith("reinstall ale-py, whose wheel ships every ROM, or point ALE_ROMS_DIR at a folder holding it")


def test_the_diffusion_dream_is_a_gymnasium_env_deterministic_under_a_seed():
    torch.manual_seed(0)
    agent = Diamond(OBS, ActionSpec(True, 3), resolve_config("diamond", "tiny", []))
    starts = {"image": (np.random.default_rng(0).random((3, 10, 10, 4)) > 0.7).astype(np.uint8) * 255}
    env = DreamEnv(agent.model, starts, max_steps=5)
    check_env(env, skip_render_check=True)

    def episode(seed):
        env = DreamEnv(agent.model, starts, max_steps=5)
        obs, _ = env.reset(seed=seed)
        out = [obs]
        for a in (0, 1, 2, 1, 0):
            obs, r, term, trunc, _ = env.step(a)
            out += [obs, np.array([r, term, trunc])]
            if term or trunc:
                break
        return out

    a, b, c = episode(1), episode(1), episode(2)
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not (len(a) == len(c) and all(np.array_equal(x, y) for x, y in zip(a, c)))
