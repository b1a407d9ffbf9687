"""Metrics: segmentation scores (official AVSBench and batch-free variants) and continual summaries."""

from clavs.metrics.continual import continual_summaries, continual_summary
from clavs.metrics.segmentation import (
    OFFICIAL_BETA2,
    OFFICIAL_NUM_THRESHOLDS,
    SegmentationAccumulator,
    official_thresholds,
    segmentation_scores,
)

__all__ = [
    "OFFICIAL_BETA2",
    "OFFICIAL_NUM_THRESHOLDS",
    "SegmentationAccumulator",
    "continual_summaries",
    "continual_summary",
    "official_thresholds",
    "segmentation_scores",
]
