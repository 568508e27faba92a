"""The page of ``reverie play``: one HTML document with its style and script inline (no network requests).

The empty inline icon keeps the browser from asking for ``/favicon.ico`` (a 404 in its console otherwise).
The script asks the server (:mod:`reverie.play.server`) for views and draws them: image observations as
the PNGs it sends, scaled up without smoothing; vector observations as a small plot per dimension over
the episode (the dream solid, the real environment dashed), drawn on canvases from the JSON numbers.

Keys: digits 0-9 pick those actions (or latent codes); the arrow keys pick actions 0-3 (left, right, up,
down) when there are that many and they are the environment's; with continuous actions, Space or Enter
steps with the sliders' values; R resets with the next seed, and Enter in the seed box resets with the seed
typed there.
"""

from __future__ import annotations

import html
import json
from typing import Any, Mapping

__all__ = ["render_page"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.2em; background: #fafafa; color: #222; }
h1 { font-size: 1.2em; margin: 0 0 .6em 0; }
#sides { display: flex; gap: 2em; flex-wrap: wrap; }
.side h2 { font-size: 1em; margin: .2em 0; }
.side img { width: 256px; image-rendering: pixelated; border: 1px solid #999; background: #000; }
.stats { font-variant-numeric: tabular-nums; margin: .3em 0; }
.ended { color: #b00; font-weight: bold; }
#controls { margin: 1em 0; }
#controls button { min-width: 3em; margin: 0 .3em .3em 0; padding: .4em .8em; }
#sliders label { display: block; margin: .2em 0; }
#error { color: #b00; min-height: 1.2em; }
canvas { border: 1px solid #ccc; background: #fff; margin: 2px; }
.legend { font-size: .85em; color: #555; }
"""

_SCRIPT = """
const S = JSON.parse(document.getElementById('settings').textContent);
const history = {dream: {}, real: {}};
let busy = false;

function fmt(x) { return x === null || x === undefined ? '-' : Number(x).toFixed(3); }

async function call(path, body) {
  if (busy) return; busy = true;
  try {
    const r = await fetch(path, {method: body === undefined ? 'GET' : 'POST',
      headers: {'Content-Type': 'application/json'}, body: body === undefined ? undefined : JSON.stringify(body)});
    const out = await r.json();
    if (!r.ok) { document.getElementById('error').textContent = out.error; return; }
    document.getElementById('error').textContent = '';
    show(out);
  } finally { busy = false; }
}

function remember(name, side, step) {
  if (!side) return;
  for (const [key, values] of Object.entries(side.vectors)) {
    if (step === 0) history[name][key] = [];
    history[name][key] = (history[name][key] || []).concat([values]);
  }
}

function drawSide(name, side, step) {
  const box = document.getElementById(name);
  if (!box) return;     // a page without the real environment has no box for it
  if (!side) { box.style.display = 'none'; return; }
  box.style.display = '';
  const pics = box.querySelector('.images');
  pics.innerHTML = '';
  for (const [key, png] of Object.entries(side.images)) {
    const img = document.createElement('img');
    img.src = 'data:image/png;base64,' + png; img.alt = name + ' ' + key; img.title = key;
    pics.appendChild(img);
  }
  const parts = ['step ' + step];
  if (side.reward !== null) parts.push('reward ' + fmt(side.reward));
  if (side.cont !== null) parts.push('continue ' + fmt(side.cont));
  if (side.total !== null) parts.push('total ' + fmt(side.total));
  box.querySelector('.stats').textContent = parts.join(' | ');
  box.querySelector('.end').textContent = side.ended ? 'episode over: reset for a new one' : '';
}

function plotVectors() {
  const area = document.getElementById('plots');
  area.innerHTML = '';
  for (const key of Object.keys(history.dream)) {
    const dream = history.dream[key], real = history.real[key] || [];
    const dims = dream.length ? dream[0].length : 0;
    for (let d = 0; d < dims; d++) {
      const c = document.createElement('canvas'); c.width = 220; c.height = 110;
      c.title = key + '[' + d + ']'; area.appendChild(c);
      const g = c.getContext('2d');
      const series = [dream.map(v => v[d]), real.map(v => v[d])];
      const all = series[0].concat(series[1]);
      let lo = Math.min(...all), hi = Math.max(...all);
      if (hi - lo < 1e-6) { lo -= 1; hi += 1; }
      const n = Math.max(series[0].length, series[1].length, 2);
      const x = i => 4 + (c.width - 8) * i / (n - 1), y = v => c.height - 14 - (c.height - 22) * (v - lo) / (hi - lo);
      g.font = '10px sans-serif'; g.fillStyle = '#555';
      g.fillText(key + '[' + d + ']  ' + lo.toFixed(2) + ' .. ' + hi.toFixed(2), 4, c.height - 2);
      [['#1f77b4', []], ['#ff7f0e', [4, 3]]].forEach(([color, dash], s) => {
        if (!series[s].length) return;
        g.strokeStyle = color; g.setLineDash(dash); g.beginPath();
        series[s].forEach((v, i) => i ? g.lineTo(x(i), y(v)) : g.moveTo(x(i), y(v)));
        g.stroke();
      });
    }
  }
}

function show(view) {
  if (view.seed !== undefined) document.getElementById('seed').value = view.seed;
  remember('dream', view.dream, view.step); remember('real', view.real, view.step);
  drawSide('dream', view.dream, view.step); drawSide('real', view.real, view.step);
  plotVectors();
}

function act(action) { call('/step', {action: action}); }
function sliders() { return [...document.querySelectorAll('#sliders input')].map(s => Number(s.value)); }
function reset(seed) { call('/reset', seed === undefined ? {} : {seed: seed}); }

function build() {
  document.querySelectorAll('#buttons button[data-action]').forEach(b => {
    b.onclick = () => act(Number(b.dataset.action));
  });
  document.querySelectorAll('#sliders input').forEach(input => {
    const out = input.parentElement.querySelector('output');
    input.oninput = () => { out.textContent = Number(input.value).toFixed(2); };
  });
  const step = document.getElementById('slide-step');
  if (step) step.onclick = () => act(sliders());
}

document.addEventListener('keydown', e => {
  if (e.target.tagName === 'INPUT' && e.target.type !== 'range') return;
  const arrows = S.labels ? {} : {ArrowLeft: 0, ArrowRight: 1, ArrowUp: 2, ArrowDown: 3};
  if (e.key === 'r' || e.key === 'R') { reset(); return; }
  if (S.actions !== null) {
    let a = /^[0-9]$/.test(e.key) ? Number(e.key) : arrows[e.key];
    if (a !== undefined && a < S.actions) { e.preventDefault(); act(a); }
  } else if (e.key === ' ' || e.key === 'Enter') { e.preventDefault(); act(sliders()); }
});

document.getElementById('seed').addEventListener('keydown', e => {
  if (e.key === 'Enter' && e.target.value !== '') reset(Number(e.target.value));
});
build();
call('/view');
"""


def controls(actions: int | None, dims: int, labels: list[str] | None = None) -> str:
    """The action buttons (discrete actions: named by ``labels`` where given, else by their index with the arrow
    keys' symbols on the first four of at most four) or a slider per dimension and a step button (continuous
    actions)."""
    if actions is not None and labels is not None:
        return "".join(f"<button data-action={a}>{html.escape(labels[a])}</button>"
                       for a in range(actions)) + "</div><div id=sliders>"
    if actions is not None:
        arrows = ["\u2190", "\u2192", "\u2191", "\u2193"] if actions <= 4 else []
        return "".join(f"<button data-action={a}>{a}{' ' + arrows[a] if a < len(arrows) else ''}</button>"
                       for a in range(actions)) + "</div><div id=sliders>"
    sliders = "".join(f"<label>action[{d}] <input type=range min=-1 max=1 step=0.05 value=0> <output>0.00</output>"
                      "</label>" for d in range(dims))
    return f"<button id=slide-step>step</button></div><div id=sliders>{sliders}"


def render_page(settings: Mapping[str, Any]) -> str:
    """The page for ``settings``: ``actions`` (the number of discrete actions, or None), ``dims`` (entries
    of a continuous action), ``labels`` (the buttons' names, or None for action indices), ``title``, whether
    the model declares ``reward`` and ``cont``, and whether the ``real`` environment is shown."""
    data = json.dumps(dict(settings)).replace("</", "<\\/")   # cannot close the script element
    title = html.escape(str(settings.get("title", "reverie play")))
    shown = ", ".join(name for name in ("reward", "cont") if settings.get(name)) or "no reward or continuation"
    real = ("<div class=side id=real><h2>the real environment (same actions)</h2><div class=images></div>"
            "<div class=stats></div><div class='end ended'></div></div>")
    return f"""<!DOCTYPE html>
<html lang=en><head><meta charset=utf-8><title>{title}</title>
<link rel=icon href="data:,"><style>{_STYLE}</style></head>
<body>
<h1>{title}: play the dream</h1>
<div id=sides>
<div class=side id=dream><h2>the dream (the model predicts {html.escape(shown)})</h2><div class=images></div>
<div class=stats></div><div class='end ended'></div></div>
{real if settings.get("real") else ""}
</div>
<div id=controls><div id=buttons>{controls(settings.get("actions"), int(settings.get("dims", 0)), settings.get("labels"))}</div>
<button id=reset onclick="reset()">reset (next seed)</button> seed <input id=seed type=number min=0
style="width:5em" title="type a seed and press Enter for that dream"></div>
<div id=error></div>
<div id=plots></div>
<div class=legend>vector observations: the dream solid (blue), the real environment dashed (orange)</div>
<script type="application/json" id=settings>{data}</script>
<script>{_SCRIPT}</script>
</body></html>
"""
