"""Latent actions learned from frames alone: the quantiser's straight-through gradients and codebook step by hand,
a model that never reads the true actions, codes that recover a toy world's actions, the metrics on hand-made
arrays, and `reverie train lapo` end to end with its dream played by codes."""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from reverie.agents.base import StageWork
from reverie.agents.latent_action import LatentAction, LatentActionConfig, windows_of
from reverie.agents.registry import resolve_config
from reverie.analysis.controllability import controllability_report, delta_psnr, psnr, rollout, rollout_starts
from reverie.analysis.latent_actions import (code_action_agreement, frame_error, held_out_report, majority_mapping,
                                             nearest_code, pairwise_spread)
from reverie.models.base import DECODER, capabilities_of
from reverie.models.latent_action import LatentActionModel, LatentActionModelConfig, VectorQuantizer
from reverie.specs import ActionSpec, ArraySpec

WIDTH = 10
REPO = Path(__file__).resolve().parents[1]
DOT = {"image": ArraySpec((1, WIDTH, 1), np.dtype(np.uint8))}


# -- the quantiser ---------------------------------------------------------------------------------
def two_codes() -> VectorQuantizer:
    vq = VectorQuantizer(2, 2)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    return vq


def test_the_quantiser_picks_the_nearest_code_and_passes_gradients_straight_through():
    vq = two_codes()
    z_e = torch.tensor([[0.2, 0.1], [0.9, 1.2]], requires_grad=True)
    q = vq(z_e)
    assert q.codes.tolist() == [0, 1]
    torch.testing.assert_close(q.latent, torch.tensor([[0.0, 0.0], [1.0, 1.0]]))   # the codes themselves
    weights = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    (q.latent * weights).sum().backward()
    torch.testing.assert_close(z_e.grad, weights)              # as if there were no rounding
    assert vq.codebook.grad is None                            # the forward model's loss moves no code


def test_one_sgd_step_moves_each_code_halfway_to_its_latents_mean_and_commitment_moves_only_the_latents():
    vq = two_codes()
    z_e = torch.tensor([[0.2, 0.1], [0.9, 1.2]], requires_grad=True)
    q = vq(z_e)
    # codebook loss mean_N mean_D (z - e)^2: its gradient on e_k is -2 (z - e_k) / (N D) = -(z - e_k) / 2 here
    torch.testing.assert_close(q.codebook, torch.tensor([(0.04 + 0.01) / 2, (0.01 + 0.04) / 2]))
    q.codebook.mean().backward(retain_graph=True)
    assert z_e.grad is None
    with torch.no_grad():
        vq.codebook -= 1.0 * vq.codebook.grad                  # SGD, learning rate 1
    torch.testing.assert_close(vq.codebook.detach(), torch.tensor([[0.1, 0.05], [0.95, 1.1]]))
    vq.codebook.grad = None
    q.commitment.mean().backward()
    assert vq.codebook.grad is None
    torch.testing.assert_close(z_e.grad, torch.tensor([[0.1, 0.05], [-0.05, 0.1]]))   # 2 (z - e) / (N D)


def test_a_code_that_falls_out_of_use_restarts_on_a_latent_of_the_batch():
    vq = two_codes()
    z_e = torch.tensor([[0.2, 0.1], [0.3, 0.0], [-0.1, 0.2]])
    codes = vq(z_e).codes
    assert codes.tolist() == [0, 0, 0]
    # shares (1, 0); usage 0.5 * 0.5 + 0.5 * share = (0.75, 0.25): code 1 is below 0.6 / 2
    moved = vq.restart_unused(z_e, codes, decay=0.5, threshold=0.6, generator=torch.Generator().manual_seed(0))
    assert moved == 1
    assert any(torch.equal(vq.codebook[1].detach(), row) for row in z_e)
    torch.testing.assert_close(vq.usage, torch.tensor([0.75, 0.5]))
    assert vq.restart_unused(z_e, codes, decay=0.5, threshold=0.1) == 0            # 0.25 is not below 0.05


