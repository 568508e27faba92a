"""Writing what ``reverie analyze`` found: ``analysis.json``, the figures, and one self-contained HTML page.

The shell's writing half (:mod:`.run` is its reading half).

The page embeds every figure as a base64 ``data:`` URI and carries its CSS
inline: no scripts, no links to anything outside the file, so it opens the
same offline, attached to an e-mail or in a browser that blocks the network.
Every file is written atomically (temp file, then rename).
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from reverie.analysis.report.figures import render
from reverie.analysis.report.run import ANALYSES, RunAnalysis, Section
from reverie.io import atomic_write_bytes

__all__ = ["json_ready", "write_compare", "write_report"]

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0; color: #1d232a;
       background: #f6f7f9; line-height: 1.45; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 48px; }
h1 { font-size: 1.6em; margin: 0.2em 0 0.4em; }
h2 { font-size: 1.25em; margin: 0 0 0.4em; }
section { background: #fff; border: 1px solid #dde1e6; border-radius: 8px; padding: 18px 22px; margin: 18px 0; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 0.92em; }
td, th { border-bottom: 1px solid #e8ebef; padding: 4px 14px 4px 0; text-align: left; vertical-align: top; }
th { color: #58606b; font-weight: 600; }
td.num { font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; display: block; margin: 8px 0; }
.na { color: #8a5a00; background: #fff8e6; border-left: 4px solid #f0b400; padding: 8px 12px; }
.meta td:first-child { color: #58606b; padding-right: 24px; }
.headline { font-size: 1.08em; background: #eef4ff; border-left: 4px solid #2856a3; padding: 10px 14px; }
.cols { display: grid; grid-template-columns: 1fr 1fr; gap: 20px; }
.cols > div { min-width: 0; }
nav a { margin-right: 14px; color: #2856a3; }
footer { color: #6b7280; font-size: 0.85em; margin-top: 24px; }
"""


def json_ready(x: Any) -> Any:
    """``x`` with numpy values made plain and every NaN or infinity made None (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): json_ready(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_ready(v) for v in x]
    if isinstance(x, np.ndarray):
        return json_ready(x.tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer, int)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, (np.complexfloating, complex)):
        return [json_ready(x.real), json_ready(x.imag)]
    if isinstance(x, Path):
        return str(x)
    return x


def analysis_dict(a: RunAnalysis) -> dict[str, Any]:
    """Every number of one run's analysis, JSON-ready."""
    return json_ready({
        "run_dir": str(a.run_dir), "agent": a.agent, "env": a.env, "obs": a.obs, "checkpoint_step": a.step,
        "dt_seconds": a.dt, "dt_source": a.timing.source, "headline": a.headline, "episodes": a.episodes,
        "episode_lengths": a.episode_lengths,
        "episode_returns": a.episode_returns, "seconds": a.seconds,
        "sections": {name: {"title": s.title, "applies": s.applies, "text": s.text, "facts": s.facts,
                            "data": s.data} for name, s in a.sections.items()},
    })


def _dump(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, indent=1, allow_nan=False) + "\n").encode("utf-8")


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _facts(facts: dict[str, str]) -> str:
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td class=num>{html.escape(str(v))}</td></tr>"
                   for k, v in facts.items())
    return f"<table>{rows}</table>" if rows else ""


def _figures(s: Section, pngs: dict[int, bytes] | None = None) -> str:
    pngs = pngs or {}
    return "".join(_img(pngs.get(id(fig)) or render(fig, "png"), f"{s.title}: {name}")
                   for name, fig in s.figures.items())


def _section_body(s: Section, pngs: dict[int, bytes] | None = None) -> str:
    if not s.applies:
        return f'<p class="na">{html.escape(s.text)}</p>'
    figures = _figures(s, pngs)
    return f"<p>{html.escape(s.text)}</p>{_facts(s.facts)}{figures}"


def _meta(a: RunAnalysis) -> dict[str, str]:
    dt = f"{a.dt:g} s per step ({a.timing.source})" if a.dt is not None else "unknown (times in steps)"
    lengths = ", ".join(map(str, a.episode_lengths))
    returns = ", ".join(f"{r:.1f}" for r in a.episode_returns)
    return {"run folder": str(a.run_dir), "agent": a.agent, "environment": f"{a.env} ({a.obs})",
            "checkpoint step": str(a.step), "time step": dt,
            "episodes (greedy, own policy)": f"{a.episodes}: lengths {lengths}; returns {returns}"}


def _headline(a: RunAnalysis) -> str:
    return f'<p class="headline">{html.escape(a.headline["text"])}</p>' if a.headline else ""


