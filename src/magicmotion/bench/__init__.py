"""The benchmark (MagicBench-style and DAVIS): sets bucketed by the number of controlled objects, runs
of a model over them, and the paper's metrics: FID, FVD, Mask IoU and Box IoU (and ours: frame-0 PSNR,
late background PSNR, object colour error). See docs/benchmark.md.

    build_bench / read_davis  ->  run_bench  ->  score_run  ->  report.report

Modules are imported lazily (torch, transformers, torchmetrics load only when used).
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "build_bench": "sets", "read_davis": "sets", "DEFAULT_BUCKETS": "sets",
    "run_bench": "runner", "condition_trajectory": "runner", "pipeline_generator": "runner",
    "read_run": "runner",
    "score_run": "score", "read_scores": "score",
    "Segmenter": "segmenters", "ClassicSegmenter": "segmenters", "Sam2Segmenter": "segmenters",
    "make_segmenter": "segmenters", "SEGMENTERS": "segmenters",
    "mask_iou": "metrics", "box_iou": "metrics", "clip_scores": "metrics",
    "appearance_scores": "metrics", "psnr": "metrics",
    "frechet_distance": "metrics", "FIDMeter": "metrics", "I3DFeatures": "metrics",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
