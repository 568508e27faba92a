"""The ``reverie`` command: train, eval, dream, analyze, merge, config.

Every error a user can cause (unknown environment, mistyped config key,
foreign or corrupt checkpoint, a run folder of another agent) is printed as
one sentence and exits with status 2; nothing in the run folder is touched
before the inputs have been checked.
"""

from __future__ import annotations

import argparse
import errno
import functools
import json
import os
import signal
import sys
from pathlib import Path

# OpenMP threads that spin while waiting make torch 10-40x slower whenever another process
# shares the cores (measured: 10 s instead of 0.24 s per update on two cores). Passive waiting
# costs little when the machine is quiet. It only takes effect before torch is first imported,
# which is why it is set here, in the command's module, and not in the library.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

DEFAULT_AGENT = "dreamer"


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _agent_and_overrides(args: argparse.Namespace) -> tuple[str, list[str]]:
    """The optional AGENT positional also catches a first ``key=value``; give it back to the overrides."""
    if "=" in args.agent:
        return DEFAULT_AGENT, [args.agent, *args.overrides]
    return args.agent, list(args.overrides)


def _train(args: argparse.Namespace) -> int:
    from reverie import api

    args.agent, overrides = _agent_and_overrides(args)
    for flag, key in (("env", "run.env"), ("obs", "run.obs"), ("steps", "run.steps"), ("seed", "run.seed"),
                      ("device", "run.device"), ("switch_every", "run.continual.switch_every")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    cfg = api.make_config(args.agent, args.preset, overrides)
    if args.dataset is not None and args.nproc > 1:
        from reverie.config import ConfigError
        raise ConfigError("offline training (--dataset) runs in one process; drop --nproc")
    if args.init_from is not None and args.nproc > 1:
        from reverie.config import ConfigError
        raise ConfigError("starting from another run's weights (--init-from) runs in one process; drop --nproc")
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _launch(args, cfg)
    run_dir = Path(args.run_dir) if args.run_dir else api.default_run_dir(args.agent, cfg, args.dataset)
    # A scheduler's SIGTERM is treated like Ctrl-C: save a checkpoint, then stop.
    signal.signal(signal.SIGTERM, _interrupt)
    result = api.train(args.agent, preset=args.preset, run_dir=run_dir, dataset=args.dataset,
                       overrides=overrides, init_from=args.init_from).result
    assert result is not None, "a run that api.train trained carries its result"
    if os.environ.get("RANK", "0") != "0":   # ranks of a data-parallel run other than 0 report nothing
        return 0
    c = result.counters
    if args.dataset is not None:
        print(f"\n{args.agent} trained offline on {args.dataset}: {c.updates} updates in {c.wall_time / 60:.1f} min")
    else:
        print(f"\n{args.agent} on {cfg.run.env} ({cfg.run.obs}): {c.env_steps} env steps, {c.updates} updates, "
              f"{c.episodes} episodes in {c.wall_time / 60:.1f} min")
    if result.eval_return is not None:
        tasks = cfg.run.env.count(",") + 1
        print(f"evaluation return: {result.eval_return:.1f} +- {result.eval_return_std:.1f} "
              f"over {cfg.run.eval_episodes} episodes" + (f" of each of {tasks} tasks" if tasks > 1 else ""))
    for name, path in result.artifacts.items():
        print(f"{name}: {path}")
    print(f"run folder: {result.run_dir}")
    return 0


def _launch(args: argparse.Namespace, cfg) -> int:
    """``reverie train --nproc N ...``: check the agent can be trained data-parallel, then run the same
    command (without --nproc) as N processes through torchrun (``torch.distributed.run``)."""
    import subprocess

    from reverie.training import session
    from reverie.training.distributed import DataParallel

    DataParallel.check(session.build_agent(args.agent, cfg, session.env_factory(cfg.run)))
    argv, rest = [], iter(args.argv)
    for item in rest:
        if item == "--nproc":
            next(rest, None)
        elif not item.startswith("--nproc="):
            argv.append(item)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}",
               "-m", "reverie", *argv]
    signal.signal(signal.SIGTERM, _interrupt)
    launcher = subprocess.Popen(command)
    try:
        return launcher.wait()
    except KeyboardInterrupt:   # pass it on: torchrun stops the ranks, which save a checkpoint
        launcher.send_signal(signal.SIGTERM)
        launcher.wait()
        raise


def _export(args: argparse.Namespace) -> int:
    from reverie.training.offline import export_run

    print(json.dumps(export_run(args.run_dir, args.minari, args.out)))
    return 0


