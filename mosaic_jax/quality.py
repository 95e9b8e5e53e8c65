"""Mosaic quality metrics: :func:`truth_error` (against a known truth), :func:`seam_steps` (steps
across frame edges, on the mosaic alone) and :func:`seam_metric` (consistency with the raw frames;
biased against tools that remove per-frame gradients)."""

from mosaic_jax._src.quality import (SeamMetric, SeamSteps, TruthError, block_medians, lad_fit, seam_metric,
                                     seam_steps, truth_error)

__all__ = ["truth_error", "TruthError", "seam_steps", "SeamSteps", "seam_metric", "SeamMetric", "block_medians",
           "lad_fit"]
