"""Multitask TD-MPC2 and mixture-of-experts dynamics: one task is today's run bit for bit, padding and masking
change nothing a task does, routing and the load-balancing loss against hand-computed values, balanced
replay batches, the refusals, and ``reverie train tdmpc2 --env A,B`` end to end."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from reverie.cli import main
from reverie.envs import EnvError
from reverie.envs.multitask import PaddedTask, split_tasks, task_layout
from reverie.envs.spaces import Timing, make_step
from reverie.models.moe import MixtureOfExperts, Routing, expert_usage, load_balance_loss
from reverie.models.tdmpc2 import TaskCode, TDMPC2Model, TDMPC2ModelConfig
from reverie.replay import Replay
from reverie.replay.selectors import balanced_shares
from reverie.specs import ACTION_MASK_KEY, TASK_KEY, ActionSpec, ArraySpec

F32 = np.dtype(np.float32)
SMALL = TDMPC2ModelConfig(latent=16, enc_units=16, units=16, num_q=2, bins=21, task_dim=4)


class Toy:
    """A vector env of ``obs`` dimensions and ``act`` action dimensions whose observation is the action it got
    (padded or cut to ``obs``), so what reaches the task is visible."""

    def __init__(self, obs: int, act: int):
        self.obs_spec = {"vector": ArraySpec((obs,), F32)}
        self.act_spec = ActionSpec(False, act)
        self.timing, self.obs_names = Timing(), {"vector": tuple(f"v{i}" for i in range(obs))}
        self.received: list[np.ndarray] = []

    def _obs(self, values) -> dict[str, np.ndarray]:
        vector = np.zeros(self.obs_spec["vector"].shape, np.float32) + 1.0
        vector[:min(len(values), len(vector))] = values[:len(vector)]
        return {"vector": vector}

    def reset(self):
        return make_step(self._obs([]), is_first=True)

    def step(self, action):
        self.received.append(np.asarray(action))
        return make_step(self._obs(np.asarray(action)), reward=1.0)

    def render(self):
        return np.zeros((4, 4, 3), np.uint8)

    def close(self):
        pass


#: The last commit before multitask training existed.
BEFORE = "1486263"
RUN = """
import hashlib, json, sys
from reverie import api
from reverie.training.checkpoint import load_latest
run = api.train("tdmpc2", preset="tiny", run_dir=sys.argv[1], say=None,
                overrides=["run.steps=120", "run.env=gym:Pendulum-v1"])
weights = load_latest(sys.argv[1] + "/checkpoints", expected_agent="tdmpc2", device="cpu", warn=print)[0]["model"]
digest = hashlib.sha256()
for key in sorted(weights):
    digest.update(key.encode())
    digest.update(weights[key].detach().cpu().contiguous().numpy().tobytes())
