"""Checks shared by the protocol builders: bad input gets an error that names the list, video and value."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from clavs.data.categories import CATEGORY_INDEX
from clavs.data.records import VideoRecord

SPLIT_ARGS = (("train", "train_records"), ("val", "val_records"), ("test", "test_records"))


def check_split_records(records: Sequence[VideoRecord], split: str, arg: str) -> list[VideoRecord]:
    """Every item is a VideoRecord of `split`, and names are unique within the list."""
    records = list(records)
    for i, r in enumerate(records):
        if not isinstance(r, VideoRecord):
            raise TypeError(f"{arg}[{i}] is a {type(r).__name__}, not a VideoRecord")
        if r.split != split:
            raise ValueError(f"{arg}[{i}] ({r.name!r}) has split {r.split!r}; {arg} must hold only "
                             f"{split!r} videos")
    dup = sorted(n for n, c in Counter(r.name for r in records).items() if c > 1)
    if dup:
        raise ValueError(f"{arg} names {len(dup)} video(s) more than once, e.g. {dup[:5]}")
    return records


def check_s4_records(records: Sequence[VideoRecord], arg: str) -> None:
    """Class protocols need a known S4 category on every record, consistent with its label."""
    for i, r in enumerate(records):
        if r.category is None or r.category == "":
            raise ValueError(f"{arg}[{i}] ({r.name!r}) has no category: TIL/CIL/DIL need S4 records "
                             f"(MS3 records have none; use protocol 'tfcl')")
        if r.category not in CATEGORY_INDEX:
            raise ValueError(f"{arg}[{i}] ({r.name!r}) has unknown category {r.category!r}")
        if r.label != CATEGORY_INDEX[r.category]:
            raise ValueError(f"{arg}[{i}] ({r.name!r}): label {r.label} does not match category "
                             f"{r.category!r} (index {CATEGORY_INDEX[r.category]} in S4_CATEGORIES)")
