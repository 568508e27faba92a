"""The benchmark suite: one entry per claim the project makes, read from one YAML file.

``benchmarks/suite.yaml`` names every learning claim: which agent on which environment with which
preset and overrides, for how many environment steps, on which seeds, evaluated over how many
episodes, the published anchor it is set beside (value, source, seeds, model size) and the aim a
result must meet. ``reverie bench ID`` runs an entry's seeds into ``runs/bench/ID/s<seed>`` (each an
ordinary, resumable run folder); ``benchmarks/report.py`` turns those folders into the committed
CSVs and the results page. This module only reads and checks the file and turns an entry into the
arguments of a training run; it runs nothing.

An entry::

    - id: dreamer-cartpole-quickstart      # letters, digits and '-'
      title: The quick start               # one line shown on the results page
      agent: dreamer
      env: gym:CartPole-v1
      obs: pixels                          # default: the agent's own (run.obs of its preset)
      preset: default                      # default: the agent's default preset
      overrides: [run.eval_every=2500]     # config overrides, as on the command line
      steps: 15000                         # environment steps
      seeds: [0, 1, 2, 3, 4]               # default [0, 1, 2]
      eval_episodes: 10
      aim: {value: 475, over: every_seed}  # or over: mean (the mean over seeds of the final return)
      anchor: {value: 500, source: "...", seeds: 1, model: "..."}   # optional
      measure:                             # optional: the aim judges a script's figure, not the return
        script: benchmarks/cswm_eval.py    # relative to the folder above the suite file's
        args: ["{run}", "--json", "{out}"] # {run}: the seed's run folder, {out}: its output file
        output: ranking.json               # the JSON file the script writes into the run folder
        metrics: {hits1_k10: steps.10.hits_at_1}   # name -> dotted key of that JSON ({name}: the folder's name)
        score: hits1_k10                   # the metric the aim judges
        label: "Hits@1 after 10 steps"     # how the page names it
        scale: 100                         # shown and judged as value x scale (default 1)
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Aim", "Anchor", "Claim", "Measure", "SuiteError", "claim_overrides", "find_suite", "load_suite", "run_folder"]

DEFAULT_SEEDS = (0, 1, 2)
AIM_OVER = ("every_seed", "mean")


class SuiteError(ValueError):
    """A suite file or a request of it that cannot be used (said in one sentence)."""


@dataclass(frozen=True)
class Aim:
    """What a claim must show: the final evaluation return at least ``value`` for ``over`` (every seed, or
    the mean over seeds); ``below`` flips it (a cost that must stay under ``value``)."""

    value: float
    over: str = "every_seed"
    below: bool = False

    def holds(self, finals: list[float]) -> bool:
        if not finals:
            return False
        if self.over == "mean":
            finals = [sum(finals) / len(finals)]
        return all((f <= self.value) if self.below else (f >= self.value) for f in finals)

    def describe(self) -> str:
        sign = "<=" if self.below else ">="
        return f"{sign} {self.value:g} " + ("on every seed" if self.over == "every_seed" else "as the mean of seeds")


@dataclass(frozen=True)
class Anchor:
    """A published figure set beside a claim: its value, where it comes from, its seeds and model size,
    and optionally points of its published curve (``[[step, mean], ...]``)."""

    value: float
    source: str
    seeds: int | None = None
    model: str | None = None
    curve: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class Measure:
    """A figure of a claim that a script computes from a finished run folder (a ranking, a probe, a fidelity):
    ``python SCRIPT ARGS`` with ``{run}`` and ``{out}`` filled in writes the JSON file ``output`` in the run
    folder, and ``metrics`` name the figures to read from it by dotted keys; the aim judges ``score``."""

    script: str
    args: tuple[str, ...]
    output: str
    metrics: dict[str, str]
    score: str
    label: str
    scale: float = 1.0


@dataclass(frozen=True)
class Claim:
    """One entry of the suite (see the module docstring)."""

    id: str
    title: str
    agent: str
    env: str
    steps: int
    aim: Aim
    obs: str | None = None
    preset: str | None = None
    overrides: tuple[str, ...] = ()
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    eval_episodes: int = 10
    anchor: Anchor | None = None
    measure: Measure | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def command(self, seed: int) -> str:
        """The ``reverie train`` command line a seed of this claim runs."""
        parts = ["reverie", "train", self.agent, "--env", self.env, *(["--obs", self.obs] if self.obs else []),
                 "--steps", str(self.steps), "--seed", str(seed)]
        if self.preset:
            parts += ["--preset", self.preset]
        return " ".join(parts + [f"run.eval_episodes={self.eval_episodes}", *self.overrides])


_FIELDS = {"id", "title", "agent", "env", "obs", "preset", "overrides", "steps", "seeds", "eval_episodes", "aim",
           "anchor", "measure", "notes"}
_MEASURE_FIELDS = {"script", "args", "output", "metrics", "score", "label", "scale"}


def _measure(raw: Any, where: str) -> Measure:
    if not isinstance(raw, dict) or not {"script", "args", "output", "metrics", "score"} <= set(raw):
        raise SuiteError(f"{where}: measure must be a mapping with script, args, output, metrics and score")
    unknown = sorted(set(raw) - _MEASURE_FIELDS)
    if unknown:
        raise SuiteError(f"{where}: measure has unknown field '{unknown[0]}'; fields: {', '.join(sorted(_MEASURE_FIELDS))}")
    args = raw["args"]
    if not isinstance(args, list) or not any("{run}" in str(a) for a in args):
        raise SuiteError(f"{where}: measure.args must be a list naming the run folder as {{run}}")
    output = str(raw["output"])
    if Path(output).name != output or output in ("", ".", ".."):
        raise SuiteError(f"{where}: measure.output must be a file name in the run folder, got {output!r}")
    metrics = raw["metrics"]
    if not isinstance(metrics, dict) or not metrics:
        raise SuiteError(f"{where}: measure.metrics must map names to dotted keys of the output")
    if raw["score"] not in metrics:
        raise SuiteError(f"{where}: measure.score {raw['score']!r} is not one of its metrics ({', '.join(metrics)})")
    return Measure(str(raw["script"]), tuple(str(a) for a in args), output,
                   {str(k): str(v) for k, v in metrics.items()}, str(raw["score"]),
                   str(raw.get("label", raw["score"])), float(raw.get("scale", 1.0)))


def _claim(raw: Any, where: str) -> Claim:
    if not isinstance(raw, dict):
        raise SuiteError(f"{where} must be a mapping of claim fields, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(_FIELDS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; fields: {', '.join(sorted(_FIELDS))}"
        raise SuiteError(f"{where} has unknown field '{unknown[0]}'{hint}")
    missing = sorted({"id", "title", "agent", "env", "steps", "aim"} - set(raw))
    if missing:
        raise SuiteError(f"{where} lacks {', '.join(missing)}")
    cid = str(raw["id"])
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", cid):
        raise SuiteError(f"{where}: id {cid!r} must be lower-case letters, digits and '-'")
    where = f"claim '{cid}'"
    aim = raw["aim"]
    if not isinstance(aim, dict) or "value" not in aim:
        raise SuiteError(f"{where}: aim must be a mapping with a value, e.g. {{value: 475, over: every_seed}}")
    if aim.get("over", "every_seed") not in AIM_OVER:
        raise SuiteError(f"{where}: aim.over must be one of {', '.join(AIM_OVER)}, got {aim.get('over')!r}")
    anchor = raw.get("anchor")
    if anchor is not None and (not isinstance(anchor, dict) or not {"value", "source"} <= set(anchor)):
        raise SuiteError(f"{where}: anchor must be a mapping with a value and a source")
    seeds = tuple(int(s) for s in raw.get("seeds", DEFAULT_SEEDS))
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise SuiteError(f"{where}: seeds must be distinct whole numbers >= 0, got {list(seeds)}")
    steps = int(raw["steps"])
    if steps < 1:
        raise SuiteError(f"{where}: steps must be at least 1, got {steps}")
    return Claim(
        id=cid, title=str(raw["title"]), agent=str(raw["agent"]), env=str(raw["env"]), steps=steps,
        aim=Aim(float(aim["value"]), str(aim.get("over", "every_seed")), bool(aim.get("below", False))),
        obs=None if raw.get("obs") is None else str(raw["obs"]), preset=raw.get("preset"),
        overrides=tuple(str(o) for o in raw.get("overrides", ())), seeds=seeds,
        eval_episodes=int(raw.get("eval_episodes", 10)),
        anchor=None if anchor is None else Anchor(
            float(anchor["value"]), str(anchor["source"]), anchor.get("seeds"), anchor.get("model"),
            tuple((float(s), float(v)) for s, v in anchor.get("curve", ()))),
        measure=None if raw.get("measure") is None else _measure(raw["measure"], where),
        notes=str(raw.get("notes", "")).strip())


def load_suite(path: str | os.PathLike) -> dict[str, Claim]:
    """The claims of the suite file at ``path``, by id, in the file's order."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise SuiteError(f"cannot read the suite file {path} ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise SuiteError(f"the suite file {path} is not valid YAML ({e})") from None
    entries = data.get("claims") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise SuiteError(f"the suite file {path} must hold a mapping with a list 'claims'")
    claims: dict[str, Claim] = {}
    for i, raw in enumerate(entries):
        claim = _claim(raw, f"entry {i + 1} of {path}")
        if claim.id in claims:
            raise SuiteError(f"the suite file {path} names claim '{claim.id}' twice")
        claims[claim.id] = claim
    return claims


