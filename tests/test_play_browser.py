"""`reverie play` in a real headless Chromium: the page loads without a script error, its buttons, digit keys,
sliders and R drive the dream, and what it draws is what the session imagines (frames byte for byte, plotted
vectors number for number).

Needs Chromium and ChromeDriver (Debian: ``apt-get install chromium chromium-driver``) and selenium (the
``test`` extra); without them the module is skipped. One browser serves every test; each test serves its own
app on an ephemeral port of 127.0.0.1 in a background thread.
"""

import base64
import shutil
import tempfile
import threading
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from PIL import Image

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if CHROMIUM is None or DRIVER is None:
    pytest.skip("the browser test needs Chromium and ChromeDriver on the PATH (Debian: apt-get install chromium "
                "chromium-driver)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (the test extra)")

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from reverie.agents.dreamer import Dreamer  # noqa: E402
from reverie.agents.registry import resolve_config  # noqa: E402
from reverie.play import PlaySession  # noqa: E402
from reverie.play.server import create_app, open_session, png_bytes  # noqa: E402
from reverie.specs import ActionSpec, ArraySpec  # noqa: E402

# the network is closed here: without the background-networking flags Chromium waits on refused connections
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1000,800"]
IMAGE = {"image": ArraySpec((16, 16, 3), np.dtype(np.uint8))}
DISCRETE, CONTINUOUS = ActionSpec(True, 3), ActionSpec(False, 2)


