"""The results page: generated from the committed results, judged as the suite states, free of machine paths."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from reverie.suite import Aim, Claim
from reverie.training.logger import MetricsLogger

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("report", REPO / "benchmarks" / "report.py")
report = importlib.util.module_from_spec(spec)
sys.modules["report"] = report
spec.loader.exec_module(report)


def test_the_committed_page_and_readme_table_are_what_the_generator_writes():
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "report.py"), "--check"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr


def test_eval_rows_read_evaluations_with_their_wall_time(tmp_path):
    logger = MetricsLogger(tmp_path, tensorboard=False)
    logger.log(500, {"train/updates": 100, "train/updates_per_second": 4.0})              # wall 25 s
    logger.log(1000, {"eval/return": 10.0, "eval/return_std": 1.0})                       # no wall logged: 25 s
    logger.log(2000, {"eval/return": 20.0, "eval/return_std": 2.0, "time/wall_s": 60.0})
    logger.close()
    rows = report.eval_rows(tmp_path, seed=3)
    assert [(r["step"], r["return"], r["wall_s"], r["seed"]) for r in rows] == [(1000, 10.0, 25.0, 3),
                                                                                (2000, 20.0, 60.0, 3)]


def claim(**kw):
    base = dict(id="c", title="t", agent="dreamer", env="gym:CartPole-v1", steps=1000, aim=Aim(475, "every_seed"),
                seeds=(0, 1, 2))
    return Claim(**{**base, **kw})


def outcome(c, finals, partial=(), load=1.0):
    o = report.Outcome(c)
    o.finals = dict(finals)
    o.partial = dict(partial)
    o.meta = {str(s): {"provenance": {"load_mean": load, "cores": 2, "commits": ["abc"]}} for s in o.finals}
    return o


def test_status_is_met_only_when_every_named_seed_finished_and_the_aim_holds():
    c = claim()
    assert outcome(c, {}).status == "not yet measured"
    assert outcome(c, {}, {0: (500, 100.0)}).status == "unfinished"
    assert outcome(c, {0: 500.0, 1: 500.0}).status == "2 of 3 seeds"
    assert outcome(c, {0: 500.0, 1: 480.0, 2: 476.0}).status == "met"
    assert outcome(c, {0: 500.0, 1: 480.0, 2: 470.0}).status == "missed"
    mean = claim(aim=Aim(475, "mean"))
    assert outcome(mean, {0: 500.0, 1: 480.0, 2: 470.0}).status == "met"


def test_flags_name_one_seed_a_loaded_machine_and_a_non_default_config():
    assert outcome(claim(seeds=(0,)), {0: 500.0}).flags == ["one seed"]
    assert "loaded machine" in outcome(claim(), {0: 1.0, 1: 1.0}, load=3.5).flags
    assert outcome(claim(overrides=("run.eval_every=100",)), {0: 1.0, 1: 1.0}).flags == []
    assert outcome(claim(overrides=("model.lr=1e-3",)), {0: 1.0, 1: 1.0}).flags == ["non-default config"]
    assert outcome(claim(preset="tiny"), {0: 1.0, 1: 1.0}).flags == ["non-default config"]


@pytest.mark.parametrize("line, bad", [("see /work/bench_runs/x", True), ("C:\\Users\\me", True),
                                       ("runs/bench/c/s0", False), ("docs/results/c.png", False),
                                       ("a ratio 3/4", False)])
def test_machine_paths_are_found(line, bad):
    assert bool(report.MACHINE_PATH.search(line)) is bad


def test_collect_keeps_committed_seeds_it_does_not_find(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "RESULTS", tmp_path / "results")
    (tmp_path / "results").mkdir()
    c = claim(steps=2000)
    report.write_results("c", [{"step": 2000, "return": 400.0, "return_std": 1.0, "wall_s": 9.0, "seed": 1}],
                         {"1": {"final_step": 2000, "complete": True, "provenance": {}}})
    run = tmp_path / "runs" / "c" / "s0"
    logger = MetricsLogger(run, tensorboard=False)
    logger.log(2000, {"eval/return": 480.0, "eval/return_std": 3.0, "time/wall_s": 30.0})
    logger.close()
    assert report.collect(tmp_path / "runs", {"c": c}) == ["c"]
    rows, meta = report.read_results("c")
    assert [(r["seed"], r["return"]) for r in rows] == [(0, 480.0), (1, 400.0)]
    assert meta["0"]["complete"] and meta["1"]["complete"]
    assert json.loads((tmp_path / "results" / "c.json").read_text())["claim"] == "c"


def test_a_measured_claim_is_judged_by_its_figure_and_shown_as_a_table(tmp_path, monkeypatch):
    from reverie.suite import Measure

    monkeypatch.setattr(report, "RESULTS", tmp_path / "results")
    (tmp_path / "results").mkdir()
    c = claim(aim=Aim(95, "every_seed"), seeds=(0, 1),
              measure=Measure("benchmarks/x.py", ("{run}",), "x.json", {"hits": "k.h", "mrr": "k.m"}, "hits",
                              "Hits@1 %", 100.0))
    for seed, hits in ((0, 0.99), (1, None)):
        run = tmp_path / "runs" / "c" / f"s{seed}"
        MetricsLogger(run, tensorboard=False).close()
        (run / "metrics.jsonl").write_text('{"step": 10}\n')
        if hits is not None:
            (run / "x.json").write_text(json.dumps({"k": {"h": hits, "m": 0.995}}))
    assert report.collect(tmp_path / "runs", {"c": c}) == ["c"]
    o, = report.judge({"c": c})
    assert o.finals == {0: 99.0} and o.partial == {1: (0, None)} and o.status == "1 of 2 seeds"
    section = "\n".join(report.claim_section(o))
    assert "| 0 | 99.00 | 99.50 |" in section and "| 1 | - | - |" in section and "Hits@1 % >= 95" in section
    assert "s1: not yet measured" in "\n".join(report.summary_table([o]))
