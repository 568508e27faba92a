"""Hits@1 and MRR: a hand-built ranking, ties in the true candidate's favour, chunking that changes nothing, a
slow reference (stable sort with the true candidate first, as C-SWM's evaluation), and multi-step predictions
of a model rolled by hand."""

import numpy as np
import pytest
import torch

from reverie.analysis.ranking import multi_step_predictions, ranking_scores, true_ranks
from reverie.models.cswm import CSWMModel, CSWMModelConfig
from reverie.specs import ActionSpec, ArraySpec


def test_a_hand_built_ranking_gives_its_hand_computed_ranks_hits_and_mrr():
    candidates = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
    queries = torch.tensor([[0.1], [2.9], [1.6], [-5.0]])
    # q0 is nearest its own 0; q1 (own 1 at 1.9) is nearer 3 (0.1); q2 (own 3 at 1.4) is nearer 1 (0.6);
    # q3 (own 6 at 11) is nearer all three others
    ranks = true_ranks(queries, candidates)
    assert ranks.tolist() == [1, 2, 2, 4]
    scores = ranking_scores(ranks)
    assert scores.hits_at_1 == pytest.approx(0.25) and scores.count == 4
    assert scores.mrr == pytest.approx((1 + 1 / 2 + 1 / 2 + 1 / 4) / 4)


def test_a_tie_counts_for_the_true_candidate_and_explicit_targets_pick_it():
    candidates = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 5.0]])
    queries = torch.tensor([[0.5, 0.0]])
    assert true_ranks(queries, candidates, torch.tensor([1])).tolist() == [1]    # as near as candidate 0
    assert true_ranks(queries, candidates, torch.tensor([2])).tolist() == [3]


def slow_ranks(queries, candidates):
    """C-SWM's evaluation: per query, the true candidate prepended to all candidates, a stable sort of the
    distances, and the position of the prepended one."""
    out = []
    for i, q in enumerate(queries.numpy()):
        d = ((candidates.numpy() - q) ** 2).sum(1)
        row = np.concatenate([d[i:i + 1], d])
        order = np.lexsort((np.arange(len(row)), row))
        out.append(int(np.flatnonzero(order == 0)[0]) + 1)
    return out


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_chunked_ranks_equal_the_slow_reference(chunk):
    rng = np.random.default_rng(0)
    candidates = torch.as_tensor(rng.integers(0, 3, (60, 2)).astype(np.float32))   # coarse: many ties
    queries = candidates + torch.as_tensor(rng.normal(0, 0.6, (60, 2)).astype(np.float32))
    assert true_ranks(queries, candidates, chunk=chunk).tolist() == slow_ranks(queries, candidates)


def test_bad_shapes_are_one_sentence():
    with pytest.raises(ValueError, match=r"queries \[N, F\] and candidates \[M, F\] of one F"):
        true_ranks(torch.zeros(3, 2), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="5 queries need at least 5 candidates, got 2"):
        true_ranks(torch.zeros(5, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="at least one rank"):
        ranking_scores(torch.zeros(0, dtype=torch.long))


def test_multi_step_predictions_roll_the_model_from_the_first_frame_and_encode_the_kth():
    torch.manual_seed(0)
    model = CSWMModel({"image": ArraySpec((50, 50, 3), np.dtype(np.uint8))}, ActionSpec(True, 20),
                      CSWMModelConfig(hidden=8, channels=2)).eval()
    obs = torch.as_tensor(np.random.default_rng(0).integers(0, 256, (3, 4, 50, 50, 3), dtype=np.uint8))
    actions = torch.nn.functional.one_hot(torch.tensor([[0, 5, 19]] * 3), 20).float()
    with torch.no_grad():
        pairs = multi_step_predictions(model, {"image": obs}, actions, [1, 3])
        z = model.encode({"image": obs[:, 0]})
        rolled = []
        for t in range(3):
            z = model.next(z, actions[:, t])
            rolled.append(z.flatten(-2))
        torch.testing.assert_close(pairs[1][0], rolled[0])
        torch.testing.assert_close(pairs[3][0], rolled[2])
        torch.testing.assert_close(pairs[3][1], model.encode({"image": obs[:, 3]}).flatten(-2))
    with pytest.raises(ValueError, match=r"steps must lie in 1..3"):
        multi_step_predictions(model, {"image": obs}, actions, [4])