# -- a toy world: a dot that moves left, stays or moves right ---------------------------------------
def dot_chunks(steps: int, seed: int) -> list[dict[str, np.ndarray]]:
    """A dot on a 1 x 10 strip moved by action 0 (left), 1 (stay) or 2 (right); an episode ends where the dot
    reaches an end of the strip, so no action is ever blocked. Chunks of 100 steps as a replay keeps them."""
    rng = np.random.default_rng(seed)
    image = np.zeros((steps, 1, WIDTH, 1), np.uint8)
    is_first = np.zeros(steps, bool)
    action = np.zeros((steps, 3), np.float32)
    pos, first = 0, True
    for t in range(steps):
        if first:
            pos, a = int(rng.integers(2, WIDTH - 2)), 1
        else:
            a = int(rng.integers(0, 3))
            pos += a - 1
        image[t, 0, pos, 0], is_first[t], action[t, a] = 255, first, 1.0
        first = pos in (0, WIDTH - 1)
    cut = list(range(0, steps, 100))
    return [{"image": image[s:s + 101], "is_first": is_first[s:s + 101], "action": action[s:s + 101]} for s in cut]


class ListReplay:
    def __init__(self, chunks):
        self._chunks = chunks

    def chunks(self, overlap: bool = False):
        return iter(self._chunks)


def work(chunks) -> StageWork:
    return StageWork(replay=ListReplay(chunks), directory=None, make_env=None, num_envs=1, parallel=False, seed=0,
                     agent_steps=0)


def dot_agent(**settings) -> LatentAction:
    cfg = resolve_config("lapo", "default", [f"{k}={v}" for k, v in settings.items()])
    assert isinstance(cfg, LatentActionConfig)
    torch.manual_seed(0)
    return LatentAction(DOT, ActionSpec(True, 3), cfg)


def finish(agent: LatentAction, chunks) -> list[dict[str, float]]:
    reports = []
    while True:
        report = agent.advance(work(chunks))
        reports.append(report.metrics)
        if report.done:
            return reports


def test_windows_pad_an_episodes_start_with_its_first_frame_and_keep_the_true_action_aside():
    # steps 0..5 of one stream; an episode starts at step 3
    is_first = np.array([1, 0, 0, 1, 0, 0], bool)
    chunk = {"image": np.arange(6)[:, None, None, None], "is_first": is_first,
             "action": np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 2, 1]]}
    data = windows_of([chunk], "image", context=2, discrete=True)
    frames = data.frames[data.rows][..., 0, 0, 0].tolist()
    assert frames == [[0, 0, 1], [0, 1, 2], [3, 3, 4], [3, 4, 5]]
    assert data.actions.tolist() == [1, 2, 2, 1]


def test_the_model_learns_from_frames_alone_and_the_true_actions_change_nothing():
    agent = dot_agent(**{"updates": 6, "unit_updates": 3, "run.batch_size": 8})
    chunks = dot_chunks(300, seed=0)
    data = agent.data(work(chunks))
    batch = agent.training_batch(data, torch.arange(4))
    assert set(batch) == {"frames"} and batch["frames"].shape == (4, 3, 1, WIDTH, 1)
    with pytest.raises(ValueError, match="learns from frames alone; its batch holds only 'frames'"):
        agent.lam.loss({**batch, "action": torch.zeros(4, 3)})
    # the same frames with other actions recorded: the very same training, bit for bit
    shuffled = [dict(c, action=np.random.default_rng(1).permutation(c["action"])) for c in chunks]
    first, second = dot_agent(**{"updates": 6, "unit_updates": 3}), dot_agent(**{"updates": 6, "unit_updates": 3})
    for agent_, chunks_ in ((first, chunks), (second, shuffled)):
        for _ in range(2):
            agent_.advance(work(chunks_))
    for (name, a), b in zip(first.lam.state_dict().items(), second.lam.state_dict().values()):
        assert torch.equal(a, b), name


