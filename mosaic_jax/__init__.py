"""mosaic_jax: photometrically clean grid-mode mosaics of astronomical frames, in JAX.

Every frame first gets a gain and a sky polynomial from one global solve over the frame overlap
graph (:mod:`mosaic_jax._src.sky`); frames without a WCS are registered by their stars. Frames are
stacked per tile of a global grid; tiles are brought to one photometric scale
(robust gain/offset fits on coverage-masked overlaps, solved globally over the overlap graph),
RGB tiles get their channel medians equalised right after stacking, and tiles are feathered
into the canvas. Arrays are float32 ``[H, W, C]`` (mono ``[H, W, 1]``); NaN means no data.
"""

from mosaic_jax._src.coadd import reproject_and_coadd
from mosaic_jax._src.feather import assemble, feather_weights
from mosaic_jax._src.grid import Grid, GridTile, make_grid
from mosaic_jax._src.io import FrameInfo, MosaicInputError, debayer_bilinear, find_inputs, load_frame, scan_frame
from mosaic_jax._src.photometry import (
    PhotometrySolution,
    apply_tile_photometric_scaling,
    compute_tile_photometric_scaling,
    equalize_rgb_medians,
    noise_sigma,
    overlap_mask,
    reference_tile_scaling,
    select_reference_tile,
    solve_tile_photometry,
)
from mosaic_jax._src.config import MosaicConfig, MosaicResult
from mosaic_jax._src.devices import Cluster, initialize
from mosaic_jax._src.output import stretch_preview, write_outputs
from mosaic_jax._src.pipeline import build_mosaic
from mosaic_jax._src.register import header_wcs, register_frames
from mosaic_jax._src.reproject import reproject_frame, resample_bilinear
from mosaic_jax._src.sky import SKY_MODELS, SkySolution, pair_statistics, solve_frame_sky
from mosaic_jax._src.stack import frame_weights, stack_frames

__version__ = "0.1.0"

__all__ = (
    "FrameInfo",
    "Grid",
    "GridTile",
    "MosaicConfig",
    "MosaicInputError",
    "MosaicResult",
    "build_mosaic",
    "Cluster",
    "initialize",
    "debayer_bilinear",
    "find_inputs",
    "load_frame",
    "make_grid",
    "reproject_frame",
    "resample_bilinear",
    "scan_frame",
    "stretch_preview",
    "write_outputs",
    "PhotometrySolution",
    "apply_tile_photometric_scaling",
    "assemble",
    "compute_tile_photometric_scaling",
    "equalize_rgb_medians",
    "feather_weights",
    "frame_weights",
    "noise_sigma",
    "overlap_mask",
    "reference_tile_scaling",
    "select_reference_tile",
    "solve_tile_photometry",
    "stack_frames",
    "reproject_and_coadd",
    "register_frames",
    "header_wcs",
    "SKY_MODELS",
    "SkySolution",
    "pair_statistics",
    "solve_frame_sky",
)
