"""Numbers out of range, on the command line, in overrides, in files or in Python, answered in one sentence."""

import dataclasses

import pytest

from reverie.agents.dreamer import DreamerConfig
from reverie.agents.registry import AGENTS, resolve_config
from reverie.cli import main
from reverie.config import ConfigError, Range, above, at_least, between, check_ranges, load_config
from reverie.run_config import RunConfig


@pytest.mark.parametrize("argv, message", [
    (["train", "--steps", "-5"], "argument --steps: must be at least 1, got -5"),
    (["train", "--steps", "ten"], "argument --steps: expects a whole number, got 'ten'"),
    (["train", "--seed", "-1"], "argument --seed: must be at least 0, got -1"),
    (["eval", "some-run", "--episodes", "0"], "argument --episodes: must be at least 1, got 0"),
    (["dream", "some-run", "--context", "0"], "argument --context: must be at least 1, got 0"),
    (["dream", "some-run", "--horizon", "-3"], "argument --horizon: must be at least 1, got -3"),
])
def test_command_line_numbers_out_of_range(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)      # nothing may be written, not even a default run folder
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.strip().splitlines()[-1].endswith(f"error: {message}") and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_train_with_run_steps_negative_is_refused_before_anything_is_written(tmp_path, capsys):
    run_dir = tmp_path / "never"
    code = main(["train", "--preset", "tiny", "--run-dir", str(run_dir), "run.steps=-5"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == "error: config key 'run.steps' must be at least 1, got -5"
    assert not run_dir.exists()


@pytest.mark.parametrize("agent, override, message", [
    ("dreamer", "run.num_envs=0", "config key 'run.num_envs' must be at least 1, got 0"),
    ("dreamer", "run.batch_size=0", "config key 'run.batch_size' must be at least 1, got 0"),
    ("dreamer", "run.seq_len=-1", "config key 'run.seq_len' must be at least 1, got -1"),
    ("dreamer", "run.prefill=-1", "config key 'run.prefill' must be at least 0, got -1"),
    ("dreamer", "run.train_ratio=0", "config key 'run.train_ratio' must be above 0, got 0.0"),
    ("dreamer", "run.train_ratio=nan", "config key 'run.train_ratio' must be a finite number above 0, got nan"),
    ("dreamer", "run.replay_capacity=0", "config key 'run.replay_capacity' must be at least 1, got 0"),
    ("dreamer", "run.eval_every=0", "config key 'run.eval_every' must be at least 1, got 0"),
    ("dreamer", "run.checkpoint_every=0", "config key 'run.checkpoint_every' must be at least 1, got 0"),
    ("dreamer", "run.image_size=0", "config key 'run.image_size' must be at least 1, got 0"),
    ("dreamer", "run.action_repeat=0", "config key 'run.action_repeat' must be at least 1, got 0"),
    ("dreamer", "run.time_limit=-10", "config key 'run.time_limit' must be at least 1, got -10"),
    ("dreamer", "run.threads=0", "config key 'run.threads' must be at least 1, got 0"),
    ("dreamer", "run.seed=-2", "config key 'run.seed' must be at least 0, got -2"),
    ("pets", "holdout=1", "config key 'holdout' must be in (0, 1), got 1.0"),
    ("pets", "particles=0", "config key 'particles' must be at least 1, got 0"),
    ("muzero", "lr=0", "config key 'lr' must be above 0, got 0.0"),
    ("muzero", "reanalyse=1.5", "config key 'reanalyse' must be between 0 and 1, got 1.5"),
    ("muzero", "td_steps=0", "config key 'td_steps' must be at least 1, got 0"),
    ("planet", "explore_noise=-0.1", "config key 'explore_noise' must be at least 0, got -0.1"),
])
def test_config_values_out_of_range(capsys, agent, override, message):
    assert main(["config", agent, override]) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"


def test_optional_counts_may_still_be_unset():
    cfg = resolve_config("dreamer", "tiny", ["run.threads=none", "run.time_limit=none", "run.action_repeat=none"])
    assert cfg.run.threads is None and cfg.run.time_limit is None and cfg.run.action_repeat is None


def test_every_preset_of_every_agent_still_loads(capsys):
    for name, entry in AGENTS.items():
        for preset in entry.presets:
            assert main(["config", name, "--preset", preset]) == 0, capsys.readouterr().err


def test_python_api_and_config_files_are_checked_too(tmp_path):
    with pytest.raises(ConfigError, match=r"^RunConfig.steps must be at least 1, got -5$"):
        RunConfig(steps=-5)
    with pytest.raises(ConfigError, match=r"^RunConfig.train_ratio must be a finite number above 0, got inf$"):
        dataclasses.replace(RunConfig(), train_ratio=float("inf"))
    with pytest.raises(ConfigError, match="RunConfig.eval_episodes must be at least 1, got 'ten'"):
        RunConfig(eval_episodes="ten")
    path = tmp_path / "config.yaml"
    path.write_text("run:\n  seq_len: 0\n")
    with pytest.raises(ConfigError, match=r"config.yaml: config key 'run.seq_len' must be at least 1, got 0$"):
        load_config(DreamerConfig, path)


def test_ranges_read_as_words():
    assert at_least(1).describe() == "at least 1"
    assert above(0.0).describe() == "above 0"
    assert between(0.0, 1.0).describe() == "between 0 and 1"
    assert between(0.0, 1.0, low_strict=True).describe() == "in (0, 1]"
    assert Range(high=5).describe() == "at most 5"
    assert not at_least(1).admits(True)       # a bool is not a count
    assert above(0.0).admits(1e-9) and not above(0.0).admits(0.0)


def test_check_ranges_works_on_any_config_dataclass():
    from typing import Annotated

    @dataclasses.dataclass
    class Mine:
        width: Annotated[int, at_least(2)] = 2
        name: str = "x"

        def __post_init__(self):
            check_ranges(self)

    with pytest.raises(ConfigError, match="Mine.width must be at least 2, got 1"):
        Mine(width=1)
