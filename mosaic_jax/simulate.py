"""Simulated skies with known truth (``python -m mosaic_jax simulate``)."""

from mosaic_jax._src.simulate import cut_frames, mosaic_bayer, simulate_dataset, simulate_sky, sky_wcs

__all__ = ["simulate_dataset", "simulate_sky", "sky_wcs", "cut_frames", "mosaic_bayer"]
