"""Model merging (average, task arithmetic, TIES) on hand-built state dicts, and continual-learning metrics on a
hand-made score matrix."""

import numpy as np
import pytest
import torch

from reverie.analysis.continual import (
    ScoreMatrixError,
    backward_transfer,
    continual_scores,
    forgetting,
    forgetting_per_task,
    forward_transfer,
)
from reverie.models.merging import (
    MergeError,
    average,
    join_weights,
    merge,
    split_weights,
    task_arithmetic,
    ties,
)


def model(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"enc.weight": torch.randn(4, 3, generator=g), "enc.bias": torch.randn(4, generator=g),
            "head.weight": torch.randn(2, 4, generator=g).to(torch.bfloat16),
            "norm.num_batches_tracked": torch.tensor(seed, dtype=torch.int64),
            "bins": torch.arange(5)}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_merging_two_copies_of_one_model_returns_it():
    base, tuned = model(0), model(1)
    assert_same(average([tuned, tuned]), tuned)
    # task arithmetic adds both task vectors: half of each is one of them
    assert_same(task_arithmetic(base, [tuned, tuned], coef=0.5), {**tuned, "norm.num_batches_tracked":
                                                                  base["norm.num_batches_tracked"]})
    # TIES keeping every entry: the disjoint mean of two equal vectors is that vector
    assert_same(ties(base, [tuned, tuned], coef=1.0, density=1.0), {**tuned, "norm.num_batches_tracked":
                                                                  base["norm.num_batches_tracked"]})


def test_task_arithmetic_with_coefficient_zero_returns_the_base():
    base = model(0)
    assert_same(task_arithmetic(base, [model(1), model(2)], coef=0.0), base)
    assert_same(merge("ties", [model(1), model(2)], base, coef=0.0), base)


def test_task_arithmetic_adds_the_scaled_sum_of_task_vectors():
    base = {"w": torch.tensor([1.0, 2.0, 3.0])}
    a, b = {"w": torch.tensor([2.0, 2.0, 0.0])}, {"w": torch.tensor([1.0, 4.0, 5.0])}
    # task vectors [1, 0, -3] and [0, 2, 2], sum [1, 2, -1]
    torch.testing.assert_close(task_arithmetic(base, [a, b], coef=0.5)["w"], torch.tensor([1.5, 3.0, 2.5]))
    torch.testing.assert_close(average([a, b])["w"], torch.tensor([1.5, 3.0, 2.5]))


def test_ties_matches_a_hand_computation():
    base = {"w": torch.zeros(6), "v": torch.zeros(2)}
    # task vectors over all 8 entries (w then v); density 0.5 keeps each one's 4 largest magnitudes
    t1 = {"w": torch.tensor([3.0, -1.0, 0.5, 2.0, -4.0, 0.1]), "v": torch.tensor([0.2, 1.5])}
    t2 = {"w": torch.tensor([-2.0, 0.3, 1.0, 2.5, 3.0, -0.2]), "v": torch.tensor([-5.0, 0.1])}
    t3 = {"w": torch.tensor([1.0, -2.0, -3.0, 0.0, 0.5, 0.4]), "v": torch.tensor([0.1, -0.6])}
    # trimmed: t1 keeps 3, 2, -4, 1.5 (magnitudes >= 1.5)
    #          t2 keeps -2, 2.5, 3, -5 (>= 2)
    #          t3 keeps 1, -2, -3, -0.6 (>= 0.6)
    # summed:  w [3-2+1, -2, -3, 2+2.5, -4+3, 0], v [-5, 1.5-0.6]  = w [2, -2, -3, 4.5, -1, 0], v [-5, 0.9]
    # elected: w [+, -, -, +, -, 0 -> majority], v [-, +]; majority = sign(1-1-1+1-1 -1+1) = -1
    # disjoint means: w0 mean(3, 1) = 2; w1 -2; w2 -3; w3 mean(2, 2.5) = 2.25; w4 -4; w5 nothing agrees: 0
    #                 v0 -5; v1 1.5
    out = ties(base, [t1, t2, t3], coef=1.0, density=0.5, names=["a", "b", "c"])
    torch.testing.assert_close(out["w"], torch.tensor([2.0, -2.0, -3.0, 2.25, -4.0, 0.0]))
    torch.testing.assert_close(out["v"], torch.tensor([-5.0, 1.5]))
    # lambda scales the merged vector before it is added to the base
    shifted = {"w": torch.ones(6), "v": torch.ones(2)}
    plus = [{k: shifted[k] + t[k] for k in t} for t in (t1, t2, t3)]
    torch.testing.assert_close(ties(shifted, plus, coef=0.5, density=0.5)["w"],
                               1.0 + 0.5 * torch.tensor([2.0, -2.0, -3.0, 2.25, -4.0, 0.0]))


