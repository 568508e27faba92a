"""Search speed of reverie's batched MCTS against mctx (JAX on CPU) and LightZero (Python and C++ trees).

Every system searches with the same small MuZero-style recurrent network and
the same weights and roots: a latent of size 64, dynamics
``tanh(W2 @ relu(W1 @ [latent, onehot(a)] + b1) + b2)`` (hidden 64), reward,
value and K policy-logit heads that are linear in the next latent, discount
0.997 (benchmarks/mcts_peers/net.py). The arrays are drawn once from a fixed
numpy seed and handed to every system as one ``.npz``.

Settings: 50 simulations; PUCT (pb_c_init 1.25, pb_c_base 19652, root
Dirichlet alpha 0.25, fraction 0.25; reverie normalises Q by MuZero's tree-wide
min-max unless ``--q-transform parent_and_siblings`` asks for mctx's per-node
transform, which mctx's muzero_policy uses) and Gumbel MuZero (m = min(16, K),
c_visit 50, c_scale 0.1, Gumbel scale 1); K = 2 (CartPole) and K = 16 actions;
B = 1 and B = 256 roots searched together. Every system makes one batched
network call per simulation. Times are the median over repeats of one whole
search call, after warm-up calls (for mctx the jitted policy, so compilation is
left out). "sims/s" counts root-simulations: B * 50 / seconds.

Systems:
  reverie          reverie.planning.mcts.search, eager PyTorch, in this process
  mctx             mctx.muzero_policy / gumbel_muzero_policy under one jax.jit (mcts_peers/mctx_side.py)
  lightzero-ptree  LightZero's pure-Python MuZero tree, MuZeroMCTSPtree (PUCT only)
  lightzero-ctree  LightZero's C++ trees, MuZeroMCTSCtree and GumbelMuZeroMCTSCtree
                   (both driven by LightZero's Python search loop; mcts_peers/lightzero_side.py)

The peers run in subprocesses of their own virtualenvs (nothing of theirs is
installed into reverie's environment):

    python3 -m venv ../venvs/mctx
    ../venvs/mctx/bin/pip install jax jaxlib mctx          # CPU JAX, no torch

    python3 -m venv --system-site-packages ../venvs/lightzero  # sees the system torch
    ../venvs/lightzero/bin/pip install -c constraints.txt --no-deps \\
        lightzero==0.2.0 DI-engine==0.5.3 DI-toolkit DI-treetensor treevalue hbutils \\
        easydict graphviz deprecation dill URLObject enum-tools tabulate tensorboardX gym==0.25.1

(LightZero's full dependency set pins numpy<2, gymnasium[atari], wandb, ...;
importing its MCTS needs only the list above, and its prebuilt C++ trees load
under numpy 2.)

Run (from the repository root):

    OMP_NUM_THREADS=1 python benchmarks/bench_mcts.py \\
        --mctx-python ../venvs/mctx/bin/python --lightzero-python ../venvs/lightzero/bin/python
    # or set REVERIE_MCTX_PYTHON / REVERIE_LIGHTZERO_PYTHON; --quick for a smoke run

A system whose interpreter is not given or missing is skipped with a note.
Everything runs single-threaded: OMP/MKL/OpenBLAS threads 1, torch
set_num_threads(1), and for JAX ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1``. Timings move a lot when anything else runs
on the machine: the load average is printed before and after.

A sanity block follows the table: one more search per system and case without
root noise (reverie explore=False, mctx dirichlet_fraction 0 / gumbel_scale 0,
LightZero prepare_no_noise), printing the mean root value and how far each
system's root visit distribution lies from reverie's. They differ by design in
details (Q normalisation, tie-breaking, root value bookkeeping, LightZero's
Gumbel tree draws a fixed Gumbel vector of scale 10 it cannot turn off), so it
is printed, not asserted. With ``--q-transform parent_and_siblings`` reverie's
PUCT and Gumbel searches are mctx's (tests/test_mcts_mctx.py checks that in
float64); here, in float32, only rounding separates them.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent / "mcts_peers"))

import net  # noqa: E402
from torch_net import TorchNet  # noqa: E402

PEERS_DIR = Path(__file__).resolve().parent / "mcts_peers"
XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
SYSTEM_ORDER = ["reverie", "mctx", "lightzero-ptree", "lightzero-ctree"]


# ---------------------------------------------------------------------------
# machine


def cpu_info() -> dict:
    model, flags = platform.processor() or "?", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("?", "", "x86_64"):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"model": model, "amx_bf16": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags,
            "avx512f": "avx512f" in flags, "cores": os.cpu_count()}


def load_avg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


# ---------------------------------------------------------------------------
# reverie, in this process


def reverie_case(arrays: dict, algorithm: str, k: int, b: int, warmup: int, repeats: int, budget_s: float,
                 q_transform: str = "min_max") -> dict:
    from reverie.planning.mcts import MCTSSettings, RecurrentOutput, RootOutput, search

    w = net.weights_for(arrays, k)
    tnet = TorchNet(w)
    s = dict(net.settings(algorithm, k), q_transform=q_transform)
    known = {f.name for f in dataclasses.fields(MCTSSettings)}
    settings = MCTSSettings(**{name: v for name, v in s.items() if name in known})
    missing = sorted(set(s) - known - {"discount"})

    def recurrent_fn(embedding, action):
        nxt, reward, value, logits = tnet.recurrent(embedding, action)
        return RecurrentOutput(reward=reward, discount=torch.full_like(reward, net.DISCOUNT),
                               prior_logits=logits, value=value), nxt

    root = RootOutput(prior_logits=tnet.root_logits[:b], value=tnet.root_value[:b], embedding=tnet.root_embedding[:b])
    latent, action = net.probe_inputs(w)
    with torch.inference_mode():
        out, nxt = recurrent_fn(torch.from_numpy(latent), torch.from_numpy(action))
    ref = net.recurrent_numpy(w, latent, action)
    probe_err = max(float(np.abs(a.numpy() - r).max()) for a, r in
                    zip((nxt, out.reward, out.value, out.prior_logits), ref))

    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        times = net.time_calls(lambda: search(recurrent_fn, root, settings, explore=True, generator=generator),
                               warmup, repeats, budget_s)
        quiet = search(recurrent_fn, root, settings, explore=False, generator=torch.Generator().manual_seed(0))
    return {
        "system": "reverie", "algorithm": algorithm, "k": k, "b": b, "ms": times, "probe_err": probe_err,
        "settings_not_in_reverie": missing,
        "sanity": {"visits": quiet.visit_counts.tolist(), "root_value": quiet.root_value.double().tolist()},
    }


def net_only_ms(arrays: dict, k: int, b: int) -> float:
    """Median time of the 50 network calls of one search, without any tree work."""
    tnet = TorchNet(net.weights_for(arrays, k))
    latent, action = tnet.root_embedding[:b], torch.arange(b) % k

    def fifty():
        for _ in range(50):
            tnet.recurrent(latent, action)

    with torch.inference_mode():
        return net.median(net.time_calls(fifty, 2, 15, 1.0))


# ---------------------------------------------------------------------------
# peers, in subprocesses of their own virtualenvs


def run_peer(python: str, script: str, job: dict, workdir: str) -> dict:
    job_path = os.path.join(workdir, f"{Path(script).stem}.json")
    with open(job_path, "w") as f:
        json.dump(job, f)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               XLA_FLAGS=XLA_FLAGS, JAX_PLATFORMS="cpu", PYTHONWARNINGS="ignore")
    env.pop("PYTHONPATH", None)
    done = subprocess.run([python, str(PEERS_DIR / script), job_path], capture_output=True, text=True, env=env)
    marker = [line for line in done.stdout.splitlines() if line.startswith("@@RESULT@@")]
    if done.returncode != 0 or not marker:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"{script} failed (exit {done.returncode}):\n{tail}")
    return json.loads(marker[-1][len("@@RESULT@@"):])


def resolve_python(flag: str | None, env_var: str) -> tuple[str | None, str]:
    python = flag or os.environ.get(env_var)
    if not python:
        return None, f"no interpreter given (--{env_var.split('_')[1].lower()}-python or ${env_var})"
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        return None, f"interpreter {python} not found"
    return python, ""


# ---------------------------------------------------------------------------
# report


def fmt_rate(x: float) -> str:
    return f"{x / 1e3:,.1f}k" if x >= 1e3 else f"{x:,.0f}"


def print_table(rows: list[dict]) -> None:
    by_key = {(r["system"], r["algorithm"], r["k"], r["b"]): r for r in rows}
    print(f"\n{'system':<16} {'algorithm':<9} {'K':>3} {'B':>4} {'ms/search':>10} {'(min)':>9} "
          f"{'n':>3} {'root-sims/s':>12} {'reverie/peer':>13}")
    print("-" * 88)
    order = {name: i for i, name in enumerate(SYSTEM_ORDER)}
    for r in sorted(rows, key=lambda r: (r["algorithm"] != "puct", r["k"], r["b"], order.get(r["system"], 99))):
        med = net.median(r["ms"])
        rate = r["b"] * 50 / (med / 1000.0)
        mine = by_key.get(("reverie", r["algorithm"], r["k"], r["b"]))
        ratio = "" if r["system"] == "reverie" or mine is None else f"{net.median(mine['ms']) / med:.2f}x"
        print(f"{r['system']:<16} {r['algorithm']:<9} {r['k']:>3} {r['b']:>4} {med:>10.2f} {min(r['ms']):>9.2f} "
              f"{len(r['ms']):>3} {fmt_rate(rate):>12} {ratio:>13}")
    print("reverie/peer = reverie's median time / the peer's (below 1: reverie faster); (min) the fastest call."
          + (" mctx's one-off compile times are not in the table (see the notes)." if "mctx" in by_key_systems(rows)
             else ""))


def by_key_systems(rows: list[dict]) -> set[str]:
    return {r["system"] for r in rows}


def tv_distance(a: list[list[int]], b: list[list[int]]) -> tuple[float, float]:
    """Mean total-variation distance of the visit distributions, and the fraction of rows with the same argmax."""
    pa, pb = np.asarray(a, float), np.asarray(b, float)
    pa /= np.maximum(pa.sum(-1, keepdims=True), 1)
    pb /= np.maximum(pb.sum(-1, keepdims=True), 1)
    return float(0.5 * np.abs(pa - pb).sum(-1).mean()), float((pa.argmax(-1) == pb.argmax(-1)).mean())


def print_sanity(rows: list[dict], arrays: dict) -> None:
    print("\nSanity (one search per case without root noise; printed, not asserted):")
    print(f"{'algorithm':<9} {'K':>3} {'B':>4} {'system':<16} {'mean root value':>16} {'model value':>12} "
          f"{'visits TV vs reverie':>21} {'same argmax':>12}")
    by_key = {(r["system"], r["algorithm"], r["k"], r["b"]): r for r in rows}
    order = {name: i for i, name in enumerate(SYSTEM_ORDER)}
    for r in sorted(rows, key=lambda r: (r["algorithm"] != "puct", r["k"], r["b"], order.get(r["system"], 99))):
        model_value = float(net.weights_for(arrays, r["k"])["root_value"][: r["b"]].mean())
        mine = by_key.get(("reverie", r["algorithm"], r["k"], r["b"]))
        tv = same = ""
        if mine is not None and r["system"] != "reverie":
            d, s = tv_distance(r["sanity"]["visits"], mine["sanity"]["visits"])
            tv, same = f"{d:.3f}", f"{s:.2f}"
        print(f"{r['algorithm']:<9} {r['k']:>3} {r['b']:>4} {r['system']:<16} "
              f"{np.mean(r['sanity']['root_value']):>16.4f} {model_value:>12.4f} {tv:>21} {same:>12}")
    errs = {r["system"]: max(x["probe_err"] for x in rows if x["system"] == r["system"]) for r in rows}
    print("network check, max |output - float64 numpy reference| on a fixed batch: "
          + ", ".join(f"{name} {err:.1e}" for name, err in errs.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mctx-python", default=None,
                        help="the mctx virtualenv's python (default $REVERIE_MCTX_PYTHON)")
    parser.add_argument("--lightzero-python", default=None,
                        help="the LightZero virtualenv's python (default $REVERIE_LIGHTZERO_PYTHON)")
    parser.add_argument("--systems", default=",".join(SYSTEM_ORDER),
                        help="comma-separated subset of " + ",".join(SYSTEM_ORDER))
    parser.add_argument("--ks", default="2,16")
    parser.add_argument("--bs", default="1,256")
    parser.add_argument("--algorithms", default="puct,gumbel")
    parser.add_argument("--q-transform", default="min_max", choices=["min_max", "parent_and_siblings"],
                        help="reverie's PUCT Q normalisation (mctx's muzero_policy uses parent_and_siblings)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=30, help="at most this many timed calls per case")
    parser.add_argument("--budget", type=float, default=8.0, help="seconds of timed calls per case (at least 3 calls)")
    parser.add_argument("--quick", action="store_true", help="smoke run: B 1 and 8, 1 warm-up, 2 calls")
    parser.add_argument("--json", default=None, help="also write all rows (with every timing) to this file")
    args = parser.parse_args()
    if args.quick:
        args.warmup, args.repeats, args.budget = 1, 2, 0.5
        args.bs = "1,8" if args.bs == parser.get_default("bs") else args.bs

    torch.set_num_threads(1)
    ks = [int(x) for x in args.ks.split(",")]
    bs = [int(x) for x in args.bs.split(",")]
    algorithms = args.algorithms.split(",")
    systems = args.systems.split(",")
    cases = [{"algorithm": a, "k": k, "b": b} for a in algorithms for k in ks for b in bs]
    if max(bs) > net.MAX_ROOTS:
        parser.error(f"at most {net.MAX_ROOTS} roots")

    cpu = cpu_info()
    print(f"CPU: {cpu['model']} ({cpu['cores']} logical cores); amx_bf16: {cpu['amx_bf16']}, "
          f"avx512_bf16: {cpu['avx512_bf16']}, avx512f: {cpu['avx512f']}")
    print(f"python {platform.python_version()}, torch {torch.__version__} "
          f"(CPU capability {torch.backends.cpu.get_cpu_capability()}), numpy {np.__version__}")
    print(f"threads: torch {torch.get_num_threads()} intra-op / {torch.get_num_interop_threads()} inter-op; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; peers get OMP/MKL/OPENBLAS 1, XLA_FLAGS='{XLA_FLAGS}'")
    print(f"settings: 50 simulations, discount {net.DISCOUNT}, D={net.D}, hidden {net.H}; reverie's PUCT Q transform "
          f"{args.q_transform}; warm-up {args.warmup}, up to {args.repeats} timed calls or {args.budget:g} s per case")
    print(f"load average before: {load_avg()}")

    rows: list[dict] = []
    notes: list[str] = []
    versions: dict[str, str] = {"torch": torch.__version__}
    arrays = net.make_weights(ks)
    with tempfile.TemporaryDirectory() as workdir:
        weights = os.path.join(workdir, "weights.npz")
        net.save(weights, arrays)
        job = {"weights": weights, "warmup": args.warmup, "repeats": args.repeats, "budget_s": args.budget}

        if "reverie" in systems:
            try:
                for c in cases:
                    row = reverie_case(arrays, c["algorithm"], c["k"], c["b"], args.warmup, args.repeats, args.budget,
                                       args.q_transform)
                    rows.append(row)
                    print(f"  reverie {c['algorithm']} K={c['k']} B={c['b']}: {net.median(row['ms']):.2f} ms",
                          flush=True)
                    if row["settings_not_in_reverie"]:
                        notes.append(f"reverie's MCTSSettings lacks {row['settings_not_in_reverie']}")
            except Exception as e:  # noqa: BLE001 - the peers still run; the note says why reverie did not
                notes.append(f"reverie failed or skipped: {type(e).__name__}: {e}")

        if "mctx" in systems:
            python, why = resolve_python(args.mctx_python, "REVERIE_MCTX_PYTHON")
            if python is None:
                notes.append(f"mctx skipped: {why}")
            else:
                try:
                    out = run_peer(python, "mctx_side.py", dict(job, cases=cases), workdir)
                    rows += out["rows"]
                    versions.update({f"mctx-venv {k}": v for k, v in out["versions"].items()})
                    notes.append("mctx compile (first call, not timed), s: " + ", ".join(
                        f"{r['algorithm']} K={r['k']} B={r['b']} {r['compile_s']:.1f}" for r in out["rows"]))
                    notes.append(f"mctx devices {out['devices']}, env {out['env']}")
                    for r in out["rows"]:
                        print(f"  mctx {r['algorithm']} K={r['k']} B={r['b']}: {net.median(r['ms']):.2f} ms",
                              flush=True)
                except RuntimeError as e:
                    notes.append(f"mctx failed: {e}")

        lz_trees = [t for t, name in (("ptree", "lightzero-ptree"), ("ctree", "lightzero-ctree")) if name in systems]
        if lz_trees:
            python, why = resolve_python(args.lightzero_python, "REVERIE_LIGHTZERO_PYTHON")
            if python is None:
                notes.append(f"LightZero skipped: {why}")
            else:
                lz_cases = []
                for c in cases:
                    if c["algorithm"] == "puct":
                        lz_cases += [dict(c, tree=t) for t in lz_trees]
                    elif "ctree" in lz_trees:
                        lz_cases.append(dict(c, tree="ctree-gumbel"))  # LightZero has no Python Gumbel MuZero tree
                try:
                    out = run_peer(python, "lightzero_side.py", dict(job, cases=lz_cases), workdir)
                    rows += out["rows"]
                    versions.update({f"lightzero-venv {k}": v for k, v in out["versions"].items()})
                    for r in out["rows"]:
                        print(f"  {r['system']} {r['algorithm']} K={r['k']} B={r['b']}: {net.median(r['ms']):.2f} ms",
                              flush=True)
                except RuntimeError as e:
                    notes.append(f"LightZero failed: {e}")

    if "reverie" in systems or lz_trees:
        print("the torch network alone (what reverie and LightZero call), 50 batched calls: " + ", ".join(
            f"K={k} B={b} {net_only_ms(arrays, k, b):.2f} ms" for k in ks for b in bs))
    print(f"load average after: {load_avg()}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    if rows:
        print_table(rows)
        print_sanity(rows, arrays)
    for note in dict.fromkeys(notes):
        print("note:", note)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu, "versions": versions, "rows": rows, "notes": notes}, f)


if __name__ == "__main__":
    main()
