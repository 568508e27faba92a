"""The web layer of ``reverie play``: a Flask app over one :class:`~reverie.play.session.PlaySession`.

Routes (all JSON but the page):

- ``GET /``: the page (:mod:`reverie.play.page`, everything inline, no network requests);
- ``GET /view``: what the page shows now;
- ``POST /step`` ``{"action": 2}`` or ``{"action": [0.5, -1.0]}``: one step of the dream (and the real env);
- ``POST /reset`` ``{"seed": 3}`` (optional; default: the next seed): a new dream.

A view is ``{"step", "seed", "dream": SIDE, "real": SIDE | null}``, each side ``{"images": {key: base64 PNG},
"vectors": {key: [numbers]}, "reward", "cont", "total", "ended"}``. A bad request is a 400 with
``{"error": one sentence}``. Requests are served one at a time (a lock around the session).
"""

from __future__ import annotations

import base64
import io
import json
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
from flask import Flask, Response, jsonify, request
from PIL import Image
from werkzeug.serving import make_server

from reverie.analysis.plots import channels_as_rgb
from reverie.envs.spaces import EnvError
from reverie.play.page import render_page
from reverie.play.session import PlayError, PlaySession, Side, View

__all__ = ["create_app", "png_bytes", "serve", "view_json"]


def png_bytes(image: np.ndarray) -> bytes:
    """uint8 ``[H, W, C]`` as PNG bytes (``C`` of 3 as it is, 1 as grey, others as object channels)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(channels_as_rgb(image))).save(buffer, format="PNG")
    return buffer.getvalue()


def side_json(side: Side | None, images: set[str]) -> dict[str, Any] | None:
    if side is None:
        return None
    return {"images": {k: base64.b64encode(png_bytes(v)).decode("ascii") for k, v in side.obs.items() if k in images},
            "vectors": {k: np.asarray(v, np.float64).reshape(-1).tolist() for k, v in side.obs.items()
                        if k not in images},
            "reward": side.reward, "cont": side.cont, "total": side.total, "ended": side.ended}


def view_json(view: View, images: set[str]) -> dict[str, Any]:
    """The JSON of ``view``; ``images``: the observation keys shown as pictures."""
    return {"step": view.step, "dream": side_json(view.dream, images), "real": side_json(view.real, images)}


def create_app(session: PlaySession, seed: int = 0, title: str = "reverie play") -> Flask:
    """The app serving ``session``, reset with ``seed`` now (each reset without a seed takes the next one)."""
    images = {k for k, s in session.model.obs_spec.items() if s.is_image}
    lock = threading.Lock()
    seeds = [seed]
    session.reset(seed)
    app = Flask("reverie.play")
    settings = {"actions": session.actions, "dims": session.action_dims, "title": title,
                "reward": session.reward is not None, "cont": session.cont is not None,
                "real": session.real, "labels": session.labels}

    def out(view: View) -> Response:
        return jsonify(view_json(view, images) | {"seed": seeds[0]})

    def bad(message: str) -> tuple[Response, int]:
        return jsonify({"error": message}), 400

    @app.get("/")
    def page() -> Response:
        return Response(render_page(settings), mimetype="text/html")

    @app.get("/view")
    def current() -> Response:
        with lock:
            return out(session.view)

    @app.post("/step")
    def step() -> Response | tuple[Response, int]:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or "action" not in body:
            return bad('POST /step needs a JSON body {"action": ...}')
        with lock:
            try:
                return out(session.step(body["action"]))
            except PlayError as e:
                return bad(str(e))

    @app.post("/reset")
    def reset() -> Response | tuple[Response, int]:
        body = request.get_json(silent=True) or {}
        wanted = body.get("seed") if isinstance(body, dict) else None
        if wanted is not None and (not isinstance(wanted, int) or isinstance(wanted, bool) or wanted < 0):
            return bad(f"the seed must be a whole number of at least 0, got {json.dumps(wanted)}")
        with lock:
            seeds[0] = seeds[0] + 1 if wanted is None else wanted
            return out(session.reset(seeds[0]))

    return app


def open_session(run_dir: str | Path, device: str | None = None, max_steps: int = 1000,
                 warn: Callable[[str], None] = print) -> PlaySession:
    """A session of the run in ``run_dir``: its model, started from (and beside) its environment, or from the
    first frames of its stored episodes when the environment cannot be made here."""
    from reverie import api
    from reverie.replay import Replay

    run = api.load(run_dir, device=device)
    model = run.model
    PlaySession.check_model(model)
    try:
        run.env(seed=0).close()
        return PlaySession(model, make_env=run.env, max_steps=max_steps, device=run.agent.device)
    except EnvError as e:
        warn(f"the real environment cannot be made here ({e}); the dream starts from stored first frames")
    cfg = run.config.run
    replay = Replay(Path(run_dir) / "replay", capacity=cfg.replay_capacity, seq_len=1, chunk_size=cfg.replay_chunk)
    firsts: dict[str, list[np.ndarray]] = {k: [] for k in model.obs_spec}
    for chunk in replay.chunks():
        rows = np.flatnonzero(chunk["is_first"])
        for k in firsts:
            firsts[k].extend(chunk[k][rows])
    if not firsts or not next(iter(firsts.values())):
        raise PlayError(f"{run_dir} has neither an environment that can be made here nor stored episodes to "
                        "start a dream from")
    starts = {k: np.stack(v) for k, v in firsts.items()}
    return PlaySession(model, starts=starts, max_steps=max_steps, device=run.agent.device)


def serve(session: PlaySession, host: str = "127.0.0.1", port: int = 0, seed: int = 0, title: str = "reverie play",
          say: Callable[[str], None] = print) -> None:
    """Serve ``session`` until interrupted; says the address (with the port chosen when ``port`` is 0) first."""
    # one request at a time: the session is one dream (and one real environment) stepped in order
    server = make_server(host, port, create_app(session, seed, title), threaded=False)
    say(f"playing {title} at http://{host}:{server.server_port}/ (port {server.server_port}); Ctrl-C stops")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        session.close()
