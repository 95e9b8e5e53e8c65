"""Mosaic quality metrics."""

from mosaic_jax._src.quality import SeamMetric, block_medians, lad_fit, seam_metric

__all__ = ["seam_metric", "SeamMetric", "block_medians", "lad_fit"]
