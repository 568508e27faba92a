"""A missing environment package is one sentence naming the extra of reverie that installs it."""

import builtins
import importlib

import pytest

from reverie.envs import EnvError, make_env
from reverie.envs.packages import EXTRAS, missing_package


@pytest.fixture
def without(monkeypatch):
    """Make importing the given top-level modules fail as if they were not installed."""
    blocked: set[str] = set()
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    real_import_module = importlib.import_module

    def fake_import_module(name, package=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return real_import_module(name, package)

    monkeypatch.setattr(importlib, "import_module", fake_import_module)
    return blocked


def test_carracing_without_box2d_names_the_box2d_extra(without, monkeypatch):
    import sys

    without.add("Box2D")
    for mod in [m for m in sys.modules if m.startswith("gymnasium.envs.box2d") or m.split(".")[0] == "Box2D"]:
        monkeypatch.delitem(sys.modules, mod)
    with pytest.raises(EnvError) as info:
        make_env("gym:CarRacing-v3")
    assert str(info.value) == "gym:CarRacing-v3 needs the box2d package, which is not installed: " \
                              "pip install 'reverie[box2d]'"


def test_a_module_named_in_the_gym_id_without_its_package_names_its_extra(without):
    without.add("vizdoom")
    with pytest.raises(EnvError, match=r"needs the vizdoom package.*pip install 'reverie\[vizdoom\]'"):
        make_env("gym:vizdoom.gymnasium_wrapper:VizdoomTakeCover-v1", obs="pixels")
    without.add("minatar")
    with pytest.raises(EnvError, match=r"reverie\[minatar\]"):
        make_env("gym:minatar.gym:MinAtar/Breakout-v1")


@pytest.mark.parametrize("module", sorted(EXTRAS))
def test_every_suite_package_maps_to_an_extra_of_the_project(module):
    import tomllib
    from pathlib import Path

    extras = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    package, extra = EXTRAS[module]
    assert extra in extras
    try:
        raise RuntimeError("deep failure") from ModuleNotFoundError("gone", name=f"{module}.sub")
    except RuntimeError as err:
        found = missing_package("x:y", err)
    assert found is not None and f"reverie[{extra}]" in str(found) and package in str(found)
    assert missing_package("x:y", ModuleNotFoundError("gone", name="numpy_not_ours")) is None
