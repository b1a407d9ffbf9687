"""clavs.metrics.segmentation against independent oracles.

Oracles written here: the official AVSBench evaluation (per-batch mask IoU and the 255-threshold
F-measure loop, averaged over batches as its AverageMeter does), plain numpy loops for IoU/Dice/F1,
and scikit-learn's average_precision_score for per-frame and pooled AP.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import average_precision_score

from clavs.metrics import SegmentationAccumulator, official_thresholds, segmentation_scores


# --- oracle 1: the official evaluation, operation by operation, on CPU ---------------------------
def official_batch_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    n = logits.shape[0]
    pixels = logits.shape[-1] * logits.shape[-2]
    empty = target.sum(2).sum(1) == 0
    hard = (torch.sigmoid(logits) > 0.5).int()
    inter = (hard * target).sum(2).sum(1)
    union = torch.max(hard, target).sum(2).sum(1)
    true_negatives = ((1 - target) * (1 - hard)).sum(2).sum(1)
    inter[empty] = true_negatives[empty]
    union[empty] = pixels
    return torch.sum(inter / (union + 1e-7)) / n


def official_pr(prob: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    prec, rec = torch.zeros(255), torch.zeros(255)
    thresholds = torch.linspace(0, 1 - 1e-10, 255)
    for i in range(255):
        hit = (prob >= thresholds[i]).float()
        tp = (hit * gt).sum()
        prec[i], rec[i] = tp / (hit.sum() + 1e-20), tp / (gt.sum() + 1e-20)
    return prec, rec


def official_f_curve(prob: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    beta2 = 0.3
    prec, rec = official_pr(prob, gt)
    f = (1 + beta2) * prec * rec / (beta2 * prec + rec)
    f[f != f] = 0
    return f


def official_batch_fmeasure(logits: torch.Tensor, gt: torch.Tensor) -> float:
    prob = torch.sigmoid(logits)
    running, used = 0.0, 0
    score = torch.zeros(255)
    for j in range(prob.shape[0]):
        if torch.mean(gt[j]) == 0.0:
            continue
        running += official_f_curve(prob[j], gt[j])
        used += 1
        score = running / used
    return score.max().item()


def official_scores(logits: torch.Tensor, masks: torch.Tensor, batch_frames: int) -> tuple[float, float]:
    """(mIoU, F) x100 as AVSBench's test.py reports them, batches of consecutive frames."""
    iou_sum, f_sum, count = 0.0, 0.0, 0
    target = masks.float()
    for start in range(0, logits.shape[0], batch_frames):
        part, gt = logits[start : start + batch_frames], target[start : start + batch_frames]
        iou_sum += official_batch_iou(part, gt)
        f_sum += official_batch_fmeasure(part, gt)
        count += 1
    return 100 * (iou_sum / count).item(), 100 * (f_sum / count)


# --- oracle 2: plain loops and scikit-learn --------------------------------------------------------
def loop_scores(logits: torch.Tensor, masks: torch.Tensor) -> dict[str, float]:
    prob = torch.sigmoid(logits.float()).numpy()
    gt = masks.numpy().astype(bool)
    ious, dices, aps, curves = [], [], [], []
    tp = fp = fn = 0
    for j in range(prob.shape[0]):
        hard = prob[j] > 0.5
        g = gt[j]
        if g.sum() == 0:
            ious.append(np.sum(~hard) / hard.size)
        else:
            ious.append(np.sum(hard & g) / np.sum(hard | g))
            aps.append(average_precision_score(g.ravel(), prob[j].ravel()))
            curve = official_f_curve(torch.from_numpy(prob[j]), torch.from_numpy(g).float())
            curves.append(curve.double().numpy())
        both = hard.sum() + g.sum()
        dices.append(1.0 if both == 0 else 2 * np.sum(hard & g) / both)
        tp += np.sum(hard & g)
        fp += np.sum(hard & ~g)
        fn += np.sum(~hard & g)
    nan = float("nan")
    return {
        "miou_per_frame": 100 * float(np.mean(ious)),
        "dice": 100 * float(np.mean(dices)),
        "f1": 100 * (1.0 if 2 * tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)),
        "map": 100 * float(np.mean(aps)) if aps else nan,
        "maxf": 100 * float(np.max(np.mean(curves, axis=0))) if curves else nan,
        "aupr": 100 * average_precision_score(gt.ravel(), prob.ravel()) if gt.any() else nan,
    }


