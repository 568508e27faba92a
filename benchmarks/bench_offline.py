"""Offline: an agent trained only on a dataset exported from another run, against that run's own return.

    python benchmarks/bench_offline.py RUN_DIR OUT_DIR [--updates N] [--eval-episodes N]

Exports RUN_DIR's replay as a Minari dataset (OUT_DIR/datasets), trains the same agent with the same
config from that dataset alone for N updates (default: as many as the run made) in OUT_DIR/offline,
and prints one JSON line: the dataset's size, the run's final evaluation return and the offline
agent's, and their ratio. Evaluation uses the dataset's environment and the run's eval settings.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from reverie.agents.registry import agent_entry
from reverie.config import load_config
from reverie.training.offline import export_run
from reverie.training.session import train
from reverie.training.run_dir import RunFolder, drop_retired


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--updates", type=int)
    parser.add_argument("--eval-episodes", type=int)
    args = parser.parse_args()
    folder = RunFolder.existing(args.run_dir)
    name = folder.read_meta()["agent"]
    summary = json.loads((folder.path / "summary.json").read_text())
    cfg = load_config(agent_entry(name).config_cls, folder.config, migrate=drop_retired)
    updates = args.updates or int(summary["updates"])
    episodes = args.eval_episodes or cfg.run.eval_episodes
    cfg = replace(cfg, run=replace(cfg.run, steps=updates, eval_every=max(updates // 2, 1), eval_episodes=episodes,
                                   checkpoint_every=max(updates // 2, 1), log_every=max(updates // 10, 1)))
    out = Path(args.out_dir)
    dataset = out / "datasets" / "bench" / "run-v0"
    info = export_run(folder.path, "bench/run-v0", out / "datasets") if not dataset.exists() else {}
    started = time.perf_counter()
    result = train(name, cfg, out / "offline", dataset=dataset)
    print(json.dumps({
        "run": str(folder.path), "agent": name, "dataset_transitions": info.get("transitions"),
        "dataset_episodes": info.get("episodes"), "run_env_steps": summary["env_steps"],
        "run_updates": summary["updates"], "run_return": summary["eval/return"],
        "offline_updates": result.counters.updates, "offline_return": result.eval_return,
        "offline_return_std": result.eval_return_std, "offline_wall_s": round(time.perf_counter() - started, 1),
    }))


if __name__ == "__main__":
    main()
