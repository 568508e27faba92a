"""The world-model contract: every family implements it, every planner runs on every model that has what it
needs (and refuses in one sentence otherwise), and the packages keep their layers."""

import ast
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from reverie.behavior import ActorCritic, ActorCriticConfig
from reverie.models import (CAPABILITIES, CapabilityError, EnsembleConfig, EnsembleWorldModel, RSSMConfig,
                            RSSMWorldModel, WorldModel, WorldModelConfig, capabilities_of, with_heads)
from reverie.models.muzero import MuZeroModel, MuZeroModelConfig
from reverie.models.state import StateError, state_entries
from reverie.models.tdmpc2 import TDMPC2Model, TDMPC2ModelConfig
from reverie.planning import PLANNERS, PlanningError, plan, planner_spec
from reverie.specs import ActionSpec, ArraySpec

OBS = {"vector": ArraySpec((3,), np.dtype(np.float32))}
SMALL_RSSM = dict(units=16, layers=1, reward_bins=21)


def rssm(act, latent="categorical"):
    return RSSMWorldModel(OBS, act, WorldModelConfig(rssm=RSSMConfig(deter=16, hidden=16, stoch=4, classes=4,
                                                                     latent=latent), **SMALL_RSSM))


def rssm_with_actor_critic(act):
    wm = rssm(act)
    ac = ActorCritic(wm.feat_size, act, ActorCriticConfig(units=16, layers=1, critic_bins=21))
    return with_heads(wm, value=ac.value, policy=ac.policy)


FAMILIES = {
    "rssm-categorical": rssm,
    "rssm-gaussian": lambda act: rssm(act, "gaussian"),
    "ensemble": lambda act: EnsembleWorldModel(OBS, act, EnsembleConfig(members=3, units=8, layers=1), particles=4),
    "muzero": lambda act: MuZeroModel(OBS, act, MuZeroModelConfig(latent=8, units=16, layers=1, bins=21)),
    "rssm+actor-critic": rssm_with_actor_critic,
    "tdmpc2": lambda act: TDMPC2Model(OBS, act, TDMPC2ModelConfig(latent=8, enc_units=8, units=8, num_q=2, bins=21)),
}
ACTIONS = {"discrete": ActionSpec(True, 3), "continuous": ActionSpec(False, 2)}
SETTINGS = {   # small enough for a test, every capability the planner can use switched on
    "shooting": dict(horizon=3, candidates=16),
    "cem": dict(horizon=3, candidates=16, elites=4, iterations=2),
    "mppi": dict(horizon=3, candidates=16, elites=4, iterations=2),
    "gradient": dict(horizon=3, restarts=2, iterations=2),
    "mcts": dict(num_simulations=5),
}
FULL = {"use_value": True, "use_cont": True}


# MuZero's agent refuses continuous actions, so its model is only checked with discrete ones; TD-MPC2's model
# refuses discrete ones
CASES = [(f, k) for f in FAMILIES for k in ACTIONS if (f, k) not in {("muzero", "continuous"), ("tdmpc2", "discrete")}]


def build(family, kind):
    torch.manual_seed(0)
    return FAMILIES[family](ACTIONS[kind])


def observed(model, batch=2):
    obs = {"vector": torch.randn(batch, 4, 3)}
    action = torch.zeros(batch, 4, model.act_spec.size)
    is_first = torch.zeros(batch, 4, dtype=torch.bool)
    is_first[:, 0] = True
    with torch.no_grad():
        states, last = model.observe(obs, action, is_first, model.initial(batch))
    return states, last


@pytest.mark.parametrize("family, kind", CASES)
def test_every_family_implements_the_core_and_what_it_declares(family, kind):
    model = build(family, kind)
    assert isinstance(model, WorldModel)
    caps = capabilities_of(model)
    states, last = observed(model)
    leaves = torch.utils._pytree.tree_leaves(states)
    assert all(x.shape[:2] == (2, 4) for x in leaves)                     # [B, T] states
    assert model.features(states).shape == (2, 4, model.feat_size)
    with torch.no_grad():
        nxt = model.step(last, torch.zeros(2, model.act_spec.size))
        assert model.features(nxt).shape == (2, model.feat_size)
        for cap in caps:                                                     # declared means callable on a state
            if cap == "transition":
                z, f = model.transition(nxt, torch.zeros(1, model.act_spec.size))
                assert f(z).shape == z.shape and f(z[:1]).shape == z[:1].shape
                continue
            out = getattr(model, CAPABILITIES[cap])(nxt)
            if cap in ("reward", "cont", "value"):
                assert out.shape == (2,) and torch.isfinite(out).all()
            elif cap == "decoder":
                assert out["vector"].shape == (2, 3)
            else:
                assert out.mode().shape == (2, model.act_spec.size)


@pytest.mark.parametrize("planner", PLANNERS)
@pytest.mark.parametrize("family, kind", CASES)
def test_every_planner_runs_on_every_model_that_has_what_it_needs(family, kind, planner):
    model = build(family, kind)
    spec = planner_spec(planner)
    caps = capabilities_of(model)
    settings = dict(SETTINGS[planner])
    settings.update({k: v for k, v in FULL.items() if k.removeprefix("use_") in caps})
    if "policy" in caps and planner != "mcts":
        settings["policy_candidates"] = 1
    _, start = observed(model)
    if not spec.supports(model.act_spec):
        with pytest.raises(PlanningError, match=f"plans {spec.kinds} actions"):
            plan(planner, model, start, **settings)
        return
    if planner == "mcts" and not {"value", "policy"} <= caps:
        with pytest.raises(CapabilityError, match="needs a model with"):
            plan(planner, model, start, **settings)
        return
    result = plan(planner, model, start, seed=0, **settings)
    assert result.action.shape == (2, model.act_spec.size) and torch.isfinite(result.action).all()
    if model.act_spec.discrete:
        assert torch.equal(result.action.sum(-1), torch.ones(2))           # one-hot choices


