"""`reverie play`: the session imagines exactly the dream environment's frames, resets by its seed, steps the real
environment beside the dream; the Flask app serves the page and the steps; the command prints its port."""

import base64
import io
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reverie.agents.dreamer import Dreamer
from reverie.agents.pets import Pets
from reverie.agents.registry import resolve_config
from reverie.agents.tdmpc2 import TDMPC2
from reverie.envs import make_env
from reverie.envs.dream_env import DreamEnv
from reverie.models.base import CapabilityError
from reverie.models.mdn_rnn import MDNRNNConfig, WorldModelsModel
from reverie.models.vae import VAEConfig
from reverie.play import PlayError, PlaySession
from reverie.play.server import create_app
from reverie.specs import ActionSpec, ArraySpec

IMAGE = {"image": ArraySpec((16, 16, 3), np.dtype(np.uint8))}
DISCRETE, CONTINUOUS = ActionSpec(True, 3), ActionSpec(False, 2)


def endless_wm(act):
    """World Models' model whose dreams do not end by themselves (so a long comparison is possible)."""
    torch.manual_seed(0)
    model = WorldModelsModel(IMAGE, act, VAEConfig(z_size=4, depth=4), MDNRNNConfig(hidden=8, mixtures=3))
    with torch.no_grad():
        model.rnn.done_head.bias.fill_(-30.0)
    return model


