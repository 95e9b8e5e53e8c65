"""Outputs of a build: ``mosaic.fits`` (streamed to disk in row blocks), ``preview.png`` and
``report.json``, each written through a temporary file and renamed: a failed or interrupted
write (a full disk, a kill) leaves no file that looks finished."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits

from .io import atomic_write

__all__ = ["stretch_preview", "write_outputs", "write_fits", "PREVIEW_MAX_SIDE"]

PREVIEW_MAX_SIDE = 2048  # preview.png is binned down to at most this many pixels on its long side
STAT_SAMPLES = 1 << 22  # the stretch's statistics use at most this many (strided) pixels
ROW_BLOCK_BYTES = 32 * 2 ** 20  # FITS data is converted and written in blocks of about this size


def _sample(x: np.ndarray, n: int = STAT_SAMPLES) -> np.ndarray:
    step = max(1, int(np.sqrt(x.shape[0] * x.shape[1] / n)))
    return x[::step, ::step]


def stretch_preview(img, *, beta: float = 8.0) -> np.ndarray:
    """Auto-stretch ``[H, W]`` or ``[H, W, C]`` -> uint8 ``[H, W(, 3)]``: per channel, black point at
    the background (median - 2 sigma, sigma from the MAD), white point at the 99.9th percentile of
    the luminance above background (shared by the channels, so colours keep their balance), then
    ``asinh(beta x) / asinh(beta)``. NaN is black. Statistics come from at most ``STAT_SAMPLES``
    strided pixels."""
    a = np.asarray(img, np.float32)
    a = a[..., None] if a.ndim == 2 else a
    if not np.isfinite(a).any():
        return np.zeros(a.shape[:2] + ((3,) if a.shape[-1] == 3 else ()), np.uint8)
    s = _sample(a)
    black = np.zeros(a.shape[-1], np.float32)
    for c in range(a.shape[-1]):
        v = s[..., c][np.isfinite(s[..., c])]
        if v.size == 0:
            v = a[..., c][np.isfinite(a[..., c])]
        med = float(np.median(v)) if v.size else 0.0
        mad = float(np.median(np.abs(v - med))) * 1.4826 if v.size else 0.0
        black[c] = med - 2.0 * mad
    with warnings.catch_warnings():  # pixels with no data in any channel
        warnings.simplefilter("ignore", RuntimeWarning)
        lum = np.nanmean(s - black, axis=-1)
        hi = float(np.nanpercentile(lum, 99.9)) if np.isfinite(lum).any() else 1.0
    hi = hi if hi > 0 else 1.0
    u8 = np.empty(a.shape, np.uint8)
    norm = np.float32(1.0 / np.arcsinh(beta))
    for y0 in range(0, a.shape[0], 1024):  # in row blocks: no canvas-sized temporaries
        x = np.clip(np.nan_to_num((a[y0:y0 + 1024] - black) / np.float32(hi), nan=0.0), 0.0, 1.0)
        u8[y0:y0 + 1024] = (np.arcsinh(np.float32(beta) * x) * norm * 255 + 0.5).astype(np.uint8)
    return u8[..., 0] if u8.shape[-1] == 1 else u8


def _binned(m: np.ndarray, max_side: int = PREVIEW_MAX_SIDE) -> np.ndarray:
    """Block means (NaN-aware) of ``[H, W, C]`` so the long side is at most ``max_side``."""
    f = -(-max(m.shape[:2]) // max_side)
    if f <= 1:
        return m
    H, W = (m.shape[0] // f) * f, (m.shape[1] // f) * f
    out = np.empty((H // f, W // f, m.shape[-1]), np.float32)
    rows = max(1, 1024 // f) * f
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for y0 in range(0, H, rows):
            blk = m[y0:min(H, y0 + rows), :W]
            out[y0 // f:(y0 + blk.shape[0]) // f] = np.nanmean(
                blk.reshape(blk.shape[0] // f, f, W // f, f, -1), axis=(1, 3))
    return out


def _image_header(wcs, shape_fits, extname=None) -> fits.Header:
    h = fits.Header()
    h["SIMPLE"] = True
    h["BITPIX"] = -32
    h["NAXIS"] = len(shape_fits)
    for i, n in enumerate(reversed(shape_fits)):
        h[f"NAXIS{i + 1}"] = int(n)
    if extname is None:
        h["EXTEND"] = True
    h.extend(wcs.to_header(), update=True)
    if extname is not None:
        h["EXTNAME"] = extname
    return h


def write_fits(path, mosaic: np.ndarray, weight: np.ndarray, wcs, extra_cards=()) -> None:
    """``mosaic [H, W, C]`` (primary: ``[H, W]`` mono, ``[C, H, W]`` colour) and ``weight``
    (``WEIGHT`` extension) as float32 FITS with the WCS, streamed in row blocks, atomically."""
    H, W, C = mosaic.shape
    prim = _image_header(wcs, (H, W) if C == 1 else (C, H, W))
    for k, v in extra_cards:
        prim[k] = v
    rows = max(1, ROW_BLOCK_BYTES // (4 * W))

    def write(tmp):
        s = fits.StreamingHDU(tmp, prim)
        for c in range(C):
            for y0 in range(0, H, rows):
                s.write(np.ascontiguousarray(mosaic[y0:y0 + rows, :, c]))
        s.close()
        s = fits.StreamingHDU(tmp, _image_header(wcs, (H, W), extname="WEIGHT"))
        for y0 in range(0, H, rows):
            s.write(np.ascontiguousarray(weight[y0:y0 + rows]))
        s.close()

    atomic_write(path, write)


def write_outputs(result, out_dir) -> dict:
    """Write ``mosaic.fits`` (primary float32 image with the WCS, ``WEIGHT`` extension),
    ``preview.png`` (binned to at most ``PREVIEW_MAX_SIDE`` px) and ``report.json`` into
    ``out_dir``, each atomically. Returns their paths."""
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    m = result.mosaic
    cards = [("BUNIT", ("ADU", "reference-tile units")), ("CREATOR", "mosaic_jax")]
    if result.report.get("calibration") == "approximate":
        cards.append(("WCSAPPRX", (True, "approximate WCS: header pointing, no solve")))
    paths = {"fits": out / "mosaic.fits", "preview": out / "preview.png", "report": out / "report.json"}
    write_fits(paths["fits"], m, result.weight, result.wcs, cards)
    img = stretch_preview(np.flipud(_binned(m)))  # FITS row 0 is the bottom of the sky image
    atomic_write(paths["preview"], lambda tmp: Image.fromarray(img).save(tmp, format="PNG"))
    result.report.setdefault("timings_s", {})["write"] = round(time.perf_counter() - t0, 4)
    result.report["outputs"] = {k: str(v) for k, v in paths.items()}
    atomic_write(paths["report"], lambda tmp: Path(tmp).write_text(json.dumps(result.report, indent=1)))
    return paths
