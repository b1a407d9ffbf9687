"""One row of an AVSBench metadata CSV, as the readers, protocols and SynthAVS share it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class VideoRecord:
    """A video of S4 or MS3.

    name:      the video name (CSV column 0).
    split:     'train' | 'val' | 'test'.
    category:  S4 category string; None for MS3 (which has no category column).
    label:     index of `category` in S4_CATEGORIES; -1 for MS3.
    start:     S4 trim start in seconds (CSV column 1); None for MS3.
    domain:    the optional extra `domain` column (SynthAVS writes it), else None.
    sources:   categories of the sounding objects where known (SynthAVS MS3 writes a
               `sources` column, '|'-separated); empty tuple when unknown.
    extra:     any other extra columns, by header name.
    """

    name: str
    split: str
    category: str | None = None
    label: int = -1
    start: float | None = None
    domain: str | None = None
    sources: tuple[str, ...] = ()
    extra: tuple[tuple[str, str], ...] = field(default=())