def test_on_a_toy_world_the_codes_recover_the_actions_and_the_dream_moves_the_dot():
    agent = dot_agent(**{"model.codes": 4, "model.context": 1, "model.channels": 16, "model.hidden": 32,
                         "model.code_size": 8, "updates": 600, "unit_updates": 200, "lr": 3e-3,
                         "run.batch_size": 64, "holdout": 0.2})
    chunks = dot_chunks(3000, seed=0)
    reports = finish(agent, chunks)
    assert reports[-1]["lapo/unit"] == 3.0 and "loss/predict" in reports[-1]
    data = agent.data(work(chunks))
    train = agent.split(len(data))
    out = held_out_report(agent.lam, data.frames, data.rows, data.actions, train, 5000,
                          noop_action=1).metrics("lapo/eval/")
    assert out["lapo/eval/nmi"] > 0.8 and out["lapo/eval/accuracy"] > 0.95, out
    assert out["lapo/eval/effect_accuracy"] > 0.95 and out["lapo/eval/probe"] > 0.95
    # the decoder from 2.5 % of the training labels (about 58 windows, some 19 an action) names the held-out
    # actions as well as the majority mapping fitted on every training label, within 3 points: the latents of
    # the three actions are as separate as the codes are (the codes name them), so a handful a class suffice
    assert out["lapo/eval/labels"] == round(0.025 * train)
    assert out["lapo/eval/decoder"] > 0.9 and abs(out["lapo/eval/decoder"] - out["lapo/eval/accuracy"]) <= 0.03, out
    assert out["lapo/eval/noop"] == pytest.approx(np.mean(data.actions[train:] == 1))
    # the codes control the dream: rolled under the inferred codes it follows the real strip far better than under
    # random ones (a random code moves the dot the wrong way two times in three), at every horizon
    control = controllability_report(agent.lam, data.frames, data.rows, train, horizon=3, limit=200)
    assert control.windows >= 50 and (control.low > 1.0).all(), control
    # the latent carries the next frame: the baseline (no latent) can only spread the dot over three cells
    assert out["lapo/eval/error"] < 0.05 * out["lapo/eval/error_baseline"]
    assert out["lapo/eval/spread"] > 10 * out["lapo/eval/error"]
    # the dream: from a dot at cell 4, each action's code puts it where that action would
    mapping = [int(out[f"lapo/eval/map/{k}"]) for k in range(4)]
    model = agent.lam
    start = np.zeros((1, 1, 1, WIDTH, 1), np.uint8)
    start[..., 4, :] = 255
    _, state = model.observe({"image": torch.as_tensor(start)}, torch.zeros(1, 1, 4), torch.ones(1, 1, dtype=bool))
    for action, cell in ((0, 3), (1, 4), (2, 5)):
        code = mapping.index(action)
        nxt = model.decode(model.step(state, torch.nn.functional.one_hot(torch.tensor([code]), 4).float()))
        assert int(nxt["image"][0, 0, :, 0].argmax()) == cell


# -- the metrics on hand-made arrays -----------------------------------------------------------------
def test_agreement_of_hand_made_codes_and_actions():
    perfect = code_action_agreement(np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0]),
                                    np.array([1, 0, 0, 1]), np.array([0, 1, 1, 0]), num_codes=3)
    assert perfect.nmi == pytest.approx(1.0) and perfect.ami == pytest.approx(1.0)
    assert perfect.mapping.tolist() == [1, 0, 0]       # code 2 is never chosen: the most frequent action (a tie: 0)
    assert perfect.accuracy == 1.0 and perfect.chance == 0.5 and perfect.used_codes == 2
    # codes [0, 0, 0, 1] for actions [0, 0, 1, 1]: I = .5 ln(4/3) + .25 ln(2/3) + .25 ln 2, NMI = 2 I / (H_c + H_a)
    mi = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2)
    h_codes, h_actions = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)), math.log(2)
    partial = code_action_agreement(np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1]),
                                    np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1]), num_codes=2)
    assert partial.nmi == pytest.approx(2 * mi / (h_codes + h_actions))
    assert partial.mapping.tolist() == [0, 1] and partial.accuracy == 0.75
    independent = code_action_agreement(np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1]),
                                        np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1]), num_codes=2)
    assert independent.nmi == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="equally long"):
        majority_mapping(np.array([0, 1]), np.array([0]), 2)


