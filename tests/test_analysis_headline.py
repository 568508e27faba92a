"""The report's headline names the oscillation the observations show, through the whole ``reverie analyze`` path.

A hand-written world model of a damped linear oscillator (the environment's own dynamics, seen through a
3-D linear observation) carries, besides, a slow latent rotation that its decoder never shows and whose
eigenvalues are the largest of its Jacobian. The latent spectrum's "largest complex pair" is that hidden
rotation; observable DMD of the decoded imagination must find the oscillator: its period and decay rate
within 5 %.
"""

import json
import math
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import pytest
import torch

from reverie.agents.base import ActOutput, ReplayRatio
from reverie.analysis.report import ANALYSES, RunAccess, analyze_run, write_report
from reverie.envs import GymEnv
from reverie.models.base import DECODER, TRANSITION, transition_map
from reverie.run_config import RunConfig
from reverie.specs import ActionSpec, ArraySpec
from reverie.training.checkpoint import load_checkpoint
from reverie.training.evaluate import run_episodes

DT, PERIOD, RATE = 0.05, 1.6, -0.3           # seconds per step, the oscillator's period (s) and decay rate (1/s)
HIDDEN_PERIOD = 60.0                         # the unobservable latent rotation's period (s), modulus 0.9995
C = np.array([[1.0, 0.0], [0.5, -1.0], [0.2, 0.7]])   # observation = C z


def rotation(period: float, rate: float) -> np.ndarray:
    """One step of ``exp(dt [[rate, -w], [w, rate]])``, ``w = 2 pi / period``."""
    w = 2 * math.pi / period * DT
    return math.exp(rate * DT) * np.array([[math.cos(w), -math.sin(w)], [math.sin(w), math.cos(w)]])


class DampedOscillator(gym.Env):
    """z' = A z + b u, observed as C z; gymnasium's convention for the time step: the attribute ``dt``."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    metadata = {"render_modes": []}
    dt = DT

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.z, self.t = self.np_random.uniform(-1, 1, 2), 0
        return (C @ self.z).astype(np.float32), {}

    def step(self, action):
        self.z = rotation(PERIOD, RATE) @ self.z + np.array([0.0, 0.1]) * float(action[0])
        self.t += 1
        return (C @ self.z).astype(np.float32), -float(self.z @ self.z), False, self.t >= 120, {}


class OscillatorModel:
    """The oscillator's exact dynamics in z[:2], a hidden slow rotation in z[2:] the decoder ignores."""

    obs_spec = {"vector": ArraySpec((3,), np.dtype(np.float32))}
    act_spec = ActionSpec(False, 1)
    capabilities = frozenset({DECODER, TRANSITION})
    feat_size = 4

    def __init__(self):
        a = np.zeros((4, 4))
        a[:2, :2] = rotation(PERIOD, RATE)
        a[2:, 2:] = rotation(HIDDEN_PERIOD, math.log(0.9995) / DT)
        self.a = torch.tensor(a, dtype=torch.float32)
        self.b = torch.tensor([[0.0], [0.1], [0.0], [0.0]])
        self.c = torch.tensor(C, dtype=torch.float32)
        self.c_inv = torch.linalg.pinv(self.c)

    def initial(self, batch):
        return {"z": torch.zeros(batch, 4)}

    def observe(self, obs, action, is_first, state=None):
        seen = obs["vector"].float() @ self.c_inv.T                          # [B, T, 2]
        hidden = torch.tensor([1.0, 0.0]).expand(*seen.shape[:2], 2)
        z = torch.cat([seen, hidden], -1)
        return {"z": z}, {"z": z[:, -1]}

    def step(self, state, action):
        return {"z": state["z"] @ self.a.T + action.float() @ self.b.T}

    def features(self, state):
        return state["z"]

    def decode(self, state):
        return {"vector": state["z"][..., :2] @ self.c.T}

    def transition(self, state, action):
        return state["z"], transition_map(lambda z, u: z @ self.a.T + u @ self.b.T, action)


class ZeroTorqueAgent:
    """The agent contract around the model: it acts with zero torque (the system's free motion)."""

    name = "oscillator"
    obs_spec = OscillatorModel.obs_spec
    act_spec = OscillatorModel.act_spec
    device = torch.device("cpu")
    schedule = ReplayRatio()
    extras_spec: dict = {}
    discount = 0.99
    planner_defaults: dict = {}

    def __init__(self):
        self.model = OscillatorModel()

    def init_state(self, batch):
        return None

    def act(self, step, state, explore):
        n = len(step["is_first"])
        zero = np.zeros((n, 1), np.float32)
        return ActOutput(zero, zero, state, {})

    def tensors(self):
        return {}

    def load_tensors(self, tensors):
        pass


@dataclass
class Settings:
    run: RunConfig = field(default_factory=lambda: RunConfig(env="gym:DampedOscillator", seed=3))


def open_run(run_dir, device=None):
    return ZeroTorqueAgent(), Settings(), lambda seed: GymEnv(DampedOscillator(), seed=seed), {"step": 1000}


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    access = RunAccess(open_run=open_run, checkpoints=lambda run: [], load_checkpoint=load_checkpoint,
                       play=run_episodes)   # a run without checkpoints: the over-training section says so
    out = tmp_path_factory.mktemp("oscillator")
    a = analyze_run(access, out, episodes=3, max_states=200)
    write_report(a, out, svg=False)
    return a, json.loads((out / "analysis.json").read_text()), (out / "report.html").read_text()


def test_the_headline_is_the_observed_oscillation_within_five_percent(analysed):
    a, d, _ = analysed
    head = d["headline"]
    assert head["method"] == "observable DMD" and head["unit"] == "s"
    assert head["period"] == pytest.approx(PERIOD, rel=0.05)
    assert head["decay_rate"] == pytest.approx(RATE, rel=0.05)
    assert d["dt_seconds"] == pytest.approx(DT) and d["dt_source"] == "dt"
    assert a.headline == head


def test_the_latent_spectrum_beside_it_reports_the_hidden_rotation(analysed):
    _, d, page = analysed
    sp = d["sections"]["spectral"]
    assert sp["data"]["median_dominant_period"] == pytest.approx(HIDDEN_PERIOD, rel=1e-3)
    assert f"median period of {HIDDEN_PERIOD:.3g} s" in d["headline"]["text"]
    assert "observable DMD" in page and d["headline"]["text"].split(" (")[0] in page
    facts = sp["facts"]
    assert facts["DMD dominant oscillation: moves most"].startswith("vector[")


def test_every_other_analysis_runs_on_the_hand_written_model(analysed):
    _, d, _ = analysed
    s = d["sections"]
    assert list(s) == [a for a in ANALYSES if a != "experts"]   # only a model that routes gets that section
    assert s["open_loop"]["applies"] and max(s["open_loop"]["data"]["obs_mse"]["vector"]) < 1e-8
    assert s["fourier"]["applies"] and s["projection"]["applies"]
    assert not s["checkpoints"]["applies"] and "keep_checkpoints" in s["checkpoints"]["text"]
