"""Tests for reverie.config: typed overrides, strict dict/YAML loading, helpful errors."""

from __future__ import annotations

import dataclasses
import pathlib
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest
import yaml

from reverie.config import (
    ConfigError,
    apply_overrides,
    flat_keys,
    from_dict,
    load_config,
    save_config,
    to_dict,
)


@dataclass(frozen=True)
class ModelCfg:
    hidden: tuple[int, ...] = (64, 64)
    kind: Literal["gaussian", "categorical"] = "gaussian"
    classes: Optional[int] = None
    free_nats: float = 1.0


@dataclass(frozen=True)
class TrainCfg:
    batch_size: int = 16
    lr: float = 1e-4
    compile: bool = False
    name: Optional[str] = "run"
    out: pathlib.Path = pathlib.Path("runs")

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class ExtraCfg:
    depth: int = 2


@dataclass
class RootCfg:  # deliberately not frozen: both kinds must work
    seed: int = 0
    model: ModelCfg = field(default_factory=ModelCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    extra: Optional[ExtraCfg] = None
    pair: tuple[float, float] = (0.5, 1.5)
    tags: list[str] = field(default_factory=list)


@dataclass
class Required:
    size: int
    scale: float = 1.0


# ----------------------------------------------------------------- overrides


def test_overrides_parse_by_type_and_return_new_instance():
    base = RootCfg()
    cfg = apply_overrides(
        base,
        [
            "seed=7",
            "train.lr=3e-4",
            "train.batch_size=1e3",
            "train.compile=true",
            "model.hidden=(256,256)",
            "model.kind=categorical",
            "model.classes=32",
            "pair=0.1,0.2",
            "tags=[a, b]",
            "train.out=/tmp/x",
        ],
    )
    assert cfg.seed == 7 and isinstance(cfg.seed, int)
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)
    assert cfg.train.batch_size == 1000 and isinstance(cfg.train.batch_size, int)
    assert cfg.train.compile is True
    assert cfg.model.hidden == (256, 256)
    assert cfg.model.kind == "categorical"
    assert cfg.model.classes == 32
    assert cfg.pair == (0.1, 0.2)
    assert cfg.tags == ["a", "b"]
    assert cfg.train.out == pathlib.Path("/tmp/x")
    # The original is untouched.
    assert base == RootCfg()


@pytest.mark.parametrize(
    "text, expected",
    [("256,256", (256, 256)), ("[1, 2, 3]", (1, 2, 3)), ("(8,)", (8,)), ("8", (8,)), ("()", ())],
)
def test_tuple_override_forms(text, expected):
    assert apply_overrides(RootCfg(), [f"model.hidden={text}"]).model.hidden == expected


@pytest.mark.parametrize("text, expected", [("false", False), ("True", True), ("no", False), ("1", True)])
def test_bool_override_words(text, expected):
    cfg = apply_overrides(RootCfg(train=TrainCfg(compile=not expected)), [f"train.compile={text}"])
    assert cfg.train.compile is expected


def test_optional_none_and_later_overrides_win():
    cfg = apply_overrides(RootCfg(), ["train.name=none", "model.classes=4", "model.classes=null"])
    assert cfg.train.name is None
    assert cfg.model.classes is None
    cfg = apply_overrides(RootCfg(), ["train.name='quoted'"])
    assert cfg.train.name == "quoted"


def test_override_inside_none_optional_section_creates_it():
    cfg = apply_overrides(RootCfg(), ["extra.depth=5"])
    assert cfg.extra == ExtraCfg(depth=5)
    assert apply_overrides(cfg, ["extra=none"]).extra is None


def test_unknown_key_names_closest_key():
    with pytest.raises(ConfigError) as e:
        apply_overrides(RootCfg(), ["train.batch_szie=32"])
    assert str(e.value) == "unknown config key 'train.batch_szie'; did you mean 'train.batch_size'?"
    # A typo in the section name is still matched on the leaf.
    with pytest.raises(ConfigError, match="did you mean 'train.batch_size'"):
        apply_overrides(RootCfg(), ["trian.batch_size=32"])
    with pytest.raises(ConfigError, match="valid keys are"):
        apply_overrides(RootCfg(), ["zzzzzz=1"])