def assert_matches_oracles(logits: torch.Tensor, masks: torch.Tensor, batch_frames: int) -> dict:
    got = segmentation_scores(logits, masks, official_batch_frames=batch_frames)
    miou, maxf_official = official_scores(logits, masks, batch_frames)
    assert got["miou"] == miou  # float-exact
    assert got["maxf_official"] == maxf_official  # float-exact
    for key, want in loop_scores(logits, masks).items():
        if math.isnan(want):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(want, rel=1e-9, abs=1e-9), key
    assert got["n_frames"] == logits.shape[0]
    assert got["n_empty_gt"] == int((masks.flatten(1).sum(1) == 0).sum())
    assert got["n_official_batches"] == math.ceil(logits.shape[0] / batch_frames)
    return got


def same_dict(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a
    )


def blob_data(n: int, size: int, seed: int, empty_every: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits that roughly follow disc-shaped masks, plus noise; every `empty_every`-th GT empty."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    masks = torch.zeros(n, size, size)
    logits = torch.randn(n, size, size, generator=g) * 2 - 1
    for j in range(n):
        cy, cx, r = (torch.rand(3, generator=g) * torch.tensor([size, size, size / 3])).tolist()
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2) <= (r + 1) ** 2
        logits[j] += 3 * disc
        if j % empty_every != empty_every - 1:
            masks[j][disc] = 1
    return logits, masks


# --- tests ----------------------------------------------------------------------------------------
def test_thresholds_are_the_official_ones():
    th = official_thresholds()
    assert th.dtype == torch.float32 and th.shape == (255,)
    assert torch.equal(th, torch.linspace(0, 1 - 1e-10, 255))
    assert th[-1].item() == 1.0  # 1 - 1e-10 rounds to 1.0 in float32


def test_matches_official_and_oracles_on_blobs_with_partial_last_batch():
    logits, masks = blob_data(n=47, size=24, seed=0)
    got = assert_matches_oracles(logits, masks, batch_frames=20)
    assert got["n_official_batches"] == 3 and got["n_empty_gt"] == 11


def test_all_empty_batch_and_full_gt_frames():
    logits, masks = blob_data(n=30, size=16, seed=1)
    masks[:10] = 0  # the whole first batch has empty ground truth: it contributes F = 0
    masks[12] = 1  # full-GT frames
    logits[13] = 5.0
    masks[13] = 1
    got = assert_matches_oracles(logits, masks, batch_frames=10)
    first_batch_f = official_batch_fmeasure(logits[:10], masks[:10].float())
    assert first_batch_f == 0.0
    assert got["maxf_official"] < got["maxf"]


def test_logit_zero_is_background_and_tiny_logits_round_to_half():
    masks = torch.ones(3, 4, 4)
    logits = torch.zeros(3, 4, 4)
    logits[1] = 1e-9  # sigmoid rounds to exactly 0.5 in float32: still not > 0.5
    logits[2] = 1e-3  # sigmoid above 0.5: foreground
    got = assert_matches_oracles(logits, masks, batch_frames=3)
    assert torch.sigmoid(torch.tensor(1e-9)).item() == 0.5
    assert got["miou_per_frame"] == pytest.approx(100 / 3)
    assert got["dice"] == pytest.approx(100 / 3)


def test_ties_and_saturated_probabilities():
    g = torch.Generator().manual_seed(2)
    choices = torch.tensor([-40.0, -3.0, -1e-9, 0.0, 1e-9, 0.5, 3.0, 20.0, 40.0])
    logits = choices[torch.randint(0, len(choices), (12, 9, 9), generator=g)]
    masks = (torch.rand(12, 9, 9, generator=g) < 0.4).float()
    masks[5] = 0
    assert_matches_oracles(logits, masks, batch_frames=5)


