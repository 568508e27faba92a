"""A claim's measurement: the script its suite entry names, run on a finished seed's run folder, and the figures
read back from the JSON file it writes there.

``reverie bench`` calls :func:`run_measure` after a seed's training has finished; ``benchmarks/report.py``
calls :func:`read_measure` when it collects run folders. The script runs in a child process with this
interpreter and environment, so it imports the same reverie; it writes to a temporary name that becomes
``output`` only when the script succeeds, so a killed measurement leaves no half-written figures behind; ``output.from`` names the checkpoint it was
made on, so a run trained further is measured again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from reverie.suite import Claim, SuiteError

__all__ = ["MeasureError", "measure_is_fresh", "read_measure", "run_measure"]


class MeasureError(SuiteError):
    """A claim's measurement that could not be made or read (said in one sentence)."""


def _output(claim: Claim, run_dir: Path) -> Path:
    assert claim.measure is not None
    return Path(run_dir) / claim.measure.output


def _newest_checkpoint(run_dir: Path) -> str:
    markers = sorted(p.name for p in (run_dir / "checkpoints").glob("ckpt-*.json"))
    return markers[-1] if markers else ""


def measure_is_fresh(claim: Claim, run_dir: str | os.PathLike) -> bool:
    """Whether the run folder's measurement exists and was made on its newest checkpoint (recorded beside the
    output as ``OUTPUT.from``)."""
    run_dir = Path(run_dir)
    out = _output(claim, run_dir)
    source = out.with_name(out.name + ".from")
    return out.is_file() and source.is_file() and source.read_text().strip() == _newest_checkpoint(run_dir)


def run_measure(claim: Claim, run_dir: str | os.PathLike, suite_file: str | os.PathLike) -> dict[str, float]:
    """Run the claim's measure script on ``run_dir`` (unless its output is fresh) and return its figures."""
    m = claim.measure
    if m is None:
        raise MeasureError(f"claim '{claim.id}' has no measure")
    run_dir = Path(run_dir)
    if not measure_is_fresh(claim, run_dir):
        script = Path(suite_file).resolve().parent.parent / m.script
        if not script.is_file():
            raise MeasureError(f"claim '{claim.id}': its measure script {m.script} does not exist beside the suite file")
        out = _output(claim, run_dir)
        part = out.with_name(out.name + ".part")
        args = [a.replace("{run}", str(run_dir)).replace("{out}", str(part)) for a in m.args]
        code = subprocess.run([sys.executable, str(script), *args], check=False).returncode
        if code != 0 or not part.is_file():
            part.unlink(missing_ok=True)
            raise MeasureError(f"claim '{claim.id}': {m.script} on {run_dir} exited with status {code}"
                               + ("" if code else " without writing its output") + " (its messages are above)")
        os.replace(part, out)
        out.with_name(out.name + ".from").write_text(_newest_checkpoint(run_dir) + "\n")
    figures = read_measure(claim, run_dir)
    assert figures is not None, "the output was just written"
    return figures


def _dig(data: object, dotted: str) -> object:
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            raise KeyError(dotted)
        data = data[part]
    return data


def read_measure(claim: Claim, run_dir: str | os.PathLike) -> dict[str, float] | None:
    """The claim's figures from the run folder's output, each times ``scale``; None if it was not measured."""
    m = claim.measure
    if m is None:
        raise MeasureError(f"claim '{claim.id}' has no measure")
    out = _output(claim, Path(run_dir))
    if not out.is_file():
        return None
    try:
        data = json.loads(out.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise MeasureError(f"{out} is unreadable ({e}); delete it and run the claim again to measure anew") from None
    figures = {}
    for name, dotted in m.metrics.items():
        dotted = dotted.replace("{name}", Path(run_dir).name)   # scripts that key their figures by run folder
        try:
            value = _dig(data, dotted)
        except KeyError:
            raise MeasureError(f"{out} has no figure {dotted!r} (claim '{claim.id}', metric {name!r})") from None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise MeasureError(f"{out}'s {dotted!r} is {value!r}, not a number (claim '{claim.id}')")
        figures[name] = float(value) * m.scale
    return figures