def _page(title: str, body: str) -> bytes:
    return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><main>{body}"
            "<footer>Written by reverie analyze. Every number is also in the JSON file beside this page.</footer>"
            "</main></body></html>\n").encode()


def _nav(names: Iterable[str]) -> str:
    return "<nav>" + "".join(f'<a href="#{n}">{html.escape(n.replace("_", " "))}</a>' for n in names) + "</nav>"


def write_report(a: RunAnalysis, out_dir: str | Path, svg: bool = True) -> dict[str, Path]:
    """Write ``analysis.json``, every figure as ``<name>.png`` (and ``.svg``), and ``report.html`` into
    ``out_dir``; returns the paths by name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "analysis.json", "html": out / "report.html"}
    atomic_write_bytes(paths["json"], _dump(analysis_dict(a)))
    pngs: dict[int, bytes] = {}
    for s in a.sections.values():
        for name, fig in s.figures.items():
            for fmt in ("png", "svg") if svg else ("png",):
                data = render(fig, fmt)
                atomic_write_bytes(out / f"{name}.{fmt}", data)
                paths[f"{name}.{fmt}"] = out / f"{name}.{fmt}"
                if fmt == "png":
                    pngs[id(fig)] = data
    names = [n for n in ANALYSES if n in a.sections]
    body = (f"<h1>What the world model of {html.escape(a.run_dir.name)} learned</h1>"
            f'{_headline(a)}<table class="meta">{_rows(_meta(a))}</table>{_nav(names)}')
    for n in names:
        s = a.sections[n]
        body += f'<section id="{n}"><h2>{html.escape(s.title)}</h2>{_section_body(s, pngs)}</section>'
    atomic_write_bytes(paths["html"], _page(f"reverie analyze: {a.run_dir.name}", body))
    return paths


def _rows(d: dict[str, str]) -> str:
    return "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in d.items())


def write_compare(a: RunAnalysis, b: RunAnalysis, out_dir: str | Path) -> dict[str, Path]:
    """Two runs side by side: ``compare-<B's folder name>.html`` and ``.json`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"compare-{b.run_dir.name}"
    paths = {"json": out / f"{stem}.json", "html": out / f"{stem}.html"}
    atomic_write_bytes(paths["json"], _dump({"a": analysis_dict(a), "b": analysis_dict(b)}))
    label_a, label_b = f"A: {a.run_dir.name}", f"B: {b.run_dir.name}"
    if a.run_dir.name == b.run_dir.name:
        label_a, label_b = f"A: {a.run_dir}", f"B: {b.run_dir}"
    ma, mb = ({**_meta(r), "headline": r.headline["text"] if r.headline else "not run"} for r in (a, b))
    head = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(ma[k])}</td><td>{html.escape(mb[k])}</td></tr>"
                   for k in ma)
    names = [n for n in ANALYSES if n in a.sections or n in b.sections]
    body = (f"<h1>{html.escape(a.run_dir.name)} and {html.escape(b.run_dir.name)}, side by side</h1>"
            f"<table class=meta><tr><th></th><th>{html.escape(label_a)}</th><th>{html.escape(label_b)}</th></tr>"
            f"{head}</table>{_nav(names)}")
    for n in names:
        sa, sb = a.sections.get(n), b.sections.get(n)
        title = (a.sections[n] if n in a.sections else b.sections[n]).title
        labels = list(dict.fromkeys([*(sa.facts if sa else {}), *(sb.facts if sb else {})]))
        table = ""
        if labels:
            def cell(s: Section | None, k: str) -> str:
                return f"<td class=num>{html.escape(str(s.facts.get(k, '-') if s else '-'))}</td>"

            rows = "".join(f"<tr><th>{html.escape(k)}</th>{cell(sa, k)}{cell(sb, k)}</tr>" for k in labels)
            table = (f"<table><tr><th></th><th>{html.escape(label_a)}</th><th>{html.escape(label_b)}</th></tr>"
                     f"{rows}</table>")
        cols = "".join(f"<div><h3>{html.escape(lab)}</h3>{_section_body_nofacts(s)}</div>"
                       for lab, s in ((label_a, sa), (label_b, sb)))
        body += f'<section id="{n}"><h2>{html.escape(title)}</h2>{table}<div class=cols>{cols}</div></section>'
    atomic_write_bytes(paths["html"], _page(f"reverie analyze: {a.run_dir.name} vs {b.run_dir.name}", body))
    return paths


def _section_body_nofacts(s: Section | None) -> str:
    if s is None:
        return '<p class="na">Not run.</p>'
    if not s.applies:
        return f'<p class="na">{html.escape(s.text)}</p>'
    return f"<p>{html.escape(s.text)}</p>{_figures(s)}"
