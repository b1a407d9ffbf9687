"""Data: AVSBench S4/MS3 readers (the official layout), SynthAVS, audio I/O, the tree checker."""

from clavs.data.avsbench import AVSBenchMS3, AVSBenchS4, read_ms3_metadata, read_s4_metadata
from clavs.data.categories import S4_CATEGORIES
from clavs.data.records import VideoRecord

__all__ = ["AVSBenchMS3", "AVSBenchS4", "S4_CATEGORIES", "VideoRecord", "read_ms3_metadata", "read_s4_metadata"]
