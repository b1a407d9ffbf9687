"""Binary segmentation scores: AVSBench's official mIoU and Max-F (float-exact), the batch-free
Max-F we report, per-frame mAP, pooled AUPR, Dice and F1.

Every frame is sorted once by its probability (sigmoid of the float32 logit) with the ground-truth
label packed into the lowest key bit. From that sorted row, binary searches give the exact counts the
official code gets from 255 separate threshold passes, the counts at the 0.5 threshold, and the
frame's average precision (one pass over its positives). docs/metrics.md has every formula.

What is kept per frame is small (one float32 IoU, one float32 F-curve of 255 values, one AP, four
counts: ~1.1 kB), so streaming, chunking, merging and resuming give bit-identical results. Only the
pooled AUPR needs every pixel: its state is the sorted int32 keys, 4 bytes per pixel
(``pooled_aupr=False`` drops it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

# --- constants of AVSBench's utility.py (reference/avsbench.md section 2) -------------------------
OFFICIAL_NUM_THRESHOLDS = 255
OFFICIAL_BETA2 = 0.3
OFFICIAL_IOU_EPS = 1e-7
OFFICIAL_PR_EPS = 1e-20


def official_thresholds() -> torch.Tensor:
    """The official Max-F thresholds, `torch.linspace(0, 1 - 1e-10, 255)` in float32 (last one is 1.0)."""
    return torch.linspace(0, 1 - 1e-10, OFFICIAL_NUM_THRESHOLDS, dtype=torch.float32)


_THRESHOLDS = official_thresholds()
# Non-negative float32 values order like their bit patterns read as int32. A pixel's key is
# (bits << 1) | label; the smallest key of a value v is (bits(v) << 1), so searching for it finds
# the first pixel with probability >= v. Probabilities are <= 1.0 (0x3F800000), so keys fit int32.
_THRESHOLD_KEYS = _THRESHOLDS.numpy().view(np.int32).astype(np.int32) << 1
# First key strictly above probability 0.5: the official foreground test is `sigmoid > 0.5`.
_KEY_ABOVE_HALF = np.int32((int(np.float32(0.5).view(np.int32)) + 1) << 1)
# Frames processed together inside one update; bounds the temporary memory (~64 * H*W * 12 bytes).
_SUBCHUNK_FRAMES = 64
_STATE_FORMAT = "clavs.SegmentationAccumulator/1"


# --- input checks ---------------------------------------------------------------------------------
def _as_frames(x: Any, name: str) -> torch.Tensor:
    """[N,H,W] or [N,1,H,W] tensor/array -> CPU tensor [N,H,W]."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    x = x.detach().cpu()
    if x.dim() == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() != 3:
        raise ValueError(f"{name} must have shape [N,H,W] or [N,1,H,W], got {tuple(x.shape)}")
    return x