LOGIT_VALUES = [-30.0, -2.0, -0.25, -1e-8, 0.0, 1e-8, 1e-4, 0.25, 2.0, 17.0, 30.0]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_small_cases_match_oracles(data):
    n = data.draw(st.integers(1, 6))
    h = data.draw(st.integers(1, 4))
    w = data.draw(st.integers(1, 4))
    logits = data.draw(arrays(np.float32, (n, h, w), elements=st.sampled_from(LOGIT_VALUES)))
    masks = data.draw(arrays(np.bool_, (n, h, w)))
    batch_frames = data.draw(st.integers(1, 4))
    assert_matches_oracles(torch.from_numpy(logits), torch.from_numpy(masks.astype(np.float32)), batch_frames)


def test_batch_dependence_of_official_maxf_tiny_example():
    # Frame A peaks for thresholds in (0.2, 0.9], frame B for (0.05, 0.1]: per-frame maxima are
    # both 1, but no single threshold serves both (docs/metrics.md uses this example).
    probs = torch.tensor([[[0.9, 0.2]], [[0.1, 0.05]]])
    logits = torch.log(probs / (1 - probs))
    masks = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]]])
    f_both = 1.3 * 0.5 / (0.3 * 0.5 + 1)  # predict both pixels: precision 1/2, recall 1
    per_frame_batches = segmentation_scores(logits, masks, official_batch_frames=1)
    one_batch = segmentation_scores(logits, masks, official_batch_frames=2)
    assert per_frame_batches["maxf_official"] == pytest.approx(100.0)
    assert one_batch["maxf_official"] == pytest.approx(100 * (1 + f_both) / 2, rel=1e-6)
    assert per_frame_batches["maxf"] == one_batch["maxf"] == pytest.approx(100 * (1 + f_both) / 2, rel=1e-6)


def test_miou_official_equals_frame_mean_when_batches_are_full():
    logits, masks = blob_data(n=40, size=12, seed=3)
    got = segmentation_scores(logits, masks, official_batch_frames=20)
    assert got["miou"] == pytest.approx(got["miou_per_frame"], rel=1e-6)


def test_stream_chunking_gives_identical_results():
    logits, masks = blob_data(n=53, size=14, seed=4)
    whole = segmentation_scores(logits, masks, official_batch_frames=20)
    rng = np.random.default_rng(0)
    for _ in range(3):
        acc = SegmentationAccumulator(official_batch_frames=20)
        start = 0
        while start < 53:
            stop = min(53, start + int(rng.integers(1, 23)))  # chunks not aligned to 20
            acc.update(logits[start:stop], masks[start:stop])
            start = stop
        assert same_dict(acc.compute(), whole)
    single = SegmentationAccumulator(20)
    for j in range(53):
        single.update(logits[j : j + 1], masks[j : j + 1])
    assert same_dict(single.compute(), whole)


def test_merge_and_state_dict_round_trip():
    logits, masks = blob_data(n=33, size=10, seed=5)
    whole = segmentation_scores(logits, masks)
    first, second = SegmentationAccumulator(), SegmentationAccumulator()
    first.update(logits[:13], masks[:13])
    second.update(logits[13:], masks[13:])
    buffer = io.BytesIO()
    torch.save(second.state_dict(), buffer)
    buffer.seek(0)
    restored = SegmentationAccumulator()
    restored.load_state_dict(torch.load(buffer))
    assert same_dict(first.merge(restored).compute(), whole)


def test_ddp_style_interleaved_shards_with_index_match_single_process():
    logits, masks = blob_data(n=60, size=10, seed=6)
    whole = segmentation_scores(logits, masks)
    clips = np.arange(60).reshape(12, 5)  # 12 clips of 5 frames, dealt round-robin to 3 ranks
    ranks = [SegmentationAccumulator() for _ in range(3)]
    for clip in range(12):
        idx = clips[clip]
        ranks[clip % 3].update(logits[idx], masks[idx], index=torch.from_numpy(idx))
    merged = SegmentationAccumulator()
    for rank in reversed(ranks):
        other = SegmentationAccumulator()
        other.load_state_dict(rank.state_dict())
        merged.merge(other)
    assert same_dict(merged.compute(), whole)