def endless_dreamer(model):
    """A Dreamer model whose continuation head says 1 everywhere (its last layer: zero weights, bias 30)."""
    last = [m for m in getattr(model, "model", model).cont_head.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(30.0)
    return model


def dreamer_model(act=DISCRETE):
    return Dreamer(IMAGE, act, resolve_config("dreamer", "tiny", ["run.image_size=16"]), "cpu").model


def starts(k=5, seed=0):
    return {"image": np.random.default_rng(seed).integers(0, 256, (k, 16, 16, 3), dtype=np.uint8)}


def actions(act, n, seed=0):
    rng = np.random.default_rng(seed)
    if act.discrete:
        return [int(a) for a in rng.integers(0, act.size, n)]
    return [rng.uniform(-1, 1, act.size).astype(np.float32) for _ in range(n)]


@pytest.mark.parametrize("family", ["worldmodels", "dreamer"])
@pytest.mark.parametrize("act", [DISCRETE, CONTINUOUS], ids=["discrete", "continuous"])
def test_each_step_shows_exactly_the_frame_the_dream_env_imagines(family, act):
    model = endless_wm(act) if family == "worldmodels" else dreamer_model(act)
    session = PlaySession(model, starts=starts(), max_steps=50)
    env = DreamEnv(model, starts(), max_steps=50)
    view = session.reset(seed=4)
    obs, _ = env.reset(seed=4)
    np.testing.assert_array_equal(view.dream.obs["image"], obs)
    total = 0.0
    for t, a in enumerate(actions(act, 8), start=1):
        view = session.step(a)
        obs, reward, terminated, truncated, _ = env.step(a)
        total += reward
        assert view.step == t
        np.testing.assert_array_equal(view.dream.obs["image"], obs)
        assert view.dream.reward == pytest.approx(reward) and view.dream.total == pytest.approx(total)
        assert 0.0 <= view.dream.cont <= 1.0 and view.dream.ended == (terminated or truncated)
        if view.dream.ended:
            break
    if family == "worldmodels":     # the dream never ends by itself: all eight steps were compared
        assert view.step == 8 and not view.dream.ended and view.dream.cont > 0.99


def test_reset_is_deterministic_under_its_seed_and_a_step_after_the_end_is_refused():
    session = PlaySession(endless_wm(DISCRETE), starts=starts(), max_steps=3)

    def episode(seed):
        frames = [session.reset(seed).dream.obs["image"]]
        frames += [session.step(a).dream.obs["image"] for a in (0, 2, 1)]
        return np.stack(frames)

    a, b, c = episode(7), episode(7), episode(8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert session.view.dream.ended and session.view.step == 3      # cut at max_steps
    with pytest.raises(PlayError, match=r"^the dream ended at step 3; reset for a new one$"):
        session.step(0)


@pytest.mark.parametrize("bad", [3, -1, 1.5, "left", [0, 1], True])
def test_a_bad_discrete_action_is_one_sentence(bad):
    session = PlaySession(dreamer_model(), starts=starts())
    session.reset(0)
    with pytest.raises(PlayError, match=r"^the action must be a whole number in \[0, 3\), got "):
        session.step(bad)
    assert session.view.step == 0


def test_the_real_environment_starts_the_dream_and_takes_the_same_actions():
    env = make_env("gym:CartPole-v1", obs="state", seed=0)
    model = endless_dreamer(Dreamer(env.obs_spec, env.act_spec, resolve_config("dreamer", "tiny", []), "cpu").model)
    session = PlaySession(model, make_env=lambda seed: make_env("gym:CartPole-v1", obs="state", seed=seed))
    view = session.reset(seed=5)
    first = make_env("gym:CartPole-v1", obs="state", seed=5).reset()
    np.testing.assert_array_equal(view.real.obs["vector"], first["vector"])
    dream = DreamEnv(model, {"vector": first["vector"][None]}, observation="features")
    dream.reset(seed=5)
    twin = make_env("gym:CartPole-v1", obs="state", seed=5)
    twin.reset()
    for a in (0, 1, 1):
        view = session.step(a)
        expected = twin.step(a)
        dream.step(a)
        np.testing.assert_array_equal(view.real.obs["vector"], expected["vector"])
        with torch.no_grad():   # the dream's state is the one the dream env reaches from the same first frame
            decoded = model.decode(dream._state)["vector"][0].numpy()
        np.testing.assert_allclose(view.dream.obs["vector"], decoded)
        assert view.real.reward == 1.0 and view.real.cont is None
    assert view.real.total == 3.0


def test_a_model_without_cont_shows_its_reward_and_no_continuation():
    env = make_env("gym:Pendulum-v1", obs="state", seed=0)
    model = Pets(env.obs_spec, env.act_spec, resolve_config("pets", "tiny", []), "cpu").model
    session = PlaySession(model, starts={"vector": env.reset()["vector"][None]}, max_steps=4)
    session.reset(1)
    for _ in range(4):
        view = session.step([0.5])
    assert view.dream.cont is None and isinstance(view.dream.reward, float)
    assert view.dream.ended and view.step == 4 and view.real is None


def test_a_model_without_a_decoder_is_refused_in_one_sentence():
    env = make_env("gym:Pendulum-v1", obs="state", seed=0)
    model = TDMPC2(env.obs_spec, env.act_spec, resolve_config("tdmpc2", "tiny", []), "cpu").model
    with pytest.raises(CapabilityError, match=r"^playing a dream .* needs a model with decoder, but TDMPC2Model"):
        PlaySession(model, starts={"vector": env.reset()["vector"][None]})


# -- the web layer ---------------------------------------------------------------------------------
def test_the_page_shows_the_action_buttons_and_a_step_returns_the_frame():
    model = dreamer_model()
    client = create_app(PlaySession(model, starts=starts()), seed=3).test_client()
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    text = page.get_data(as_text=True)
    assert all(f"<button data-action={a}>" in text for a in range(3)) and "<button data-action=3>" not in text
    assert "http" not in text.replace("http-equiv", "")    # nothing is fetched from elsewhere

    out = client.post("/step", json={"action": 2})
    assert out.status_code == 200
    body = out.get_json()
    assert body["step"] == 1 and body["seed"] == 3 and body["real"] is None
    frame = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["dream"]["images"]["image"]))))
    assert frame.shape == (16, 16, 3)
    expected = PlaySession(model, starts=starts())
    expected.reset(3)
    np.testing.assert_array_equal(frame, expected.step(2).dream.obs["image"])
    assert isinstance(body["dream"]["reward"], float) and 0.0 <= body["dream"]["cont"] <= 1.0

    again = client.post("/reset", json={"seed": 3}).get_json()
    assert again["step"] == 0 and again["dream"]["images"] == client.get("/view").get_json()["dream"]["images"]
    assert client.post("/reset").get_json()["seed"] == 4


