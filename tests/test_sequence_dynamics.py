"""Sequence dynamics for the Dreamer world model: GRU, SSM (parallel scan) and transformer (KV cache)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reverie.cli import main
from reverie.envs import make_env
from reverie.envs.memory import MemoryCue
from reverie.models import RSSMConfig, RSSMWorldModel, WorldModelConfig
from reverie.models.cores import build_core
from reverie.models.rssm import RSSM
from reverie.models.ssm import SSMConfig, SSMDynamics, chunked_scan, loop_scan, parallel_scan
from reverie.models.transformer_dynamics import TransformerConfig, TransformerDynamics
from reverie.specs import ActionSpec, ArraySpec

CORES = {
    "ssm": lambda d: SSMDynamics(SSMConfig(layers=2), d, d),
    "ssm-real-selective": lambda d: SSMDynamics(SSMConfig(layers=2, complex=False, selective=True), d, d),
    "transformer": lambda d: TransformerDynamics(TransformerConfig(layers=2, heads=2, context=5), d, d),
}


def resets(b, t, gen, p=0.2):
    first = torch.rand(b, t, generator=gen) < p
    first[:, 0] = True
    return first


# -- the scan -------------------------------------------------------------------------------------
@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("steps", [1, 7, 64, 100])
def test_parallel_and_chunked_scans_equal_the_step_by_step_recurrence(steps, complex_):
    gen = torch.Generator().manual_seed(steps)
    shape = (3, steps, 5)
    a, b, h0 = torch.rand(shape, generator=gen), torch.randn(shape, generator=gen), torch.randn(3, 5, generator=gen)
    if complex_:
        a = a * torch.exp(1j * torch.randn(shape, generator=gen))
        b, h0 = b * (1 + 0.5j), h0 * (0.3 - 1j)
    a = a * (torch.rand(shape[:2], generator=gen) > 0.2)[..., None]       # resets: a = 0
    ref = loop_scan(a, b, h0)
    torch.testing.assert_close(parallel_scan(a, b, h0), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunked_scan(a, b, h0, chunk=8), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(parallel_scan(a, b), loop_scan(a, b), atol=1e-5, rtol=1e-5)


def test_the_ssm_gives_the_same_states_with_every_scan():
    torch.manual_seed(0)
    cores = [SSMDynamics(SSMConfig(layers=2, chunk=chunk), 8, 8) for chunk in (0, 1, 4)]
    for core in cores[1:]:
        core.load_state_dict(cores[0].state_dict())
    gen = torch.Generator().manual_seed(4)
    x, first = torch.randn(3, 11, 8, generator=gen), resets(3, 11, gen)
    with torch.no_grad():
        (ref, ref_mem), *others = [core.sequence(x, first, core.initial(3, None)) for core in cores]
    for out, mem in others:
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(mem["ssm"], ref_mem["ssm"], atol=1e-5, rtol=1e-5)


def test_a_reset_in_the_scan_forgets_everything_before_it():
    a, b = torch.full((1, 6, 1), 0.9), torch.ones(1, 6, 1)
    a[0, 3] = 0.0
    h = parallel_scan(a, b, torch.full((1, 1), 100.0))[0, :, 0]
    torch.testing.assert_close(h[3:], torch.tensor([1.0, 1.9, 2.71]))   # as if started at step 3 from 0


def assert_same_memory(one, two):
    """Equal states; cache slots outside the episode (valid = 0) are never attended to, so they may differ."""
    if "valid" in one:
        masks = {"": one["valid"], "r": one["rvalid"]}
        for part, mask in masks.items():
            torch.testing.assert_close(mask, two[f"{part}valid"])
            keys = [k for k in one if k.startswith((f"{part}key", f"{part}value"))]
            one = {**one, **{k: one[k] * mask[..., None, :, None] for k in keys}}
            two = {**two, **{k: two[k] * mask[..., None, :, None] for k in keys}}
    assert one.keys() == two.keys()
    for k in one:
        torch.testing.assert_close(one[k], two[k], atol=1e-5, rtol=1e-5)


# -- sequence mode against stepping -----------------------------------------------------------------
def step_through(core, x, first):
    """The core stepped one token at a time, its memory emptied at every episode start."""
    memory, out = core.initial(x.shape[0], None), []
    init = core.initial(x.shape[0], None)
    for t in range(x.shape[1]):
        keep = ~first[:, t]
        memory = {k: torch.where(keep.view(-1, *[1] * (v.dim() - 1)), v, init[k]) for k, v in memory.items()}
        h, memory = core.step(x[:, t], memory)
        out.append(h)
    return torch.stack(out, 1), memory


@pytest.mark.parametrize("kind", sorted(CORES))
def test_sequence_mode_equals_stepping_with_resets(kind):
    torch.manual_seed(0)
    core = CORES[kind](8)
    gen = torch.Generator().manual_seed(1)
    x, first = torch.randn(4, 13, 8, generator=gen), resets(4, 13, gen)
    with torch.no_grad():
        seq, mems = core.sequence(x, first, core.initial(4, None))
        stepped, last = step_through(core, x, first)
    torch.testing.assert_close(seq, stepped, atol=1e-5, rtol=1e-5)
    # the transformer's steps keep their tokens in the recent part, its sequence in the cache: the same history
    same = core.fold if isinstance(core, TransformerDynamics) else (lambda m: m)
    assert_same_memory(same({k: v[:, -1] for k, v in mems.items()}), same(last))


def test_one_cached_transformer_step_equals_recomputing_the_whole_sequence():
    torch.manual_seed(0)
    core = TransformerDynamics(TransformerConfig(layers=2, heads=2, context=4), 8, 8)
    x = torch.randn(2, 11, 8)                               # longer than the context: the window slides
    first = torch.zeros(2, 11, dtype=torch.bool)
    first[:, 0] = True
    with torch.no_grad():
        full, _ = core.sequence(x, first, core.initial(2, None))
        _, mems = core.sequence(x[:, :-1], first[:, :-1], core.initial(2, None))
        cached, _ = core.step(x[:, -1], {k: v[:, -1] for k, v in mems.items()})
        # continuing a sequence from a cache equals the sequence computed at once, too
        half, _ = core.sequence(x[:, 6:], first[:, 6:], {k: v[:, 5] for k, v in mems.items()})
    torch.testing.assert_close(cached, full[:, -1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(half, full[:, 6:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("context, recent", [(4, 3), (4, 16), (5, 1), (3, 3)])
@pytest.mark.parametrize("compiling", [False, True])
def test_cached_steps_through_the_recent_part_and_its_folds_equal_the_whole_sequence(context, recent, compiling,
                                                                                     monkeypatch):
    """Steps past the recent part's size (folds) and past the context (the window slides), from a sequence's
    cache and from an empty one, with rows at different fills of the recent part in one batch, equal the
    sequence computed at once; the compiled path (a fold every step) gives the same numbers."""
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: compiling)
    torch.manual_seed(0)
    core = TransformerDynamics(TransformerConfig(layers=2, heads=2, context=context, recent=recent), 8, 8)
    x = torch.randn(3, 14, 8)
    first = torch.zeros(3, 14, dtype=torch.bool)
    first[:, 0] = True
    first[2, 9] = True                                       # a new episode inside the stepped part of one row
    with torch.no_grad():
        full, _ = core.sequence(x, first, core.initial(3, None))
        _, mems = core.sequence(x[:, :3], first[:, :3], core.initial(3, None))
        memory, out = {k: v[:, -1] for k, v in mems.items()}, []
        init = core.initial(3, None)
        for t in range(3, 14):
            keep = ~first[:, t]
            memory = {k: torch.where(keep.view(-1, *[1] * (v.dim() - 1)), v, init[k]) for k, v in memory.items()}
            h, memory = core.step(x[:, t], memory)
            out.append(h)
        torch.testing.assert_close(torch.stack(out, 1), full[:, 3:], atol=1e-5, rtol=1e-5)
        # rows whose recent parts hold different numbers of tokens, stepped together
        states, expected = [], []
        memory = core.initial(1, None)
        for t in range(8):
            h, memory = core.step(x[:1, t], memory)
            states.append(memory)
            expected.append(core.step(x[:1, t + 1], memory)[0])
        mixed = {k: torch.cat([s[k] for s in states], 0) for k in memory}
        together, _ = core.step(x[0, 1:9], mixed)
        torch.testing.assert_close(together, torch.cat(expected, 0), atol=1e-5, rtol=1e-5)
        # a sequence continued from a state whose recent part is not empty
        part, _ = core.sequence(x[:1, 8:], first[:1, 8:], states[-1])
        torch.testing.assert_close(part, full[:1, 8:], atol=1e-5, rtol=1e-5)


def test_a_rollout_shorter_than_the_recent_part_never_copies_the_cache():
    core = TransformerDynamics(TransformerConfig(layers=1, heads=2, context=6, recent=4), 8, 8)
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        _, mems = core.sequence(x, torch.zeros(2, 5, dtype=torch.bool), core.initial(2, None))
        memory = {k: v[:, -1] for k, v in mems.items()}     # views into the sequence's keys
        assert not memory["key0"].is_contiguous()
        _, memory = core.step(x[:, 0], memory)               # copied once, into a dense cache
        start = memory["key0"]
        assert start.is_contiguous()
        for t in range(1, 4):
            _, memory = core.step(x[:, t], memory)
            assert memory["key0"] is start                   # the cache is the same tensor: not copied
        _, memory = core.step(x[:, 4], memory)               # the recent part was full: folded once
    assert memory["key0"] is not start and memory["rvalid"].sum(-1).tolist() == [1.0, 1.0]


def test_the_transformer_sees_a_window_of_exactly_context_tokens():
    torch.manual_seed(0)
    core = TransformerDynamics(TransformerConfig(layers=1, heads=2, context=3), 8, 8)
    x = torch.randn(1, 6, 8)
    first = torch.zeros(1, 6, dtype=torch.bool)
    y = x.clone()
    y[:, 2] += 1.0                                           # 3 tokens before the last: outside its window
    with torch.no_grad():
        a, _ = core.sequence(x, first, core.initial(1, None))
        b, _ = core.sequence(y, first, core.initial(1, None))
    torch.testing.assert_close(a[:, -1], b[:, -1])
    assert not torch.allclose(a[:, -2], b[:, -2])            # 2 tokens back: inside


# -- episode boundaries inside a batch ----------------------------------------------------------------
@pytest.mark.parametrize("dynamics", ["gru", "ssm", "transformer"])
def test_is_first_resets_every_kind_of_memory_exactly_at_the_boundary(dynamics):
    torch.manual_seed(0)
    settings = {"ssm": SSMConfig(layers=2), "transformer": TransformerConfig(layers=2, heads=2, context=4)}
    rssm = RSSM(RSSMConfig(deter=8, hidden=8, stoch=3, classes=4), 6, 2, dynamics, settings.get(dynamics))
    gen = torch.Generator().manual_seed(2)
    embed, action = torch.randn(3, 10, 6, generator=gen), torch.randn(3, 10, 2, generator=gen)
    first = torch.zeros(3, 10, dtype=torch.bool)
    first[:, 0] = True
    first[1, 6] = first[2, 3] = True                         # episodes start mid-row
    with torch.no_grad():
        post, _ = rssm.observe(embed, action, first, sample=False)
        for row, start in [(1, 6), (2, 3)]:
            alone, _ = rssm.observe(embed[row:row + 1, start:], action[row:row + 1, start:], first[row:row + 1, start:],
                                    sample=False)
            assert_same_memory({k: v[row, start:] for k, v in post.items()}, {k: v[0] for k, v in alone.items()})
        before, _ = rssm.observe(embed[1:2, :6], action[1:2, :6], first[1:2, :6], sample=False)
    assert not torch.allclose(post["deter"][1, 6:], post["deter"][0, 6:])   # the reset did not erase the input
    torch.testing.assert_close(post["deter"][1, :6], before["deter"][0])


@pytest.mark.parametrize("dynamics", ["ssm", "transformer"])
def test_a_world_model_observes_step_by_step_as_it_does_a_sequence(dynamics):
    """Acting folds one step at a time into the state; training filters whole sequences: both agree."""
    torch.manual_seed(0)
    cfg = WorldModelConfig(rssm=RSSMConfig(deter=8, hidden=8, stoch=3, classes=4), units=8, layers=1,
                           reward_bins=11, dynamics=dynamics, transformer=TransformerConfig(heads=2, context=3))
    wm = RSSMWorldModel({"vector": ArraySpec((4,), np.dtype(np.float32))}, ActionSpec(True, 2), cfg)
    assert "transition" not in wm.capabilities
    gen = torch.Generator().manual_seed(3)
    obs, action = torch.randn(2, 7, 4, generator=gen), torch.randn(2, 7, 2, generator=gen)
    first = torch.zeros(2, 7, dtype=torch.bool)
    first[:, 0] = first[0, 4] = True
    with torch.no_grad():
        post, _ = wm.rssm.observe(wm.embed({"vector": obs}), action, first, sample=False)
        state = wm.initial(2)
        for t in range(7):
            _, state = wm.rssm.observe(wm.embed({"vector": obs[:, t:t + 1]}), action[:, t:t + 1], first[:, t:t + 1],
                                       state, sample=False)
            torch.testing.assert_close(state["deter"], post["deter"][:, t], atol=1e-5, rtol=1e-5)
        nxt = wm.step(state, action[:, 0])
    assert set(nxt) == set(state) and all(nxt[k].shape == state[k].shape for k in state)


# -- learning ------------------------------------------------------------------------------------
class CopyNet(nn.Module):
    """Symbols in, the symbol ``DELAY`` steps back out, through one sequence core from the registry."""

    def __init__(self, kind, symbols, dim):
        super().__init__()
        self.inp, self.head = nn.Linear(symbols, dim), nn.Linear(dim, symbols)
        settings = {"ssm": SSMConfig(layers=1), "transformer": TransformerConfig(layers=1, heads=2, context=8)}
        self.core = build_core(kind, dim, dim, settings.get(kind))

    def forward(self, x):
        x = self.inp(x)
        h, _ = self.core.sequence(x, torch.zeros(x.shape[:2], dtype=torch.bool), self.core.initial(x.shape[0], None))
        return self.head(h)


@pytest.mark.parametrize("kind", ["gru", "ssm", "transformer"])
def test_every_dynamics_learns_to_copy_a_symbol_from_three_steps_back(kind):
    symbols, delay = 4, 3
    torch.manual_seed(0)
    net = CopyNet(kind, symbols, 32)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(250):
        seq = torch.randint(0, symbols, (32, 10), generator=gen)
        logits = net(F.one_hot(seq, symbols).float())
        loss = F.cross_entropy(logits[:, delay:].reshape(-1, symbols), seq[:, :-delay].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1                                 # chance is ln 4 = 1.39


# -- the memory suite -------------------------------------------------------------------------------
@pytest.mark.parametrize("delay", [0, 3])
def test_the_memory_env_pays_for_naming_the_cue_at_the_query(delay):
    env = MemoryCue(delay=delay, num_cues=3)
    for seed in range(6):
        obs, info = env.reset(seed=seed)
        cue = info["cue"]
        assert obs.tolist() == [float(i == cue) for i in range(3)] + [1.0, 0.0]
        answer = (cue + seed % 2) % 3                         # right on even seeds, wrong on odd
        for t in range(delay):
            obs, reward, term, trunc, _ = env.step(answer)
            assert reward == 0.0 and not term and obs[3:].tolist() == [0.0, 0.0] and obs[:3].sum() == 1.0
        obs, reward, term, _, _ = env.step((cue + 1) % 3)      # the step before the query: no answer yet
        assert reward == 0.0 and not term and obs.tolist() == [0.0, 0.0, 0.0, 0.0, 1.0]
        obs, reward, term, trunc, _ = env.step(answer)
        assert term and not trunc and reward == float(seed % 2 == 0)
    with pytest.raises(ValueError, match="delay"):
        MemoryCue(delay=-1)


def test_the_memory_suite_is_reachable_by_name():
    env = make_env("gym:reverie/MemoryCue-k50-v0")
    step = env.reset()
    assert step["vector"].shape == (6,) and step["is_first"]
    length = 1
    while not step["is_last"]:
        step = env.step(0)
        length += 1
    assert length == 50 + 3 and step["is_terminal"]


# -- the command line ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dynamics, env, planner", [
    ("ssm", "gym:CartPole-v1", ["cem", "candidates=16", "elites=4", "iterations=2", "horizon=4", "policy_candidates=4"]),
    ("transformer", "gym:Pendulum-v1", ["mppi", "candidates=16", "elites=4", "iterations=2", "horizon=4",
                                        "policy_candidates=4"]),
])
def test_train_resume_and_eval_with_a_planner(dynamics, env, planner, tmp_path, capsys):
    run = tmp_path / dynamics
    args = ["train", "--preset", f"tiny-{dynamics}", "--env", env, "--run-dir", str(run), "run.checkpoint_every=30",
            "run.time_limit=20", "run.prefill=16", "run.train_ratio=32"]
    assert main([*args, "--steps", "30"]) == 0
    first = json.loads((run / "summary.json").read_text())
    assert main([*args, "--steps", "45"]) == 0                 # resumes from the checkpoint at 30
    summary = json.loads((run / "summary.json").read_text())
    assert summary["env_steps"] == 45 and summary["updates"] > first["updates"] > 0
    capsys.readouterr()
    planner_args = [x for setting in planner[1:] for x in ("--planner-arg", setting)]
    assert main(["eval", str(run), "--episodes", "1", "--planner", planner[0], *planner_args]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["planner"] == planner[0] and out["step"] == 45 and out["episodes"] == 1
    assert (1 <= out["return_mean"] <= 20) if dynamics == "ssm" else (-16.3 * 20 <= out["return_mean"] <= 0)


@pytest.mark.parametrize("overrides, words", [
    (["model.dynamics=lstm"], "must be one of 'gru', 'transformer', 'ssm'"),
    (["model.dynamics=transformer", "model.transformer.heads=3"], "heads=3 must divide model.rssm.deter=32"),
    (["model.dynamics=ssm", "model.ssm.dt_min=2"], "must not exceed model.ssm.dt_max"),
])
def test_bad_sequence_settings_are_one_sentence(overrides, words, tmp_path, capsys):
    assert main(["train", "--preset", "tiny", *overrides, "--run-dir", str(tmp_path / "x"), "--steps", "8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and words in err[0]


@pytest.mark.parametrize("dynamics", ["gru", "ssm", "transformer"])
def test_imagined_trajectories_keep_no_sequence_memory_and_the_same_features(dynamics):
    """A rollout keeps each step's memory (the transformer's cache) only for the step it is on: the stacked
    trajectory holds none of the model's ``memory_keys``, and its features are those of a rollout that keeps
    every full state."""
    from reverie.behavior import ActorCritic, ActorCriticConfig
    from reverie.models import stack_states, with_heads
    from reverie.models.base import CapabilityError, without_memory

    torch.manual_seed(0)
    cfg = WorldModelConfig(rssm=RSSMConfig(deter=8, hidden=8, stoch=3, classes=4), units=8, layers=1,
                           reward_bins=11, dynamics=dynamics, transformer=TransformerConfig(heads=2, context=4))
    wm = RSSMWorldModel({"vector": ArraySpec((4,), np.dtype(np.float32))}, ActionSpec(True, 2), cfg)
    expected = {"gru": set(), "ssm": {"ssm"}, "transformer": {"key0", "key1", "value0", "value1", "valid",
                                                                 "rkey0", "rkey1", "rvalue0", "rvalue1", "rvalid"}}[dynamics]
    assert set(wm.memory_keys) == expected and set(with_heads(wm, value=lambda f: f.sum(-1)).memory_keys) == expected
    ac = ActorCritic(wm.feat_size, wm.act_spec, ActorCriticConfig(units=8, layers=1, critic_bins=11))
    with torch.no_grad():
        _, start = wm.observe({"vector": torch.randn(3, 5, 4)}, torch.randn(3, 5, 2), torch.zeros(3, 5, dtype=torch.bool))
        torch.manual_seed(1)
        traj, actions, _ = ac.imagine(wm, start, 6)
        torch.manual_seed(1)
        full, state = [start], start
        for _ in range(6):
            state = wm.step(state, ac._dist(ac.actor(wm.features(state))).sample())
            full.append(state)
        full = stack_states(full, 0)
    assert not set(traj) & expected and set(traj) == set(full) - expected
    assert traj["deter"].shape[:2] == (7, 3)
    torch.testing.assert_close(wm.features(traj), wm.features(full))
    torch.testing.assert_close(wm.reward(traj), wm.reward(full))
    assert without_memory(object(), start) is start          # nothing declared: the state as it is
    bad = type("Bad", (), {"memory_keys": ["key0"]})()
    with pytest.raises(CapabilityError, match="frozenset of state keys"):
        without_memory(bad, start)


def test_states_stack_and_concatenate_by_key_whatever_their_order():
    """A step and a sequence may build their state dicts in different orders (the transformer's do)."""
    from reverie.models import stack_states
    from reverie.models.state import cat_states

    one = {"deter": torch.zeros(2, 3), "key0": torch.ones(2, 5, 4)}
    two = {"key0": torch.full((2, 5, 4), 2.0), "deter": torch.full((2, 3), 3.0)}
    stacked = stack_states([one, two], 1)
    assert stacked["deter"].shape == (2, 2, 3) and stacked["key0"].shape == (2, 2, 5, 4)
    assert stacked["deter"][:, 1].eq(3.0).all() and stacked["key0"][:, 1].eq(2.0).all()
    joined = cat_states([one, two], 0)
    assert joined["deter"][2:].eq(3.0).all() and joined["key0"][:2].eq(1.0).all()
