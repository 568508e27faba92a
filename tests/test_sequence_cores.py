"""Sequence cores as components: the contract's default sequence, the registry, a new core in one class and one
registry line, and checkpoints from before the GRU became a core."""

import numpy as np
import pytest
import torch
from torch import nn

from reverie.config import ConfigError
from reverie.models import Batch, RSSMConfig, RSSMWorldModel, WorldModelConfig
from reverie.models import cores
from reverie.models.base import TRANSITION
from reverie.models.cores import build_core, register_core
from reverie.models.gru_core import GRUCore
from reverie.models.rssm import RSSM
from reverie.models.sequence_core import SequenceCore
from reverie.models.ssm import SSMConfig
from reverie.models.transformer_dynamics import TransformerConfig
from reverie.nn import OneHotDist
from reverie.specs import ActionSpec, ArraySpec

OBS = {"vector": ArraySpec((4,), np.dtype(np.float32))}


class LeakyIntegrator(SequenceCore):
    """``deter_t = leak * deter_{t-1} + W x_t``: the recurrent state is ``deter`` itself."""

    leak = 0.9

    def __init__(self, hidden: int, deter: int):
        super().__init__(hidden, deter)
        self.inp = nn.Linear(hidden, deter)

    def step(self, x, memory):
        return self.leak * memory["deter"] + self.inp(x), {}


class LinearRecurrence(SequenceCore):
    """``h_t = A h_{t-1} + B x_t`` in a memory entry ``lin``, ``deter_t = tanh(C h_t)``; posterior from the
    embedding alone."""

    memory_keys = ("lin",)
    parallel_posterior = True

    def __init__(self, hidden: int, deter: int, state: int = 5):
        super().__init__(hidden, deter)
        self.a = nn.Parameter(0.5 * torch.eye(state))
        self.b, self.c = nn.Linear(hidden, state), nn.Linear(state, deter)

    def initial_memory(self, batch, device):
        return {"lin": torch.zeros(batch, self.a.shape[0], device=device)}

    def step(self, x, memory):
        h = memory["lin"] @ self.a.T + self.b(x)
        return torch.tanh(self.c(h)), {"lin": h}


class SteppedLinearRecurrence(LinearRecurrence):
    """The same recurrence with a posterior that sees ``deter``: filtering steps through time with memory."""

    parallel_posterior = False


@pytest.fixture
def registry(monkeypatch):
    """A copy of the registry for one test: what it registers is gone afterwards."""
    monkeypatch.setattr(cores, "SEQUENCE_CORES", dict(cores.SEQUENCE_CORES))
    return cores.SEQUENCE_CORES


def random_batch(b=3, t=6, seed=0):
    rng = np.random.default_rng(seed)
    first = np.zeros((b, t), bool)
    first[:, 0] = first[1, 3] = True
    return Batch.build({"vector": rng.normal(size=(b, t, 4)).astype(np.float32),
                        "action": np.eye(2, dtype=np.float32)[rng.integers(0, 2, (b, t))],
                        "reward": rng.normal(size=(b, t)).astype(np.float32), "is_first": first,
                        "is_last": np.zeros((b, t), bool), "is_terminal": np.zeros((b, t), bool)}, OBS,
                       ActionSpec(True, 2))


def world_model(dynamics: str, **settings) -> RSSMWorldModel:
    torch.manual_seed(0)
    cfg = WorldModelConfig(rssm=RSSMConfig(deter=8, hidden=8, stoch=3, classes=4), units=8, layers=1,
                           reward_bins=11, dynamics=dynamics, **settings)
    return RSSMWorldModel(OBS, ActionSpec(True, 2), cfg)


