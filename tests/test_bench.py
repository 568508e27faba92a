"""The benchmark suite file, `reverie bench`, and the provenance every run folder records."""

import json
import subprocess
from pathlib import Path

import pytest

from reverie.cli import main
from reverie.suite import Aim, SuiteError, claim_overrides, load_suite
from reverie.training.logger import read_metrics
from reverie.training.provenance import read_provenance

REPO = Path(__file__).resolve().parents[1]

TINY_SUITE = """
claims:
  - id: tiny-cartpole
    title: a tiny Dreamer on CartPole
    agent: dreamer
    env: gym:CartPole-v1
    preset: tiny
    steps: 120
    seeds: [0, 1]
    eval_episodes: 2
    overrides: [run.eval_every=60, run.checkpoint_every=60]
    aim: {value: 475, over: every_seed}
"""


def test_the_projects_suite_file_is_valid_and_names_the_headline_claims():
    claims = load_suite(REPO / "benchmarks" / "suite.yaml")
    assert {"dreamer-cartpole-quickstart", "dreamer-dmc-cartpole-swingup", "tdmpc2-dmc-reacher-easy"} <= set(claims)
    quick = claims["dreamer-cartpole-quickstart"]
    assert quick.seeds == (0, 1, 2, 3, 4) and quick.aim == Aim(475.0, "every_seed")
    # every claim resolves to a valid config of its agent
    from reverie.agents.registry import resolve_config
    for claim in claims.values():
        cfg = resolve_config(claim.agent, claim.preset, claim_overrides(claim, claim.seeds[0]))
        assert cfg.run.steps == claim.steps and cfg.run.env == claim.env
        # a claim that names no observation keeps its agent's own: frames for the latent-action model
        assert cfg.run.obs == (claim.obs or resolve_config(claim.agent, claim.preset, []).run.obs)
    assert resolve_config("lapo", "default", claim_overrides(claims["lapo-breakout"], 0)).run.obs == "pixels"


def test_aims_hold_over_every_seed_or_the_mean():
    every, mean = Aim(475, "every_seed"), Aim(475, "mean")
    assert every.holds([500, 480]) and not every.holds([500, 470])
    assert mean.holds([500, 460]) and not mean.holds([470, 460])
    assert not every.holds([])
    assert Aim(-200, "mean", below=True).holds([-250, -210]) and not Aim(-200, "mean", below=True).holds([-150])


@pytest.mark.parametrize("text, message", [
    ("claims: [{id: a, title: t, agent: dreamer, env: gym:CartPole-v1, steps: 10, aim: {value: 1}, seed: [0]}]",
     "unknown field 'seed'; did you mean 'seeds'?"),
    ("claims: [{id: a, title: t, agent: dreamer, env: gym:CartPole-v1, steps: 10}]", "lacks aim"),
    ("claims: [{id: a, title: t, agent: dreamer, env: gym:CartPole-v1, steps: 10, aim: {value: 1, over: most}}]",
     "aim.over must be one of every_seed, mean"),
    ("claims: [{id: A B, title: t, agent: dreamer, env: e, steps: 1, aim: {value: 1}}]", "must be lower-case"),
    ("nothing: here", "must hold a mapping with a list 'claims'"),
])
def test_a_bad_suite_file_is_one_sentence(tmp_path, text, message):
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    with pytest.raises(SuiteError, match=message.replace("?", r"\?")):
        load_suite(path)


