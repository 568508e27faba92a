"""Memory benchmark: resident memory of a long training run with a capped replay.

Starts ``python -m reverie train`` as a child process and, every ``--interval``
seconds, samples

- its resident memory: ``VmRSS`` from ``/proc/PID/status``, summed over the
  child and all its descendants (environment subprocesses, if any), and
- the run's progress in environment steps: the newest ``step`` in the run's
  ``metrics.jsonl`` (a row per finished episode, so fine-grained) or the
  newest ``step N/M`` progress line the CLI prints to stderr, whichever is
  further.

The samples go to ``RUN_DIR/memory.csv`` (``seconds,env_steps,rss_mib``). At
the end the script prints the curve as a table (one row every
``--table-every`` steps) and a verdict: RSS when the replay reached its
capacity, the maximum after that, and the growth per 100k environment steps
after the cap (least-squares line through the post-cap samples of the training
loop). The run counts as flat when that growth is below ``--flat-threshold``
percent of the RSS at the cap per 100k steps (default 2%). It also saves
``RUN_DIR/memory.png``. The wrap-up after the last step (final evaluation,
checkpoint, plots) is shown in the curve but left out of the fit.

With one environment and no action repeat (CartPole), environment steps equal
replay steps, so the replay is full from step ``--capacity`` on.

Run (1M CartPole steps, replay capped at 100k, one core; about an hour on a
shared 2-core Xeon)::

    python benchmarks/memory.py --steps 1000000 --capacity 100000 --root runs/memory

Quick check (a few minutes)::

    python benchmarks/memory.py --steps 30000 --capacity 10000 --interval 2 --root runs/memory-quick

Re-analyse a finished run's CSV without training::

    python benchmarks/memory.py --analyse RUN_DIR/memory.csv --steps 1000000 --capacity 100000

Settings: ``--threads`` (default 1) sets both ``OMP_NUM_THREADS`` and
``run.threads``. Unless overridden by ``key=value`` arguments, the run uses
the collection-dominated settings in ``DEFAULT_OVERRIDES`` (train ratio 1:
with the ``tiny`` preset's 4 x 8 batches that is one update every 32 steps,
~31k updates over 1M steps; log every 10k steps, evaluate and checkpoint every
100k steps, so every path of the loop runs).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

DEFAULT_OVERRIDES = {
    "run.train_ratio": "1",
    "run.log_every": "10000",
    "run.eval_every": "100000",
    "run.checkpoint_every": "100000",
}

_PROGRESS = re.compile(r"^step (\d+)/(\d+)")
_STEP = re.compile(rb'"step":\s*(\d+)')


# ----------------------------------------------------------------------------- sampling

def _rss_kib(pid: int) -> int:
    """VmRSS of one process in KiB (0 if it is gone or a zombie)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (scans /proc/*/stat for parent ids)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # comm may hold spaces and parentheses: the fields after the last ')' are fixed
        fields = stat[stat.rfind(b")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def tree_rss_mib(pid: int) -> tuple[float, int]:
    """Resident memory of ``pid`` plus its descendants in MiB, and how many processes that is."""
    procs = [pid, *_descendants(pid)]
    return sum(_rss_kib(p) for p in procs) / 1024.0, len(procs)


def newest_metrics_step(path: Path, tail_bytes: int = 65536) -> int:
    """The ``step`` of the newest complete row of ``metrics.jsonl`` (0 if none yet); reads only the tail."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - tail_bytes))
            data = fh.read()
    except OSError:
        return 0
    end = data.rfind(b"\n")
    for line in reversed(data[:end].split(b"\n")):
        match = _STEP.search(line)
        if match:
            return int(match.group(1))
    return 0


class _Pipe(threading.Thread):
    """Copies a child's stream line by line to ``sink`` and keeps the newest progress step."""

    def __init__(self, stream, sink, keep: list[str]):
        super().__init__(daemon=True)
        self.stream, self.sink, self.keep = stream, sink, keep
        self.progress_step = 0

    def run(self) -> None:
        for raw in iter(self.stream.readline, b""):
            line = raw.decode("utf-8", errors="replace")
            self.keep.append(line)
            self.sink.write(line)
            self.sink.flush()
            match = _PROGRESS.match(line)
            if match:
                self.progress_step = max(self.progress_step, int(match.group(1)))


# ----------------------------------------------------------------------------- analysis

def read_csv(path: Path) -> list[tuple[float, int, float]]:
    with open(path, newline="") as fh:
        return [(float(r["seconds"]), int(r["env_steps"]), float(r["rss_mib"])) for r in csv.DictReader(fh)]


def _fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares slope and intercept of ys against xs."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0, my
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return slope, my - slope * mx


def analyse(samples: list[tuple[float, int, float]], steps: int, capacity: int, table_every: int,
            threshold_pct: float) -> dict:
    """The table rows and the verdict figures (see the module docstring)."""
    training = [s for s in samples if s[1] < steps]
    wrapup = [s for s in samples if s[1] >= steps]
    rows = []
    for mark in range(0, steps + 1, table_every):
        hit = next((s for s in samples if s[1] >= mark), None)
        if hit is not None and (not rows or rows[-1][1] != hit[1]):
            rows.append(hit)
    if training and training[-1] not in rows:   # the loop's last sample (no mark may lie between)
        rows.append(training[-1])
        rows.sort(key=lambda s: s[0])
    post = [s for s in training if s[1] >= capacity]
    out: dict = {"rows": rows, "threshold_pct": threshold_pct, "samples": len(samples),
                 "peak_mib": max((s[2] for s in samples), default=math.nan),
                 "wrapup_peak_mib": max((s[2] for s in wrapup), default=None)}
    if not post:
        out["verdict"] = "no samples after the cap: the run ended (or was sampled) before the replay was full"
        return out
    at_cap = post[0]
    peak = max(post, key=lambda s: s[2])
    slope, intercept = _fit([s[1] / 1e5 for s in post], [s[2] for s in post])
    pct = 100.0 * slope / at_cap[2]
    out.update(cap_step=at_cap[1], rss_at_cap=at_cap[2], max_after_cap=peak[2], max_after_cap_step=peak[1],
               last_step=post[-1][1], rss_last=post[-1][2], slope_mib_per_100k=slope, intercept=intercept,
               slope_pct=pct, post_samples=len(post), flat=pct < threshold_pct,
               span_steps=post[-1][1] - at_cap[1])
    return out


def report(result: dict, steps: int, capacity: int) -> str:
    lines = [f"{'env steps':>10}  {'seconds':>8}  {'RSS MiB':>8}  {'vs cap':>8}"]
    cap_rss = result.get("rss_at_cap")
    for seconds, step, rss in result["rows"]:
        delta = "" if cap_rss is None or step < capacity else f"{rss - cap_rss:+8.1f}"
        note = "  <- replay full" if step >= capacity and step - capacity < max(capacity // 10, 1) and delta else ""
        lines.append(f"{step:>10}  {seconds:>8.0f}  {rss:>8.1f}  {delta:>8}{note}")
    lines.append("")
    if "verdict" in result:
        lines.append("verdict: " + result["verdict"])
        return "\n".join(lines)
    r = result
    lines.append(f"RSS when the replay filled (step {r['cap_step']}): {r['rss_at_cap']:.1f} MiB")
    lines.append(f"max RSS after the cap: {r['max_after_cap']:.1f} MiB at step {r['max_after_cap_step']} "
                 f"({r['max_after_cap'] - r['rss_at_cap']:+.1f} MiB, "
                 f"{100 * (r['max_after_cap'] - r['rss_at_cap']) / r['rss_at_cap']:+.2f}%)")
    lines.append(f"RSS at the last training sample (step {r['last_step']}): {r['rss_last']:.1f} MiB "
                 f"({r['rss_last'] - r['rss_at_cap']:+.1f} MiB)")
    lines.append(f"growth after the cap (least squares over {r['post_samples']} samples, steps {r['cap_step']}-"
                 f"{r['last_step']}): {r['slope_mib_per_100k']:+.2f} MiB per 100k steps = {r['slope_pct']:+.3f}% of the "
                 f"RSS at the cap per 100k steps")
    if r["wrapup_peak_mib"] is not None:
        lines.append(f"peak during the wrap-up after the last step (final eval, checkpoint, plots; not fitted): "
                     f"{r['wrapup_peak_mib']:.1f} MiB")
    verdict = "FLAT" if r["flat"] else "GROWING"
    lines.append(f"verdict: {verdict} (threshold: growth below {r['threshold_pct']:g}% of the RSS at the cap "
                 f"per 100k environment steps)")
    if r["span_steps"] < 2 * capacity:
        lines.append(f"note: only {r['span_steps']} steps after the cap; a slow leak may not show yet")
    return "\n".join(lines)


def plot(samples: list[tuple[float, int, float]], result: dict, steps: int, capacity: int, path: Path,
         title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    training = [s for s in samples if s[1] < steps]
    wrapup = [s for s in samples if s[1] >= steps]
    left.plot([s[1] for s in training], [s[2] for s in training], lw=1, label="RSS (training loop)")
    left.axvline(capacity, color="grey", ls="--", lw=1, label=f"replay full ({capacity} steps)")
    if "slope_mib_per_100k" in result:
        xs = [result["cap_step"], result["last_step"]]
        ys = [result["intercept"] + result["slope_mib_per_100k"] * x / 1e5 for x in xs]
        left.plot(xs, ys, color="red", lw=1.5,
                  label=f"fit: {result['slope_mib_per_100k']:+.2f} MiB/100k ({result['slope_pct']:+.2f}%)")
    left.set_xlabel("environment steps")
    left.set_ylabel("resident memory (MiB)")
    left.set_ylim(bottom=0)
    left.legend(loc="lower right")
    left.grid(alpha=0.3)
    right.plot([s[0] for s in training], [s[2] for s in training], lw=1, label="training loop")
    if wrapup:
        wrapup = training[-1:] + wrapup   # joined to the loop's last sample
        right.plot([s[0] for s in wrapup], [s[2] for s in wrapup], lw=1, color="orange", label="wrap-up")
    right.set_xlabel("seconds")
    right.set_ylabel("resident memory (MiB)")
    right.set_ylim(bottom=0)
    right.legend(loc="lower right")
    right.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- running

def build_command(args: argparse.Namespace, run_dir: Path) -> list[str]:
    overrides = dict(DEFAULT_OVERRIDES)
    overrides["run.replay_capacity"] = str(args.capacity)
    if args.threads:
        overrides["run.threads"] = str(args.threads)
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"error: override {item!r} is not key=value")
        overrides[key] = value
    cmd = [sys.executable, "-m", "reverie", "train", args.agent, "--env", args.env, "--steps", str(args.steps),
           "--run-dir", str(run_dir)]
    if args.preset:
        cmd += ["--preset", args.preset]
    return cmd + [f"{k}={v}" for k, v in overrides.items()]


def run_and_sample(args: argparse.Namespace, run_dir: Path) -> tuple[list[tuple[float, int, float]], int, float]:
    cmd = build_command(args, run_dir)
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    print("$ " + (f"OMP_NUM_THREADS={args.threads} " if args.threads else "") + " ".join(cmd), flush=True)
    samples: list[tuple[float, int, float]] = []
    lines: list[str] = []
    csv_file = None
    start = time.monotonic()
    # A session of its own: a Ctrl-C reaches only this script, which forwards it once.
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    pipes = [_Pipe(child.stdout, sys.stdout, lines), _Pipe(child.stderr, sys.stderr, lines)]
    for pipe in pipes:
        pipe.start()
    stopping = False

    def forward(signum, _frame):
        nonlocal stopping
        stopping = True
        child.send_signal(signal.SIGINT)   # the trainer checkpoints and exits on SIGINT

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    max_procs = 1
    try:
        while True:
            rss, procs = tree_rss_mib(child.pid)
            if child.poll() is not None:
                break
            max_procs = max(max_procs, procs)
            step = max(newest_metrics_step(run_dir / "metrics.jsonl"), pipes[1].progress_step)
            sample = (time.monotonic() - start, step, rss)
            samples.append(sample)
            # The trainer refuses a non-empty folder that is not yet a run folder: write once run.json exists.
            if csv_file is None and (run_dir / "run.json").exists():
                csv_file = open(run_dir / "memory.csv", "w", newline="")  # noqa: SIM115 (closed in finally)
                writer = csv.writer(csv_file)
                writer.writerow(["seconds", "env_steps", "rss_mib"])
                writer.writerows((f"{s:.1f}", n, f"{r:.2f}") for s, n, r in samples)
            elif csv_file is not None:
                writer.writerow((f"{sample[0]:.1f}", sample[1], f"{sample[2]:.2f}"))
            if csv_file is not None:
                csv_file.flush()
            time.sleep(args.interval)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        code = child.wait()
        for pipe in pipes:
            pipe.join(timeout=5)
        if csv_file is not None:
            csv_file.close()
    wall = time.monotonic() - start
    if run_dir.is_dir():
        (run_dir / "memory_child.log").write_text("".join(lines))
    if max_procs > 1:
        print(f"(sampled up to {max_procs} processes: the child and its descendants)")
    if stopping:
        print("interrupted: the curve below covers the run so far")
    return samples, code, wall


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agent", default="dreamer", help="agent to train (default: dreamer)")
    p.add_argument("--preset", default="tiny", help="agent preset (default: tiny; '' for none)")
    p.add_argument("--env", default="gym:CartPole-v1", help="SUITE:TASK (default: gym:CartPole-v1)")
    p.add_argument("--steps", type=int, default=1_000_000, help="environment steps to train for (default: 1M)")
    p.add_argument("--capacity", type=int, default=100_000, help="run.replay_capacity in steps (default: 100k)")
    p.add_argument("--root", default="runs/memory",
                   help="folder for the run folder, ROOT/AGENT-PRESET-STEPS-capCAPACITY (default: runs/memory)")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between samples (default: 5)")
    p.add_argument("--threads", type=int, default=1,
                   help="OMP_NUM_THREADS and run.threads of the child (default: 1; 0 leaves both alone)")
    p.add_argument("--table-every", type=int, default=None,
                   help="environment steps between table rows (default: steps/20, e.g. 50k for 1M)")
    p.add_argument("--flat-threshold", type=float, default=2.0,
                   help="flat if post-cap growth is below this %% of the RSS at the cap per 100k steps (default 2)")
    p.add_argument("--overwrite", action="store_true", help="delete an existing run folder of the same name first")
    p.add_argument("--analyse", metavar="CSV", help="only analyse an existing memory.csv (give --steps, --capacity)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help=f"config overrides passed to 'reverie train' (defaults: "
                        f"{' '.join(f'{k}={v}' for k, v in DEFAULT_OVERRIDES.items())})")
    args = p.parse_args()
    table_every = args.table_every or max(args.steps // 20, 1)

    if args.analyse:
        csv_path = Path(args.analyse)
        samples, code, wall = read_csv(csv_path), 0, None
        out_dir = csv_path.parent
    else:
        name = f"{args.agent}-{args.preset or 'nopreset'}-{args.steps}-cap{args.capacity}"
        out_dir = Path(args.root) / name
        if out_dir.exists() and any(out_dir.iterdir()):
            if not args.overwrite:
                print(f"error: {out_dir} exists and is not empty (it would resume); pass --overwrite or another "
                      f"--root", file=sys.stderr)
                return 2
            if not (out_dir / "run.json").exists():
                print(f"error: {out_dir} is not a reverie run folder; not deleting it", file=sys.stderr)
                return 2
            shutil.rmtree(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        samples, code, wall = run_and_sample(args, out_dir)
        if code != 0:
            print(f"warning: the training process exited with status {code}", file=sys.stderr)
    if not samples:
        print("no samples", file=sys.stderr)
        return 1
    result = analyse(samples, args.steps, args.capacity, table_every, args.flat_threshold)
    print()
    print(f"resident memory of '{args.agent}' ({args.preset or 'no preset'}) on {args.env}, {args.steps} steps, "
          f"replay capped at {args.capacity} steps ({result['samples']} samples"
          + (f", every {args.interval:g} s" if not args.analyse else "") + ")")
    print(report(result, args.steps, args.capacity))
    if wall is not None:
        print(f"wall time: {wall:.0f} s ({wall / 60:.1f} min)")
    if out_dir.is_dir():
        png = out_dir / "memory.png"
        plot(samples, result, args.steps, args.capacity, png,
             f"{args.agent} {args.preset or ''} {args.env}: {args.steps} steps, replay cap {args.capacity}")
        print(f"csv: {out_dir / 'memory.csv'}\nplot: {png}")
    return code if code else (0 if result.get("flat", True) else 3)   # 3: memory grows after the cap


if __name__ == "__main__":
    sys.exit(main())