print(json.dumps([digest.hexdigest(), run.result.eval_return, run.result.counters.updates]))
"""


def test_one_task_trains_bit_for_bit_as_before_multitask_existed(tmp_path):
    """The same tiny Pendulum run by the code of the commit before multitask training and by this code, on this
    machine: the final weights' SHA-256, the evaluation return and the number of updates are equal (on the
    machine this was written on: 0ab34636..., -1119.916794627905 and 35)."""
    repo = Path(__file__).resolve().parents[1]
    if shutil.which("git") is None or subprocess.run(["git", "-C", str(repo), "cat-file", "-e", f"{BEFORE}^{{commit}}"],
                                                     capture_output=True).returncode != 0:
        pytest.skip(f"commit {BEFORE} (before multitask training) is not in this checkout's history")
    archive = subprocess.run(["git", "-C", str(repo), "archive", BEFORE, "src"], capture_output=True, check=True)
    (tmp_path / "before").mkdir()
    subprocess.run(["tar", "-x", "-C", str(tmp_path / "before")], input=archive.stdout, check=True)
    results = []
    for name, src in (("before", tmp_path / "before" / "src"), ("now", repo / "src")):
        env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
        out = subprocess.run([sys.executable, "-c", RUN, str(tmp_path / f"run-{name}")], env=env, capture_output=True,
                             text=True, check=True, timeout=600)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert results[1][2] > 0 and results[0] == results[1]


def test_tasks_are_padded_to_the_largest_specs_and_use_only_their_own_actions():
    small, large = Toy(3, 1), Toy(5, 2)
    layout = task_layout(("a", "b"), [(small.obs_spec, small.act_spec), (large.obs_spec, large.act_spec)])
    assert layout.obs_spec == {"vector": ArraySpec((5,), F32), TASK_KEY: ArraySpec((2,), F32),
                               ACTION_MASK_KEY: ArraySpec((2,), F32)}
    assert layout.act_spec == ActionSpec(False, 2) and layout.action_sizes == (1, 2)
    env = PaddedTask(small, 0, layout)
    first = env.reset()
    np.testing.assert_array_equal(first["vector"], [1, 1, 1, 0, 0])           # own 3, then zero padding
    np.testing.assert_array_equal(first[TASK_KEY], [1, 0])
    np.testing.assert_array_equal(first[ACTION_MASK_KEY], [1, 0])
    step = env.step(np.array([0.5, -0.7], np.float32))
    np.testing.assert_array_equal(small.received[-1], [0.5])                  # the padded entry never arrives
    np.testing.assert_array_equal(step["vector"], [0.5, 1, 1, 0, 0])
    assert env.obs_names["vector"][3:] == ("vector[3] (padding)", "vector[4] (padding)")
    other = PaddedTask(large, 1, layout).step(np.array([0.5, -0.7], np.float32))
    np.testing.assert_array_equal(other[TASK_KEY], [0, 1])
    np.testing.assert_array_equal(large.received[-1], np.array([0.5, -0.7], np.float32))


def test_tasks_of_another_kind_are_refused_in_one_sentence():
    cont, disc = Toy(3, 1), Toy(3, 2)
    disc.act_spec = ActionSpec(True, 2)
    with pytest.raises(EnvError, match="continuous actions but a has discrete ones; a multitask run trains"):
        task_layout(("a", "b"), [(disc.obs_spec, disc.act_spec), (cont.obs_spec, cont.act_spec)])
    pixels = {"image": ArraySpec((8, 8, 3), np.dtype(np.uint8))}
    with pytest.raises(EnvError, match="task b observes pixels but a observes state"):
        task_layout(("a", "b"), [(cont.obs_spec, cont.act_spec), (pixels, cont.act_spec)])
    with pytest.raises(EnvError, match="more than once"):
        split_tasks("gym:Pendulum-v1,gym:Pendulum-v1")
    assert split_tasks("gym:Pendulum-v1") == ("gym:Pendulum-v1",)


def multitask_model(**cfg) -> TDMPC2Model:
    spec = {"vector": ArraySpec((5,), F32), TASK_KEY: ArraySpec((2,), F32), ACTION_MASK_KEY: ArraySpec((3,), F32)}
    torch.manual_seed(0)
    model = TDMPC2Model(spec, ActionSpec(False, 3), TDMPC2ModelConfig(**{**vars(SMALL), **cfg})).eval()
    for module in (model.reward_head, model.qs):   # output layers start at zero: make them say something
        for p in module.parameters():
            torch.nn.init.normal_(p, std=0.3)
    return model


def test_padded_action_dimensions_change_no_prediction_and_get_no_gradient():
    model = multitask_model()
    task = TaskCode(torch.tensor([[1.0, 0.0]] * 4), torch.tensor([[1.0, 1.0, 0.0]] * 4))   # task 0 uses 2 of 3
    z = model.encode({"vector": torch.randn(4, 5), TASK_KEY: task.onehot, ACTION_MASK_KEY: task.mask})
    action = torch.rand(4, 3, requires_grad=True)
    other = action.detach().clone()
    other[:, 2] = torch.randn(4) * 5                                         # only the padded entry differs
    for fn in (model.next, model.reward_logits, lambda z, a, t: model.q_logits(z, a, task=t)):
        torch.testing.assert_close(fn(z, action, task), fn(z, other, task), rtol=0, atol=0)
    loss = model.next(z, action, task).square().sum() + model.q_logits(z, action, task=task).square().sum()
    (grad,) = torch.autograd.grad(loss, action)
    assert (grad[:, 2] == 0).all() and (grad[:, :2] != 0).any()
    # the policy's padded dimension is exactly 0 and takes no part in the log-density
    dist = model.policy_dist(z, task)
    sample, log_prob = dist.sample_with_log_prob()
    assert (sample[:, 2] == 0).all() and (dist.mode()[:, 2] == 0).all() and (sample[:, :2] != 0).all()
    unmasked = model.policy_dist(z, TaskCode(task.onehot, torch.ones(4, 3)))    # the same policy, all 3 dims
    torch.testing.assert_close(dist.log_prob(sample), log_prob, rtol=1e-3, atol=1e-3)
    assert not torch.allclose(unmasked.log_prob(sample), log_prob)
    # and the task's embedding reaches the encoder: another task, another latent
    z1 = model.encode({"vector": torch.zeros(1, 5), TASK_KEY: torch.tensor([[0.0, 1.0]]),
                       ACTION_MASK_KEY: torch.ones(1, 3)})
    z0 = model.encode({"vector": torch.zeros(1, 5), TASK_KEY: torch.tensor([[1.0, 0.0]]),
                       ACTION_MASK_KEY: torch.ones(1, 3)})
    assert not torch.allclose(z0, z1)


def test_a_hand_set_router_sends_each_task_to_its_own_expert():
    """Router weights that read only the task embedding (an identity table): task k goes to expert k, and the
    dynamics output is expert k's alone (top-1)."""
    model = multitask_model(experts=4, top_k=1, task_dim=4)
    moe = model.dynamics.moe
    with torch.no_grad():
        model.task_table.copy_(torch.eye(2, 4))                               # task k's embedding: e_k
        moe.router.weight.zero_()
        moe.router.bias.zero_()
        moe.router.weight[:, -4:] = 10 * torch.eye(4)                        # the last 4 inputs: the embedding
    z, action = torch.rand(2, 16), torch.rand(2, 3)
    task = TaskCode(torch.eye(2), torch.ones(2, 3))
    nxt, routing = model.next_routed(z, action, task)
    np.testing.assert_array_equal(routing.dispatch.argmax(-1).numpy(), [0, 1])
    assert (routing.dispatch.sum(-1) == 1).all()
    x = torch.cat([z, action, torch.eye(2, 4)], -1)
    for k in (0, 1):
        torch.testing.assert_close(nxt[k], model.dynamics.head(moe.experts[k](x[k:k + 1]))[0])
    # top-2 mixes the two best experts by their renormalised router probabilities
    two = MixtureOfExperts(3, 5, 3, 2)
    with torch.no_grad():
        two.router.weight.zero_()
        two.router.bias.copy_(torch.log(torch.tensor([0.5, 0.3, 0.2])))
    y = torch.randn(1, 3)
    out, routing = two(y)
    torch.testing.assert_close(out, 0.625 * two.experts[0](y) + 0.375 * two.experts[1](y))
    np.testing.assert_array_equal(routing.dispatch.numpy(), [[1, 1, 0]])