@pytest.mark.parametrize("family, kind", CASES)
def test_a_state_of_another_layout_is_named_in_one_sentence(family, kind):
    model = build(family, kind)
    _, last = observed(model)
    assert state_entries(last) is last                                       # every family keeps a flat dict
    action = torch.zeros(2, model.act_spec.size)
    wrong = {"a bare tensor": (torch.zeros(2, model.feat_size), "got a Tensor"),
             "a nested dict": ({**last, "inner": dict(last)}, "got entries ['inner'] that are not tensors")}
    for state, said in wrong.values():
        for read in (lambda s: model.step(s, action), model.features):
            with pytest.raises(StateError) as info:
                read(state)
            assert str(info.value) == f"this model's state is a flat dict of tensors {{key: [B, ...]}}; {said}"


def test_a_missing_capability_is_named_in_one_sentence():
    model = rssm(ActionSpec(False, 2))
    _, start = observed(model)
    with pytest.raises(CapabilityError) as info:
        plan("mppi", model, start, use_value=True)
    message = str(info.value)
    assert message == ("planner 'mppi' with these settings needs a model with value, but RSSMWorldModel has only "
                       "cont, decoder, reward, transition")


def test_heads_add_capabilities_and_pass_the_core_through():
    act = ActionSpec(True, 3)
    torch.manual_seed(0)
    model = rssm_with_actor_critic(act)
    assert capabilities_of(model) == {"reward", "cont", "decoder", "transition", "value", "policy"}
    assert capabilities_of(model.model) == {"reward", "cont", "decoder", "transition"}
    _, last = observed(model)
    torch.testing.assert_close(model.decode(last)["vector"], model.model.decode(last)["vector"])


# ---------------------------------------------------------------------------
# layers of the packages

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "reverie"
CORE = ("nn", "models", "planning", "behavior")
SHELL = ("envs", "training", "agents", "cli")


def package_imports():
    edges = set()
    for path in SRC.rglob("*.py"):
        here = path.relative_to(SRC).parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                if name.startswith("reverie.") and name.split(".")[1] != here:
                    edges.add((here, name.split(".")[1]))
    return edges


def test_no_two_packages_import_each_other_and_the_core_never_imports_the_shell():
    edges = package_imports()
    assert {(a, b) for a, b in edges if (b, a) in edges} == set()
    assert sorted(e for e in edges if e[0] in CORE and e[1] in SHELL) == []


def test_importing_the_core_loads_no_environment_library():
    code = ("import sys, reverie.models, reverie.planning, reverie.behavior, reverie.nn; "
            "print(sorted(m for m in ('gymnasium', 'dm_control', 'ale_py') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_walk_from_reverie_train_to_the_first_update_enters_each_module_once(tmp_path, monkeypatch):
    """At the first gradient step of `reverie train`, the call stack passes through each module of reverie
    once: no module calls into another that calls back into it."""
    import sys as _sys

    from reverie.agents.dreamer import Dreamer
    from reverie.cli import main

    stacks = []

    def spy(self, batch):
        frame, names = _sys._getframe(1), []
        while frame is not None:
            module = frame.f_globals.get("__name__", "")
            if module.startswith("reverie.") and (not names or names[-1] != module):
                names.append(module)
            frame = frame.f_back
        stacks.append(names[::-1])
        raise KeyboardInterrupt   # stop the run at its first update (it checkpoints and exits)

    monkeypatch.setattr(Dreamer, "update", spy)
    assert main(["train", "--preset", "tiny", "--run-dir", str(tmp_path / "run"), "--steps", "200"]) == 130
    walk = stacks[0]
    assert len(walk) == len(set(walk)), walk
    assert walk == ["reverie.cli", "reverie.api", "reverie.training.session", "reverie.training.driver",
                    "reverie.training.modes"]


def module_imports():
    """module -> the reverie modules it imports anywhere in its file (functions included; imports under
    ``if TYPE_CHECKING:`` are type annotations, not imports, and are left out)."""
    modules = {}
    for path in SRC.rglob("*.py"):
        parts = ["reverie", *path.relative_to(SRC).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    edges = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges[name].add(target)
    return edges


def test_no_module_imports_one_that_imports_it_back():
    edges = module_imports()
    assert len(edges) > 100 and "reverie.training.modes" in edges["reverie.training.session"]
    cycles, seen = [], set()
    for start in edges:   # a path from a module's import back to itself is a cycle
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in edges[node]:
                if nxt == start:
                    cycle = frozenset(path)
                    if cycle not in seen:
                        seen.add(cycle)
                        cycles.append(" -> ".join(path + [start]))
                elif nxt not in path and len(path) < 8:
                    stack.append((nxt, path + [nxt]))
    assert cycles == []


def test_the_type_checker_reports_every_module():
    """No module's errors are hidden from mypy: the config has no ``ignore_errors`` override."""
    import tomllib

    config = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text())["tool"]["mypy"]
    assert config["files"] == ["src/reverie"]
    assert not [o for o in config.get("overrides", []) if o.get("ignore_errors")]