def test_spread_nearest_code_and_frame_error_by_hand():
    # one start, three codes imagining one-cell frames 0, 1 and 3: squared distances 1, 9, 4
    predictions = np.array([[[0.0], [1.0], [3.0]]])
    assert pairwise_spread(predictions).tolist() == pytest.approx([14 / 3])
    assert nearest_code(predictions, np.array([[2.4]])).tolist() == [2]
    assert frame_error(np.array([[0.5, 1.0]]), np.array([[0.0, 0.0]])).tolist() == [1.25]
    with pytest.raises(ValueError, match="K >= 2"):
        pairwise_spread(np.zeros((2, 1, 3)))


def test_psnr_and_delta_psnr_by_hand():
    zeros, half = np.zeros((1, 1, 2, 2)), np.full((1, 1, 2, 2), 0.5)
    assert psnr(half, zeros).tolist() == pytest.approx([10 * math.log10(4)])      # MSE 1/4: 6.02 dB
    assert psnr(zeros, zeros).tolist() == [100.0]                                 # exact: the MSE floor 1e-10
    frames = np.random.default_rng(0).random((6, 3, 1, 2, 2))
    # the same predictions under both kinds of code (a model that ignores the code): 0 exactly, interval too
    same = delta_psnr(frames * 0.5, frames * 0.5, frames)
    assert same.delta.tolist() == [0.0] * 3 and same.low.tolist() == [0.0] * 3 and same.high.tolist() == [0.0] * 3
    # binary frames; the inferred rollout exact (100 dB), the random one 0.5 everywhere (MSE 1/4, 6.02 dB)
    binary = np.round(frames)
    exact = delta_psnr(binary, np.full_like(binary, 0.5), binary)
    assert exact.delta == pytest.approx([100 - 10 * math.log10(4)] * 3) and (exact.low == exact.delta).all()
    assert exact.inferred.tolist() == [100.0] * 3 and exact.windows == 6
    with pytest.raises(ValueError, match="at least 2 starts"):
        delta_psnr(frames[:1], frames[:1], frames[:1])


