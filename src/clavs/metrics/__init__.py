"""Metrics: segmentation scores (official AVSBench and batch-free variants) and continual summaries."""

from clavs.metrics.continual import anytime_auc, continual_summaries, continual_summary
from clavs.metrics.names import (ANYTIME_KEY, MATRIX_METRICS, METRIC_TITLES, SEGMENTATION_METRICS, SUMMARY_KEYS)
from clavs.metrics.segmentation import (
    OFFICIAL_BETA2,
    OFFICIAL_NUM_THRESHOLDS,
    SegmentationAccumulator,
    official_thresholds,
    segmentation_scores,
)

__all__ = [
    "ANYTIME_KEY",
    "MATRIX_METRICS",
    "METRIC_TITLES",
    "SEGMENTATION_METRICS",
    "SUMMARY_KEYS",
    "anytime_auc",
    "OFFICIAL_BETA2",
    "OFFICIAL_NUM_THRESHOLDS",
    "SegmentationAccumulator",
    "continual_summaries",
    "continual_summary",
    "official_thresholds",
    "segmentation_scores",
]