def _import(args: argparse.Namespace) -> int:
    from reverie.training.offline import import_dataset

    record = import_dataset(args.dataset, args.run_dir)
    print(json.dumps({k: record[k] for k in ("source", "episodes", "transitions", "replay_steps")}
                     | {"replay": str(Path(args.run_dir) / "replay")}))
    return 0


def _record(args: argparse.Namespace) -> int:
    from reverie.training.record import record_dataset

    record = record_dataset(args.policy, args.out, args.steps, seed=args.seed, envs=args.envs,
                            time_limit=args.time_limit)
    print(json.dumps({k: record[k] for k in ("source", "env", "policy", "episodes", "transitions", "return_mean",
                                             "return_std", "length_mean")}))
    return 0


def _lapo_policy(args: argparse.Namespace) -> int:
    from reverie.config import apply_overrides
    from reverie.training.lapo_policy import LapoPolicyConfig, run_lapo_policy

    cfg = apply_overrides(LapoPolicyConfig(seed=args.seed), args.overrides)
    result = run_lapo_policy(args.lapo_run, args.out, cfg, scratch=args.scratch)
    print(json.dumps({"arm": result["arm"], "seed": result["seed"], "pretrain": result["pretrain"],
                      "evals": result["evals"], "result": str(Path(args.out) / "result.json")}))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from reverie import api
    from reverie.agents.planner_policy import PLANNER_CHOICES
    from reverie.planning import PlanningError

    if args.planner not in PLANNER_CHOICES:   # before loading anything
        raise PlanningError(f"unknown planner {args.planner!r}; choose one of {', '.join(PLANNER_CHOICES)}")
    run = api.load(args.run_dir, device=args.device)
    if args.goal is not None:
        from reverie.training.goal_eval import goal_evaluation

        if args.acting != "eager":
            raise PlanningError("--goal plans with the eager acting path only; drop --acting")
        print(json.dumps(goal_evaluation(run.agent, run.env, args.goal, args.planner, args.episodes,
                                         args.planner_args or [], seed=run.config.run.seed + 50_000)))
        return 0
    result = run.evaluate(args.episodes, planner=args.planner, acting=args.acting, planner_args=args.planner_args or [])
    print(json.dumps(result.as_dict()))
    return 0


def _dream(args: argparse.Namespace) -> int:
    from reverie import api
    from reverie.models.base import DECODER, require

    run = api.load(args.run_dir, device=args.device)
    require(run.model, [DECODER], f"'reverie dream' (it shows predicted observations) on a {run.agent.name} run")
    images = any(spec.is_image for spec in run.agent.obs_spec.values())
    allowed = (".gif", ".mp4") if images else (".png", ".svg", ".pdf")
    if args.out and Path(args.out).suffix.lower() not in allowed:
        print(f"error: --out {args.out}: this run has {'image' if images else 'vector'} observations, "
              f"so the dream is written as {' or '.join(allowed)}", file=sys.stderr)
        return 2
    path, errors = run.dream(args.out, context=args.context, horizon=args.horizon)
    print(json.dumps({"file": str(path), "open_loop_mse": errors}))
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from reverie import api

    print(json.dumps(api.analyze(args.run_dir, args.run_dir_b, checkpoint=args.checkpoint, episodes=args.episodes,
                                 only=args.only, out=args.out, device=args.device, progress=True)))
    return 0