def test_bad_override_values():
    with pytest.raises(ConfigError, match="not of the form key=value"):
        apply_overrides(RootCfg(), ["train.batch_size"])
    with pytest.raises(ConfigError, match=r"'model.kind' must be one of 'gaussian', 'categorical'.*did you mean 'gaussian'"):
        apply_overrides(RootCfg(), ["model.kind=gausian"])
    with pytest.raises(ConfigError, match="'train.batch_size' expects an integer, got 'abc'"):
        apply_overrides(RootCfg(), ["train.batch_size=abc"])
    with pytest.raises(ConfigError, match="'train.batch_size' expects an integer, got '1.5'"):
        apply_overrides(RootCfg(), ["train.batch_size=1.5"])
    with pytest.raises(ConfigError, match="expects true or false"):
        apply_overrides(RootCfg(), ["train.compile=maybe"])
    with pytest.raises(ConfigError, match="is a section"):
        apply_overrides(RootCfg(), ["train=3"])
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides(RootCfg(), ["seed.x=3"])
    with pytest.raises(ConfigError, match="expects 2 comma-separated values"):
        apply_overrides(RootCfg(), ["pair=1,2,3"])
    # Not optional: 'none' is not an int.
    with pytest.raises(ConfigError, match="expects an integer"):
        apply_overrides(RootCfg(), ["seed=none"])


def test_post_init_validation_becomes_config_error():
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        apply_overrides(RootCfg(), ["train.batch_size=0"])


def test_flat_keys_lists_every_leaf_including_optional_sections():
    keys = flat_keys(RootCfg())
    assert keys == [
        "seed",
        "model.hidden", "model.kind", "model.classes", "model.free_nats",
        "train.batch_size", "train.lr", "train.compile", "train.name", "train.out",
        "extra.depth",
        "pair", "tags",
    ]
    assert flat_keys(RootCfg) == keys


# --------------------------------------------------------------- dict / YAML


def test_to_dict_is_plain_and_round_trips():
    cfg = apply_overrides(RootCfg(), ["model.hidden=1,2", "extra.depth=3", "tags=x"])
    d = to_dict(cfg)
    assert d["model"]["hidden"] == [1, 2]
    assert d["extra"] == {"depth": 3}
    assert d["train"]["out"] == "runs"
    # Plain types only: survives a YAML safe_dump/safe_load.
    assert yaml.safe_load(yaml.safe_dump(d)) == d
    assert from_dict(RootCfg, d) == cfg


def test_from_dict_strict_errors():
    with pytest.raises(ConfigError) as e:
        from_dict(RootCfg, {"model": {"hiden": [1]}})
    assert "unknown config key 'model.hiden'; did you mean 'model.hidden'?" == str(e.value)
    with pytest.raises(ConfigError, match=r"'train.lr' expects float, got 'fast' \(str\)"):
        from_dict(RootCfg, {"train": {"lr": "fast"}})
    with pytest.raises(ConfigError, match=r"'train.batch_size' expects int, got 2.5"):
        from_dict(RootCfg, {"train": {"batch_size": 2.5}})
    with pytest.raises(ConfigError, match=r"'train.compile' expects bool, got 1"):
        from_dict(RootCfg, {"train": {"compile": 1}})
    with pytest.raises(ConfigError, match=r"'model.hidden\[1\]' expects int"):
        from_dict(RootCfg, {"model": {"hidden": [1, "x"]}})
    with pytest.raises(ConfigError, match="must be one of 'gaussian', 'categorical'"):
        from_dict(RootCfg, {"model": {"kind": "other"}})
    with pytest.raises(ConfigError, match="section 'train' must be a mapping"):
        from_dict(RootCfg, {"train": [1, 2]})
    with pytest.raises(ConfigError, match="'size' is required"):
        from_dict(Required, {})
    # Ints are fine for floats, and missing keys take defaults.
    cfg = from_dict(RootCfg, {"train": {"lr": 1}})
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.model == ModelCfg()


def test_save_load_yaml_round_trip(tmp_path):
    cfg = apply_overrides(RootCfg(), ["seed=3", "model.kind=categorical", "train.lr=2.5e-4", "extra.depth=1"])
    path = save_config(cfg, tmp_path / "sub" / "config.yaml")
    assert path.is_file()
    assert not [p for p in path.parent.iterdir() if p.name != "config.yaml"]  # no temp files left
    assert load_config(RootCfg, path) == cfg
    # Hand-written YAML: '1e-4' is a string to PyYAML but a float field accepts it.
    (tmp_path / "hand.yaml").write_text("train:\n  lr: 1e-4\n")
    assert load_config(RootCfg, tmp_path / "hand.yaml").train.lr == pytest.approx(1e-4)
    (tmp_path / "bad.yaml").write_text("train:\n  lr: 0.1\n  batch: 3\n")
    with pytest.raises(ConfigError, match="bad.yaml: unknown config key 'train.batch'"):
        load_config(RootCfg, tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(RootCfg, tmp_path / "missing.yaml")


def test_frozen_dataclass_is_still_frozen_after_overrides():
    cfg = apply_overrides(RootCfg(), ["model.free_nats=3"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.free_nats = 1.0  # type: ignore[misc]