def test_load_balancing_loss_is_one_at_uniform_use_and_grows_with_skew():
    uniform = Routing(torch.full((8, 4), 0.25), torch.eye(4).repeat(2, 1))       # 2 inputs to each expert
    torch.testing.assert_close(load_balance_loss(uniform), torch.tensor(1.0))
    # both inputs to expert 0 with p = (0.75, 0.25): f = (1, 0), P = (0.75, 0.25): 2 * 0.75 = 1.5
    skewed = Routing(torch.tensor([[0.75, 0.25], [0.75, 0.25]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    torch.testing.assert_close(load_balance_loss(skewed), torch.tensor(1.5))
    # half and half by choice, P = (0.6, 0.4): 2 * (0.5 * 0.6 + 0.5 * 0.4) = 1
    even = Routing(torch.tensor([[0.9, 0.1], [0.3, 0.7]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    torch.testing.assert_close(load_balance_loss(even), torch.tensor(1.0))
    # a weight of 0 leaves an input out: only the first counts, f = (1, 0), P = (0.9, 0.1): 1.8
    torch.testing.assert_close(load_balance_loss(even, torch.tensor([1.0, 0.0])), torch.tensor(1.8))
    torch.testing.assert_close(expert_usage(skewed), torch.tensor([1.0, 0.0]))


def test_batches_hold_an_equal_share_of_every_task():
    """Three streams in two groups: group 0 (streams 0 and 2) holds twice the data of group 1, yet every batch
    is half and half (and an odd batch gives the first group the extra sequence)."""
    replay = Replay(None, capacity=10_000, seq_len=4, chunk_size=16, seed=0, groups=2)
    for t in range(40):
        replay.add({"stream": np.arange(3), "is_first": np.full(3, t == 0)})
    for batch in (8, 64, 7):
        streams = replay.sample(batch)["stream"]
        assert (streams == streams[:, :1]).all()                                # a sequence stays in one stream
        group = streams[:, 0] % 2
        assert np.count_nonzero(group == 0) == balanced_shares(batch, 2)[0] == -(-batch // 2)
        assert np.count_nonzero(group == 1) == batch // 2
    uniform = Replay(None, capacity=10_000, seq_len=4, chunk_size=16, seed=0)
    for t in range(40):
        uniform.add({"stream": np.arange(3), "is_first": np.full(3, t == 0)})
    assert np.mean(uniform.sample(3000)["stream"][:, 0] % 2 == 0) == pytest.approx(2 / 3, abs=0.03)


def test_train_two_tasks_end_to_end_and_refusals(tmp_path, capsys):
    run_dir = tmp_path / "two"
    args = ["train", "tdmpc2", "--preset", "tiny", "--env", "gym:Pendulum-v1,gym:LunarLanderContinuous-v3",
            "--run-dir", str(run_dir), "model.experts=2", "model.top_k=1"]
    assert main([*args, "--steps", "120"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert np.isfinite(summary["eval/gym:Pendulum-v1/return"]) and np.isfinite(
        summary["eval/gym:LunarLanderContinuous-v3/return"])
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "train/task1/loss/consistency" in r]
    assert train and all(abs(sum(r[f"train/task{k}/moe/expert{e}"] for e in range(2)) - 1) < 1e-5
                         for r in train for k in range(2))
    assert all(r["train/loss/balance"] >= 1 - 1e-5 for r in train)
    # the replay: stream 0 plays Pendulum (one action dimension), its stored padding is 0; stream 1 uses both
    chunks = list(Replay(run_dir / "replay", capacity=10_000, seq_len=4).chunks())
    by_task = {int(c[TASK_KEY][0].argmax()): c for c in chunks}
    assert set(by_task) == {0, 1}
    assert (by_task[0]["action"][:, 1] == 0).all() and (by_task[1]["action"][:, 1] != 0).any()
    assert main([*args, "--steps", "160"]) == 0                                # resumes
    assert "resuming" in capsys.readouterr().out
    assert main(["eval", str(run_dir), "--episodes", "1"]) == 0                # every task, each on its own
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["episodes"] == 2 and set(out["tasks"]) == {"gym:Pendulum-v1", "gym:LunarLanderContinuous-v3"}
    assert out["return_mean"] == pytest.approx(np.mean([t["return_mean"] for t in out["tasks"].values()]))
    # reverie analyze: two episodes visit both tasks; each task's shares over the two experts sum to 1
    assert main(["analyze", str(run_dir), "--episodes", "2", "--only", "experts"]) == 0
    capsys.readouterr()
    experts = json.loads((run_dir / "analysis" / "analysis.json").read_text())["sections"]["experts"]
    assert experts["applies"] and experts["data"]["load_balance_loss"] >= 1 - 1e-5
    usage = experts["data"]["usage"]
    assert set(usage) == {"gym:Pendulum-v1", "gym:LunarLanderContinuous-v3"}
    assert all(len(u) == 2 and abs(sum(u) - 1) < 1e-5 for u in usage.values())
    assert main(["train", "tdmpc2", "--preset", "tiny", "--env", "gym:Pendulum-v1,gym:CartPole-v1",
                 "--run-dir", str(tmp_path / "kinds")]) == 2
    assert "a multitask run trains tasks of one action kind" in capsys.readouterr().err
    assert main(["train", "dreamer", "--preset", "tiny", "--env", "gym:Pendulum-v1,gym:MountainCarContinuous-v0",
                 "--run-dir", str(tmp_path / "dreamer")]) == 2
    assert "multitask training is built for tdmpc2 only" in capsys.readouterr().err
