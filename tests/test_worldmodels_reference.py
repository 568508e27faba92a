"""World Models' reference choices, each against hand-computed values: held random actions, the done head
(weighted ends, calibration, the threshold, what it reads), M's windows with the carried state, and the
controller's outputs (the dead zone, CarRacing's brake at zero)."""

import math

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from reverie.agents.registry import resolve_config
from reverie.agents.worldmodels import Controller, WorldModels
from reverie.agents.worldmodels_memory import Windows
from reverie.config import ConfigError
from reverie.envs.random_actions import HeldRandomActions, longest_runs
from reverie.envs.spaces import unit_to_bounds
from reverie.models.mdn_rnn import MDNRNN, MDNRNNConfig
from reverie.specs import ActionSpec, ArraySpec

IMAGE = {"image": ArraySpec((16, 16, 3), np.dtype(np.uint8))}


# -- held random actions -----------------------------------------------------------------------------
def test_longest_runs_are_the_hand_counted_runs_cut_at_episode_starts():
    actions = np.array([0, 0, 1, 1, 1, 2, 2, 0])
    first = np.array([1, 0, 0, 1, 0, 0, 0, 0], bool)
    np.testing.assert_array_equal(longest_runs(actions), [2, 3, 2, 1])
    np.testing.assert_array_equal(longest_runs(actions, first), [2, 1, 2, 2, 1])
    rows = np.array([[0.5, 1.0], [0.5, 1.0], [0.5, -1.0]])
    np.testing.assert_array_equal(longest_runs(rows), [2, 1])


@pytest.mark.parametrize("hold", [(1, 1), (3, 3), (2, 5)])
def test_held_random_actions_hold_each_draw_for_a_drawn_number_of_steps(hold):
    # continuous draws never repeat, so every run is exactly one hold
    sampler = HeldRandomActions(ActionSpec(False, 2), 3, hold, np.random.default_rng(0))
    actions = np.stack([sampler() for _ in range(60)])               # [60, 3 envs, 2]
    for env in range(3):
        runs = longest_runs(actions[:, env])
        assert hold[0] <= runs[:-1].min() and runs.max() <= hold[1]   # the last run may be cut short
        if hold == (3, 3):
            np.testing.assert_array_equal(runs, np.full(20, 3))
    assert np.abs(actions).max() <= 1.0
    with pytest.raises(ValueError, match="1 <= low <= high"):
        HeldRandomActions(ActionSpec(True, 3), 1, (3, 2), np.random.default_rng(0))


@pytest.mark.parametrize("hold, held", [((4, 4), True), ((1, 1), False)])
def test_the_staged_collection_holds_its_random_actions(tmp_path, hold, held):
    from reverie.cli import main

    run_dir = tmp_path / "run"
    assert main(["train", "worldmodels", "--preset", "tiny", "--run-dir", str(run_dir),
                 f"collect_hold=({hold[0]},{hold[1]})", "generations=1", "run.prefill=300"]) == 0
    data = load_file(str(run_dir / "stages" / "encoded.safetensors"))
    gaps = []
    for chunk in np.unique(data["chunk"]):
        rows = data["chunk"] == chunk
        action, first = data["action"][rows].argmax(-1), data["is_first"][rows].astype(bool)
        # steps p whose action differs from step p - 1's, neither of them an episode's first (zero) action
        p = np.arange(1, len(action))
        changed = p[(action[1:] != action[:-1]) & ~first[1:] & ~first[:-1]]
        gaps += list(np.diff(changed))
    assert len(gaps) >= 4
    # a hold of exactly 4 lets the action change only every 4th step (a redraw may repeat it: 8, 12, ...)
    assert all(g % 4 == 0 for g in gaps) == held


# -- the done head -------------------------------------------------------------------------------------
def done_rnn(**kw):
    torch.manual_seed(0)
    rnn = MDNRNN(3, 2, MDNRNNConfig(hidden=8, mixtures=2, reward_scale=0.0, **kw))
    with torch.no_grad():
        rnn.done_head.weight.zero_()
    return rnn


def test_the_sampled_end_divides_the_weight_out_of_the_odds_and_the_threshold_is_the_references():
    rnn = done_rnn(done_weight=10.0, dream_end="sample")
    z, h = torch.randn(4, 3), torch.randn(4, 8)
    with torch.no_grad():
        rnn.done_head.bias.fill_(math.log(10 * 0.02 / 0.98))     # the weighted odds of a 2 % risk
    torch.testing.assert_close(rnn.cont(z, h), torch.full((4,), 0.98))
    ref = done_rnn(done_weight=10.0, dream_end="threshold")
    for bias, cont in ((0.1, 0.0), (-0.1, 1.0)):                  # ends once the weighted logit passes 0
        with torch.no_grad():
            ref.done_head.bias.fill_(bias)
        torch.testing.assert_close(ref.cont(z, h), torch.full((4,), cont))