def _check_inputs(logits: Any, masks: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated (float32 logits, int32 0/1 labels), both [N,H,W]."""
    logits = _as_frames(logits, "logits")
    masks = _as_frames(masks, "masks")
    if logits.shape != masks.shape:
        raise ValueError(f"logits and masks differ in shape: {tuple(logits.shape)} vs {tuple(masks.shape)}")
    if not torch.is_floating_point(logits):
        raise TypeError(f"logits must be a floating-point tensor (raw model logits), got dtype {logits.dtype}")
    # The official model emits float32; its thresholds are applied to float32 sigmoids.
    logits = logits.to(torch.float32)
    if torch.isnan(logits).any():
        n_bad = int(torch.isnan(logits).flatten(1).any(1).sum())
        raise ValueError(f"logits contain NaN (in {n_bad} of {logits.shape[0]} frames)")
    if masks.dtype == torch.bool:
        labels = masks.to(torch.int32)
    else:
        bad = (masks != 0) & (masks != 1)
        if bad.any():
            raise ValueError(f"masks must contain only 0 and 1; found value {masks[bad][0].item()!r}")
        labels = masks.to(torch.int32)
    return logits, labels


# --- per-frame statistics -------------------------------------------------------------------------
def _sorted_keys(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """[n, H*W] int32 keys (probability bits << 1 | label), each row sorted ascending."""
    n = logits.shape[0]
    probs = torch.sigmoid(logits).reshape(n, -1).contiguous()
    keys = probs.numpy().view(np.int32) << 1
    keys |= labels.reshape(n, -1).numpy()
    keys.sort(axis=1)
    return keys


def _average_precision_sorted(keys: np.ndarray, pos_at: np.ndarray) -> float:
    """Step-wise AP (scikit-learn's) of one sorted key array; `pos_at` = positions of its positives.

    Walking thresholds from high to low, recall rises only at values holding positives, by
    (positives at v) / P, while precision is TP(>=v) / count(>=v). So AP is the mean, over positive
    pixels, of the precision at their own value, ties included as one threshold.
    """
    n, n_pos = keys.size, pos_at.size
    group_start = np.searchsorted(keys, keys[pos_at] & np.int32(-2), side="left")  # first pixel of value v
    positives_below = np.searchsorted(pos_at, group_start, side="left")
    precision = (n_pos - positives_below) / (n - group_start)
    return float(precision.sum() / n_pos)


def _frame_stats(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row of sorted keys: counts [n,4] (pixels, gt, pred, inter at >0.5), pixels >= each
    threshold [n,255], true positives >= each threshold [n,255], AP [n] (NaN for empty GT)."""
    n, hw = keys.shape
    counts = np.empty((n, 4), dtype=np.int64)
    count_ge = np.empty((n, OFFICIAL_NUM_THRESHOLDS), dtype=np.int64)
    tp_ge = np.empty((n, OFFICIAL_NUM_THRESHOLDS), dtype=np.int64)
    ap = np.full(n, np.nan)
    for j in range(n):
        row = keys[j]
        pos_at = np.flatnonzero(row & 1)
        n_pos = pos_at.size
        below = np.searchsorted(row, _THRESHOLD_KEYS, side="left")
        count_ge[j] = hw - below
        tp_ge[j] = n_pos - np.searchsorted(pos_at, below, side="left")
        not_above_half = int(np.searchsorted(row, _KEY_ABOVE_HALF, side="left"))
        inter = n_pos - int(np.searchsorted(pos_at, not_above_half, side="left"))
        counts[j] = (hw, n_pos, hw - not_above_half, inter)
        if n_pos:
            ap[j] = _average_precision_sorted(row, pos_at)
    return counts, count_ge, tp_ge, ap


def _iou_terms(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame (intersection, union) counts with the official empty-GT rule."""
    pixels, gt, pred, inter = (counts[:, k] for k in range(4))
    empty = gt == 0
    # Empty ground truth: the official code scores true negatives over all pixels.
    return np.where(empty, pixels - pred, inter), np.where(empty, pixels, gt + pred - inter)


def _official_frame_iou(counts: np.ndarray) -> torch.Tensor:
    """Per-frame IoU exactly as AVSBench's mask_iou computes it before its batch mean (float32)."""
    inter_o, union_o = _iou_terms(counts)
    inter_t = torch.from_numpy(inter_o).to(torch.float32)
    union_t = torch.from_numpy(union_o).to(torch.float32)
    return inter_t / (union_t + OFFICIAL_IOU_EPS)


def _official_f_curves(count_ge: np.ndarray, tp_ge: np.ndarray, gt: np.ndarray) -> torch.Tensor:
    """Per-frame F-curves [n,255] with the official float32 expressions (NaN -> 0)."""
    tp = torch.from_numpy(tp_ge).to(torch.float32)
    predicted = torch.from_numpy(count_ge).to(torch.float32)
    positives = torch.from_numpy(gt).to(torch.float32)[:, None]
    prec = tp / (predicted + OFFICIAL_PR_EPS)
    rec = tp / (positives + OFFICIAL_PR_EPS)
    beta2 = OFFICIAL_BETA2
    f = (1 + beta2) * prec * rec / (beta2 * prec + rec)
    f[f != f] = 0
    return f


# --- batched official means -----------------------------------------------------------------------
def _official_miou(iou: torch.Tensor, batch_frames: int) -> tuple[float, int]:
    """AVSBench: mean over the batch of per-frame IoU (float32), summed over batches in a float32
    tensor by AverageMeter, divided by the batch count. Returns (value, number of batches)."""
    total: Any = 0.0
    n_batches = 0
    for start in range(0, iou.shape[0], batch_frames):
        part = iou[start : start + batch_frames]
        total = total + torch.sum(part) / part.shape[0]
        n_batches += 1
    return float(total / n_batches), n_batches


def _official_maxf(f_curves: torch.Tensor, nonempty: np.ndarray, batch_frames: int) -> float:
    """AVSBench Eval_Fmeasure per batch (float32 running sum of non-empty frames' F-curves, divided
    by their number, max over thresholds; 0.0 for a batch without any), then the plain Python mean
    of the per-batch values."""
    total = 0.0
    n_batches = 0
    for start in range(0, f_curves.shape[0], batch_frames):
        running: torch.Tensor | None = None
        used = 0
        for j in range(start, min(start + batch_frames, f_curves.shape[0])):
            if not nonempty[j]:
                continue
            running = f_curves[j].clone() if running is None else running + f_curves[j]
            used += 1
        total += 0.0 if running is None else (running / used).max().item()
        n_batches += 1
    return total / n_batches


# --- accumulator ----------------------------------------------------------------------------------
def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _concat(parts: list[np.ndarray], empty: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.concatenate(parts) if parts else empty)


class SegmentationAccumulator:
    """Streaming version of :func:`segmentation_scores`.

    Call :meth:`update` with consecutive chunks of frames (any size) in dataset order, then
    :meth:`compute`. The result equals ``segmentation_scores`` on the concatenated frames exactly,
    however the stream is chunked. Under DDP, pass ``index`` (the frames' global positions in
    dataset order) to every update, gather the :meth:`state_dict` of every rank and :meth:`merge`
    them: :meth:`compute` then orders frames by index, so the official per-batch metrics see the same
    batches as a single process.
    """

    def __init__(self, official_batch_frames: int = 20, *, pooled_aupr: bool = True) -> None:
        self.official_batch_frames = _positive_int(official_batch_frames, "official_batch_frames")
        self.pooled_aupr = bool(pooled_aupr)
        self.reset()

    def reset(self) -> None:
        """Forget every frame seen."""
        self._iou: list[torch.Tensor] = []
        self._f_curves: list[torch.Tensor] = []
        self._ap: list[np.ndarray] = []
        self._counts: list[np.ndarray] = []
        self._index: list[np.ndarray] | None = None
        self._index_mode: bool | None = None  # decided by the first non-empty update or merge
        self._pooled_keys: list[np.ndarray] = []

    @property
    def n_frames(self) -> int:
        """Number of frames added so far."""
        return int(sum(c.shape[0] for c in self._counts))

    def _set_index_mode(self, with_index: bool) -> None:
        if self._index_mode is None:
            self._index_mode = with_index
            self._index = [] if with_index else None
        elif self._index_mode != with_index:
            raise ValueError("index must be given for every update (and merged state) or for none")

    def update(self, logits: Any, masks: Any, index: Any = None) -> None:
        """Add frames. logits: raw logits [N,H,W] or [N,1,H,W] (cast to float32); masks: 0/1 of the
        same shape; index: optional [N] ints, the frames' positions in dataset order."""
        logits, labels = _check_inputs(logits, masks)
        n = logits.shape[0]
        index_arr = None
        if index is not None:
            index_arr = np.asarray(index.detach().cpu() if isinstance(index, torch.Tensor) else index).reshape(-1)
            if index_arr.shape[0] != n or not np.issubdtype(index_arr.dtype, np.integer):
                raise ValueError(f"index must hold {n} integers (one per frame), "
                                 f"got {index_arr.dtype} of shape {index_arr.shape}")
        if n == 0:
            return
        self._set_index_mode(index_arr is not None)
        for start in range(0, n, _SUBCHUNK_FRAMES):
            stop = min(start + _SUBCHUNK_FRAMES, n)
            keys = _sorted_keys(logits[start:stop], labels[start:stop])
            counts, count_ge, tp_ge, ap = _frame_stats(keys)
            self._counts.append(counts)
            self._ap.append(ap)
            self._iou.append(_official_frame_iou(counts))
            self._f_curves.append(_official_f_curves(count_ge, tp_ge, counts[:, 1]))
            if self.pooled_aupr:
                self._pooled_keys.append(keys.reshape(-1))
        if index_arr is not None:
            assert self._index is not None
            self._index.append(index_arr.astype(np.int64))

    # -- combining ---------------------------------------------------------------------------------
    def merge(self, other: "SegmentationAccumulator") -> "SegmentationAccumulator":
        """Append `other`'s frames after this one's (or interleave them by index). Returns self."""
        if not isinstance(other, SegmentationAccumulator):
            raise TypeError(f"can only merge a SegmentationAccumulator, got {type(other).__name__}")
        if other.official_batch_frames != self.official_batch_frames or other.pooled_aupr != self.pooled_aupr:
            raise ValueError(
                "cannot merge accumulators with different settings: "
                f"official_batch_frames {self.official_batch_frames} vs {other.official_batch_frames}, "
                f"pooled_aupr {self.pooled_aupr} vs {other.pooled_aupr}"
            )
        if other.n_frames == 0:
            return self
        self._set_index_mode(bool(other._index_mode))
        self._iou += other._iou
        self._f_curves += other._f_curves
        self._ap += other._ap
        self._counts += other._counts
        self._pooled_keys += other._pooled_keys
        if other._index is not None:
            assert self._index is not None
            self._index += other._index
        return self

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume or merge, as tensors (picklable, `torch.save`-able)."""
        n = self.n_frames
        return {
            "format": _STATE_FORMAT,
            "official_batch_frames": self.official_batch_frames,
            "pooled_aupr": self.pooled_aupr,
            "frame_iou": torch.cat(self._iou) if n else torch.zeros(0, dtype=torch.float32),
            "frame_f_curve": torch.cat(self._f_curves) if n else torch.zeros(0, OFFICIAL_NUM_THRESHOLDS),
            "frame_ap": _concat(self._ap, np.zeros(0)),
            "frame_counts": _concat(self._counts, np.zeros((0, 4), dtype=np.int64)),
            "frame_index": None if self._index is None else _concat(self._index, np.zeros(0, dtype=np.int64)),
            "pooled_keys": _concat(self._pooled_keys, np.zeros(0, dtype=np.int32)),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace this accumulator's contents by a :meth:`state_dict`."""
        if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"not a {_STATE_FORMAT} state (format={found!r})")
        required = ("official_batch_frames", "pooled_aupr", "frame_iou", "frame_f_curve", "frame_ap",
                    "frame_counts", "frame_index", "pooled_keys")
        missing = [k for k in required if k not in state]
        if missing:
            raise ValueError(f"segmentation accumulator state lacks keys {missing}")
        n = int(state["frame_counts"].shape[0])
        shapes = {"frame_iou": (n,), "frame_f_curve": (n, OFFICIAL_NUM_THRESHOLDS), "frame_ap": (n,),
                  "frame_counts": (n, 4)}
        if state["frame_index"] is not None:
            shapes["frame_index"] = (n,)
        for key, shape in shapes.items():
            if tuple(state[key].shape) != shape:
                raise ValueError(f"segmentation accumulator state key {key!r} has shape "
                                 f"{tuple(state[key].shape)}, expected {shape}")
        self.official_batch_frames = _positive_int(state["official_batch_frames"], "state official_batch_frames")
        self.pooled_aupr = bool(state["pooled_aupr"])
        self.reset()
        if n == 0:
            return
        self._iou = [state["frame_iou"].to(torch.float32)]
        self._f_curves = [state["frame_f_curve"].to(torch.float32)]
        self._ap = [state["frame_ap"].numpy().astype(np.float64)]
        self._counts = [state["frame_counts"].numpy().astype(np.int64)]
        self._set_index_mode(state["frame_index"] is not None)
        if self._index is not None:
            self._index.append(state["frame_index"].numpy().astype(np.int64))
        self._pooled_keys = [state["pooled_keys"].numpy().astype(np.int32)] if self.pooled_aupr else []

    # -- result ------------------------------------------------------------------------------------
    def compute(self) -> dict[str, float | int]:
        """The score dictionary (see :func:`segmentation_scores`)."""
        if self.n_frames == 0:
            raise ValueError("no frames to score: call update() first")
        iou = torch.cat(self._iou)
        f_curves = torch.cat(self._f_curves)
        ap = np.concatenate(self._ap)
        counts = np.concatenate(self._counts)
        if self._index is not None:
            index = np.concatenate(self._index)
            order = np.argsort(index, kind="stable")
            repeated = index[order][1:][np.diff(index[order]) == 0]
            if repeated.size:
                raise ValueError(f"frame index repeated: {np.unique(repeated)[:10].tolist()} "
                                 "(padded DDP samples must be dropped)")
            order_t = torch.from_numpy(order)
            iou, f_curves, ap, counts = iou[order_t], f_curves[order_t], ap[order], counts[order]
        return _scores(iou, f_curves, ap, counts, self._pooled_keys if self.pooled_aupr else None,
                       self.official_batch_frames)


def _scores(iou: torch.Tensor, f_curves: torch.Tensor, ap: np.ndarray, counts: np.ndarray,
            pooled_keys: list[np.ndarray] | None, batch_frames: int) -> dict[str, float | int]:
    pixels, gt, pred, inter = (counts[:, k] for k in range(4))
    nonempty = gt > 0
    n_frames, n_nonempty = int(counts.shape[0]), int(nonempty.sum())

    miou, n_batches = _official_miou(iou, batch_frames)
    iou_inter, iou_union = _iou_terms(counts)
    maxf_official = _official_maxf(f_curves, nonempty, batch_frames)
    if n_nonempty:
        mean_curve = f_curves[torch.from_numpy(nonempty)].to(torch.float64).mean(0)
        best = int(torch.argmax(mean_curve))
        maxf, maxf_threshold = float(mean_curve[best]), float(_THRESHOLDS[best])
        mean_ap = float(ap[nonempty].mean())
    else:
        maxf = maxf_threshold = mean_ap = float("nan")

    denominator = gt + pred
    dice_frames = np.where(denominator == 0, 1.0, 2.0 * inter / np.maximum(denominator, 1))
    tp, fp, fn = int(inter.sum()), int((pred - inter).sum()), int((gt - inter).sum())
    f1 = 1.0 if 2 * tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)

    aupr = float("nan")
    if pooled_keys is not None and int(gt.sum()) > 0:
        keys = np.concatenate(pooled_keys)
        keys.sort()
        aupr = _average_precision_sorted(keys, np.flatnonzero(keys & 1))

    return {
        "miou": 100.0 * miou,
        "miou_per_frame": 100.0 * float(np.mean(iou_inter / iou_union)),
        "maxf": 100.0 * maxf,
        "maxf_official": 100.0 * maxf_official,
        "maxf_threshold": maxf_threshold,
        "map": 100.0 * mean_ap,
        "aupr": 100.0 * aupr,
        "dice": 100.0 * float(dice_frames.mean()),
        "f1": 100.0 * f1,
        "n_frames": n_frames,
        "n_empty_gt": n_frames - n_nonempty,
        "n_official_batches": n_batches,
        "n_pixels": int(pixels.sum()),
    }


def segmentation_scores(logits: Any, masks: Any, *, official_batch_frames: int = 20,
                        pooled_aupr: bool = True) -> dict[str, float | int]:
    """Score binary mask predictions; all scores are percentages (x100).

    logits: raw mask logits [N,H,W] or [N,1,H,W] (torch or numpy; cast to float32), frames in
    dataset order. masks: ground truth of the same shape, values in {0, 1}.
    official_batch_frames: frames per official test batch (AVSBench: 4 clips x 5 frames = 20).

    Keys (docs/metrics.md has the formulas):
      miou               official AVSBench mIoU: per-batch mean of per-frame IoU, averaged over
                         batches as AVSBench does; float-exact with the official code on CPU
      miou_per_frame     plain float64 mean over frames of the same IoU (no eps): batch-free
      maxf               dataset Max-F: max over the 255 official thresholds of the mean F-curve
                         of the non-empty frames -- the one we report
      maxf_official      official per-batch Max-F averaged over batches; float-exact
      maxf_threshold     the threshold where ``maxf`` peaks
      map                mean per-frame average precision over non-empty frames (scikit-learn's AP)
      aupr               average precision of all pixels pooled
      dice               mean per-frame Dice at p > 0.5 (empty prediction on empty GT: 100)
      f1                 pooled pixel F1 at p > 0.5
      n_frames, n_empty_gt, n_official_batches, n_pixels
    Undefined scores are NaN: ``maxf``/``map`` without a non-empty frame, ``aupr`` without positives
    or with ``pooled_aupr=False``.
    """
    accumulator = SegmentationAccumulator(official_batch_frames, pooled_aupr=pooled_aupr)
    accumulator.update(logits, masks)
    return accumulator.compute()
