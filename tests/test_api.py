"""The Python API: the README's example runs as written, and each function does what it says."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import reverie
from reverie.models.base import imagine
from reverie.specs import ActionSpec

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_example(), "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert float(out[0]) >= 0 and float(out[1]) >= 0 and float(out[2]) >= 0        # three mean returns
    assert out[3] == "torch.Size([1, 5, 4]) torch.Size([1, 5])"
    assert Path(out[-1]).name == "report.html" and Path(out[-1]).exists()
    # the run folder the example trained is an ordinary one, and training it again resumes it
    run = reverie.train("dreamer", env="gym:CartPole-v1", preset="tiny", steps=300, run_dir="runs/api-demo",
                        run__eval_every=150, say=None)
    assert run.result.counters.env_steps == 300 and run.summary["env_steps"] == 300


def test_import_reverie_loads_neither_torch_nor_an_environment_library():
    import subprocess
    import sys

    code = ("import sys, reverie; print(sorted(m for m in ('torch', 'gymnasium', 'dm_control') if m in sys.modules)); "
            "print(callable(reverie.train), reverie.plan.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["[]", "True reverie.planning.api"]


class Drift:
    """x' = x + a (one-dimensional): the imagined states are the running sums of the actions."""

    act_spec = ActionSpec(False, 1)
    capabilities = frozenset()

    def step(self, state, action):
        return {"x": state["x"] + action}


def test_imagine_rolls_the_prior_along_the_actions():
    start = {"x": torch.tensor([[0.0], [10.0]])}
    actions = torch.tensor([[[1.0], [2.0], [3.0]], [[-1.0], [0.0], [1.0]]])
    future = imagine(Drift(), start, actions)
    torch.testing.assert_close(future["x"], torch.tensor([[[1.0], [3.0], [6.0]], [[9.0], [9.0], [10.0]]]))
    with pytest.raises(ValueError, match=r"actions \[N, H, A\] with N = 2"):
        imagine(Drift(), start, actions[:1])
    with pytest.raises(ValueError, match="have 1 entries, the imagined ones 2"):
        imagine(Drift(), start, torch.zeros(2, 3, 2))


def test_config_takes_overrides_and_keyword_settings_and_names_a_mistyped_key():
    cfg = reverie.make_config("dreamer", "tiny", ["run.steps=123"], run__seed=4)
    assert (cfg.run.steps, cfg.run.seed) == (123, 4)
    from reverie.config import ConfigError
    with pytest.raises(ConfigError, match="did you mean 'run.steps'"):
        reverie.make_config("dreamer", run__stepz=5)


def test_load_of_a_missing_folder_is_one_sentence(tmp_path):
    from reverie.training.run_dir import RunFolderError

    with pytest.raises(RunFolderError, match="does not exist; train first"):
        reverie.load(tmp_path / "nope")


def test_batch_step_adds_a_batch_axis_and_the_action_that_led_in():
    class A:
        act_spec = ActionSpec(True, 3)

    step = {"vector": np.zeros(4, np.float32), "reward": np.float32(1.0), "is_first": np.bool_(False)}
    out = reverie.batch_step(step, A(), np.array(2))
    assert out["vector"].shape == (1, 4) and out["is_first"].shape == (1,)
    np.testing.assert_array_equal(out["action"], [[0.0, 0.0, 1.0]])
    np.testing.assert_array_equal(reverie.batch_step(step, A())["action"], [[0.0, 0.0, 0.0]])
