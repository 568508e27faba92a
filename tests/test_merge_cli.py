"""``reverie train --init-from`` and ``reverie merge`` end to end on tiny TD-MPC2 runs of Pendulum."""

import json

import pytest
import torch

import reverie
from reverie.cli import main
from reverie.models.merging import split_weights
from reverie.training.checkpoint import load_latest

TINY = ["train", "tdmpc2", "--preset", "tiny", "--env", "gym:Pendulum-v1", "acting=policy"]


def weights(run_dir):
    tensors, _, _ = load_latest(run_dir / "checkpoints")
    return split_weights(tensors)[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A base and two fine-tunes of it (other seeds), each long enough for a held-out episode."""
    root = tmp_path_factory.mktemp("merge")
    assert main([*TINY, "--steps", "100", "--run-dir", str(root / "base")]) == 0
    for seed in (1, 2):
        assert main([*TINY, "--steps", "100", "--seed", str(seed), "--run-dir", str(root / f"ft{seed}"),
                     "--init-from", str(root / "base")]) == 0
    return root


def test_init_from_starts_with_the_base_weights_and_records_it(runs, tmp_path, capsys):
    # fewer steps than the prefill: no update, so the checkpoint holds exactly the base's weights
    assert main([*TINY, "--steps", "20", "--seed", "3", "--run-dir", str(tmp_path / "ft"),
                 "--init-from", str(runs / "base")]) == 0
    assert "starting from the weights of" in capsys.readouterr().out
    base, tuned = weights(runs / "base"), weights(tmp_path / "ft")
    assert base.keys() == tuned.keys() and all(torch.equal(base[k], tuned[k]) for k in base)
    record = json.loads((tmp_path / "ft" / "init_from.json").read_text())
    marker = json.loads(sorted((runs / "base" / "checkpoints").glob("ckpt-*.json"))[-1].read_text())
    assert record["weights_sha256"] == marker["weights"]["sha256"] and record["step"] == 100
    # fine-tuning moved the others away from the base
    assert not all(torch.equal(base[k], weights(runs / "ft1")[k]) for k in base)


def test_init_from_another_architecture_or_base_is_refused(runs, tmp_path, capsys):
    assert main([*TINY, "--steps", "20", "model.units=32", "--run-dir", str(tmp_path / "wide"),
                 "--init-from", str(runs / "base")]) == 2
    err = capsys.readouterr().err
    assert "are of different architectures" in err and "[16, 17]" in err and err.count("\n") == 1
    assert not (tmp_path / "wide").exists()                  # refused before the folder was touched
    assert main([*TINY, "--steps", "20", "--run-dir", str(tmp_path / "other")]) == 0
    assert main([*TINY, "--steps", "30", "--run-dir", str(runs / "ft1"), "--seed", "1",
                 "--init-from", str(tmp_path / "other")]) == 2
    assert "started from" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["average", "task-arithmetic", "ties"])
def test_merge_writes_a_run_that_eval_and_load_accept(runs, method, capsys):
    out = runs / f"merged-{method}"
    grid = [] if method == "average" else ["--coef-grid", "0.0", "0.5", "1.0"]
    assert main(["merge", str(runs / "ft1"), str(runs / "ft2"), "--base", str(runs / "base"), "--method", method,
                 "--out", str(out), *grid]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    record = json.loads((out / "merge.json").read_text())
    assert printed["out"] == str(out) and record["method"] == method
    assert [r["run"] for r in record["runs"]] == [str((runs / f"ft{s}").resolve()) for s in (1, 2)]
    tried = record["selection"]["tried"]
    assert record["coef"] == (None if method == "average" else min(tried, key=lambda t: t["score"])["coef"])
    if method != "average":
        # lambda = 0 is the base itself: its normalised score is exactly 1
        assert tried[0]["coef"] == 0.0 and tried[0]["score"] == pytest.approx(1.0)
        assert tried[0]["losses"] == pytest.approx(record["losses"]["base"])
    assert main(["eval", str(out), "--episodes", "1"]) == 0
    assert -2000 < json.loads(capsys.readouterr().out.strip().splitlines()[-1])["return_mean"] <= 0
    run = reverie.load(out)
    assert run.agent.name == "tdmpc2" and run.checkpoint_step == 0


def test_merging_a_run_with_itself_returns_its_weights(runs, tmp_path):
    reverie.merge([runs / "ft1", runs / "ft1"], method="average", out=tmp_path / "same")
    mine, merged = weights(runs / "ft1"), weights(tmp_path / "same")
    assert all(torch.equal(mine[k], merged[k]) for k in mine)


def test_merge_refuses_in_one_sentence(runs, tmp_path, capsys):
    def refused(*args: str) -> str:
        assert main(["merge", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
        return err

    ft1, ft2, base = str(runs / "ft1"), str(runs / "ft2"), str(runs / "base")
    assert "already exists" in refused(ft1, ft2, "--base", base, "--method", "average", "--out", base)
    assert "give --base" in refused(ft1, ft2, "--method", "ties", "--out", str(tmp_path / "a"))
    assert main([*TINY, "--steps", "60", "model.units=32", "--run-dir", str(tmp_path / "wide")]) == 0
    capsys.readouterr()
    err = refused(ft1, str(tmp_path / "wide"), "--method", "average", "--out", str(tmp_path / "b"))
    assert "are of different architectures" in err
    # a run fine-tuned from another base is named, even though its architecture fits
    assert main([*TINY, "--steps", "20", "--run-dir", str(tmp_path / "base2"), "--seed", "9"]) == 0
    assert main([*TINY, "--steps", "60", "--run-dir", str(tmp_path / "ft9"), "--init-from",
                 str(tmp_path / "base2")]) == 0
    capsys.readouterr()
    err = refused(ft1, str(tmp_path / "ft9"), "--base", base, "--method", "ties", "--out", str(tmp_path / "c"))
    assert "was fine-tuned from" in err and "no checkpoint of --base" in err
    assert not any(".merging-" in p.name for p in tmp_path.iterdir())
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