def _merge(args: argparse.Namespace) -> int:
    from reverie import api

    record = api.merge(args.runs, method=args.method, out=args.out, base=args.base, coef=args.coef,
                       coef_grid=args.coef_grid, trim=args.trim, holdout_episodes=args.holdout_episodes,
                       device=args.device)
    print(json.dumps({k: record[k] for k in ("out", "method", "coef", "trim", "normalised_error_reduction")}
                     | {"losses": record["losses"], "score": min(t["score"] for t in record["selection"]["tried"])}))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from reverie import api
    from reverie.suite import claim_overrides, find_suite, load_suite, pick, run_folder
    from reverie.training.measure import run_measure

    suite = args.suite or find_suite()
    claims = load_suite(suite)
    if args.list or args.claim is None:
        width = {"id": max(len(c.id) for c in claims.values()), "env": max(len(c.env) for c in claims.values())}
        for claim in claims.values():
            print(f"{claim.id:{width['id']}s}  {claim.agent:8s} {claim.env:{width['env']}s}  {claim.steps:>7d} steps  "
                  f"seeds {','.join(map(str, claim.seeds))}")
        return 0
    claim = pick(claims, args.claim)
    seeds = args.seeds if args.seeds else list(claim.seeds)
    for seed in seeds:   # every seed's config is checked before the first one trains
        api.make_config(claim.agent, claim.preset, claim_overrides(claim, seed))
    signal.signal(signal.SIGTERM, _interrupt)
    for seed in seeds:
        run_dir = run_folder(args.root, claim, seed)
        print(f"{claim.id} seed {seed}: {run_dir}")
        result = api.train(claim.agent, preset=claim.preset, run_dir=run_dir,
                           overrides=claim_overrides(claim, seed)).result
        assert result is not None, "a run that api.train trained carries its result"
        line = {"claim": claim.id, "seed": seed, "run_dir": str(run_dir), "eval/return": result.eval_return,
                "eval/return_std": result.eval_return_std, "env_steps": result.counters.env_steps,
                "wall_time_s": round(result.counters.wall_time, 1)}
        if claim.measure is not None:
            line["measure"] = run_measure(claim, run_dir, suite)
        print(json.dumps(line))
    return 0


def _play(args: argparse.Namespace) -> int:
    from reverie.play import PlayError

    try:
        from reverie.play.server import open_session, serve
    except ModuleNotFoundError as e:
        if e.name != "flask":
            raise
        raise PlayError("'reverie play' needs the flask package, which is not installed: "
                        "pip install 'reverie[play]'") from None
    warn = functools.partial(print, file=sys.stderr)
    session = open_session(args.run_dir, device=args.device, max_steps=args.max_steps, warn=warn)
    serve(session, host=args.host, port=args.port, seed=args.seed, title=Path(args.run_dir).name,
          say=functools.partial(print, flush=True))
    return 0


def _config(args: argparse.Namespace) -> int:
    import yaml

    from reverie import api
    from reverie.config import to_dict

    agent, overrides = _agent_and_overrides(args)
    cfg = api.make_config(agent, args.preset, overrides)
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
    return 0


def _user_errors() -> tuple[type[Exception], ...]:
    """The error classes that describe a user's mistake in one sentence (not a bug in reverie)."""
    from reverie.config import ConfigError
    from reverie.envs import EnvError
    from reverie.models import BatchError, CapabilityError
    from reverie.models.latent_goal import GoalError
    from reverie.models.merging import MergeError
    from reverie.play import PlayError
    from reverie.planning import PlanningError
    from reverie.replay import ReplayError
    from reverie.replay.minari_io import DatasetError
    from reverie.suite import SuiteError
    from reverie.training.checkpoint import CheckpointError
    from reverie.training.run_dir import RunFolderError, RunLockedError

    return (ConfigError, EnvError, CheckpointError, RunFolderError, RunLockedError, ReplayError, PlanningError,
            CapabilityError, BatchError, DatasetError, SuiteError, PlayError, MergeError, GoalError)


