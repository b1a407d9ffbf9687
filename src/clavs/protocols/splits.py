"""Split strings ('B-I'), proportional task shares, and class orders.

A split string `B-I` means: B units (classes, or stream share) in the first task, I in each next
one. For S4 the units are classes and `B + k*I` must equal the number of classes exactly, unless a
number of tasks is forced; then (and for the TF-CL stream) the units are cut by proportional
shares, see `proportional_sizes`.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Sequence

import numpy as np

_SPLIT_RE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")

#: Offsets added to the run seed for each independent random choice, so that e.g. the blur draw
#: does not change when the class order is explicit instead of random.
SEED_STREAMS = {"class_order": None, "domain_order": 1, "tfcl_groups": 2, "tfcl_blur": 3}


def rng_for(seed: int, purpose: str) -> np.random.Generator:
    """A numpy Generator for one purpose; never the global RNG.

    The class order uses `default_rng(seed)` itself (the usual convention, reproducible by anyone
    with numpy); the other purposes use `default_rng([seed, k])`, independent streams.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    stream = SEED_STREAMS[purpose]
    return np.random.default_rng(int(seed) if stream is None else [int(seed), stream])


def parse_split_string(split: str) -> tuple[int, int]:
    """'11-2' -> (11, 2). Both numbers must be positive integers."""
    m = _SPLIT_RE.match(str(split))
    if not m:
        raise ValueError(f"split {split!r} is not of the form 'B-I' (e.g. '11-2'): B units in the "
                         f"first task, I in each next one")
    base, inc = int(m.group(1)), int(m.group(2))
    if base < 1 or inc < 1:
        raise ValueError(f"split {split!r}: B and I must both be >= 1")
    return base, inc


def split_weights(split: str, num_tasks: int) -> list[int]:
    """The share weights of `num_tasks` tasks under split 'B-I': [B, I, I, ...]."""
    base, inc = parse_split_string(split)
    _check_num_tasks(num_tasks)
    return [base] + [inc] * (num_tasks - 1)


def parse_split(split: str, num_classes: int, num_tasks: int | None = None) -> list[int]:
    """Task sizes, in classes, of split 'B-I' over `num_classes` classes.

    Without `num_tasks`: B classes, then I per task, and B + k*I must equal `num_classes` exactly
    (parse_split('11-2', 23) == [11, 2, 2, 2, 2, 2, 2]); otherwise a ValueError says which splits
    would fit. With `num_tasks`: if B + (num_tasks-1)*I == num_classes it is the same exact
    split; otherwise the classes are divided in proportion to the weights [B, I, ..., I] by
    `proportional_sizes` (each task gets at least one class, so num_tasks <= num_classes).
    """
    base, inc = parse_split_string(split)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if num_tasks is not None:
        weights = split_weights(split, num_tasks)
        if num_tasks > num_classes:
            raise ValueError(f"split {split!r} with num_tasks={num_tasks}: only {num_classes} classes, "
                             f"each task needs at least one")
        return proportional_sizes(num_classes, weights)
    if base > num_classes:
        raise ValueError(f"split {split!r}: the first task asks for {base} classes but there are only "
                         f"{num_classes}; pass num_tasks to cut {num_classes} units in proportional shares")
    rest = (num_classes - base) % inc
    if rest:
        k = (num_classes - base) // inc
        fits = sorted(b for b in {base + rest, base + rest - inc} if b > 0)  # B' with (N - B') % I == 0
        hint = " or ".join(f"'{b}-{inc}'" for b in fits)
        raise ValueError(
            f"split {split!r} does not cover {num_classes} classes exactly: {base} + {k}*{inc} = "
            f"{base + k * inc} leaves {rest} class(es) over. Use e.g. {hint}, or pass num_tasks to "
            f"divide the classes in proportional shares")
    return [base] + [inc] * ((num_classes - base) // inc)


def proportional_sizes(total: int, weights: Sequence[int | float]) -> list[int]:
    """Cut `total` items into len(weights) positive integer parts proportional to `weights`.

    Rule (largest remainder with a floor of one): quota q_i = total * w_i / sum(w), exactly, in
    fractions; start from max(1, floor(q_i)); while the sum is short, add one to the part with the
    largest q_i - size_i (ties: the earlier part); while it is over (only possible because of the
    floor of one), remove one from a part with size > 1 and the smallest q_i - size_i (ties: the
    later part). This minimises sum |size_i - q_i| under sizes >= 1. When the quotas are integers
    the sizes equal them: 31-5 with 50 tasks over 276 items gives [31, 5, ..., 5].
    """
    n = len(weights)
    if n == 0:
        raise ValueError("proportional_sizes needs at least one weight")
    if any(w <= 0 for w in weights):
        raise ValueError(f"weights must be positive, got {list(weights)}")
    if total < n:
        raise ValueError(f"cannot cut {total} items into {n} non-empty parts: need at least {n} items")
    fw = [Fraction(w) for w in weights]
    wsum = sum(fw)
    quota = [Fraction(total) * w / wsum for w in fw]
    sizes = [max(1, int(q)) for q in quota]  # int() floors a positive Fraction
    while sum(sizes) < total:
        i = max(range(n), key=lambda j: (quota[j] - sizes[j], -j))
        sizes[i] += 1
    while sum(sizes) > total:
        i = min((j for j in range(n) if sizes[j] > 1), key=lambda j: (quota[j] - sizes[j], -j))
        sizes[i] -= 1
    return sizes


def make_class_order(class_order: str | Sequence[str], seed: int,
                     categories: Sequence[str]) -> list[str]:
    """The order in which classes are learned.

    'random': a permutation of `categories` (in the order given) drawn with
    `numpy.random.default_rng(seed).permutation`; 'alphabetical': sorted names; a list: used as
    given, and it must name every one of `categories` exactly once.
    """
    cats = list(categories)
    if isinstance(class_order, str):
        if class_order == "random":
            perm = rng_for(seed, "class_order").permutation(len(cats))
            return [cats[i] for i in perm]
        if class_order == "alphabetical":
            return sorted(cats)
        raise ValueError(f"class_order {class_order!r} is not 'random', 'alphabetical' or a list of "
                         f"category names")
    order = list(class_order)
    known = set(cats)
    unknown = [c for c in order if c not in known]
    if unknown:
        raise ValueError(f"class_order names unknown class(es) {unknown}; the classes of this data are "
                         f"{sorted(known)}")
    dup = sorted({c for c in order if order.count(c) > 1})
    if dup:
        raise ValueError(f"class_order names class(es) more than once: {dup}")
    missing = [c for c in cats if c not in set(order)]
    if missing:
        raise ValueError(f"class_order leaves out class(es) {missing}; it must list all {len(cats)}")
    return order


def _check_num_tasks(num_tasks: int) -> None:
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, (int, np.integer)) or num_tasks < 1:
        raise ValueError(f"num_tasks must be a positive integer, got {num_tasks!r}")
