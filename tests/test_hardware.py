"""run.precision=auto: the choice logic on every kind of machine, and a run that says what it picked; the
allocator setting."""

import platform

import pytest

from reverie.training.hardware import MALLOC_ENV, cpu_flags, keep_freed_memory, pick_precision, resolve_precision
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


def test_keep_freed_memory_respects_an_allocator_the_user_chose():
    for key in MALLOC_ENV:
        said = keep_freed_memory({key: "1"})
        assert said.startswith("malloc left as the environment sets it") and key in said


FAULTS = """
import resource, sys
import numpy as np
from reverie.training.hardware import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory({}) == "malloc keeps freed blocks up to 2 GiB for reuse"
def repeats(n):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        a = np.empty(64 << 20, np.uint8)
        a.fill(1)          # touch every page
        del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
repeats(1)
print(repeats(5))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_stops_page_faults_from_repeated_large_allocations():
    """Allocating, touching and freeing a 64 MiB block five times: glibc's default maps it afresh each time
    (its pages fault in again), the setting keeps it in the heap (no new faults). Each in a fresh process."""
    import subprocess
    import sys

    def faults(mode: str) -> int:
        env = {k: v for k, v in __import__("os").environ.items() if k not in MALLOC_ENV}
        out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, env=env,
                             check=True)
        return int(out.stdout.split()[-1])

    system, kept = faults("system"), faults("keep")
    assert system > 100          # 64 MiB in 4 KiB or 2 MiB pages, five times over
    assert kept < system / 10