# -- the contract ----------------------------------------------------------------------------------
@pytest.mark.parametrize("core", [LeakyIntegrator, LinearRecurrence, GRUCore])
def test_the_default_sequence_is_the_step_run_with_resets(core):
    """The base class's sequence against a hand-written loop over step, memory emptied at each episode start."""
    torch.manual_seed(0)
    core = core(6, 8)
    x = torch.randn(3, 7, 6)
    first = torch.zeros(3, 7, dtype=torch.bool)
    first[:, 0] = first[0, 4] = first[2, 2] = True
    start = {k: torch.randn_like(v) for k, v in core.initial(3, None).items()}   # overwritten at step 0
    with torch.no_grad():
        deter, memory = core.sequence(x, first, start)
        state, want, kept = start, [], []
        for t in range(7):
            state = {k: torch.where(first[:, t].view(-1, *[1] * (v.dim() - 1)), torch.zeros_like(v), v)
                     for k, v in state.items()}
            d, added = core.step(x[:, t], state)
            state = {"deter": d, **added}
            want.append(d)
            kept.append(added)
    torch.testing.assert_close(deter, torch.stack(want, 1))
    assert set(memory) == set(core.memory_keys)
    for k in memory:
        torch.testing.assert_close(memory[k], torch.stack([m[k] for m in kept], 1))
    assert core.markov_in_deter == (not core.memory_keys)


def test_the_gru_core_is_the_gru_cell_on_deter():
    torch.manual_seed(0)
    core = GRUCore(6, 8)
    x, h = torch.randn(4, 6), torch.randn(4, 8)
    deter, added = core.step(x, {"deter": h})
    torch.testing.assert_close(deter, core.cell(x, h))
    assert added == {} and not core.parallel_posterior and core.markov_in_deter
    assert set(core.initial(4, None)) == {"deter"} and core.initial(4, None)["deter"].eq(0).all()


# -- the registry ----------------------------------------------------------------------------------
def test_the_registry_builds_the_configured_cores_with_their_settings():
    assert list(cores.SEQUENCE_CORES) == ["gru", "transformer", "ssm"]
    ssm = build_core("ssm", 8, 8, SSMConfig(layers=3))
    assert len(ssm.layers) == 3 and ssm.parallel_posterior and not ssm.markov_in_deter
    transformer = build_core("transformer", 8, 8, TransformerConfig(heads=2, context=5))
    assert transformer.cfg.context == 5 and transformer.rel_bias.shape == (2, 5)
    assert len(build_core("ssm", 8, 8).layers) == SSMConfig().layers        # no settings: the defaults
    wm = world_model("ssm", ssm=SSMConfig(layers=1))                         # the model.ssm section
    assert len(wm.rssm.core.layers) == 1 and TRANSITION not in wm.capabilities


def test_bad_registry_use_is_one_sentence(registry):
    with pytest.raises(ConfigError, match="model.dynamics='lstm' is not a sequence core: choose one of gru, "
                                          "transformer, ssm"):
        RSSM(RSSMConfig(deter=8, hidden=8), 4, 2, "lstm")
    with pytest.raises(ValueError, match="'gru' is taken by GRUCore"):
        register_core("gru", LeakyIntegrator)
    with pytest.raises(TypeError, match="SequenceCore subclass"):
        register_core("cell", nn.GRUCell)
    with pytest.raises(ConfigError, match="GRUCore sequence core takes no settings"):
        build_core("gru", 8, 8, SSMConfig())
    with pytest.raises(ConfigError, match="ssm sequence core takes an SSMConfig, got TransformerConfig"):
        build_core("ssm", 8, 8, TransformerConfig())