def find_suite(start: str | os.PathLike | None = None) -> Path:
    """``benchmarks/suite.yaml`` in ``start`` (default: the working directory) or a folder above it, else the
    one beside the source checkout reverie runs from."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents, Path(__file__).resolve().parents[2]):
        candidate = folder / "benchmarks" / "suite.yaml"
        if candidate.is_file():
            return candidate
    raise SuiteError("no benchmarks/suite.yaml in this folder or above it; run from a reverie checkout or pass "
                     "--suite PATH")


def pick(claims: dict[str, Claim], cid: str) -> Claim:
    """The claim ``cid``, or a one-sentence error naming the closest ids."""
    if cid not in claims:
        close = difflib.get_close_matches(cid, list(claims), n=3)
        hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else f"claims: {', '.join(claims)}"
        raise SuiteError(f"no claim '{cid}' in the suite; {hint}")
    return claims[cid]


def claim_overrides(claim: Claim, seed: int) -> list[str]:
    """The config overrides of one seed of ``claim`` (the claim's own last, so they win)."""
    return [f"run.env={claim.env}", *([f"run.obs={claim.obs}"] if claim.obs else []), f"run.steps={claim.steps}",
            f"run.seed={seed}", f"run.eval_episodes={claim.eval_episodes}", *claim.overrides]


def run_folder(root: str | os.PathLike, claim: Claim, seed: int) -> Path:
    """Where seed ``seed`` of ``claim`` runs: ``ROOT/ID/s<seed>``."""
    return Path(root) / claim.id / f"s{seed}"