def test_the_weighted_done_loss_is_minimised_at_the_weighted_odds():
    # 1 end in 50 steps: the loss with the ends weighted w is stationary where the odds are w / 49
    w = 10.0
    rnn = done_rnn(done_weight=w, dream_end="sample", done_scale=1.0)
    z, a = torch.zeros(1, 50, 3), torch.zeros(1, 50, 2)
    first = torch.zeros(1, 50, dtype=torch.bool)
    first[0, 0] = True
    terminal = torch.zeros(1, 50, dtype=torch.bool)
    terminal[0, 20] = True

    def grad_at(bias):
        with torch.no_grad():
            rnn.done_head.bias.fill_(bias)
        rnn.zero_grad()
        loss, _, _ = rnn.loss(z, a, first, torch.zeros(1, 50), terminal, torch.ones(1, 50))
        # the codes' likelihood does not reach the done head: only the cross-entropy moves its bias
        loss.backward()
        return float(rnn.done_head.bias.grad)

    best = math.log(w / 49)
    assert abs(grad_at(best)) < 1e-6
    assert grad_at(best - 0.5) < 0 < grad_at(best + 0.5)
    with torch.no_grad():
        rnn.done_head.bias.fill_(best)
    assert float(rnn.cont(z[:, 0], torch.zeros(1, 8))) == pytest.approx(49 / 50, abs=1e-6)


@pytest.mark.parametrize("done_input", ["h", "zh"])
def test_the_done_head_on_h_cannot_see_the_end_frame_and_its_code_is_left_out(done_input):
    torch.manual_seed(0)
    rnn = MDNRNN(3, 2, MDNRNNConfig(hidden=8, mixtures=2, reward_scale=0.0, done_input=done_input))
    z, h = torch.randn(5, 3), torch.randn(5, 8)
    black = torch.full((5, 3), -3.0)
    same = torch.allclose(rnn.done_logit(z, h), rnn.done_logit(black, h))
    assert same == (done_input == "h")
    # a window whose last step ends the episode: with done_input=h that step's code is not in the loss
    zs, a = torch.randn(2, 6, 3), torch.randn(2, 6, 2)
    first = torch.zeros(2, 6, dtype=torch.bool)
    first[:, 0] = True
    terminal = torch.zeros(2, 6, dtype=torch.bool)
    terminal[:, -1] = True
    other = zs.clone()
    other[:, -1] = -3.0

    def loss(codes):
        return float(rnn.loss(codes, a, first, torch.zeros(2, 6), terminal, torch.ones(2, 6))[0])

    assert (loss(zs) == pytest.approx(loss(other), abs=1e-6)) == (done_input == "h")


# -- M's windows and the carried state --------------------------------------------------------------------
def test_windows_walk_each_row_on_from_an_episode_start_and_start_over_at_the_chunks_end():
    chunk = np.r_[np.zeros(10, int), np.ones(6, int)]
    first = np.zeros(16, bool)
    first[[0, 5, 10]] = True
    win = Windows(chunk, first, length=3, batch=1, carry=True)
    np.testing.assert_array_equal(win.starts, [0, 5, 10])
    win.starts = np.array([5])                   # one start, so the walk is known
    seen = [win.next(np.random.default_rng(0)) for _ in range(3)]
    np.testing.assert_array_equal([b.index[0] for b in seen], [[5, 6, 7], [5, 6, 7], [5, 6, 7]])
    assert [bool(b.fresh[0]) for b in seen] == [True, True, True]    # 8 + 3 > 10: no room, start over
    win = Windows(chunk, first, length=2, batch=1, carry=True)
    win.starts = np.array([0])
    seen = [win.next(np.random.default_rng(0)) for _ in range(6)]
    np.testing.assert_array_equal([b.index[0, 0] for b in seen], [0, 2, 4, 6, 8, 0])
    assert [bool(b.fresh[0]) for b in seen] == [True, False, False, False, False, True]
    flat = Windows(chunk, first, length=3, batch=64, carry=False).next(np.random.default_rng(0))
    assert flat.fresh.all() and (chunk[flat.index[:, 0]] == chunk[flat.index[:, -1]]).all()
    with pytest.raises(ConfigError, match="run.seq_len=11"):
        Windows(chunk, first, length=11, batch=1, carry=True)


