"""Decision latency of a trained agent's policy and of MPPI on its model, eager / compiled / int8, on one
thread, next to a 50 Hz control budget (20 ms), and the return each acting mode gets on the same episodes.

    python benchmarks/bench_acting.py RUN_DIR [RUN_DIR ...] [--episodes 10] [--decisions 300] [--actors policy,mppi]
        [--modes eager,compiled,int8] [--mppi key=value ...] [--threads 1]

RUN_DIR is a trained run folder, e.g. Dreamer on Pendulum-v1 after
``reverie train --env gym:Pendulum-v1 --steps 5000 --run-dir runs/pend5k``. "mppi" is TD-MPC2's
planner size (512 samples, 64 elites, 6 iterations, horizon 3, 24 policy rollouts) with what else
``reverie eval --planner mppi`` uses on a trained model (critic bootstrap, continuation, start at the
actor's plan, init std 0.3); ``--mppi key=value`` changes one setting. Each acting mode comes from
``reverie.agents.acting.prepare_acting``, as ``reverie eval --acting`` does.

Three phases per run and actor:

1. warm-up: ``--warmup`` decisions per mode (compiled modes compile here; its seconds are reported
   apart from the latency);
2. latency: ``--decisions`` timed ``act`` calls per mode (one environment, batch 1, ``explore=False``),
   the modes taking turns in blocks of ``--block`` decisions so that load from other processes falls
   on all of them alike; the median and 90th percentile are reported;
3. quality: ``--episodes`` greedy episodes per mode on the seeds ``reverie eval`` uses, with
   ``torch.manual_seed`` reset to the same value before each, episodes of the modes interleaved; the
   mean return +- standard error, and each mode's paired difference to eager +- its standard error
   ("within noise" when the difference is within two standard errors).

Compile times are cold (an empty inductor cache of the benchmark's own) unless TORCHINDUCTOR_CACHE_DIR
is set. Timings taken while other processes use the cores are inflated alike for every mode; the
load averages before and after are printed with the tables.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import os
import platform
import shutil
import subprocess
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # as the reverie command does, before torch loads
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:        # cold compile times: an empty inductor cache of our own
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench_acting_inductor_")
    atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from reverie.agents.acting import ACTING_MODES, prepare_acting  # noqa: E402
from reverie.envs import BatchEnv  # noqa: E402
from reverie.training import session  # noqa: E402
from reverie.training.evaluate import run_episodes  # noqa: E402

BUDGET_MS = 20.0                                     # 50 Hz control
TDMPC2_MPPI = ["horizon=3", "candidates=512", "iterations=6", "elites=64", "policy_candidates=24"]
CPU_FLAGS = ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni")


def machine() -> list[str]:
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return [f"cpu: {model}, {os.cpu_count()} cores; flags: "
            + ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in CPU_FLAGS),
            f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), capability "
            f"{torch.backends.cpu.get_cpu_capability()}, quantized engine {torch.backends.quantized.engine}",
            f"uptime: {uptime}"]


class Stepper:
    """One environment (batch 1) driven by one actor, resetting when an episode ends."""

    def __init__(self, actor, make, seed: int):
        self.actor, self.env = actor, BatchEnv([functools.partial(make, seed)], parallel=False)
        self._reset()

    def _reset(self):
        self.step_ = self.env.reset()
        self.state = self.actor.init_state(1)
        self.prev = np.zeros((1, self.env.act_spec.size), np.float32)

    def decide(self) -> float:
        """One timed decision (seconds), then the environment step."""
        start = time.perf_counter()
        out = self.actor.act(dict(self.step_, action=self.prev), self.state, False)
        seconds = time.perf_counter() - start
        self.state, self.prev = out.state, self.env.act_spec.to_model(out.env_action)
        self.step_ = self.env.step(out.env_action)
        if self.step_["is_last"][0]:
            self._reset()
        return seconds


def bench_actor(agent, cfg, make, name: str, planner: str, overrides: list[str], args) -> tuple[list, list, list]:
    """Rows of the latency, compile and return tables for ``planner`` ("policy": the agent's own acting)."""
    actors, prep, rows_lat, rows_compile, rows_ret = {}, {}, [], [], []
    for mode in args.modes:
        start = time.perf_counter()
        try:
            actors[mode] = prepare_acting(agent, mode, planner, overrides)
        except Exception as e:   # noqa: BLE001 - a mode this agent cannot act in is a row, not a crash
            rows_lat.append([name, mode, f"n/a: {e}", "", "", "", ""])
            continue
        prep[mode] = time.perf_counter() - start
    if planner != "policy" and actors:
        settings = next(iter(actors.values())).settings
        print(f"# {name}: {settings}", flush=True)
    steppers = {m: Stepper(a, make, cfg.run.seed + 90_000) for m, a in actors.items()}
    for mode, s in steppers.items():                        # warm-up (compiles)
        start = time.perf_counter()
        first = s.decide()
        for _ in range(args.warmup - 1):
            s.decide()
        rows_compile.append([name, mode, f"{prep[mode]:.2f}", f"{first:.2f}", f"{time.perf_counter() - start:.1f}"])
        print(f"# warm-up {name} {mode}: first decision {first:.2f} s", flush=True)
    times = {m: [] for m in steppers}
    for _ in range(-(-args.decisions // args.block)):      # latency, modes taking turns
        for mode, s in steppers.items():
            times[mode] += [s.decide() for _ in range(args.block)]
    for s in steppers.values():
        s.env.close()
    eager = np.median(times["eager"]) * 1e3 if "eager" in times else None
    for mode, t in times.items():
        ms = np.asarray(t) * 1e3
        med = float(np.median(ms))
        rows_lat.append([name, mode, f"{med:.2f}", f"{np.quantile(ms, 0.9):.2f}", str(len(ms)),
                         "yes" if med <= BUDGET_MS else f"no ({med / BUDGET_MS:.1f}x)",
                         f"{eager / med:.2f}x" if eager else ""])
    returns = {m: [] for m in actors}
    for i in range(args.episodes):                         # quality, episodes of the modes interleaved
        for mode, actor in actors.items():
            torch.manual_seed(cfg.run.seed + i)
            ret, _ = run_episodes(actor, [functools.partial(make, cfg.run.seed + 50_000 + i)])
            returns[mode].append(float(ret[0]))
        print(f"# episode {i}: " + ", ".join(f"{m} {r[-1]:.1f}" for m, r in returns.items()), flush=True)
    for mode, r in returns.items():
        r = np.asarray(r)
        row = [name, mode, f"{r.mean():.1f} ± {sem(r):.1f}"]
        if mode != "eager" and "eager" in returns:
            d = r - np.asarray(returns["eager"])
            noise = 2 * sem(d)
            row += [f"{d.mean():+.1f} ± {sem(d):.1f}", "yes" if abs(d.mean()) <= noise else "no"]
        else:
            row += ["", ""]
        rows_ret.append(row)
    return rows_lat, rows_compile, rows_ret


def sem(x: np.ndarray) -> float:
    return float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="trained run folders")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--decisions", type=int, default=300, help="timed decisions per mode (at least 200)")
    p.add_argument("--block", type=int, default=25, help="decisions per turn of a mode in the latency phase")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--actors", default="policy,mppi")
    p.add_argument("--modes", default=",".join(ACTING_MODES))
    p.add_argument("--mppi", action="append", default=[], metavar="key=value")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    if args.decisions < 200:
        p.error("--decisions must be at least 200")
    if args.warmup < 2:
        p.error("--warmup must be at least 2 (an episode's first decision and a later one)")
    args.modes = args.modes.split(",")
    torch.set_num_threads(args.threads)
    print("\n".join(f"# {line}" for line in machine()), flush=True)
    for run_dir in args.run_dirs:
        agent, cfg, make, meta = session.load_run(run_dir)
        torch.set_num_threads(args.threads)               # load_run applies the run's thread count
        print(f"# {run_dir}: {agent.name} at step {meta['step']} on {cfg.run.env}; "
              f"{time.strftime('%Y-%m-%d %H:%M')}", flush=True)
        lat, comp, ret = [], [], []
        for actor in args.actors.split(","):
            if actor == "policy":
                name, overrides = f"{agent.name} policy", []
            elif actor == "mppi":
                size = dict(o.split("=", 1) for o in [*TDMPC2_MPPI, *args.mppi])
                name, overrides = f"mppi {size['candidates']}x{size['iterations']}x{size['horizon']}", [
                    *TDMPC2_MPPI, *args.mppi]
            else:
                name, overrides = actor, []      # another planner with the agent's settings for it
            a, b, c = bench_actor(agent, cfg, make, name, actor, overrides, args)
            lat, comp, ret = lat + a, comp + b, ret + c
        print(f"\n## {run_dir}: ms per decision, one thread, batch 1 ({args.decisions} decisions per mode)\n")
        print(table(["actor", "mode", "median ms", "p90 ms", "decisions", "within 20 ms (50 Hz)", "speed-up"], lat))
        print("\n## compile / preparation (s; not part of the latency)\n")
        print(table(["actor", "mode", "prepare s", "first decision s", f"warm-up s ({args.warmup} decisions)"], comp))
        print(f"\n## return over {args.episodes} episodes (same seeds for every mode)\n")
        print(table(["actor", "mode", "return mean ± SEM", "paired Δ vs eager ± SEM", "within noise (2 SEM)"], ret))
    print(f"\n# after: load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)


if __name__ == "__main__":
    main()