def _at_least(minimum: int):
    """An argparse ``type``: an integer of at least ``minimum``, or a one-sentence usage error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expects a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"   # argparse names the type in some messages
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reverie", description="Learned world models: train, evaluate, dream.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train an agent (resumes if the run folder holds the same run)")
    p.add_argument("agent", nargs="?", default=DEFAULT_AGENT, help="agent to train (default: dreamer)")
    p.add_argument("--env", help="SUITE:TASK, e.g. gym:CartPole-v1, dmc:cartpole-swingup, atari:Pong; a physics "
                                 "variant gym:Pendulum-v1?g=4.0; a task sequence 'A>B>C' (quote it)")
    p.add_argument("--switch-every", type=_at_least(1), metavar="STEPS",
                   help="environment steps per task of a task sequence --env 'A>B>C' (default: --steps split evenly)")
    p.add_argument("--obs", choices=["state", "pixels"], help="observation type")
    p.add_argument("--steps", type=_at_least(1), help="environment steps to train for (at least 1)")
    p.add_argument("--seed", type=_at_least(0), help="seed of the environments, networks and replay (at least 0)")
    p.add_argument("--run-dir", help="run folder (default: runs/AGENT-ENV-OBS-sSEED)")
    p.add_argument("--preset", help="named settings (dreamer: tiny, default, xs, s, m; planet, pets, muzero: "
                                    "tiny, default; tdmpc2: tiny, default, 5m; worldmodels: tiny, default, "
                                    "takecover, paper; cswm: tiny, default, default-no-gnn, default-k1, default-ae, paper)")
    p.add_argument("--device", help="cpu or cuda")
    p.add_argument("--nproc", type=_at_least(1), default=1,
                   help="learner processes (data-parallel through torchrun: own environments and replay each, "
                        "gradients averaged)")
    p.add_argument("--dataset", help="train offline on a Minari dataset (id or folder, or a folder written by "
                                     "'reverie import'); --steps then counts updates")
    p.add_argument("--init-from", metavar="RUN_DIR",
                   help="start a new run from the newest weights of another run of the same agent and architecture "
                        "(fine-tuning; optimiser states start fresh)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, see 'reverie config'")
    p.set_defaults(fn=_train)

    p = sub.add_parser("export", help="write a run's replay as an offline dataset")
    p.add_argument("run_dir")
    p.add_argument("--minari", required=True, metavar="NAME",
                   help="Minari dataset id to create, e.g. reverie/cartpole-v0")
    p.add_argument("--out", help="datasets folder (default: minari's, ~/.minari/datasets or $MINARI_DATASETS_PATH)")
    p.set_defaults(fn=_export)

    p = sub.add_parser("import", help="write a Minari dataset into a folder's replay")
    p.add_argument("dataset", help="Minari dataset id (local) or folder")
    p.add_argument("--run-dir", required=True, help="folder to write replay/ and dataset.json into")
    p.set_defaults(fn=_import)

    p = sub.add_parser("record", help="record a scripted policy's play as a dataset folder (for --dataset)")
    p.add_argument("policy", help="scripted policy: breakout-follow-ball or breakout-follow-ball-noisy (MinAtar "
                                  "Breakout; -noisy: random actions where the paddle has slack)")
    p.add_argument("--out", required=True, help="folder to write replay/ and dataset.json into (a new one)")
    p.add_argument("--steps", type=_at_least(1), default=50_000, help="agent steps to store (default 50,000)")
    p.add_argument("--seed", type=_at_least(0), default=0, help="seed of the first environment (default 0)")
    p.add_argument("--envs", type=_at_least(1), default=8, help="environments played at once (default 8)")
    p.add_argument("--time-limit", type=_at_least(1), default=1000,
                   help="agent steps after which an episode is cut (default 1,000)")
    p.set_defaults(fn=_record)

    p = sub.add_parser("lapo-policy", help="clone a policy in a lapo run's latent actions, decode it with a few "
                                           "labels and fine-tune it with PPO (or, --scratch, the same from scratch)")
    p.add_argument("lapo_run", help="a trained lapo run folder (its IDM and its replay, the videos)")
    p.add_argument("--out", required=True, help="folder for result.json and policy.safetensors (a new one)")
    p.add_argument("--scratch", action="store_true", help="no cloning, no decoder: the same network and PPO from "
                                                          "initial weights (the baseline)")
    p.add_argument("--seed", type=_at_least(0), default=0, help="seed of the labels, networks and PPO (default 0)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="settings, e.g. budgets=(0,10000,50000) ppo.lr=1e-4 clone_updates=1000 labelled=0.025")
    p.set_defaults(fn=_lapo_policy)

    p = sub.add_parser("eval", help="evaluate the newest checkpoint of a run")
    p.add_argument("run_dir")
    p.add_argument("--episodes", type=_at_least(1), default=10, help="episodes to play (at least 1)")
    p.add_argument("--device")
    p.add_argument("--planner", default="policy",
                   help="act with the agent's own policy (default), by its model's policy prior alone "
                        "(prior), or plan on its model: cem, mppi, shooting, gradient, mcts")
    p.add_argument("--planner-arg", dest="planner_args", action="append", metavar="key=value",
                   help="change one planner setting, e.g. --planner-arg horizon=5 (repeatable)")
    p.add_argument("--acting", choices=("eager", "compiled", "int8"), default="eager",
                   help="acting path: eager (default), compiled (torch.compile) or int8 (dynamically quantised "
                        "linear layers, CPU)")
    p.add_argument("--goal", metavar="FILE.npy|walk:T",
                   help="plan toward a goal observation in the model's latent space (models with a latent goal "
                        "cost: cswm): a .npy observation for every episode, or walk:T, each episode's own goal T "
                        "random actions from its start; prints the fraction of goals reached")
    p.set_defaults(fn=_eval)

    p = sub.add_parser("dream", help="real vs imagined futures from an open-loop rollout")
    p.add_argument("run_dir")
    p.add_argument("--out", help="output file (.gif for pixels, .png for vectors)")
    p.add_argument("--context", type=_at_least(1), default=5, help="observed steps before imagining (at least 1)")
    p.add_argument("--horizon", type=_at_least(1), default=45, help="imagined steps (at least 1)")
    p.add_argument("--device")
    p.set_defaults(fn=_dream)

    p = sub.add_parser("play", help="play a trained model's dream on a local web page, the real environment beside it")
    p.add_argument("run_dir")
    p.add_argument("--port", type=_at_least(0), default=0, help="port to serve on (default 0: a free one, printed)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    p.add_argument("--seed", type=_at_least(0), default=0, help="seed of the first dream (each reset takes the next)")
    p.add_argument("--max-steps", type=_at_least(1), default=1000, help="steps after which a dream ends")
    p.add_argument("--device")
    p.set_defaults(fn=_play)

    p = sub.add_parser("analyze", help="what a run's world model learned: open-loop, spectral, Fourier and "
                                       "random-projection analyses in one HTML report")
    p.add_argument("run_dir")
    p.add_argument("run_dir_b", nargs="?", help="a second run to put side by side with the first")
    p.add_argument("--checkpoint", type=_at_least(0), metavar="STEP", help="analyse this checkpoint (default: newest)")
    p.add_argument("--episodes", type=_at_least(1), default=4, help="real episodes to play (at least 1); dream "
                                                                   "fidelity plays as many per policy on each side")
    p.add_argument("--only", metavar="NAMES", help="comma-separated analyses: open_loop, spectral, fourier, "
                                                  "projection, checkpoints, fidelity (default: all)")
    p.add_argument("--out", help="output folder (default: RUN_DIR/analysis)")
    p.add_argument("--device")
    p.set_defaults(fn=_analyze)

    p = sub.add_parser("merge", help="merge runs fine-tuned from one base into a new run folder (average, task "
                                     "arithmetic, TIES); the coefficient is chosen on held-out replay")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders to merge (at least two)")
    p.add_argument("--method", choices=("average", "task-arithmetic", "ties"), required=True)
    p.add_argument("--base", metavar="RUN_BASE", help="the run the others were fine-tuned from (needed by "
                                                       "task-arithmetic and ties)")
    p.add_argument("--out", required=True, metavar="RUN", help="the new run folder (must not exist)")
    coef = p.add_mutually_exclusive_group()
    coef.add_argument("--coef", type=float, help="the coefficient lambda (default: chosen from --coef-grid)")
    coef.add_argument("--coef-grid", type=float, nargs="+", metavar="C",
                      help="coefficients to choose from on held-out replay (default: 0.05 .. 1 for "
                           "task-arithmetic, 0.1 .. 2 for ties)")
    p.add_argument("--trim", type=float, default=0.2, help="ties: fraction of each task vector kept, by "
                                                           "magnitude (default 0.2)")
    p.add_argument("--holdout-episodes", type=_at_least(1), default=2,
                   help="the newest episodes of each run's replay the coefficient is chosen on (default 2)")
    p.add_argument("--device")
    p.set_defaults(fn=_merge)

    p = sub.add_parser("bench", help="run a claim of the benchmark suite (benchmarks/suite.yaml) into runs/bench/ID")
    p.add_argument("claim", nargs="?", help="the claim's id (without one: list the claims)")
    p.add_argument("--seeds", type=_at_least(0), nargs="+", help="seeds to run (default: the claim's)")
    p.add_argument("--root", default="runs/bench", help="folder of the claims' run folders (default: runs/bench)")
    p.add_argument("--suite", help="suite file (default: benchmarks/suite.yaml here or above)")
    p.add_argument("--list", action="store_true", help="list the claims")
    p.set_defaults(fn=_bench)

    p = sub.add_parser("config", help="print the resolved config of an agent and preset")
    p.add_argument("agent", nargs="?", default=DEFAULT_AGENT)
    p.add_argument("--preset")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(fn=_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # argparse gives positionals one chance to match, so `train pets --preset tiny key=value` would
    # leave key=value unrecognised: collect such leftovers as overrides here.
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    args.argv = argv
    stray = [e for e in extra if e.startswith("-") or "=" not in e or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        errors = _user_errors()
        return args.fn(args)
    except KeyboardInterrupt:
        print("stopped; re-run the same command to resume", file=sys.stderr)
        return 130
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" writing {e.filename}" if e.filename else ""
        print(f"error: the disk is full ({e.strerror}{where}); everything saved before stays loadable: free some "
              "space and re-run the same command to resume", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