def test_mismatched_architectures_are_named_in_one_sentence():
    a = model(0)
    wider = {**a, "enc.weight": torch.zeros(8, 3)}
    with pytest.raises(MergeError, match=r"^run-a and run-b are of different architectures: 'enc.weight' is "
                                         r"\[4, 3\] in run-a but \[8, 3\] in run-b$"):
        average([a, wider], names=["run-a", "run-b"])
    fewer = {k: v for k, v in a.items() if k != "enc.bias"}
    with pytest.raises(MergeError, match="the base has a parameter 'enc.bias' that run-b has not"):
        task_arithmetic(a, [fewer], 1.0, names=["run-b"])


def test_non_float_buffers_come_from_the_base_and_structure_must_agree():
    base, tuned = model(0), model(3)
    out = average([base, tuned])
    assert out["norm.num_batches_tracked"].item() == 0       # a counter may differ: the first one's is kept
    broken = {**tuned, "bins": torch.arange(5) + 1}
    with pytest.raises(MergeError, match="'bins' is a torch.int64 buffer that is not a float and differs"):
        ties(base, [tuned, broken], density=0.5)


def test_bad_settings_are_refused():
    with pytest.raises(MergeError, match="unknown merging method 'soup'"):
        merge("soup", [model(0)])
    with pytest.raises(MergeError, match="give the base"):
        merge("ties", [model(0), model(1)])
    with pytest.raises(MergeError, match=r"must be in \(0, 1\]"):
        ties(model(0), [model(1)], density=0.0)


def test_split_and_join_weights_round_trip_an_agents_tensors():
    tensors = {"model": {"a.weight": torch.ones(2)}, "opt": {"state": {}, "param_groups": [{"lr": 1e-3}]},
               "progress": {"updates": 3}}
    flat, rest = split_weights(tensors)
    assert list(flat) == ["model/a.weight"] and set(rest) == {"opt", "progress"}
    assert join_weights(flat, rest) == tensors


# -- continual-learning metrics ---------------------------------------------------------------------
# Three tasks; row i: after training on task i.
R = np.array([[0.9, 0.2, 0.1],
              [0.6, 0.8, 0.3],
              [0.7, 0.5, 0.9]])
B = np.array([0.0, 0.1, 0.2])


def test_forgetting_and_transfer_on_a_hand_made_score_matrix():
    # task 0: best before the end 0.9, final 0.7 -> 0.2; task 1: best 0.8, final 0.5 -> 0.3
    np.testing.assert_allclose(forgetting_per_task(R), [0.2, 0.3])
    assert forgetting(R) == pytest.approx(0.25)
    # forward transfer: R[0, 1] - b[1] = 0.1, R[1, 2] - b[2] = 0.1
    assert forward_transfer(R, B) == pytest.approx(0.1)
    # backward transfer: (0.7 - 0.9 + 0.5 - 0.8) / 2
    assert backward_transfer(R) == pytest.approx(-0.25)
    scores = continual_scores(R, B)
    assert scores.average == pytest.approx((0.7 + 0.5 + 0.9) / 3) and scores.tasks == 3
    # the best score need not be the one right after training: task 0 recovers, then drops
    late = np.array([[0.5, 0.0, 0.0], [0.8, 0.6, 0.0], [0.4, 0.6, 0.7]])
    np.testing.assert_allclose(forgetting_per_task(late), [0.4, 0.0])


def test_a_one_task_sequence_and_bad_matrices():
    one = continual_scores([[0.5]])
    assert one.average == 0.5 and one.forgetting is None and one.forward_transfer is None
    with pytest.raises(ScoreMatrixError, match="square"):
        forgetting(np.zeros((2, 3)))
    with pytest.raises(ScoreMatrixError, match="at least 2 tasks"):
        forgetting([[1.0]])
    with pytest.raises(ScoreMatrixError, match="one per task"):
        forward_transfer(R, [0.0, 0.0])
    with pytest.raises(ScoreMatrixError, match="not finite"):
        forgetting([[1.0, np.nan], [0.0, 1.0]])
