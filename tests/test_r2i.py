"""R2I's design as an option of the RSSM (``model.rssm.r2i``): the posterior from the embedding alone, the whole
training sequence scanned at once with resets inside it, the scan's memory linear in the sequence length, and
acting one step at a time giving the states the scan gives."""

import numpy as np
import pytest
import torch

from reverie.agents.registry import resolve_config
from reverie.models import Batch, RSSMConfig, RSSMWorldModel, WorldModelConfig
from reverie.models.rssm import RSSM
from reverie.models.scan import lean_scan, loop_scan, parallel_scan
from reverie.models.ssm import SSMConfig, SSMDynamics
from reverie.specs import ActionSpec, ArraySpec


def recurrence(shape, complex_, gen, p_reset=0.2):
    """Random ``(a, b, h0)`` with ``|a| < 1`` and resets (``a = 0``) at random steps of every row."""
    a, b, h0 = torch.rand(shape, generator=gen), torch.randn(shape, generator=gen), torch.randn(shape[0], *shape[2:],
                                                                                                generator=gen)
    if complex_:
        a = a * torch.exp(1j * torch.randn(shape, generator=gen))
        b, h0 = b * torch.exp(1j * torch.randn(shape, generator=gen)), h0 * (0.3 - 1j)
    return a * (torch.rand(shape[:2], generator=gen) > p_reset)[..., None], b, h0


# -- the scan -------------------------------------------------------------------------------------
@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("steps", [1, 2, 13, 64])
def test_the_lean_scan_gives_the_loops_states_and_gradients(steps, complex_):
    gen = torch.Generator().manual_seed(steps)
    a, b, h0 = recurrence((3, steps, 4), complex_, gen)
    weight = torch.randn(a.shape, generator=gen)              # a real loss that reads every state unevenly
    grads = []
    for scan in (loop_scan, lean_scan):
        leaves = [x.clone().requires_grad_() for x in (a, b, h0)]
        h = scan(*leaves)
        loss = (weight * (h.real + 0.5 * h.imag if complex_ else h)).sum()
        grads.append((h.detach(), torch.autograd.grad(loss, leaves)))
    (ref, ref_grads), (out, out_grads) = grads
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for got, want in zip(out_grads, ref_grads):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_the_lean_scan_passes_gradcheck_with_resets():
    gen = torch.Generator().manual_seed(0)
    a, b, h0 = (x.to(torch.complex128).requires_grad_() for x in recurrence((2, 6, 3), True, gen))
    assert torch.autograd.gradcheck(lean_scan, (a, b, h0))
    a, b, h0 = (x.double().requires_grad_() for x in recurrence((2, 6, 3), False, gen))
    assert torch.autograd.gradcheck(lambda a, b: lean_scan(a, b), (a, b))


def test_a_reset_inside_the_sequence_forgets_the_state_before_it():
    gen = torch.Generator().manual_seed(1)
    a, b, h0 = recurrence((2, 9, 3), True, gen, p_reset=0.0)
    a[0, 5] = 0                                                # row 0 starts an episode at step 5
    h = lean_scan(a, b, h0)
    alone = lean_scan(a[:1, 5:], b[:1, 5:])                    # that episode scanned from nothing
    torch.testing.assert_close(h[0, 5:], alone[0])
    assert not torch.allclose(h[1, 5:], lean_scan(a[1:, 5:], b[1:, 5:])[0])   # row 1 carries its past


def test_lean_scan_refuses_mismatched_shapes_in_one_sentence():
    with pytest.raises(ValueError, match="one shape"):
        lean_scan(torch.rand(2, 5, 1), torch.rand(2, 5, 3))


# -- memory linear in T ----------------------------------------------------------------------------
def saved_bytes(fn, *args):
    """Bytes of the distinct storages autograd keeps for the backward pass of ``fn(*args)``."""
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args)
    return sum(storages.values())