def test_bench_runs_a_claims_seeds_into_their_folders_with_provenance(tmp_path, capsys):
    suite = tmp_path / "suite.yaml"
    suite.write_text(TINY_SUITE)
    root = tmp_path / "bench"
    assert main(["bench", "tiny-cartpole", "--suite", str(suite), "--root", str(root)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [(x["claim"], x["seed"], x["env_steps"]) for x in lines] == [("tiny-cartpole", 0, 120),
                                                                          ("tiny-cartpole", 1, 120)]
    for seed in (0, 1):
        run = root / "tiny-cartpole" / f"s{seed}"
        evals = [m["step"] for m in read_metrics(run / "metrics.jsonl") if "eval/return" in m]
        assert evals == [60, 120]
        sessions = read_provenance(run)["sessions"]
        assert len(sessions) == 1
        s = sessions[0]
        assert s["start_step"] == 0 and s["end_step"] == 120
        assert s["versions"]["torch"] and s["machine"]["cpu"] and s["machine"]["cores"] >= 1
        assert s["machine"]["torch_threads"] >= 1 and s["load_1min"]["samples"] >= 1
        assert isinstance(s["machine"]["cpu_native_bf16"], list)
        assert isinstance(s["command"], str) and s["command"]
    # the same command again resumes (nothing left to do) and adds a session to the provenance
    assert main(["bench", "tiny-cartpole", "--suite", str(suite), "--root", str(root), "--seeds", "0"]) == 0
    sessions = read_provenance(root / "tiny-cartpole" / "s0")["sessions"]
    assert [s["start_step"] for s in sessions] == [0, 120]


def test_provenance_names_the_commit_of_a_git_checkout(tmp_path):
    from reverie.training.provenance import source_revision

    assert source_revision(tmp_path) == {"commit": None, "dirty": None}
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f").write_text("a")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "f"], check=True)
    subprocess.run([*git, "commit", "-qm", "m"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert source_revision(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "f").write_text("b")
    assert source_revision(tmp_path) == {"commit": head, "dirty": True}


def test_bench_of_an_unknown_claim_names_the_closest(tmp_path, capsys):
    suite = tmp_path / "suite.yaml"
    suite.write_text(TINY_SUITE)
    assert main(["bench", "tiny-cartpol", "--suite", str(suite)]) == 2
    assert "no claim 'tiny-cartpol' in the suite; did you mean 'tiny-cartpole'?" in capsys.readouterr().err


PROBE = """
import json, sys
from pathlib import Path
run, out = Path(sys.argv[1]), Path(sys.argv[2])
with (run / "probe_calls.txt").open("a") as fh:
    fh.write("x")
lines = (run / "metrics.jsonl").read_text().splitlines()
out.write_text(json.dumps({run.name: {"lines": len(lines), "half": 0.5}}))
"""


def test_a_claims_measure_runs_once_on_a_finished_seed_and_is_read_back(tmp_path, capsys):
    from reverie.training.measure import read_measure

    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "probe.py").write_text(PROBE)
    suite = tmp_path / "benchmarks" / "suite.yaml"
    suite.write_text(TINY_SUITE.replace("seeds: [0, 1]", "seeds: [0]") + """    measure:
      script: benchmarks/probe.py
      args: ["{run}", "{out}"]
      output: probe.json
      metrics: {lines: "{name}.lines", half: "{name}.half"}
      score: half
      scale: 100
""")
    root = tmp_path / "bench"
    run = root / "tiny-cartpole" / "s0"
    assert main(["bench", "tiny-cartpole", "--suite", str(suite), "--root", str(root)]) == 0
    n = len((run / "metrics.jsonl").read_text().splitlines())
    # the second call finds the run finished and its measure made on the newest checkpoint: it is not run again
    assert main(["bench", "tiny-cartpole", "--suite", str(suite), "--root", str(root)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [x["measure"]["half"] for x in lines] == [50.0, 50.0]
    assert (run / "probe_calls.txt").read_text() == "x"
    assert not (run / "probe.json.part").exists()
    claim = load_suite(suite)["tiny-cartpole"]
    assert read_measure(claim, run) == {"lines": 100.0 * n, "half": 50.0}


def test_a_failing_measure_is_one_sentence_and_leaves_no_output(tmp_path, capsys):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "probe.py").write_text("import sys; open(sys.argv[2], 'w').write('{'); sys.exit(3)\n")
    suite = tmp_path / "benchmarks" / "suite.yaml"
    suite.write_text(TINY_SUITE.replace("seeds: [0, 1]", "seeds: [0]") + """    measure:
      script: benchmarks/probe.py
      args: ["{run}", "{out}"]
      output: probe.json
      metrics: {x: x}
      score: x
""")
    assert main(["bench", "tiny-cartpole", "--suite", str(suite), "--root", str(tmp_path / "bench")]) == 2
    err = capsys.readouterr().err
    assert "benchmarks/probe.py" in err and "exited with status 3" in err and "Traceback" not in err
    assert not list((tmp_path / "bench" / "tiny-cartpole" / "s0").glob("probe.json*"))


@pytest.mark.parametrize("measure, message", [
    ("{script: s.py, args: [x], output: o.json, metrics: {a: b}, score: a}", "naming the run folder as {run}"),
    ("{script: s.py, args: ['{run}'], output: ../o.json, metrics: {a: b}, score: a}", "a file name in the run folder"),
    ("{script: s.py, args: ['{run}'], output: o.json, metrics: {a: b}, score: c}", "is not one of its metrics"),
    ("{script: s.py, args: ['{run}'], output: o.json}", "must be a mapping with script, args"),
])
def test_a_bad_measure_is_one_sentence(tmp_path, measure, message):
    path = tmp_path / "suite.yaml"
    path.write_text("claims: [{id: a, title: t, agent: dreamer, env: gym:CartPole-v1, steps: 10, aim: {value: 1}, "
                    f"measure: {measure}}}]")
    with pytest.raises(SuiteError, match=message.replace("{", r"\{").replace("}", r"\}")):
        load_suite(path)