def test_pooled_aupr_can_be_switched_off_and_rest_is_unchanged():
    logits, masks = blob_data(n=9, size=8, seed=7)
    with_aupr = segmentation_scores(logits, masks)
    without = segmentation_scores(logits, masks, pooled_aupr=False)
    assert math.isnan(without["aupr"]) and not math.isnan(with_aupr["aupr"])
    assert all(same_dict({k: with_aupr[k]}, {k: without[k]}) for k in with_aupr if k != "aupr")
    acc = SegmentationAccumulator(pooled_aupr=False)
    acc.update(logits, masks)
    assert acc.state_dict()["pooled_keys"].numel() == 0


def test_numpy_and_channel_dim_inputs_and_bool_masks():
    logits, masks = blob_data(n=6, size=8, seed=8)
    ref = segmentation_scores(logits, masks)
    assert same_dict(segmentation_scores(logits.numpy(), masks.numpy()), ref)
    assert same_dict(segmentation_scores(logits[:, None], masks[:, None].bool()), ref)
    assert same_dict(segmentation_scores(logits.double(), masks.long()), ref)


def test_no_nonempty_frame_gives_nan_for_curve_metrics():
    logits = torch.randn(4, 5, 5, generator=torch.Generator().manual_seed(9))
    got = assert_matches_oracles(logits, torch.zeros(4, 5, 5), batch_frames=2)
    assert got["maxf_official"] == 0.0
    assert math.isnan(got["maxf"]) and math.isnan(got["map"]) and math.isnan(got["aupr"])


@pytest.mark.parametrize(
    "logits, masks, error, message",
    [
        (torch.zeros(2, 3, 3), torch.zeros(2, 3, 4), ValueError, "differ in shape"),
        (torch.zeros(3, 3), torch.zeros(3, 3), ValueError, r"\[N,H,W\]"),
        (torch.zeros(2, 3, 3, dtype=torch.long), torch.zeros(2, 3, 3), TypeError, "floating-point"),
        (torch.zeros(2, 3, 3), torch.full((2, 3, 3), 255.0), ValueError, "only 0 and 1; found value 255"),
        (torch.full((2, 3, 3), float("nan")), torch.zeros(2, 3, 3), ValueError, "NaN"),
        ([[0.0]], torch.zeros(1, 1, 1), TypeError, "logits must be a torch.Tensor"),
    ],
)
def test_bad_input_errors(logits, masks, error, message):
    with pytest.raises(error, match=message):
        segmentation_scores(logits, masks)


def test_accumulator_misuse_errors():
    with pytest.raises(ValueError, match="official_batch_frames"):
        SegmentationAccumulator(0)
    with pytest.raises(ValueError, match="no frames"):
        SegmentationAccumulator().compute()
    acc = SegmentationAccumulator()
    acc.update(torch.zeros(2, 2, 2), torch.ones(2, 2, 2), index=[0, 1])
    with pytest.raises(ValueError, match="every update"):
        acc.update(torch.zeros(2, 2, 2), torch.ones(2, 2, 2))
    acc.update(torch.zeros(1, 2, 2), torch.ones(1, 2, 2), index=[1])
    with pytest.raises(ValueError, match=r"frame index repeated: \[1\]"):
        acc.compute()
    with pytest.raises(ValueError, match="index must hold 2 integers"):
        acc.update(torch.zeros(2, 2, 2), torch.ones(2, 2, 2), index=[0.5, 1.5])
    with pytest.raises(ValueError, match="different settings"):
        SegmentationAccumulator(20).merge(SegmentationAccumulator(5))
    with pytest.raises(ValueError, match="format"):
        SegmentationAccumulator().load_state_dict({"format": "other"})
    state = acc.state_dict()
    state["frame_ap"] = state["frame_ap"][:1]
    with pytest.raises(ValueError, match="'frame_ap' has shape"):
        SegmentationAccumulator().load_state_dict(state)


def test_deterministic():
    logits, masks = blob_data(n=12, size=9, seed=10)
    assert same_dict(segmentation_scores(logits, masks), segmentation_scores(logits.clone(), masks.clone()))