def test_the_lean_scans_memory_grows_linearly_with_the_sequence_and_hillis_steeles_does_not():
    gen = torch.Generator().manual_seed(0)

    def memory(scan, steps):
        a, b, h0 = (x.requires_grad_() for x in recurrence((4, steps, 16), True, gen))
        return saved_bytes(scan, a, b, h0)

    lean = [memory(lean_scan, t) for t in (128, 256, 512)]
    hillis = [memory(parallel_scan, t) for t in (128, 256, 512)]
    for short, long in zip(lean, lean[1:]):
        assert 1.95 < long / short < 2.05                     # linear: 2x the steps keep 2x the bytes
    for short, long in zip(hillis, hillis[1:]):
        assert long / short > 2.2                             # T log T: (log 2T / log T) more per step
    assert hillis[-1] > 8 * lean[-1]                          # at T = 512 the through-autograd scan keeps 9x


def test_the_r2i_ssm_cores_memory_grows_linearly_with_the_sequence():
    torch.manual_seed(0)
    core = SSMDynamics(SSMConfig(layers=2), 16, 16)

    def memory(steps, lean):
        core.lean_memory = lean
        x = torch.randn(2, steps, 16)
        first = torch.zeros(2, steps, dtype=torch.bool)
        first[:, 0] = first[1, steps // 3] = True
        return saved_bytes(lambda: core.sequence(x, first, core.initial(2, None)))

    lean = [memory(t, True) for t in (128, 256)]
    hillis = [memory(t, False) for t in (128, 256)]
    assert 1.9 < lean[1] / lean[0] < 2.1
    assert hillis[1] / hillis[0] > lean[1] / lean[0] and hillis[1] > 2 * lean[1]


# -- the core and the RSSM with the option -----------------------------------------------------------------
def test_the_r2i_ssm_core_gives_the_hillis_steele_states_and_parameter_gradients():
    torch.manual_seed(0)
    core = SSMDynamics(SSMConfig(layers=2), 8, 8)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 21, 8, generator=gen)
    first = torch.rand(3, 21, generator=gen) < 0.15
    first[:, 0] = True
    results = []
    for lean in (False, True):
        core.lean_memory = lean
        deter, memory = core.sequence(x, first, core.initial(3, None))
        loss = (deter * torch.linspace(-1, 1, 8)).sum() + memory["ssm"].pow(2).sum()
        results.append((deter.detach(), torch.autograd.grad(loss, list(core.parameters()))))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-5, rtol=1e-5)
    for got, want in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def make_rssm(dynamics, r2i):
    torch.manual_seed(0)
    return RSSM(RSSMConfig(deter=8, hidden=8, stoch=3, classes=4, r2i=r2i), 6, 2, dynamics,
                SSMConfig(layers=2) if dynamics == "ssm" else None)


def inputs(b=3, t=10):
    gen = torch.Generator().manual_seed(5)
    embed, action = torch.randn(b, t, 6, generator=gen), torch.randn(b, t, 2, generator=gen)
    first = torch.zeros(b, t, dtype=torch.bool)
    first[:, 0] = True
    first[1, 6] = first[2, 3] = True                                # episodes start mid-row
    return embed, action, first


@pytest.mark.parametrize("dynamics", ["gru", "ssm"])
def test_the_r2i_posterior_does_not_depend_on_the_recurrent_state(dynamics):
    rssm = make_rssm(dynamics, r2i=True)
    embed, action, first = inputs()
    first[:, 0] = False                                             # the sequence continues the state given
    state = rssm.initial(3)
    gen = torch.Generator().manual_seed(9)
    perturbed = {k: v + torch.randn(v.shape, generator=gen) for k, v in state.items()}
    with torch.no_grad():
        post, _ = rssm.observe(embed, action, first, state, sample=False)
        other, _ = rssm.observe(embed, action, first, perturbed, sample=False)
    assert not torch.allclose(post["deter"], other["deter"])         # the perturbation reached the memory
    torch.testing.assert_close(other["logit"], post["logit"], atol=0, rtol=0)


