"""A drop-in for ``reproject.mosaicking.reproject_and_coadd``: the same inputs and outputs, with
our resampling and, on request, our per-frame sky and gain solve instead of reproject's offsets.

A reproject user switches by changing one import::

    from mosaic_jax import reproject_and_coadd      # was: from reproject.mosaicking import ...
    array, footprint = reproject_and_coadd(files_or_hdus_or_tuples, wcs_out, shape_out=shape)
"""

from __future__ import annotations

import logging

import jax.numpy as jnp
import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from .grid import _bbox, outline
from .io import MosaicInputError, _celestial_wcs, _image_hdu, FrameSkipped
from .reproject import reproject_frame

__all__ = ["reproject_and_coadd"]

log = logging.getLogger("mosaic_jax")

COMBINE = ("mean", "sum")
BATCH_BYTES = 64 * 2 ** 20  # the background fits' batches


def _as_frame(item, hdu_in):
    """One input -> ``(data [H, W, 1] float32, wcs)``: a file name, an HDU (or HDUList), or a
    ``(array, WCS or header)`` tuple, as reproject takes them."""
    if isinstance(item, (str, bytes)) or hasattr(item, "__fspath__"):
        with fits.open(item) as h:
            return _as_frame(h, hdu_in)
    if isinstance(item, fits.HDUList):
        try:
            i = _image_hdu(item) if hdu_in is None else hdu_in
        except FrameSkipped as e:
            raise MosaicInputError(f"input has no image: {e}") from None
        return _as_frame(item[i], None)
    if isinstance(item, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
        return _as_frame((item.data, item.header), None)
    if isinstance(item, tuple) and len(item) == 2:
        data, w = item
        try:
            w = _celestial_wcs(w) if isinstance(w, fits.Header) else w.celestial
        except FrameSkipped as e:
            raise MosaicInputError(f"input has no usable celestial WCS: {e}") from None
        a = np.asarray(data, np.float32)
        if a.ndim != 2:
            raise MosaicInputError(f"inputs must be 2-D images, got shape {a.shape}")
        return a[..., None], w
    raise MosaicInputError(f"unsupported input {type(item).__name__}: give file names, HDUs or (array, WCS) tuples")


def _weight_image(item, hdu_in) -> np.ndarray:
    """A weight image: an array, a file name or an HDU (as reproject takes them) -> float32 ``[H, W]``."""
    if isinstance(item, (str, bytes)) or hasattr(item, "__fspath__"):
        with fits.open(item) as h:
            return np.asarray(h[hdu_in or 0].data, np.float32)
    if isinstance(item, fits.HDUList):
        return np.asarray(item[hdu_in or 0].data, np.float32)
    if isinstance(item, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
        return np.asarray(item.data, np.float32)
    return np.asarray(item, np.float32)


def _footprint_box(shape, wcs_in, wcs_out, shape_out):
    o = outline(shape, wcs_in, wcs_out)
    if not np.all(np.isfinite(o)):
        return None
    box = _bbox(o, shape_out)
    return box if box[2] > box[0] and box[3] > box[1] else None


def reproject_and_coadd(input_data, output_projection, shape_out=None, input_weights=None, hdu_in=None,
                        reproject_function=None, combine_function: str = "mean", match_background: bool = False,
                        background_reference=None, *, sky: str = "offset", fit_gains: bool = False,
                        backend: str = "jax", erode: int = 2, progress_bar=None):
    """Reproject every input onto ``output_projection`` and co-add them, as reproject does.

    Args (as ``reproject.mosaicking.reproject_and_coadd``):
      input_data: a list of file names, HDUs/HDULists or ``(array, WCS or Header)`` tuples.
      output_projection: a celestial ``WCS`` or a FITS ``Header`` (then ``shape_out`` may come
        from its ``NAXIS1/2``). shape_out: ``(ny, nx)``.
      input_weights: optional per-input weight images (same shapes as the inputs).
      hdu_in: HDU index for file or HDUList inputs.
      reproject_function: ignored (bilinear resampling is ours); kept for the signature.
      combine_function: ``"mean"`` or ``"sum"``.
      match_background: bring the frames to one sky before co-adding: our global solve over the
        frame overlap graph (see ``sky``, ``fit_gains``). background_reference: the frame kept as
        the gauge (default: the one with most pixels).

    Keyword-only (ours):
      sky: the per-frame sky model with ``match_background`` (``"offset"`` as reproject; ``"plane"``,
        ``"poly2"``, ``"poly3"``). fit_gains: solve per-frame gains too. backend: ``"jax"`` or
        ``"reproject"`` resampling. erode: overlap-mask erosion (pixels) of the background fits.

    Returns:
      ``(array, footprint)``: float32 ``[ny, nx]`` (NaN where no input lands, as reproject
      returns 0 there: compare with ``footprint > 0``) and float32 ``[ny, nx]``, the summed
      weights.
    """
    from .config import MosaicConfig
    from .frames import frame_noise, normalise_frames
    from .photometry import _erode
    from .workdir import WorkDir
    from .sky import SKY_MODELS

    if combine_function not in COMBINE:
        raise ValueError(f"combine_function must be one of {COMBINE} (ours), got {combine_function!r}")
    if sky not in SKY_MODELS:
        raise ValueError(f"sky must be one of {tuple(SKY_MODELS)}, got {sky!r}")
    if isinstance(output_projection, fits.Header):
        hdr = output_projection
        if shape_out is None and "NAXIS1" in hdr and "NAXIS2" in hdr:
            shape_out = (int(hdr["NAXIS2"]), int(hdr["NAXIS1"]))
        output_projection = WCS(hdr).celestial
    if shape_out is None:
        raise ValueError("shape_out is needed when output_projection is a WCS")
    shape_out = tuple(int(v) for v in shape_out)
    if len(shape_out) != 2 or min(shape_out) < 1:
        raise ValueError(f"shape_out must be (ny, nx) with positive sides, got {shape_out}")
    if reproject_function is not None:
        log.info("[GRID] reproject_and_coadd: reproject_function is ignored (bilinear resampling is ours)")
    items = list(input_data)
    if not items:
        raise MosaicInputError("no input data")
    if input_weights is not None and len(input_weights) != len(items):
        raise ValueError(f"input_weights has {len(input_weights)} entries for {len(items)} inputs")
    store = WorkDir(memory_bytes=float("inf"))
    windows, boxes = {}, []
    H, W = shape_out
    for k, item in enumerate(items):
        data, wcs_in = _as_frame(item, hdu_in)
        box = _footprint_box(data.shape[:2], wcs_in, output_projection, shape_out)
        boxes.append(box if box is not None else (0, 0, 1, 1))
        if box is None:
            continue
        y0, x0, y1, x1 = box
        wt = None
        if input_weights is not None:
            wt = _weight_image(input_weights[k], hdu_in)[..., None]
            if wt.shape[:2] != data.shape[:2]:
                raise ValueError(f"input_weights[{k}] has shape {wt.shape[:2]}, its image {data.shape[:2]}")
        stack = data if wt is None else np.concatenate([data, wt], -1)
        r = np.asarray(reproject_frame(stack, wcs_in, output_projection, y0, x0, y1 - y0, x1 - x0, backend=backend))
        d = r[..., :1]
        ok = np.isfinite(d[..., 0])
        w = np.where(ok, 1.0 if wt is None else np.nan_to_num(r[..., 1]), 0.0).astype(np.float32)
        if not (w > 0).any():
            continue
        store.put(("f", k), d=np.where((w > 0)[..., None], d, np.nan).astype(np.float32), w=w,
                  m=np.asarray(_erode(jnp.asarray(w > 0), int(erode))))
        windows[k] = (y0, x0, y1 - y0, x1 - x0)
    if match_background and len(windows) > 1:
        noise = np.full((len(items), 1), np.nan, np.float32)
        for k in windows:
            noise[k] = np.asarray(frame_noise(jnp.asarray(store.get(("f", k), "d"))))
        cfg = MosaicConfig(sky=sky, fit_gains=fit_gains, erode=erode, quality=False)
        if background_reference is not None and background_reference in windows:
            normalise_frames(boxes, windows, store, cfg, 1, noise, batch_bytes=BATCH_BYTES,
                             gauge=int(background_reference))
        else:
            normalise_frames(boxes, windows, store, cfg, 1, noise, batch_bytes=BATCH_BYTES)
    num = np.zeros(shape_out, np.float64)
    den = np.zeros(shape_out, np.float64)
    for k, (y0, x0, h, w_) in windows.items():
        d, w = store.get(("f", k), "d"), store.get(("f", k), "w")
        sl = (slice(y0, y0 + h), slice(x0, x0 + w_))
        num[sl] += np.where(w > 0, w * np.nan_to_num(d[..., 0]), 0.0)
        den[sl] += w
    store.close()
    with np.errstate(invalid="ignore", divide="ignore"):
        arr = num / den if combine_function == "mean" else num
    arr = np.where(den > 0, arr, np.nan).astype(np.float32)
    return arr, den.astype(np.float32)