def endless(model):
    """``model`` with its continuation head saying 1 everywhere (last layer: zero weights, bias 30), so that a
    dream of a few steps is not ended by the draw against an untrained or barely trained head."""
    last = [m for m in getattr(model, "model", model).cont_head.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(30.0)
    return model


def dreamer_model(act=DISCRETE):
    """An untrained tiny Dreamer model over 16x16 pictures whose dreams do not end by themselves."""
    return endless(Dreamer(IMAGE, act, resolve_config("dreamer", "tiny", ["run.image_size=16"]), "cpu").model)


def starts(k=5, seed=0):
    return {"image": np.random.default_rng(seed).integers(0, 256, (k, 16, 16, 3), dtype=np.uint8)}


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.TemporaryDirectory(prefix="reverie-chromium-")
    for flag in FLAGS + [f"--user-data-dir={profile.name}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        profile.cleanup()


@contextmanager
def serving(app):
    """``app`` served on 127.0.0.1 at an ephemeral port in a background thread; yields its address."""
    server = make_server("127.0.0.1", 0, app, threaded=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def script_errors(driver, allowed: str = "") -> list[str]:
    """The console's errors since the last call (a refused request's own log line is allowed when it names
    ``allowed``: the page shows its message itself)."""
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and not (allowed and e["source"] == "network" and allowed in e["message"])]


def stats(driver, side: str = "dream") -> str:
    return driver.find_element(By.CSS_SELECTOR, f"#{side} .stats").text


def at_step(driver, step: int, side: str = "dream") -> str:
    """Wait until ``side`` shows ``step`` (each key or click is one request; the page drops keys while one is
    under way); return its stats line."""
    WebDriverWait(driver, 15).until(lambda d: stats(d, side).split(" | ")[0] == f"step {step}",
                                    lambda: f"{side} not at step {step}: {stats(driver, side)!r}, error "
                                    f"{driver.find_element(By.ID, 'error').text!r}")
    return stats(driver, side)


def shown_frame(driver) -> str:
    """The base64 PNG the dream's picture shows."""
    # read in one script: each view replaces the img element, so a held reference can go stale
    src = driver.execute_script("return document.querySelector('#dream .images img').src")
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:40]
    return src[len(prefix):]


def encoded(image: np.ndarray) -> str:
    return base64.b64encode(png_bytes(image)).decode("ascii")


def press(driver, key: str) -> None:
    """``key`` typed into whatever has the focus (the page listens on the document)."""
    driver.switch_to.active_element.send_keys(key)


def plots(driver) -> list[str]:
    return driver.execute_script("return [...document.querySelectorAll('#plots canvas')].map(c => c.toDataURL())")


# -- a run with vector observations, its real environment beside the dream --------------------------
@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    from reverie.cli import main

    run_dir = tmp_path_factory.mktemp("play-browser") / "cp"
    assert main(["train", "--preset", "tiny", "--steps", "60", "--run-dir", str(run_dir)]) == 0
    return run_dir


def test_a_trained_run_plays_by_button_and_key_plots_both_sides_and_resets_with_r(browser, cartpole_run, tmp_path):
    oracle, session = (open_session(cartpole_run, warn=lambda _: None) for _ in range(2))
    endless(oracle.model), endless(session.model)
    assert session.real and session.actions == 2
    with serving(create_app(session, seed=2, title="cp")) as url:
        browser.get(url)
        assert browser.title == "cp"
        at_step(browser, 0)
        assert stats(browser, "real") == "step 0 | reward 0.000 | total 0.000"
        assert browser.find_element(By.ID, "seed").get_attribute("value") == "2"
        first = plots(browser)
        assert len(first) == 4      # one per dimension of CartPole's state

        browser.find_element(By.CSS_SELECTOR, "button[data-action='1']").click()
        at_step(browser, 1)
        assert at_step(browser, 1, "real") == "step 1 | reward 1.000 | total 1.000"
        after = plots(browser)
        assert len(after) == 4 and all(a != b for a, b in zip(first, after))     # each plot drew its new point
        press(browser, "0")         # a digit picks that action
        at_step(browser, 2)
        press(browser, Keys.ARROW_RIGHT)    # the arrow keys pick actions 0 and 1 of CartPole
        at_step(browser, 3)

        # the plotted series are the session's observations, step by step, on both sides
        oracle.reset(2)
        expected = [oracle.view] + [oracle.step(a) for a in (1, 0, 1)]
        plotted = browser.execute_script("return history")
        for side in ("dream", "real"):
            np.testing.assert_allclose(plotted[side]["vector"],
                                       [getattr(v, side).obs["vector"] for v in expected], rtol=1e-6, atol=1e-7)
        assert at_step(browser, 3, "real") == "step 3 | reward 1.000 | total 3.000"

        press(browser, "r")         # a new episode with the next seed
        at_step(browser, 0)
        assert browser.find_element(By.ID, "seed").get_attribute("value") == "3"
        assert stats(browser, "real") == "step 0 | reward 0.000 | total 0.000"
        plotted = browser.execute_script("return history")
        restart = oracle.reset(3)
        assert len(plotted["dream"]["vector"]) == 1 and len(plotted["real"]["vector"]) == 1
        np.testing.assert_allclose(plotted["real"]["vector"][0], restart.real.obs["vector"], rtol=1e-6)
        assert script_errors(browser) == []

        shot = tmp_path / "play.png"
        assert browser.save_screenshot(str(shot))
        pixels = np.asarray(Image.open(shot).convert("RGB"))
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10    # text, buttons and plots: not one colour
    oracle.close()
    session.close()


# -- image observations: the picture is the session's frame ------------------------------------------
def test_the_picture_is_the_dreams_frame_and_an_ended_dream_says_so_until_reset(browser):
    model = dreamer_model()
    oracle = PlaySession(model, starts=starts(), max_steps=3)
    with serving(create_app(PlaySession(model, starts=starts(), max_steps=3), seed=5)) as url:
        browser.get(url)
        at_step(browser, 0)
        assert shown_frame(browser) == encoded(oracle.reset(5).dream.obs["image"])
        assert browser.execute_script("return document.querySelector('#dream img').naturalWidth") == 16
        assert browser.find_elements(By.ID, "real") == []      # no environment: the dream alone

        before = shown_frame(browser)
        browser.find_element(By.CSS_SELECTOR, "button[data-action='2']").click()
        at_step(browser, 1)
        assert shown_frame(browser) != before
        assert shown_frame(browser) == encoded(oracle.step(2).dream.obs["image"])
        press(browser, "1")
        at_step(browser, 2)
        assert shown_frame(browser) == encoded(oracle.step(1).dream.obs["image"])
        press(browser, "7")         # no action 7: nothing is sent
        press(browser, "0")
        at_step(browser, 3)
        assert browser.find_element(By.ID, "error").text == ""
        assert shown_frame(browser) == encoded(oracle.step(0).dream.obs["image"])
        end = browser.find_element(By.CSS_SELECTOR, "#dream .end")
        assert end.text == "episode over: reset for a new one"     # max_steps reached

        press(browser, "0")         # the server refuses a step after the end; the page shows its sentence
        error = browser.find_element(By.ID, "error")
        WebDriverWait(browser, 15).until(lambda _: error.text != "")
        assert error.text == "the dream ended at step 3; reset for a new one"
        browser.find_element(By.ID, "reset").click()
        at_step(browser, 0)
        assert error.text == "" and end.text == ""
        assert browser.find_element(By.ID, "seed").get_attribute("value") == "6"
        assert shown_frame(browser) == encoded(oracle.reset(6).dream.obs["image"])

        seed = browser.find_element(By.ID, "seed")      # a typed seed and Enter: that dream
        seed.clear()
        seed.send_keys("5", Keys.ENTER)
        again = encoded(oracle.reset(5).dream.obs["image"])
        WebDriverWait(browser, 15).until(lambda _: shown_frame(browser) == again)
        assert script_errors(browser, allowed="/step") == []


def test_continuous_actions_step_with_the_sliders_values_and_a_dream_alone_plots_its_vectors(browser):
    obs = IMAGE | {"vector": ArraySpec((3,), np.dtype(np.float32))}
    model = endless(Dreamer(obs, CONTINUOUS, resolve_config("dreamer", "tiny", ["run.image_size=16"]), "cpu").model)
    first = starts() | {"vector": np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)}
    oracle = PlaySession(model, starts=first)
    with serving(create_app(PlaySession(model, starts=first), seed=1)) as url:
        browser.get(url)
        at_step(browser, 0)
        assert len(plots(browser)) == 3         # one per entry of the vector, with no real side to plot
        sliders = browser.find_elements(By.CSS_SELECTOR, "#sliders input[type=range]")
        assert len(sliders) == 2
        sliders[0].send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)    # 0.05 a press
        sliders[1].send_keys(Keys.ARROW_LEFT)
        outputs = [o.text for o in browser.find_elements(By.CSS_SELECTOR, "#sliders output")]
        assert outputs == ["0.10", "-0.05"]
        before = plots(browser)
        press(browser, " ")         # Space steps with the sliders' values
        at_step(browser, 1)
        expected = [oracle.reset(1), oracle.step([0.1, -0.05])]
        assert shown_frame(browser) == encoded(expected[-1].dream.obs["image"])
        assert all(a != b for a, b in zip(before, plots(browser)))
        browser.find_element(By.ID, "slide-step").click()
        at_step(browser, 2)
        expected.append(oracle.step([0.1, -0.05]))
        assert shown_frame(browser) == encoded(expected[-1].dream.obs["image"])
        plotted = browser.execute_script("return history")
        np.testing.assert_allclose(plotted["dream"]["vector"], [v.dream.obs["vector"] for v in expected], rtol=1e-6)
        assert plotted["real"] == {}
        assert script_errors(browser) == []