def test_continuous_actions_get_a_slider_per_dimension():
    client = create_app(PlaySession(dreamer_model(CONTINUOUS), starts=starts())).test_client()
    text = client.get("/").get_data(as_text=True)
    assert text.count("type=range") == 2 and "<button data-action" not in text
    assert client.post("/step", json={"action": [0.3, -2.0]}).status_code == 200


@pytest.mark.parametrize("body, message", [
    ({"action": 9}, "the action must be a whole number in [0, 3), got 9"),
    ({"act": 1}, 'POST /step needs a JSON body {"action": ...}'),
])
def test_a_bad_step_is_a_400_with_one_sentence(body, message):
    client = create_app(PlaySession(dreamer_model(), starts=starts())).test_client()
    out = client.post("/step", json=body)
    assert out.status_code == 400 and out.get_json() == {"error": message}
    bad_seed = client.post("/reset", json={"seed": -2})
    assert bad_seed.status_code == 400 and "seed" in bad_seed.get_json()["error"]


# -- the command -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    from reverie.cli import main

    run_dir = tmp_path_factory.mktemp("play") / "cp"
    assert main(["train", "--preset", "tiny", "--steps", "60", "--run-dir", str(run_dir)]) == 0
    return run_dir


def test_the_command_prints_its_port_serves_the_page_and_steps_both_sides(cartpole_run):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "reverie", "play", str(cartpole_run), "--seed", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("playing cp at http://127.0.0.1:"), line + proc.stderr.read()
        port = int(line.split("(port ")[1].split(")")[0])
        base = f"http://127.0.0.1:{port}"
        page = urllib.request.urlopen(base + "/", timeout=30).read().decode()
        assert "<button data-action=0>" in page and "<button data-action=1>" in page
        request = urllib.request.Request(base + "/step", data=json.dumps({"action": 1}).encode(),
                                         headers={"Content-Type": "application/json"})
        view = json.loads(urllib.request.urlopen(request, timeout=30).read())
        assert view["step"] == 1 and view["seed"] == 2
        assert len(view["dream"]["vectors"]["vector"]) == 4 and len(view["real"]["vectors"]["vector"]) == 4
        assert view["real"]["reward"] == 1.0
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0


def test_the_command_refuses_a_run_without_a_decoder(tmp_path, capsys):
    from reverie.cli import main

    run_dir = tmp_path / "td"
    assert main(["train", "tdmpc2", "--preset", "tiny", "--env", "gym:Pendulum-v1", "--steps", "60",
                 "--run-dir", str(run_dir)]) == 0
    capsys.readouterr()
    assert main(["play", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: playing a dream") and "needs a model with decoder" in err and "\n" not in err


def test_a_missing_flask_is_one_sentence_naming_the_extra(monkeypatch, tmp_path, capsys):
    from reverie.cli import main

    monkeypatch.delitem(sys.modules, "reverie.play.server", raising=False)
    monkeypatch.setitem(sys.modules, "flask", None)     # what an environment without Flask gives
    assert main(["play", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == ("error: 'reverie play' needs the flask package, which is not "
                                               "installed: pip install 'reverie[play]'")


def test_without_its_environment_a_run_dreams_from_its_stored_first_frames(cartpole_run, monkeypatch):
    from reverie import api
    from reverie.envs import EnvError
    from reverie.play.server import open_session

    def unavailable(self, seed=0):
        raise EnvError("gym:CartPole-v1 needs a package that is not installed")

    monkeypatch.setattr(api.Run, "env", unavailable)
    said = []
    session = open_session(cartpole_run, warn=said.append)
    assert said and said[0].startswith("the real environment cannot be made here")
    firsts = session.starts["vector"]
    # CartPole starts within 0.05 of rest in every dimension, and the 60 stored steps hold several episodes
    assert firsts.ndim == 2 and len(firsts) >= 2 and np.abs(firsts).max() <= 0.05
    view = session.reset(0)
    assert view.real is None and session.step(1).step == 1
