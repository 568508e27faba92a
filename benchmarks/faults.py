"""Fault injection: kill training runs with SIGKILL at chosen and random moments, re-run, check the folders.

Each of ``--runs`` runs trains Dreamer ``tiny`` on a CartPole that counts every
step it takes in a file (``faults_support/counted_env.py``: the ground truth
of how many steps the killed process really took). The run is killed with
SIGKILL, taking turns among:

- ``timer``: at a random moment from outside (``kill -9`` after a random delay);
- ``loop.collect``, ``loop.update``, ``checkpoint.weights_written``,
  ``replay.chunk_written``: by the process itself, at a random pass of that
  failpoint (``reverie.failpoints``), i.e. during collection, between two
  updates, with a checkpoint's weights written but not committed, or with a
  replay chunk's temporary file written but not renamed.

After each kill the folder is inspected read-only (a folder is *corrupt* if a
committed checkpoint fails its digest, a replay chunk cannot be read, or
run.json/config.yaml/metrics.jsonl cannot be parsed beyond a torn last line),
then the same command is run again: it must exit 0, say it resumes at the
step the replay kept, and finish with ``env_steps == --steps``. Steps lost per
kill = steps taken before the kill - the step the re-run resumes at (at most
the replay chunk in progress: ``run.replay_chunk`` steps per environment).

Then the disk-full case: a run in a small tmpfs folder (needs root for
``mount``; skipped otherwise) must stop with one sentence, and what it saved
before must stay loadable (``reverie eval`` on the folder).

    python benchmarks/faults.py --runs 20 --root runs/faults
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
KINDS = ("timer", "loop.collect", "loop.update", "checkpoint.weights_written", "replay.chunk_written")
ENV = "gym:counted_env:CountedCartPole-v1"


def command(run_dir: Path, args) -> list[str]:
    return [sys.executable, "-m", "reverie", "train", "--preset", "tiny", "--env", ENV, "--steps", str(args.steps),
            "--run-dir", str(run_dir), f"run.checkpoint_every={args.checkpoint_every}",
            f"run.replay_chunk={args.chunk}", f"run.train_ratio={args.train_ratio}", f"run.eval_every={args.steps}",
            "run.eval_episodes=2", "run.log_every=100", "run.threads=1"]


def child_env(counter: Path, failpoint: str | None = None) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        filter(None, [str(HERE / "faults_support"), os.environ.get("PYTHONPATH")])),
        REVERIE_FAULTS_COUNTER=str(counter))
    env.pop("REVERIE_FAILPOINTS", None)
    if failpoint:
        env["REVERIE_FAILPOINTS"] = failpoint
    return env


def failpoint_pass(kind: str, args, rng: random.Random) -> int:
    """A pass of the failpoint that falls inside the training part of the run (not its last moments)."""
    steps = args.steps
    if kind == "loop.collect":
        return rng.randint(50, steps - 50)
    if kind == "loop.update":
        from reverie.agents.registry import resolve_config
        run = resolve_config("dreamer", "tiny", []).run
        owed = (steps - max(run.prefill, run.seq_len)) * args.train_ratio / (run.batch_size * run.seq_len)
        return rng.randint(1, max(1, int(owed * 0.9)))
    if kind == "checkpoint.weights_written":
        return rng.randint(1, steps // args.checkpoint_every - 1)
    return rng.randint(1, steps // args.chunk - 1)   # replay.chunk_written


def inspect(run_dir: Path) -> dict:
    """Read the folder like a reader would; report damage, without writing anything."""
    from reverie.replay import Replay
    from reverie.training.checkpoint import load_latest

    problems = []
    for name in ("run.json",):
        try:
            json.loads((run_dir / name).read_text())
        except (OSError, ValueError) as e:
            problems.append(f"{name}: {e}")
    try:
        import yaml
        yaml.safe_load((run_dir / "config.yaml").read_text())
    except Exception as e:  # noqa: BLE001 - any failure to parse is a finding
        problems.append(f"config.yaml: {e}")
    lines = (run_dir / "metrics.jsonl").read_bytes().split(b"\n") if (run_dir / "metrics.jsonl").exists() else []
    complete, torn = lines[:-1], lines[-1]   # the text after the last newline may be a torn write
    for i, line in enumerate(complete):
        try:
            json.loads(line)
        except ValueError:
            problems.append(f"metrics.jsonl line {i + 1} is not JSON")
    damaged = []
    found = load_latest(run_dir / "checkpoints", warn=damaged.append) if (run_dir / "checkpoints").exists() else None
    problems += damaged
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        replay = Replay(run_dir / "replay", capacity=10**9, seq_len=1, chunk_size=args_chunk)
    skipped = replay.stats["files_skipped"]
    if skipped:
        problems += [str(w.message) for w in caught if "skipping" in str(w.message)]
    return {"problems": problems, "checkpoint_step": found[1]["step"] if found else None,
            "replay_clock": replay.clock, "torn_metrics_line": bool(torn),
            "temp_files": sum(1 for p in run_dir.rglob(".*") if ".tmp" in p.name)}


args_chunk = 64


def one_run(i: int, kind: str, args, rng: random.Random) -> dict:
    run_dir = args.root / f"run{i:02d}"
    shutil.rmtree(run_dir, ignore_errors=True)
    counter, counter2 = args.root / f"run{i:02d}.steps", args.root / f"run{i:02d}.rerun-steps"
    counter.unlink(missing_ok=True)
    counter2.unlink(missing_ok=True)
    cmd = command(run_dir, args)
    point = None if kind == "timer" else f"{kind}={failpoint_pass(kind, args, rng)}"
    started = time.time()
    proc = subprocess.Popen(cmd, env=child_env(counter, point), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    if kind == "timer":
        delay = rng.uniform(3.0, args.timer_max)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    err = proc.communicate()[1]
    seconds = time.time() - started
    killed = proc.returncode == -signal.SIGKILL
    # The counter holds one byte per env call (reset or step); the loop makes one call per step it
    # counts, after the probe's reset and step and the first reset.
    calls = counter.stat().st_size if counter.exists() else 0
    taken = max(0, calls - 3)
    seen = inspect(run_dir) if (run_dir / "run.json").exists() else {"problems": [], "checkpoint_step": None,
                                                                       "replay_clock": 0, "temp_files": 0,
                                                                       "torn_metrics_line": False}
    rerun = subprocess.run(cmd, env=child_env(counter2), capture_output=True, text=True, timeout=1800)
    said = re.search(r"resuming \S+ at step (\d+)", rerun.stdout + rerun.stderr)
    resumed = int(said.group(1)) if said else 0
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    return {
        "run": i, "kill": kind if point is None else point, "killed": killed,
        "killed_after_s": round(seconds, 1), "steps_taken_before_kill": taken,
        "checkpoint_step": seen["checkpoint_step"], "replay_kept": seen["replay_clock"],
        "resumed_at": resumed, "steps_lost": taken - resumed, "corrupt": bool(seen["problems"]),
        "problems": seen["problems"], "temp_files_left": seen["temp_files"],
        "rerun_exit": rerun.returncode, "final_env_steps": summary.get("env_steps"),
        "rerun_error": rerun.stderr.strip().splitlines()[-1] if rerun.returncode else "",
        "killed_stderr_tail": "" if killed else err.strip()[-300:],
    }


def disk_full(args) -> dict:
    """A run in a tmpfs too small for it: one sentence, and the saved checkpoint stays loadable."""
    mount = args.root / "tmpfs"
    mount.mkdir(parents=True, exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.tmpfs}", "tmpfs", str(mount)],
                        capture_output=True, text=True)
    if ok.returncode:
        return {"skipped": f"cannot mount a tmpfs ({ok.stderr.strip()}); run as root to include this case"}
    try:
        run_dir = mount / "run"
        cmd = command(run_dir, args)
        cmd[cmd.index("--steps") + 1] = str(args.steps * 10)
        cmd = [c for c in cmd if not c.startswith("run.checkpoint_every=")] + ["run.checkpoint_every=100"]
        proc = subprocess.run(cmd, env=child_env(args.root / "diskfull.steps"), capture_output=True, text=True,
                              timeout=1800)
        lines = [x for x in proc.stderr.strip().splitlines() if x.strip()]
        seen = inspect(run_dir)
        evaluation = subprocess.run([sys.executable, "-m", "reverie", "eval", str(run_dir), "--episodes", "2"],
                                    env=child_env(args.root / "diskfull-eval.steps"), capture_output=True, text=True)
        return {"exit": proc.returncode, "last_line": lines[-1] if lines else "",
                "traceback": "Traceback" in proc.stderr, "checkpoint_step": seen["checkpoint_step"],
                "problems": seen["problems"], "eval_exit": evaluation.returncode,
                "eval_out": evaluation.stdout.strip().splitlines()[-1] if evaluation.stdout.strip() else
                evaluation.stderr.strip()[-300:]}
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def main() -> None:
    global args_chunk
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--steps", type=int, default=2000, help="environment steps per run")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--chunk", type=int, default=64, help="run.replay_chunk")
    p.add_argument("--train-ratio", type=float, default=64)
    p.add_argument("--timer-max", type=float, default=40.0, help="latest random kill, seconds after the start")
    p.add_argument("--tmpfs", default="1m", help="size of the disk-full folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--root", type=Path, default=Path("runs/faults"))
    p.add_argument("--skip-disk-full", action="store_true")
    p.add_argument("--out", type=Path, help="also write the report, each run and the machine as JSON here "
                                           "(benchmarks/results/faults.json is what the results page shows)")
    args = p.parse_args()
    if args.runs < 1 or args.steps < 4 * args.checkpoint_every:
        p.error("--runs must be >= 1 and --steps at least 4 x --checkpoint-every")
    args_chunk = args.chunk
    args.root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    rows = []
    for i in range(args.runs):
        row = one_run(i, KINDS[i % len(KINDS)], args, rng)
        rows.append(row)
        print(json.dumps(row), flush=True)
    killed = [r for r in rows if r["killed"]]
    report = {
        "runs": len(rows), "killed": len(killed),
        "corrupt_folders": sum(r["corrupt"] for r in rows),
        "failed_resumes": sum(r["rerun_exit"] != 0 or r["final_env_steps"] != args.steps for r in rows),
        "resumed_at_replay_kept": sum(r["resumed_at"] == r["replay_kept"] for r in killed),
        "steps_lost_per_kill": [r["steps_lost"] for r in killed],
        "max_steps_lost": max((r["steps_lost"] for r in killed), default=None),
        "bound_steps_lost": args.chunk,
    }
    if not args.skip_disk_full:
        report["disk_full"] = disk_full(args)
    print(json.dumps(report, indent=1))
    if args.out is not None:
        import datetime

        from reverie.training.provenance import machine_facts

        command = ["python benchmarks/faults.py", f"--runs {args.runs}", f"--steps {args.steps}",
                   f"--checkpoint-every {args.checkpoint_every}", f"--chunk {args.chunk}", f"--seed {args.seed}"]
        if args.skip_disk_full:
            command.append("--skip-disk-full")
        record = {"command": " ".join(command), "date": datetime.date.today().isoformat(),
                  "machine": machine_facts("cpu"), "report": report,
                  "runs": [{k: v for k, v in r.items() if not isinstance(v, str) or "/" not in v} for r in rows]}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
