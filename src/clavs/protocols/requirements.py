"""What a protocol needs from a dataset tree, checked on the CSV rows alone (no file is read).

`clavs data check` reports it for every protocol (which protocols a tree can serve) and `clavs run`
checks it for its protocol before decoding anything, so a tree that cannot serve a protocol is
refused with a message naming the CSV and the missing videos instead of failing mid-run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from clavs.data.categories import S4_CATEGORIES
from clavs.data.records import VideoRecord

SPLITS = ("train", "val", "test")
# Which AVSBench subset each protocol reads.
PROTOCOL_SUBSET = {"til": "s4", "cil": "s4", "dil": "s4", "tfcl": "ms3"}


@dataclass
class Needs:
    """What stops a subset's rows from serving its protocols (errors) and what only weakens them."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _listing(names: Sequence[str], limit: int = 6) -> str:
    names = list(names)
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def subset_needs(kind: str, records: Sequence[VideoRecord], default_split: str | None = None) -> Needs:
    """Check the rows of one subset (all splits): S4 rows for TIL/CIL/DIL, MS3 rows for TF-CL.

    Every protocol trains on train videos, selects models on val videos and reports on test videos,
    so each split must hold videos; in S4 every category must also have train and test videos (a task
    can neither be learned nor evaluated without them); a category without val videos is a warning.
    """
    needs = Needs()
    per_split = Counter(r.split for r in records)
    for split in SPLITS:
        if per_split[split] == 0:
            needs.errors.append(f"no {split} videos")
    if kind != "s4":
        return needs
    counts = Counter((r.category, r.split) for r in records)
    categories = [c for c in S4_CATEGORIES if any(counts[(c, s)] for s in SPLITS)]
    for split, what in (("train", "a task cannot learn it"), ("test", "a task cannot be evaluated on it")):
        missing = [c for c in categories if counts[(c, split)] == 0]
        if missing and per_split[split]:
            needs.errors.append(f"category(ies) {_listing(missing)} have no {split} videos ({what})")
    missing_val = [c for c in categories if counts[(c, "val")] == 0]
    if missing_val and per_split["val"]:
        needs.warnings.append(f"category(ies) {_listing(missing_val)} have no val videos (no model selection "
                              f"data for their tasks)")
    if default_split and categories:
        from clavs.protocols.splits import parse_split

        try:
            parse_split(default_split, len(categories))
        except ValueError:
            fit = f"{len(categories) - 1}-1" if len(categories) > 1 else "1-1"
            needs.notes.append(f"{len(categories)} categories: the default split {default_split} does not fit; "
                               f"pass e.g. --split {fit}")
    return needs


def protocol_problems(protocol: str, records: Sequence[VideoRecord]) -> list[str]:
    """Why the rows (all splits of the protocol's subset) cannot serve `protocol`; empty if they can."""
    return subset_needs(PROTOCOL_SUBSET[protocol], records).errors
