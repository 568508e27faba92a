"""run.precision=auto: the choice logic on every kind of machine, and a run that says what it picked."""

import pytest

from reverie.training.hardware import cpu_flags, pick_precision, resolve_precision
from reverie.training.logger import read_metrics

SAPPHIRE_RAPIDS = {"sse4_2", "avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"}
COOPER_LAKE = {"sse4_2", "avx2", "avx512f", "avx512_bf16"}
ICE_LAKE = {"sse4_2", "avx2", "avx512f", "avx512_vnni"}
EPYC_ROME = {"sse4_2", "avx2", "fma"}


@pytest.mark.parametrize("flags, expected, because", [
    (SAPPHIRE_RAPIDS, "bf16", "avx512_bf16"),     # AMX and AVX512-BF16
    (COOPER_LAKE, "bf16", "avx512_bf16"),          # AVX512-BF16 without AMX
    ({"amx_bf16"}, "bf16", "amx_bf16"),
    (ICE_LAKE, "fp32", "no native bf16"),         # AVX-512 but no bf16 instructions
    (EPYC_ROME, "fp32", "no native bf16"),
    (set(), "fp32", "no native bf16"),             # flags unknown (not Linux)
])
def test_auto_picks_bf16_only_on_cpus_that_multiply_it_natively(flags, expected, because):
    precision, why = pick_precision("auto", "cpu", frozenset(flags))
    assert precision == expected and because in why


def test_auto_on_gpus_and_explicit_requests():
    assert pick_precision("auto", "cuda", frozenset(), cuda_bf16=True)[0] == "bf16"
    assert pick_precision("auto", "cuda:1", frozenset(SAPPHIRE_RAPIDS), cuda_bf16=False)[0] == "fp32"
    for asked in ("fp32", "bf16"):
        assert pick_precision(asked, "cpu", frozenset(SAPPHIRE_RAPIDS if asked == "fp32" else EPYC_ROME)) == (
            asked, "asked for")


def test_a_run_with_auto_says_and_logs_what_it_picked(tmp_path, capsys):
    from reverie.cli import main
    expected, _ = pick_precision("auto", "cpu", cpu_flags())
    assert resolve_precision("auto", "cpu")[0] == expected
    run_dir = tmp_path / "auto"
    assert main(["train", "--preset", "tiny", "--run-dir", str(run_dir), "--steps", "60", "run.precision=auto",
                 "run.eval_episodes=1"]) == 0
    assert f"precision: {expected} (auto:" in capsys.readouterr().out
    rows = [m for m in read_metrics(run_dir / "metrics.jsonl") if "run/precision_bf16" in m]
    assert [m["run/precision_bf16"] for m in rows] == [float(expected == "bf16")]
    assert "precision: auto" in (run_dir / "config.yaml").read_text()    # saved as asked, resolved per machine
