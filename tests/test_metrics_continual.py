"""clavs.metrics.continual against plain-loop oracles and hand-computed matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clavs.metrics import continual_summaries, continual_summary


def loop_summary(R: list[list[float]], b: list[float] | None) -> dict[str, float]:
    """The DESIGN.md definitions written as explicit loops."""
    T = len(R)
    out = {
        "la": sum(R[t][t] for t in range(T)) / T,
        "aa": sum(R[T - 1][j] for j in range(T)) / T,
        "a_inc": sum(sum(R[t][j] for j in range(t + 1)) / (t + 1) for t in range(T)) / T,
        "forgetting": math.nan,
        "bwt": math.nan,
        "fwt": math.nan,
    }
    if T > 1:
        drops, backs = [], []
        for j in range(T - 1):
            best = R[j][j]
            for t in range(j + 1, T - 1):
                best = max(best, R[t][j])
            drops.append(best - R[T - 1][j])
            backs.append(R[T - 1][j] - R[j][j])
        out["forgetting"] = sum(drops) / len(drops)
        out["bwt"] = sum(backs) / len(backs)
        if b is not None:
            out["fwt"] = sum(R[j - 1][j] - b[j] for j in range(1, T)) / (T - 1)
    return out


def assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for k in want:
        if math.isnan(want[k]):
            assert math.isnan(got[k]), k
        else:
            assert got[k] == pytest.approx(want[k], rel=1e-12, abs=1e-12), k


def test_hand_computed_three_tasks():
    # Upper entries other than the first superdiagonal are unused (None = not evaluated).
    R = [
        [80.0, 10.0, None],
        [60.0, 70.0, 20.0],
        [50.0, 65.0, 90.0],
    ]
    b = [5.0, 4.0, 8.0]
    got = continual_summary(R, b)
    assert got["la"] == pytest.approx((80 + 70 + 90) / 3)
    assert got["aa"] == pytest.approx((50 + 65 + 90) / 3)
    assert got["a_inc"] == pytest.approx((80 + (60 + 70) / 2 + (50 + 65 + 90) / 3) / 3)
    assert got["forgetting"] == pytest.approx(((80 - 50) + (70 - 65)) / 2)
    assert got["bwt"] == pytest.approx(((50 - 80) + (65 - 70)) / 2)
    assert got["fwt"] == pytest.approx(((10 - 4) + (20 - 8)) / 2)


def test_forgetting_uses_best_earlier_score_not_just_learned():
    R = [[50.0, 0, 0, 0], [70.0, 60.0, 0, 0], [40.0, 65.0, 55.0, 0], [30.0, 20.0, 50.0, 90.0]]
    got = continual_summary(R)
    assert got["forgetting"] == pytest.approx(((70 - 30) + (65 - 20) + (55 - 50)) / 3)
    assert got["bwt"] == pytest.approx(((30 - 50) + (20 - 60) + (50 - 55)) / 3)
    assert math.isnan(got["fwt"])  # no b


def test_single_task():
    got = continual_summary([[42.0]], b=[3.0])
    assert got["la"] == got["aa"] == got["a_inc"] == 42.0
    assert math.isnan(got["forgetting"]) and math.isnan(got["bwt"]) and math.isnan(got["fwt"])


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_random_matrices_match_loops(data):
    T = data.draw(st.integers(1, 7))
    value = st.floats(-100, 100, allow_nan=False)
    R = [[data.draw(value) for _ in range(T)] for _ in range(T)]
    b = data.draw(st.none() | st.lists(value, min_size=T, max_size=T))
    assert_same(continual_summary(R, b), loop_summary(R, b))
    assert_same(continual_summary(np.array(R), None if b is None else np.array(b)), loop_summary(R, b))


def test_array_and_tensor_inputs():
    R = [[1.0, 2.0], [3.0, 4.0]]
    want = continual_summary(R, [0.5, 1.0])
    assert_same(continual_summary(torch.tensor(R), torch.tensor([0.5, 1.0])), want)
    assert_same(continual_summary(np.array(R, dtype=np.float32), [np.float64(0.5), np.int64(1)]), want)


def test_missing_needed_entry_gives_nan_only_where_needed():
    R = [[80.0, None, None], [None, 70.0, None], [50.0, 65.0, 90.0]]
    got = continual_summary(R, b=[0.0, 1.0, 2.0])
    assert got["la"] == pytest.approx((80 + 70 + 90) / 3)  # diagonal complete
    assert got["aa"] == pytest.approx((50 + 65 + 90) / 3)
    assert math.isnan(got["a_inc"])  # R[1][0] missing
    assert math.isnan(got["forgetting"])  # the best earlier score of task 0 needs R[1][0]
    assert math.isnan(got["fwt"])  # R[0][1] and R[1][2] missing
    assert got["bwt"] == pytest.approx(((50 - 80) + (65 - 70)) / 2)


def test_summaries_for_several_metrics():
    mats = {"map": [[1.0, 0.0], [2.0, 3.0]], "maxf": [[4.0, 1.0], [5.0, 6.0]]}
    got = continual_summaries(mats, {"maxf": [0.0, 0.5]})
    assert_same(got["map"], continual_summary(mats["map"]))
    assert_same(got["maxf"], continual_summary(mats["maxf"], [0.0, 0.5]))
    with pytest.raises(ValueError, match="without a matrix: \\['miou'\\]"):
        continual_summaries(mats, {"miou": [0.0, 0.0]})
    with pytest.raises(ValueError, match="metric 'map': R must be square"):
        continual_summaries({"map": [[1.0, 2.0]]})


@pytest.mark.parametrize(
    "R, b, error, message",
    [
        ([], None, ValueError, "non-empty"),
        ([[1.0, 2.0], [3.0]], None, ValueError, r"R\[1\] has 1 entries"),
        ([[1.0, 2.0]], None, ValueError, "square"),
        ([[1.0, "x"], [1.0, 2.0]], None, TypeError, r"R\[0\]\[1\] must be a number"),
        ([[1.0, True], [1.0, 2.0]], None, TypeError, r"R\[0\]\[1\]"),
        ([[1.0, 2.0], [3.0, 4.0]], [1.0], ValueError, "one initial score per task"),
        ([1.0, 2.0], None, ValueError, r"R\[0\] must be a row"),
    ],
)
def test_bad_input(R, b, error, message):
    with pytest.raises(error, match=message):
        continual_summary(R, b)


def test_anytime_auc_is_the_mean_score_over_the_clips_of_the_stream():
    from clavs.metrics import anytime_auc

    rng = np.random.default_rng(0)
    steps = np.sort(rng.choice(np.arange(1, 400), size=12, replace=False))
    scores = rng.uniform(0, 100, size=12)
    # oracle: every clip of the stream carries the score of the first evaluation after it
    per_clip = [scores[k] for k in range(12) for _ in range(int(steps[k] - (steps[k - 1] if k else 0)))]
    assert anytime_auc(steps.tolist(), scores.tolist()) == pytest.approx(float(np.mean(per_clip)), rel=1e-12)
    assert anytime_auc([10], [42.0]) == 42.0
    assert math.isnan(anytime_auc([], []))
    with pytest.raises(ValueError, match="non-decreasing"):
        anytime_auc([5, 3], [1.0, 2.0])
    with pytest.raises(ValueError, match="2 points but scores has 1"):
        anytime_auc([1, 2], [1.0])
