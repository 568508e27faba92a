"""``reverie analyze`` end to end on tiny Dreamer and MuZero runs: a self-contained report, every number in
strict JSON, two runs side by side, and each bad input answered in one sentence."""

import base64
import json
import math
import re
from html.parser import HTMLParser

import pytest

from reverie.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("analyze")
    dreamer, muzero = root / "dreamer", root / "muzero"
    assert main(["train", "--preset", "tiny", "--steps", "150", "--run-dir", str(dreamer),
                 "run.keep_checkpoints=2", "run.train_ratio=16"]) == 0
    assert main(["train", "muzero", "--preset", "tiny", "--steps", "80", "--run-dir", str(muzero)]) == 0
    return dreamer, muzero


class Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs).get("src", ""))


def check_page(path):
    """Self-contained: no scripts, no http(s) references, every image an embedded PNG that decodes."""
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"https?://", text) and "<script" not in text
    parser = Images()
    parser.feed(text)
    assert parser.srcs
    for src in parser.srcs:
        head, _, body = src.partition(",")
        assert head == "data:image/png;base64"
        assert base64.b64decode(body, validate=True).startswith(PNG)
    return text, len(parser.srcs)


def strict_json(path):
    def refuse(name):
        raise AssertionError(f"{path} holds {name}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def finite(values):
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def test_a_dreamer_run_gets_every_analysis_in_one_page(runs, capsys):
    dreamer, _ = runs
    assert main(["analyze", str(dreamer), "--episodes", "2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    out = dreamer / "analysis"
    assert printed["report"] == str(out / "report.html") and printed["checkpoint_step"] == [150]
    text, images = check_page(out / "report.html")
    assert images == 7 and "gym:CartPole-v1" in text and "checkpoint step" in text
    for name in ("open_loop", "spectral", "fourier", "projection", "checkpoints", "fidelity_return",
                 "fidelity_length"):
        assert (out / f"{name}.png").read_bytes().startswith(PNG) and (out / f"{name}.svg").stat().st_size
    d = strict_json(out / "analysis.json")
    assert d["agent"] == "dreamer" and d["checkpoint_step"] == 150 and d["dt_seconds"] == pytest.approx(0.02)
    s = d["sections"]
    assert all(s[n]["applies"] for n in s) and len(s) == 6
    ol = s["open_loop"]["data"]
    h = len(ol["horizon"])
    assert h >= 2 and finite(ol["obs_mse"]["vector"]) and len(ol["obs_mse_per_dim"]["vector"]) == h
    assert finite(ol["reward_mse"]) and finite(ol["cont_brier"]) and finite(ol["value_mse"])
    assert finite(ol["latent_distance"]) and ol["skipped"] == {}
    sp = s["spectral"]["data"]
    assert finite(sp["spectral_radius"].values()) and sp["collapsed"] in (True, False)
    assert finite(s["fourier"]["data"]["relative_error_total"])
    pr = s["projection"]["data"]
    assert pr["jl_min_dim"] > 0 and finite(pr["max_distortion"]) and len(pr["ks"]) == len(pr["max_distortion"])
    assert finite([pr["r2"]["reward (real)"]["full_r2"]]) or pr["r2"] == {}
    ck = s["checkpoints"]["data"]
    assert ck["steps"] == [75, 150] and len(ck["relative_error"]) == 2 and len(ck["spectral_radius"]) == 2
    fi = s["fidelity"]["data"]
    rows = {r["policy"]: r for r in fi["rows"]}
    assert list(rows) == ["always 0", "always 1", "uniform random", "random held 1-10", "the agent's policy (dreamer)"]
    assert fi["episodes"] == 2 and fi["max_steps"] == 1000    # no policy met CartPole's own limit of 500
    for r in rows.values():   # CartPole pays 1 a step: return is length on both sides
        assert 1 <= r["real_length"] <= 500 and r["real_return"] == pytest.approx(r["real_length"])
        assert 1 <= r["dream_length"] <= 500 and r["length_ratio"] == pytest.approx(r["dream_length"] / r["real_length"])
    assert rows["always 0"]["real_length"] < 20 and rows["always 1"]["real_length"] < 20   # the pole falls at once
    best = max(r["real_return"] for r in rows.values())
    assert fi["regret"] == pytest.approx(best - rows[fi["dream_choice"]]["real_return"])
    assert fi["real_choice"] in rows and rows[fi["real_choice"]]["real_return"] == best


def test_a_muzero_run_without_a_decoder_gets_the_latent_and_reward_parts(runs, tmp_path, capsys):
    _, muzero = runs
    out = tmp_path / "mz"
    assert main(["analyze", str(muzero), "--episodes", "1", "--out", str(out)]) == 0
    check_page(out / "report.html")
    s = strict_json(out / "analysis.json")["sections"]
    ol = s["open_loop"]
    assert ol["applies"] and "no decoder" in ol["text"] and ol["data"]["obs_mse"] == {}
    assert finite(ol["data"]["reward_mse"]) and finite(ol["data"]["value_mse"])
    assert finite(ol["data"]["latent_distance"])
    assert not s["fourier"]["applies"] and "no decoder" in s["fourier"]["text"]
    assert s["spectral"]["applies"]            # MuZero's dynamics declare 'transition'
    assert not s["checkpoints"]["applies"] and "keep_checkpoints" in s["checkpoints"]["text"]


def test_two_runs_side_by_side(runs, capsys):
    dreamer, muzero = runs
    assert main(["analyze", str(dreamer), str(muzero), "--episodes", "1", "--only", "open_loop,spectral"]) == 0
    page = dreamer / "analysis" / "compare-muzero.html"
    text, images = check_page(page)
    assert "A: dreamer" in text and "B: muzero" in text and images == 4
    both = strict_json(dreamer / "analysis" / "compare-muzero.json")
    assert both["a"]["agent"] == "dreamer" and both["b"]["agent"] == "muzero"
    assert set(both["b"]["sections"]) == {"open_loop", "spectral"}


@pytest.mark.parametrize("args, message", [
    (["{missing}"], "does not exist"),
    (["{dreamer}", "--only", "open_lop"], "unknown analysis 'open_lop' in --only; did you mean 'open_loop'?"),
    (["{dreamer}", "--checkpoint", "999"], "has no checkpoint at step 999; steps available: 75, 150"),
])
def test_bad_input_is_one_sentence(runs, tmp_path, capsys, args, message):
    dreamer, _ = runs
    args = [a.format(missing=tmp_path / "nope", dreamer=dreamer) for a in args]
    assert main(["analyze", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_episodes_below_one_is_a_usage_error(runs, capsys):
    with pytest.raises(SystemExit) as e:
        main(["analyze", str(runs[0]), "--episodes", "0"])
    assert e.value.code == 2 and "argument --episodes: must be at least 1, got 0" in capsys.readouterr().err


def test_saving_a_pinned_step_again_keeps_it_pinned(tmp_path):
    # the end of a run saves its last milestone's step a second time, unpinned: it must stay for the analyses
    import torch

    from reverie.training.checkpoint import list_checkpoints, save_checkpoint

    save_checkpoint(tmp_path, 5, {"w": torch.zeros(1)}, {"agent": "x"}, keep=1, pin=True)
    save_checkpoint(tmp_path, 5, {"w": torch.ones(1)}, {"agent": "x"}, keep=1, pin=False)
    save_checkpoint(tmp_path, 6, {"w": torch.ones(1)}, {"agent": "x"}, keep=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-000000005.json", "ckpt-000000006.json"]


def test_an_earlier_checkpoint_is_analysed_when_asked(runs, tmp_path, capsys):
    dreamer, _ = runs
    assert main(["analyze", str(dreamer), "--checkpoint", "75", "--episodes", "1", "--only", "spectral",
                 "--out", str(tmp_path)]) == 0
    d = strict_json(tmp_path / "analysis.json")
    assert d["checkpoint_step"] == 75 and list(d["sections"]) == ["spectral"]


def test_frequency_bands_are_log_spaced_from_the_window_to_nyquist():
    from reverie.analysis.report.sections import band_edges

    edges = band_edges(50, 0.02)      # 50 steps of 0.02 s: 1 Hz resolved, Nyquist 25 Hz
    assert edges[0] == 0 and edges[-1] == pytest.approx(25.0)
    assert edges[1] == pytest.approx(25 ** (1 / 3)) and edges[2] == pytest.approx(25 ** (2 / 3))
