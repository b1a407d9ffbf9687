"""Continual-learning summaries of an accuracy matrix R[t][j] (score on task j after training task t).

Any metric works (mAP, Max-F, mIoU, ...); the summaries keep its unit. A missing entry (None or
NaN: not evaluated) makes every summary that needs it NaN rather than silently averaging over fewer
tasks. docs/metrics.md gives the formulas.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Sequence

import numpy as np


def _entry(value: Any, where: str) -> float:
    if value is None:
        return math.nan
    if hasattr(value, "item") and not isinstance(value, (int, float)):
        value = value.item()  # numpy / torch scalars
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{where} must be a number or None, got {value!r}")
    return float(value)


def _as_matrix(R: Any) -> np.ndarray:
    """T x T float64 matrix; None -> NaN; clear errors for ragged or non-square input."""
    if hasattr(R, "tolist") and not isinstance(R, (list, tuple)):
        R = R.tolist()
    if not isinstance(R, (list, tuple)) or len(R) == 0:
        raise ValueError(f"R must be a non-empty T x T matrix (list of lists or array), got {R!r}")
    T = len(R)
    rows = []
    for t, row in enumerate(R):
        if not isinstance(row, (list, tuple)):
            raise ValueError(f"R[{t}] must be a row of {T} values, got {row!r}")
        if len(row) != T:
            raise ValueError(f"R must be square: R has {T} rows but R[{t}] has {len(row)} entries")
        rows.append([_entry(v, f"R[{t}][{j}]") for j, v in enumerate(row)])
    return np.array(rows, dtype=np.float64)


def _as_baseline(b: Any, T: int) -> np.ndarray:
    if hasattr(b, "tolist") and not isinstance(b, (list, tuple)):
        b = b.tolist()
    if not isinstance(b, (list, tuple)) or len(b) != T:
        raise ValueError(f"b must hold one initial score per task ({T}), got {b!r}")
    return np.array([_entry(v, f"b[{j}]") for j, v in enumerate(b)], dtype=np.float64)


def continual_summary(R: Any, b: Any = None) -> dict[str, float]:
    """Summaries of the T x T matrix R (row t: after training task t; column j: evaluated on task j).

    la         mean of the diagonal R[t][t] (learning accuracy, just after learning each task)
    aa         mean of the last row R[T-1][j] over all T tasks (average accuracy at the end)
    a_inc      mean over t of the mean of R[t][j] over j <= t (average incremental accuracy)
    forgetting mean over j < T-1 of max_{t in [j, T-2]} R[t][j] - R[T-1][j]
    bwt        mean over j < T-1 of R[T-1][j] - R[j][j] (backward transfer)
    fwt        mean over j >= 1 of R[j-1][j] - b[j] (forward transfer; b[j]: task j's score before
               any training); NaN when b is None

    With T == 1, forgetting, bwt and fwt are NaN (no earlier task, no next task). Entries above the
    first superdiagonal are never read.
    """
    M = _as_matrix(R)
    T = M.shape[0]
    la = float(np.mean(np.diag(M)))
    aa = float(np.mean(M[T - 1]))
    a_inc = float(np.mean([np.mean(M[t, : t + 1]) for t in range(T)]))
    forgetting = bwt = fwt = math.nan
    if T > 1:
        old = range(T - 1)
        forgetting = float(np.mean([np.max(M[j : T - 1, j]) - M[T - 1, j] for j in old]))
        bwt = float(np.mean([M[T - 1, j] - M[j, j] for j in old]))
        if b is not None:
            base = _as_baseline(b, T)
            fwt = float(np.mean([M[j - 1, j] - base[j] for j in range(1, T)]))
    return {"la": la, "aa": aa, "a_inc": a_inc, "forgetting": forgetting, "bwt": bwt, "fwt": fwt}


def continual_summaries(matrices: Mapping[str, Any],
                        baselines: Mapping[str, Sequence[Any]] | None = None) -> dict[str, dict[str, float]]:
    """:func:`continual_summary` for every metric: {metric: R} (and {metric: b}) -> {metric: summary}."""
    baselines = baselines or {}
    unknown = sorted(set(baselines) - set(matrices))
    if unknown:
        raise ValueError(f"baselines given for metrics without a matrix: {unknown}")
    out = {}
    for name, R in matrices.items():
        try:
            out[name] = continual_summary(R, baselines.get(name))
        except (TypeError, ValueError) as err:
            raise type(err)(f"metric {name!r}: {err}") from err
    return out


def anytime_auc(clips_seen: Sequence[float], scores: Sequence[float]) -> float:
    """Area under the anytime-accuracy curve of a task-free stream (A_auc, Koh et al., 2022), on the
    score's own scale: evaluation k happened after n_k training clips (n_0 = 0 before the first) and
    scored s_k on the test clips of everything seen so far;

        A_auc = sum_k s_k (n_k - n_{k-1}) / n_K

    i.e. each score stands for the stretch of the stream that led to it. NaN without points.
    """
    n = np.asarray([_entry(v, f"clips_seen[{i}]") for i, v in enumerate(clips_seen)], dtype=np.float64)
    s = np.asarray([_entry(v, f"scores[{i}]") for i, v in enumerate(scores)], dtype=np.float64)
    if n.shape != s.shape:
        raise ValueError(f"clips_seen has {n.size} points but scores has {s.size}")
    if n.size == 0:
        return math.nan
    if np.any(np.diff(n) < 0) or n[0] < 0:
        raise ValueError(f"clips_seen must be non-negative and non-decreasing, got {n.tolist()}")
    if n[-1] == 0:
        return math.nan
    widths = np.diff(np.concatenate([[0.0], n]))
    return float(np.sum(s * widths) / n[-1])