def test_without_r2i_the_grus_posterior_does_depend_on_the_recurrent_state():
    rssm = make_rssm("gru", r2i=False)
    embed, action, first = inputs()
    first[:, 0] = False
    state = rssm.initial(3)
    perturbed = {**state, "deter": state["deter"] + 1.0}
    with torch.no_grad():
        post, _ = rssm.observe(embed, action, first, state, sample=False)
        other, _ = rssm.observe(embed, action, first, perturbed, sample=False)
    assert not torch.allclose(other["logit"], post["logit"], atol=1e-3)


@pytest.mark.parametrize("dynamics", ["gru", "ssm"])
def test_acting_one_step_at_a_time_gives_the_states_of_the_whole_sequence_scan(dynamics):
    rssm = make_rssm(dynamics, r2i=True)
    embed, action, first = inputs()
    with torch.no_grad():
        post, last = rssm.observe(embed, action, first, sample=False)
        state = rssm.initial(3)
        for t in range(embed.shape[1]):
            _, state = rssm.observe(embed[:, t:t + 1], action[:, t:t + 1], first[:, t:t + 1], state, sample=False)
            for key in post:
                torch.testing.assert_close(state[key], post[key][:, t], atol=1e-5, rtol=1e-5)
        for row, start in [(1, 6), (2, 3)]:                        # a reset forgets the row's past exactly
            alone, _ = rssm.observe(embed[row:row + 1, start:], action[row:row + 1, start:],
                                    first[row:row + 1, start:], sample=False)
            torch.testing.assert_close(alone["deter"][0], post["deter"][row, start:], atol=1e-5, rtol=1e-5)
    assert set(last) == set(state)


def test_the_option_is_a_config_switch_that_is_off_by_default_and_trains_a_world_model():
    assert resolve_config("dreamer", "tiny", []).model.rssm.r2i is False
    cfg = resolve_config("dreamer", "tiny-ssm", ["model.rssm.r2i=true"]).model
    assert cfg.rssm.r2i
    wm = RSSMWorldModel({"vector": ArraySpec((4,), np.dtype(np.float32))}, ActionSpec(True, 2), cfg)
    assert wm.rssm.embed_posterior and wm.rssm.core.lean_memory
    gen = torch.Generator().manual_seed(0)
    batch = Batch.build({"vector": torch.randn(2, 9, 4, generator=gen).numpy(),
                         "action": np.eye(2, dtype=np.float32)[torch.randint(2, (2, 9), generator=gen).numpy()],
                         "reward": np.zeros((2, 9), np.float32), "is_first": np.eye(1, 9, dtype=bool).repeat(2, 0),
                         "is_last": np.zeros((2, 9), bool), "is_terminal": np.zeros((2, 9), bool)},
                        wm.obs_spec, wm.act_spec)
    losses, _, post, _ = wm.loss(batch)
    sum(v.mean() for v in losses.values()).backward()
    core_grads = [p.grad for p in wm.rssm.core.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in core_grads)
    assert any(g.abs().sum() > 0 for g in core_grads)
    off = RSSMWorldModel({"vector": ArraySpec((4,), np.dtype(np.float32))}, ActionSpec(True, 2),
                         WorldModelConfig(rssm=RSSMConfig(deter=8, hidden=8, stoch=3, classes=4)))
    assert not off.rssm.embed_posterior and not off.rssm.core.lean_memory


# -- the diagnosis's window coverage -----------------------------------------------------------------------
def test_the_window_coverage_of_the_diagnosis_matches_counting_every_window_start():
    import importlib.util
    import pathlib
    import sys

    bench = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(bench))
    try:
        spec = importlib.util.spec_from_file_location("memory_credit", bench / "memory_credit.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(bench))
    k, n = 10, 30
    T = k + 3
    data = module.episodes(k, n, seed=0)
    for seq_len in (8, 13, 20, 30):
        starts = range(n * T - seq_len + 1)                    # every window of the stream of whole episodes
        exact = np.mean([any(s <= b and b + T <= s + seq_len for b in range(0, n * T, T)) for s in starts])
        assert module.coverage(data, seq_len, 8000, seed=1) == pytest.approx(exact, abs=0.025)
    assert module.coverage(data, 8, 1000, seed=1) == 0.0
