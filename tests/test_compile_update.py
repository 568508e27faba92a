"""``run.compile``: Dreamer's compiled update computes what the eager one does; other agents refuse it;
a machine without torch.compile falls back to eager with one sentence."""

import numpy as np
import pytest
import torch
import torch._inductor.config as inductor_config

from reverie.agents import compiled
from reverie.agents.dreamer import Dreamer
from reverie.agents.registry import resolve_config
from reverie.cli import main
from reverie.models import Batch
from reverie.specs import ActionSpec, ArraySpec

OBS = {"vector": ArraySpec((4,), np.dtype(np.float32))}


def batch_for(agent, starts, b=3, t=5, seed=0):
    rng = np.random.default_rng(seed)
    return Batch.build({
        "vector": rng.normal(size=(b, t, 4)).astype(np.float32),
        "action": np.eye(2, dtype=np.float32)[rng.integers(0, 2, (b, t))],
        "reward": rng.normal(size=(b, t)).astype(np.float32),
        "is_first": np.eye(t, dtype=bool)[starts],             # where each row's episode starts
        "is_last": np.zeros((b, t), bool),
        "is_terminal": np.zeros((b, t), bool),
    }, agent.obs_spec, agent.act_spec)


def build(compile_update: bool) -> Dreamer:
    torch.manual_seed(0)
    cfg = resolve_config("dreamer", "tiny", [f"run.compile={str(compile_update).lower()}", "behavior.horizon=2"])
    return Dreamer(OBS, ActionSpec(True, 2), cfg)


def test_the_compiled_update_gives_the_eager_losses_and_weights():
    eager, fast = build(False), build(True)
    # episode starts at other steps in each batch: the compiled update may not depend on where they are
    batches = [batch_for(eager, [0, 2, 4]), batch_for(eager, [1, 1, 3], seed=1)]
    torch._dynamo.reset()
    graphs = []
    with inductor_config.patch(compile_threads=1):   # in this process: a pool of workers takes seconds to start
        for batch in batches:
            torch.manual_seed(1)
            want = eager.update(batch)
            torch.manual_seed(1)
            got = fast.update(batch)
            for key in [k for k in want if k.startswith("loss/")]:
                assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-5), key
            graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    assert graphs[0] >= 2            # the loss and the rollout were compiled
    assert graphs[1] == graphs[0]    # and the second batch, with its other episode starts, compiled nothing new
    for (name, a), (_, b) in zip(eager.wm.state_dict().items(), fast.wm.state_dict().items()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    assert set(fast.wm.state_dict()) == set(eager.wm.state_dict())   # compiling adds nothing to checkpoints


def test_agents_that_do_not_compile_refuse_run_compile(tmp_path, capsys):
    code = main(["train", "planet", "--preset", "tiny", "--env", "gym:Pendulum-v1", "--steps", "8",
                 "--run-dir", str(tmp_path / "p"), "run.compile=true"])
    err = capsys.readouterr().err
    assert code == 2 and "run.compile=true compiles the updates of dreamer only" in err and "Traceback" not in err
    assert not (tmp_path / "p").exists()   # refused before the run folder is made


def test_without_torch_compile_the_run_trains_eager_and_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(compiled, "compile_problem", lambda: "no C++ compiler found")
    code = main(["train", "--preset", "tiny", "--steps", "150", "--run-dir", str(tmp_path / "d"),
                 "run.compile=true", "run.prefill=100", "run.eval_every=150", "run.eval_episodes=1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "torch.compile does not work on this machine (no C++ compiler found); the update runs eager" in out
    assert "compiled update" not in out