def test_a_window_started_from_the_carried_state_continues_the_long_filter_exactly():
    torch.manual_seed(0)
    rnn = MDNRNN(3, 2, MDNRNNConfig(hidden=8, mixtures=2))
    z, a = torch.randn(2, 10, 3), torch.randn(2, 10, 2)
    first = torch.zeros(2, 10, dtype=torch.bool)
    first[:, 0] = True
    first[1, 7] = True                                    # an episode starts inside the second window
    rew, term, mask = torch.zeros(2, 10), torch.zeros(2, 10, dtype=torch.bool), torch.ones(2, 10)
    zeros = torch.zeros(2, 8)
    hs, cs = rnn.filter(z, a, first, zeros, zeros)
    _, _, carried = rnn.loss(z[:, :4], a[:, :4], first[:, :4], rew[:, :4], term[:, :4], mask[:, :4])
    _, _, (z_end, h_end, c_end) = rnn.loss(z[:, 4:], a[:, 4:], first[:, 4:], rew[:, 4:], term[:, 4:], mask[:, 4:],
                                           start=carried)
    torch.testing.assert_close(h_end, hs[:, -1])
    torch.testing.assert_close(c_end, cs[:, -1])
    torch.testing.assert_close(z_end, z[:, -1])


# -- the controller ---------------------------------------------------------------------------------------
def test_the_dead_zone_controller_plays_left_none_right_at_the_references_thresholds():
    ctrl = Controller(1, ActionSpec(True, 3), bias=False, bins=(1, 0, 2))
    assert ctrl.size == 1
    # one weight on the input 1: the output is tanh(w); bins [-1, -1/3), [-1/3, 1/3), [1/3, 1]
    w = torch.tensor([[-1.0], [-math.atanh(0.32)], [0.0], [math.atanh(0.32)], [math.atanh(0.34)], [3.0]])
    got = ctrl.act(w, torch.ones(6, 1)).argmax(-1).tolist()
    assert got == [1, 0, 0, 0, 2, 2]
    assert Controller(5, ActionSpec(True, 3)).size == 3 * 5 + 3             # argmax with a bias


def test_carracing_at_zero_controller_output_steers_straight_half_gas_and_no_brake():
    low, high = np.array([-1.0, 0.0, 0.0]), np.array([1.0, 1.0, 1.0])     # CarRacing-v3's action bounds
    x = torch.randn(1, 4)
    zero = torch.zeros(1, 3 * 4 + 3)
    before = Controller(4, ActionSpec(False, 3)).act(zero, x)[0].numpy()
    after = Controller(4, ActionSpec(False, 3), clip_dims=(2,)).act(zero, x)[0].numpy()
    np.testing.assert_allclose(unit_to_bounds(before, low, high), [0.0, 0.5, 0.5])
    np.testing.assert_allclose(unit_to_bounds(after, low, high), [0.0, 0.5, 0.0])
    # any output: brake = clip(tanh(o), 0, 1) as the reference, the rest tanh onto [low, high]
    params = torch.zeros(1, 15)
    params[0, 12:] = torch.tensor([0.3, -0.4, 0.5])                          # the bias only
    env = unit_to_bounds(Controller(4, ActionSpec(False, 3), clip_dims=(2,)).act(params, x)[0].numpy(), low, high)
    np.testing.assert_allclose(env, [math.tanh(0.3), (math.tanh(-0.4) + 1) / 2, math.tanh(0.5)], rtol=1e-5)
    params[0, 14] = -0.5
    env = unit_to_bounds(Controller(4, ActionSpec(False, 3), clip_dims=(2,)).act(params, x)[0].numpy(), low, high)
    assert env[2] == 0.0


def test_the_takecover_preset_builds_the_references_controller_and_bad_settings_are_refused():
    cfg = resolve_config("worldmodels", "takecover", ["vae.z_size=4", "rnn.hidden=8", "vae.depth=4"])
    agent = WorldModels(IMAGE, ActionSpec(True, 3), cfg)
    assert agent.controller.size == 4 + 2 * 8                                # [z, c, h], one output, no bias
    assert agent.wm.feat_size == 4 + 2 * 8 and agent.schedule.hold == (1, 10)
    with pytest.raises(ConfigError, match="action_bins"):
        WorldModels(IMAGE, ActionSpec(True, 2), cfg)
    with pytest.raises(ConfigError, match="clip_dims"):
        WorldModels(IMAGE, ActionSpec(False, 2), resolve_config("worldmodels", "default", []))
    with pytest.raises(ConfigError, match="collect_hold"):
        resolve_config("worldmodels", "tiny", ["collect_hold=(3,1)"])