# -- a new core: one class and one registry line ---------------------------------------------------------
@pytest.mark.parametrize("core", [LeakyIntegrator, LinearRecurrence, SteppedLinearRecurrence])
def test_a_registered_core_runs_a_world_model_that_observes_imagines_and_trains(core, registry):
    register_core("toy", core)
    wm = world_model("toy")
    rssm = wm.rssm
    assert isinstance(rssm.core, core) and wm.memory_keys == frozenset(core.memory_keys)
    assert (TRANSITION in wm.capabilities) == (not core.memory_keys)
    batch = random_batch()
    with torch.no_grad():
        post, last = rssm.observe(wm.embed(batch.obs), batch.action, batch.is_first, sample=False)
        # one step at a time through the same filter, carrying the last state: the same posteriors
        state = wm.initial(3)
        for t in range(6):
            _, state = rssm.observe(wm.embed({"vector": batch.obs["vector"][:, t:t + 1]}), batch.action[:, t:t + 1],
                                    batch.is_first[:, t:t + 1], state, sample=False)
            torch.testing.assert_close(state["deter"], post["deter"][:, t])
            torch.testing.assert_close(state["stoch"], post["stoch"][:, t])
        # a parallel posterior is one of the observation alone: other actions leave it as it is
        other, _ = rssm.observe(wm.embed(batch.obs), batch.action.flip(-1), batch.is_first, sample=False)
        assert not torch.allclose(other["deter"], post["deter"])
        assert torch.equal(other["logit"], post["logit"]) == core.parallel_posterior
        # an imagined step is the core's formula on the embedded [stoch, action]
        action = torch.eye(2)[torch.tensor([0, 1, 1])]
        nxt = wm.step(last, action)
        x = rssm.img_in(torch.cat([last["stoch"].flatten(-2), action], -1))
        if core is LeakyIntegrator:
            want = 0.9 * last["deter"] + rssm.core.inp(x)
        else:
            h = last["lin"] @ rssm.core.a.T + rssm.core.b(x)
            want = torch.tanh(rssm.core.c(h))
            torch.testing.assert_close(nxt["lin"], h)
        torch.testing.assert_close(nxt["deter"], want)
    assert set(nxt) == set(last) == {"deter", "stoch", "logit", *core.memory_keys}
    losses, _, _, _ = wm.loss(batch)
    assert set(losses) == {"rec", "reward", "cont", "dyn", "rep"}
    sum(v.mean() for v in losses.values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in rssm.core.parameters())


def test_a_core_without_memory_gives_the_transition_map_and_one_with_memory_refuses_it(registry):
    register_core("leaky", LeakyIntegrator)
    register_core("linear", LinearRecurrence)
    wm = world_model("leaky")
    deter, action = torch.randn(5, 8), torch.eye(2)[torch.tensor([0, 1, 0, 1, 1])]
    probs = OneHotDist(wm.rssm.prior_head(deter).reshape(5, 3, 4), wm.cfg.rssm.unimix).probs
    want = 0.9 * deter + wm.rssm.core.inp(wm.rssm.img_in(torch.cat([probs.flatten(-2), action], -1)))
    torch.testing.assert_close(wm.rssm.mean_step(deter, action), want)
    with pytest.raises(ValueError, match="the linear dynamics has no deterministic map on deter alone"):
        world_model("linear").rssm.mean_step(deter, action)


# -- checkpoints from before the GRU became a core ------------------------------------------------------
def test_a_state_dict_in_the_old_gru_naming_loads_into_the_core():
    wm = world_model("gru")
    old = {k.replace("rssm.core.cell.", "rssm.gru."): v.clone() for k, v in wm.state_dict().items()}
    assert [k for k in old if "gru" in k] == ["rssm.gru.linear.weight", "rssm.gru.norm.weight", "rssm.gru.norm.bias"]
    torch.manual_seed(1)
    fresh = RSSMWorldModel(OBS, ActionSpec(True, 2), wm.cfg)
    assert not torch.equal(fresh.rssm.core.cell.linear.weight, wm.rssm.core.cell.linear.weight)
    fresh.load_state_dict(old)                                            # strict: every key placed
    for k, v in wm.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    batch = random_batch()
    torch.manual_seed(2)
    with torch.no_grad():
        want, _ = wm.observe(batch.obs, batch.action, batch.is_first)
    torch.manual_seed(2)
    with torch.no_grad():
        got, _ = fresh.observe(batch.obs, batch.action, batch.is_first)
    torch.testing.assert_close(got["deter"], want["deter"], rtol=0, atol=0)
    # the RSSM alone (no prefix) migrates too
    rssm = RSSM(wm.cfg.rssm, wm.encoder.out_dim, 2)
    rssm.load_state_dict({k.removeprefix("rssm."): v for k, v in old.items() if k.startswith("rssm.")})
    assert torch.equal(rssm.core.cell.norm.bias, wm.rssm.core.cell.norm.bias)
    # the parameters keep their order (optimiser states are saved by position)
    names = [n.replace("core.cell.", "gru.") for n, _ in wm.rssm.named_parameters()]
    assert names[names.index("gru.linear.weight") - 1].startswith("img_in.")
    assert names[names.index("gru.norm.bias") + 1].startswith("prior_head.")
