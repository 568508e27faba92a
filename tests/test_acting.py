"""Fast acting paths (``reverie.agents.acting``, ``reverie eval --acting``): int8 and compiled act like eager."""

import json
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
import torch._inductor.config as inductor_config
from torch import nn

from reverie.agents import DreamerConfig
from reverie.agents.acting import ACTING_MODES, ActingError, prepare_acting
from reverie.agents.base import ActingParts, ActOutput, AgentBase, ReplayRatio, gradient_step, to_env_action
from reverie.agents import registry
from reverie.agents.registry import entry, resolve_config
from reverie.cli import build_parser, main
from reverie.config import ConfigError
from reverie.envs import BatchEnv
from reverie.run_config import RunConfig
from reverie.specs import ActionSpec, ArraySpec
from reverie.training import session

STEPS = 20                                       # episode length of the run below (run.time_limit)
TINY_MPPI = ["candidates=16", "elites=4", "iterations=1", "horizon=2", "policy_candidates=2"]
# Compiled code draws its random numbers from torch's generator, as eager code does (so that both sample the
# same latents and candidates), and compiles in this process: a pool of compile workers takes seconds to start.
def compile_for_tests():
    return inductor_config.patch(fallback_random=True, compile_threads=1)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("acting") / "dreamer"
    assert main(["train", "--preset", "tiny", "--env", "gym:Pendulum-v1", "--run-dir", str(path), "--steps", "150",
                 f"run.time_limit={STEPS}"]) == 0
    return path


def side_by_side(reference, other, make, decisions: int) -> np.ndarray:
    """Largest action difference ``[decisions]`` of ``other`` and ``reference`` deciding on the same inputs with
    the same torch seed, along the reference's own trajectories (one environment)."""
    env = BatchEnv([lambda: make(123)], parallel=False)
    step, state = env.reset(), reference.init_state(1)
    prev = np.zeros((1, env.act_spec.size), np.float32)
    diffs = []
    for t in range(decisions):
        inputs = dict(step, action=prev)
        torch.manual_seed(t)
        mine = reference.act(inputs, state, False)
        torch.manual_seed(t)
        theirs = other.act(inputs, state, False)
        diffs.append(float(np.abs(mine.action - theirs.action).max()))
        state, prev = mine.state, env.act_spec.to_model(mine.env_action)
        step = env.step(mine.env_action)
        if step["is_last"][0]:
            step, state = env.reset(), reference.init_state(1)
            prev = np.zeros_like(prev)
    env.close()
    return np.asarray(diffs)


def test_int8_acts_like_eager_on_a_copy(run_dir):
    agent, _, make, _ = session.load_run(run_dir)
    before = {k: v.clone() for k, v in agent.wm.state_dict().items()}
    fast = prepare_acting(agent, "int8")
    quantised = [m for m in fast.wm.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert quantised and fast.optimizers == {} and fast.wm is not agent.wm
    assert not any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in agent.wm.modules())
    assert all(torch.equal(before[k], v) for k, v in agent.wm.state_dict().items())   # the agent is untouched
    diffs = side_by_side(agent, fast, make, 100)
    # int8 weights and activations: actions within 0.05 of eager on most states; a flipped categorical
    # latent sample (the draw lands next to a class boundary) may move a few further
    assert (diffs <= 0.05).mean() >= 0.9 and np.median(diffs) <= 0.02, diffs
    assert diffs.max() > 0                                            # it did run in int8


def test_compiled_acts_like_eager(run_dir):
    agent, _, make, _ = session.load_run(run_dir)
    with compile_for_tests():
        fast = prepare_acting(agent, "compiled")
        assert fast is not agent and "observe" not in vars(agent.wm)   # the agent is untouched
        diffs = side_by_side(agent, fast, make, 25)
    assert np.quantile(diffs, 0.9) <= 1e-4, diffs


