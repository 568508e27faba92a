"""A new world-model family is four places: its model, its agent, a preset and a registry line.

Everything below the line "the family" is what a user adding one writes; the tests then train, resume,
evaluate and plan with it through the command line and the Python API, with nothing else touched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import reverie
from reverie.agents import registry
from reverie.agents.base import ActOutput, ActingParts, AgentBase, ReplayRatio
from reverie.agents.planner_policy import PlannerPolicy, PlanState
from reverie.cli import main
from reverie.models.base import REWARD, State
from reverie.models.batch import Batch
from reverie.planning import ShootingSettings
from reverie.run_config import RunConfig
from reverie.specs import ActionSpec, ArraySpec


# -- the family: its model file ------------------------------------------------------------------------
class LinearModel(nn.Module):
    """A linear latent model: z = E obs, z' = A z + B a, reward(z') = w . z' (declares only ``reward``)."""

    capabilities = frozenset({REWARD})

    def __init__(self, obs_spec: Mapping[str, ArraySpec], act_spec: ActionSpec, latent: int):
        super().__init__()
        self.obs_spec, self.act_spec, self.feat_size = dict(obs_spec), act_spec, latent
        obs_size = sum(int(np.prod(s.shape)) for s in obs_spec.values())
        self.encode = nn.Linear(obs_size, latent)
        self.dynamics = nn.Linear(latent + act_spec.size, latent)
        self.reward_head = nn.Linear(latent, 1)

    def _embed(self, obs: Mapping[str, Tensor]) -> Tensor:
        return self.encode(torch.cat([obs[k].flatten(2).float() for k in sorted(self.obs_spec)], -1))

    def initial(self, batch: int) -> State:
        return {"z": torch.zeros(batch, self.feat_size)}

    def observe(self, obs, action, is_first, state=None):
        z = self._embed(obs)                                    # filtering is encoding: the model is Markov
        return {"z": z}, {"z": z[:, -1]}

    def step(self, state: State, action: Tensor) -> State:
        return {"z": self.dynamics(torch.cat([state["z"], action], -1))}

    def features(self, state: State) -> Tensor:
        return state["z"]

    def reward(self, state: State) -> Tensor:
        return self.reward_head(state["z"]).squeeze(-1)

    def loss(self, batch: Batch) -> Tensor:
        z = self._embed(batch.obs)
        pred = self.step({"z": z[:, :-1]}, batch.action[:, 1:])["z"]
        keep = (~batch.is_first[:, 1:]).float()
        latent = (((pred - z[:, 1:].detach()) ** 2).mean(-1) * keep).mean()
        reward = (((self.reward({"z": pred}) - batch.reward[:, 1:]) ** 2) * keep).mean()
        return latent + reward


# -- the family: its agent file ------------------------------------------------------------------------
@dataclass(frozen=True)
class LinearConfig:
    latent: int = 8
    lr: float = 1e-2
    planner: ShootingSettings = field(default_factory=lambda: ShootingSettings(horizon=5, candidates=64))
    run: RunConfig = field(default_factory=RunConfig)


class LinearPlanner(AgentBase):
    """Learns the linear model from replay batches and acts by random shooting on it."""

    name = "linear"
    schedule = ReplayRatio()

    def __init__(self, obs_spec, act_spec, cfg: LinearConfig, device="cpu"):
        super().__init__(obs_spec, act_spec, device)
        self.cfg = cfg
        self.model = LinearModel(obs_spec, act_spec, cfg.latent).to(self.device)
        self.modules = {"model": self.model}
        self.optimizers = {"opt": torch.optim.Adam(self.model.parameters(), lr=cfg.lr)}
        self.planner_defaults = {"shooting": cfg.planner}
        self.policy = PlannerPolicy(self.model, "shooting", cfg.planner, explore_noise=0.3, device=self.device)

    def init_state(self, batch: int) -> PlanState:
        return self.policy.init_state(batch)

    def act(self, step, state, explore) -> ActOutput:
        return self.policy.act(step, state, explore)

    def acting_parts(self) -> ActingParts:
        return ActingParts("the linear planner", quantised=dict(self.modules))

    def update(self, batch: Batch) -> dict[str, float]:
        loss = self.model.loss(batch)
        self.optimizers["opt"].zero_grad()
        loss.backward()
        self.optimizers["opt"].step()
        return {"loss/model": float(loss.detach())}


# -- the family: a preset and a registry line ----------------------------------------------------------
LINEAR_PRESETS = {"default": ["run.env=gym:Pendulum-v1", "run.batch_size=8", "run.seq_len=8", "run.prefill=40",
                              "run.train_ratio=16", "run.eval_episodes=1", "run.eval_every=100",
                              "run.checkpoint_every=50", "run.log_every=50", "run.replay_chunk=32"]}


@pytest.fixture
def linear_family(monkeypatch):
    monkeypatch.setitem(registry.AGENTS, "linear", registry.entry(LinearPlanner, LinearConfig, LINEAR_PRESETS))


# -- the tests -----------------------------------------------------------------------------------------
def test_the_cli_trains_resumes_evaluates_and_plans_with_a_new_family(linear_family, tmp_path, capsys):
    run = tmp_path / "linear"
    assert main(["train", "linear", "--run-dir", str(run), "--steps", "100"]) == 0
    first = json.loads((run / "summary.json").read_text())
    assert first["agent"] == "linear" and first["env_steps"] == 100 and first["updates"] > 0
    assert main(["train", "linear", "--run-dir", str(run), "--steps", "150"]) == 0      # resumes
    out = capsys.readouterr().out
    assert "resuming" in out and "at step 100" in out
    assert json.loads((run / "summary.json").read_text())["updates"] > first["updates"]
    for planner in ("policy", "cem", "mppi", "gradient"):   # its own way, and every planner its model fits
        assert main(["eval", str(run), "--episodes", "1", "--planner", planner]) == 0
        result = json.loads(capsys.readouterr().out.splitlines()[-1])
        assert result["planner"] == planner and np.isfinite(result["return_mean"])
    assert main(["eval", str(run), "--planner", "mcts"]) == 2   # mcts needs discrete actions, value and policy
    assert "mcts" in capsys.readouterr().err
    assert main(["eval", str(run), "--episodes", "1", "--acting", "int8"]) == 0


def test_the_api_trains_and_plans_with_a_new_family(linear_family, tmp_path):
    run = reverie.train("linear", steps=100, run_dir=tmp_path / "api", say=None)
    assert run.result.counters.env_steps == 100
    model = run.model
    assert isinstance(model, LinearModel) and run.evaluate(episodes=1, planner="cem").returns.shape == (1,)
    start = model.initial(3)
    result = reverie.plan("cem", model, start, horizon=4, candidates=32, elites=4, iterations=2)
    assert result.action.shape == (3, 1)
    future = reverie.imagine(model, start, torch.zeros(3, 4, 1))
    assert future["z"].shape == (3, 4, 8)
    # the model learned: its loss (mostly the reward error, Pendulum's rewards being -16..0) fell in training
    losses = [m["train/loss/model"] for m in run.metrics if "train/loss/model" in m]
    assert len(losses) >= 2 and losses[-1] < losses[0]