def test_a_rollout_that_ignores_the_code_has_no_controllability_and_one_that_reads_it_has():
    # the dot world: a frame [1, 1, W] with one lit cell; code c moves it by c - 1 (clipped at the ends)
    def moves(window: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        pos = window[:, -1, 0, 0].argmax(-1) + code - 1
        return torch.nn.functional.one_hot(pos.clamp(0, WIDTH - 1), WIDTH).float()[:, None, None]

    def ignores(window: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        return moves(window, torch.ones_like(code))

    rng = np.random.default_rng(0)
    past = torch.nn.functional.one_hot(torch.full((40, 1), 4), WIDTH).float()[:, :, None, None]    # [S, L=1, 1, 1, W]
    true = torch.as_tensor(rng.integers(0, 3, (40, 3)))
    real = rollout(moves, past, true).numpy()
    assert real.shape == (40, 3, 1, 1, WIDTH) and (real[:, 0, 0, 0].argmax(-1) == 4 + true[:, 0].numpy() - 1).all()
    random = torch.as_tensor(rng.integers(0, 3, (40, 3)))
    blind = delta_psnr(rollout(ignores, past, true).numpy(), rollout(ignores, past, random).numpy(), real)
    assert blind.delta.tolist() == [0.0] * 3
    seeing = delta_psnr(real, rollout(moves, past, random).numpy(), real)
    assert (seeing.delta > 0).all() and (seeing.low > 0).all() and seeing.inferred.tolist() == [100.0] * 3


def test_rollout_starts_keep_to_consecutive_steps_of_one_episode():
    # windows' last rows: 1 2 3 | 5 6 | 8 9 10 11 (episodes start at rows 4 and 7, which end no window)
    rows = torch.tensor([1, 2, 3, 5, 6, 8, 9, 10, 11])[:, None].repeat(1, 2)
    assert rollout_starts(rows, 0, 2, 10).tolist() == [0, 3, 5, 7]
    assert rollout_starts(rows, 1, 3, 10).tolist() == [5]
    assert rollout_starts(rows, 0, 3, 1).tolist() == [0]


# -- the command and the dream played by codes -------------------------------------------------------
@pytest.fixture(scope="module")
def breakout_run(tmp_path_factory):
    from reverie.cli import main

    pytest.importorskip("minatar")
    run_dir = tmp_path_factory.mktemp("lapo") / "breakout"
    assert main(["train", "lapo", "--env", "minatar:breakout", "--preset", "tiny", "--run-dir", str(run_dir)]) == 0
    return run_dir


def test_the_command_trains_and_the_evaluation_scores_the_held_out_windows(breakout_run, tmp_path, capsys):
    import importlib.util
    import json

    rows = [json.loads(line) for line in (breakout_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["lapo/unit"] for r in rows if "lapo/unit" in r] == [1.0, 2.0]
    summary = json.loads((breakout_run / "summary.json").read_text())
    assert summary["agent"] == "lapo" and "dream" not in summary["artifacts"]   # codes are not the env's actions
    spec = importlib.util.spec_from_file_location("lapo_eval", REPO / "benchmarks" / "lapo_eval.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "eval.json"
    capsys.readouterr()
    assert script.main([str(breakout_run), "--windows", "50", "--horizon", "2", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| breakout | " in printed and "| breakout | 2 | " in printed and "Delta PSNR [95 % CI]" in printed
    figures = json.loads(out.read_text())["breakout"]
    assert figures["labels"] >= 2 and 0 <= figures["decoder"] <= 1 and 0 <= figures["noop"] <= 1
    assert figures["control/dpsnr/2/low"] <= figures["control/dpsnr/2"] <= figures["control/dpsnr/2/high"]
    assert 0 <= figures["nmi"] <= 1 and 20 <= figures["windows"] <= 30    # 10% of the 270-odd windows
    assert figures["error"] > 0 and figures["error_baseline"] > 0 and figures["spread"] >= 0


def test_play_serves_the_codes_as_buttons_and_a_step_by_code_returns_a_frame(breakout_run):
    from reverie import api
    from reverie.play.server import create_app, open_session

    model = api.load(breakout_run).model
    assert model.act_spec == ActionSpec(True, 4, latent=True) and capabilities_of(model) == {DECODER}
    session = open_session(breakout_run)
    assert session.labels == ["code 0", "code 1", "code 2", "code 3"] and not session.real
    view = session.reset(3)
    assert view.real is None and view.dream.obs["image"].shape == (10, 10, 4)
    for code in (0, 3, 1):
        view = session.step(code)
    assert view.step == 3 and view.dream.obs["image"].dtype == np.uint8

    client = create_app(session, seed=1, title="breakout").test_client()
    page = client.get("/").get_data(as_text=True)
    assert "<button data-action=3>code 3</button>" in page and "id=real" not in page
    out = client.post("/step", json={"action": 2}).get_json()
    assert out["step"] == 1 and out["real"] is None
    frame = Image.open(io.BytesIO(base64.b64decode(out["dream"]["images"]["image"])))
    assert frame.size == (10, 10)
    bad = client.post("/step", json={"action": 4})
    assert bad.status_code == 400 and "[0, 4)" in bad.get_json()["error"]


def test_a_planner_on_latent_codes_is_refused_in_one_sentence():
    from reverie.agents.planner_policy import planner_policy
    from reverie.planning import PlanningError

    model = LatentActionModel(DOT, LatentActionModelConfig(codes=3, channels=4, hidden=8, code_size=2))
    agent = SimpleNamespace(name="lapo", model=model, device=torch.device("cpu"), planner_defaults={}, discount=1.0)
    with pytest.raises(PlanningError, match="driven by latent action codes, not the environment's actions"):
        planner_policy(agent, "cem")