def test_a_compiled_planner_plans_like_eager(run_dir):
    # the smallest MPPI that exercises the compiled planner call: compiling 512 x 6 x 3 takes minutes here
    agent, _, make, _ = session.load_run(run_dir)
    smallest = ["candidates=8", "elites=2", "iterations=1", "horizon=1", "policy_candidates=0", "centre_on_policy=false"]
    eager = prepare_acting(agent, "eager", "mppi", smallest)
    with compile_for_tests():
        fast = prepare_acting(agent, "compiled", "mppi", smallest)
        assert fast.spec.fn.__wrapped__ is eager.spec.fn
        diffs = side_by_side(eager, fast, make, 3)    # an episode's first decision (no warm start) and later ones
    assert np.quantile(diffs, 0.5) <= 1e-4, diffs


def test_eval_acts_in_int8_with_and_without_a_planner(run_dir, capsys):
    assert main(["eval", str(run_dir), "--acting", "int8", "--episodes", "2"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["acting"] == "int8" and out["episodes"] == 2 and -16.3 * STEPS <= out["return_mean"] <= 0
    args = ["eval", str(run_dir), "--planner", "mppi", "--acting", "int8", "--episodes", "1"]
    for setting in TINY_MPPI:
        args += ["--planner-arg", setting]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out["planner"], out["acting"]) == ("mppi", "int8")


def test_a_bad_acting_mode_is_one_sentence(run_dir, capsys):
    for mode in ACTING_MODES:                                          # the command offers what the library has
        assert build_parser().parse_args(["eval", "RUN", "--acting", mode]).acting == mode
    with pytest.raises(SystemExit) as exit_:
        main(["eval", str(run_dir), "--acting", "fp16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and "argument --acting: invalid choice: 'fp16'" in err[-1]
    # int8 layers have no gradients for the gradient planner to follow
    assert main(["eval", str(run_dir), "--planner", "gradient", "--acting", "int8", "--episodes", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differentiates through the model" in err[0]


def test_what_each_mode_covers():
    def build(name, env):
        cfg = resolve_config(name, "tiny", [f"run.env={env}"])
        return session.build_agent(name, cfg, session.env_factory(cfg.run))

    planet = build("planet", "gym:Pendulum-v1")                        # acts through its own CEM policy
    fast = prepare_acting(planet, "compiled")
    assert fast.policy.spec.fn.__wrapped__ is planet.policy.spec.fn and planet.policy.spec.name == "cem"
    int8 = prepare_acting(planet, "int8")
    assert int8.policy.model is int8.wm and isinstance(int8.wm.reward_head.out, torch.ao.nn.quantized.dynamic.Linear)

    with pytest.raises(ActingError, match="has none in its modules"):       # PETS's ensemble has no nn.Linear
        prepare_acting(build("pets", "gym:Pendulum-v1"), "int8")
    with pytest.raises(ActingError, match="not muzero's own acting"):
        prepare_acting(build("muzero", "gym:CartPole-v1"), "compiled")
    with pytest.raises(ActingError, match="unknown acting mode"):
        prepare_acting(object(), "fp16")


# -- a new agent family: what acting may change is declared by the agent, not known to acting.py ------------------
@dataclass(frozen=True)
class ToyConfig:
    units: int = 16
    run: RunConfig = field(default_factory=RunConfig)


class Toy(AgentBase):
    """A tanh-linear policy on vector observations that imitates the actions in its replay: the smallest agent
    family. It declares its policy call (to compile) and its network (to quantise)."""

    name = "toy"
    schedule = ReplayRatio()

    def __init__(self, obs_spec, act_spec, cfg: ToyConfig, device="cpu"):
        super().__init__(obs_spec, act_spec, device)
        size = sum(int(np.prod(spec.shape)) for spec in obs_spec.values())
        self.net = nn.Sequential(nn.Linear(size, cfg.units), nn.Tanh(), nn.Linear(cfg.units, act_spec.size))
        self.modules = {"net": self.net}
        self.optimizers = {"opt": torch.optim.Adam(self.net.parameters(), lr=1e-2)}
        self.calls = {"policy": self.net.forward}

    def _inputs(self, obs, lead: int):
        parts = [torch.as_tensor(np.asarray(obs[k]), dtype=torch.float32).flatten(lead) for k in self.obs_spec]
        return torch.cat(parts, -1)                                              # [..., D]

    def init_state(self, batch):
        return None

    @torch.no_grad()
    def act(self, step, state, explore):
        action = torch.tanh(self.calls["policy"](self._inputs(step, 1)))
        return ActOutput(to_env_action(action, self.act_spec), action.numpy(), None, {})

    def update(self, batch):
        # action[:, t + 1] was taken at step t
        loss = ((torch.tanh(self.net(self._inputs(batch.obs, 2)[:, :-1])) - batch.action[:, 1:]) ** 2).mean()
        return gradient_step({"imitation": loss}, {"imitation": 1.0}, self.optimizers["opt"], self.net.parameters(),
                             100.0)

    def acting_parts(self):
        return ActingParts("toy's policy", compiled=dict(self.calls), quantised=dict(self.modules))

    def place_compiled(self, compiled):
        self.calls = {**self.calls, **compiled}


def test_a_new_agent_acts_in_every_mode_through_what_it_declares():
    toy_entry = entry(Toy, ToyConfig, {"default": []})
    obs_spec, act_spec = {"vector": ArraySpec((3,), np.dtype(np.float32))}, ActionSpec(False, 2)
    toy = toy_entry.build(obs_spec, act_spec, ToyConfig(), "cpu")
    rng = np.random.default_rng(0)
    steps = [{"vector": rng.normal(size=(4, 3)).astype(np.float32)} for _ in range(5)]
    eager = np.stack([toy.act(step, None, False).action for step in steps])
    assert prepare_acting(toy, "eager") is toy

    int8 = prepare_acting(toy, "int8")
    assert isinstance(int8.net[0], torch.ao.nn.quantized.dynamic.Linear) and type(toy.net[0]) is nn.Linear
    assert int8.calls["policy"].__self__ is int8.net     # the declared call follows its module into the copy
    assert int8.optimizers == {} and set(toy.optimizers) == {"opt"}
    diffs = np.abs(np.stack([int8.act(step, None, False).action for step in steps]) - eager)
    assert 0 < diffs.max() <= 0.05, diffs.max()

    with compile_for_tests():
        fast = prepare_acting(toy, "compiled")
        assert fast.net is toy.net and fast.calls["policy"].__wrapped__.__qualname__ == "Sequential.forward"
        assert toy.calls["policy"] == toy.net.forward          # the agent still acts eager
        compiled = np.stack([fast.act(step, None, False).action for step in steps])
    np.testing.assert_allclose(compiled, eager, atol=1e-6)

    # a part the agent does not declare, a config of another kind, a call declared but not acted through
    with pytest.raises(ValueError, match="declares no decoder to compile; it declares policy"):
        toy.acting_copy(compiled={"decoder": torch.tanh})
    with pytest.raises(ConfigError, match="Toy is built from a ToyConfig, not a DreamerConfig"):
        toy_entry.build(obs_spec, act_spec, DreamerConfig(), "cpu")

    class Forgetful(Toy):
        def place_compiled(self, compiled):
            pass

    with pytest.raises(TypeError, match="does not act through the compiled ones"):
        Forgetful(obs_spec, act_spec, ToyConfig()).acting_copy(compiled={"policy": torch.tanh})


def test_a_new_agent_family_trains_and_evaluates_in_every_mode_from_one_registry_line(tmp_path, monkeypatch, capsys):
    tiny = ["run.batch_size=4", "run.seq_len=8", "run.prefill=32", "run.train_ratio=64", "run.eval_episodes=1",
            "run.eval_every=100000000", "run.log_every=50", "run.checkpoint_every=100000000", "run.replay_chunk=32",
            f"run.time_limit={STEPS}"]
    monkeypatch.setitem(registry.AGENTS, "toy", entry(Toy, ToyConfig, {"default": tiny}))
    run = tmp_path / "toy"
    assert main(["train", "toy", "--env", "gym:Pendulum-v1", "--run-dir", str(run), "--steps", "80"]) == 0
    capsys.readouterr()
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("train/loss/imitation" in record for record in logged)                  # the loop called its update
    with compile_for_tests():
        for mode in ACTING_MODES:
            assert main(["eval", str(run), "--acting", mode, "--episodes", "1"]) == 0, capsys.readouterr().err
            out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
            assert out["acting"] == mode and -16.3 * STEPS <= out["return_mean"] <= 0
    assert main(["eval", str(run), "--planner", "mppi", "--episodes", "1"]) == 2      # a toy has no world model
    assert "has no world model that a planner can use" in capsys.readouterr().err
