"""The build's settings (:class:`MosaicConfig`), its result (:class:`MosaicResult`) and the
memory budget that sizes its batches."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from astropy.wcs import WCS

from .grid import Grid
from .reproject import BACKENDS
from .sky import SKY_MODELS
from .stack import REJECT

__all__ = ["MosaicConfig", "MosaicResult", "SOLVES", "FRAME_NORMALIZE", "default_memory_limit_mb", "batch_bytes"]

SOLVES = ("global", "reference")
FRAME_NORMALIZE = ("overlap", "none")
MIN_MEMORY_MB = 256.0
BATCH_CAP_BYTES = 96 * 2 ** 20  # larger batches gain nothing on CPU; on accelerators they are split across devices


def _physical_mb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 20
    except (ValueError, OSError, AttributeError):
        return 8192.0


def default_memory_limit_mb() -> float:
    """A quarter of the machine's physical memory (at least 256 MiB)."""
    return max(MIN_MEMORY_MB, _physical_mb() / 4.0)


def batch_bytes(cfg: "MosaicConfig", canvas_bytes: float, n_devices: int = 1) -> float:
    """Bytes one batch of work may hold: what the memory limit leaves beside the canvas, at most
    ``BATCH_CAP_BYTES`` per device."""
    limit = (cfg.memory_limit_mb or default_memory_limit_mb()) * 2 ** 20
    return float(max(8 * 2 ** 20, min(limit - canvas_bytes, BATCH_CAP_BYTES * max(1, n_devices)) / 4.0))


@dataclass(frozen=True)
class MosaicConfig:
    """Settings of :func:`build_mosaic`.

    Attributes:
      tile_size_factor: tile side = this x the median frame side (canvas pixels).
      overlap: overlap fraction of neighbouring tiles.
      reject, kappa: the per-tile stack's rejection (:func:`mosaic_jax.stack_frames`).
      normalize: per-frame normalisation, ``"overlap"`` (robust fits on every overlapping pair of
        frames, solved once over the whole frame graph) or ``"none"``.
      sky: each frame's sky model, ``"offset"``, ``"plane"``, ``"poly2"`` or ``"poly3"`` (a
        polynomial of that degree in the frame's footprint coordinates; see :mod:`.sky`), or
        ``"auto"`` (default: the degree up to 2 the overlaps support, by BIC).
      fit_gains: solve a gain per frame and channel too (else only the skies).
      solve: ``"global"`` (robust least squares over the overlap graph) or ``"reference"`` (each
        tile scaled to the reference tile where they overlap; others untouched).
      two_pass: after a first assembly, refit every tile to the mosaic and assemble again.
      backend: ``"jax"`` (pixel maps on the host, bilinear resampling on device) or ``"reproject"``.
      feather_width: feather ramp in pixels (default: half the tile overlap, at least 8).
      min_coverage, erode: overlap masks: frames per pixel required in both tiles, erosion radius.
      gain_bounds: clip range of every fitted gain.
      memory_limit_mb: the build's memory budget (default: a quarter of the machine's memory).
        The canvas (mosaic and weight) lives in memory; frames and tiles go to a work folder on
        disk as they are made, and every batch of work is sized to what the limit leaves.
      work_dir: the work folder (default: a temporary folder; a multi-host build needs one on a
        file system every process sees). What the build writes there is removed at the end.
      quality: compute the seam metric for the report (from the frame windows the build already
        reprojected: no second reprojection).
    """

    tile_size_factor: float = 4.0
    overlap: float = 0.4
    reject: str = "winsorized"
    normalize: str = "overlap"
    sky: str = "auto"
    fit_gains: bool = True
    kappa: tuple[float, float] = (3.0, 3.0)
    solve: str = "global"
    two_pass: bool = False
    backend: str = "jax"
    feather_width: float | None = None
    min_coverage: float = 1.0
    erode: int = 2
    gain_bounds: tuple[float, float] = (0.5, 2.0)
    memory_limit_mb: float | None = None
    work_dir: str | None = None
    quality: bool = True

    def __post_init__(self):
        if self.reject not in REJECT:
            raise ValueError(f"reject must be one of {REJECT}, got {self.reject!r}")
        if self.normalize not in FRAME_NORMALIZE:
            raise ValueError(f"normalize must be one of {FRAME_NORMALIZE}, got {self.normalize!r}")
        if self.sky not in SKY_MODELS:
            raise ValueError(f"sky must be one of {tuple(SKY_MODELS)}, got {self.sky!r}")
        if self.solve not in SOLVES:
            raise ValueError(f"solve must be one of {SOLVES}, got {self.solve!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if not (self.tile_size_factor > 0 and math.isfinite(self.tile_size_factor)):
            raise ValueError(f"tile_size_factor must be a positive number, got {self.tile_size_factor}")
        if not (0 <= self.overlap < 0.9):
            raise ValueError(f"overlap must lie in [0, 0.9), got {self.overlap}")
        if self.feather_width is not None and not (self.feather_width > 0):
            raise ValueError(f"feather_width must be > 0, got {self.feather_width}")
        if self.memory_limit_mb is not None and not (self.memory_limit_mb >= MIN_MEMORY_MB
                                                     and math.isfinite(self.memory_limit_mb)):
            raise ValueError(f"memory_limit_mb must be at least {MIN_MEMORY_MB:.0f}, got {self.memory_limit_mb}")


class MosaicResult(NamedTuple):
    """``mosaic``: float32 ``[H, W, C]`` (NaN = no data); ``weight``: float32 ``[H, W]`` coverage
    (frames per pixel, feather-weighted); ``wcs``: the celestial WCS; ``grid``; ``report``: dict."""

    mosaic: np.ndarray
    weight: np.ndarray
    wcs: WCS
    grid: Grid
    report: dict
