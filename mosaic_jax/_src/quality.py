"""Mosaic quality: the seam metric, and block statistics used by the benchmarks."""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from astropy.wcs import WCS

from .photometry import _erode, noise_sigma
from .reproject import reproject_frame

__all__ = ["SeamMetric", "seam_metric", "block_medians", "lad_fit"]


def block_medians(img, block: int = 32, min_valid: float = 0.9) -> np.ndarray:
    """Medians of ``block x block`` blocks of ``[H, W]`` (or ``[H, W, C]``) -> ``[by, bx(, C)]``;
    NaN for blocks with less than ``min_valid`` valid pixels."""
    a = np.asarray(img, np.float32)
    squeeze = a.ndim == 2
    a = a[..., None] if squeeze else a
    H, W, C = a.shape
    by, bx = H // block, W // block
    b = a[:by * block, :bx * block].reshape(by, block, bx, block, C).transpose(0, 2, 4, 1, 3)
    b = b.reshape(by, bx, C, block * block)
    ok = np.isfinite(b).mean(-1) >= min_valid
    with warnings.catch_warnings():  # all-NaN blocks: their median is NaN, which is what we want
        warnings.simplefilter("ignore", RuntimeWarning)
        m = np.where(ok, np.nanmedian(b, axis=-1), np.nan)
    return m[..., 0] if squeeze else m


def lad_fit(x, y, n_iter: int = 50) -> tuple[float, float, np.ndarray]:
    """Least-absolute-deviations line ``y = a x + b`` (IRLS, float64) -> ``(a, b, residuals)``."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    A = np.stack([x, np.ones_like(x)], 1)
    w = np.ones_like(x)
    z = np.zeros(2)
    for _ in range(n_iter):
        sw = np.sqrt(w)
        z, *_ = np.linalg.lstsq(A * sw[:, None], y * sw, rcond=None)
        r = y - A @ z
        scale = max(float(np.median(np.abs(r))), 1e-12) * 1e-3
        w = 1.0 / np.maximum(np.abs(r), scale)
    return float(z[0]), float(z[1]), y - A @ z


class SeamMetric(NamedTuple):
    """``rms``: RMS over frames of the per-frame block-residual RMS (mosaic units).
    ``rms_sigma``: the same, each frame's residual divided by its noise as seen in the mosaic
    (``|a| * sigma_frame``): seams in units of the sky noise. ``per_frame``: one dict per frame."""

    rms: float
    rms_sigma: float
    per_frame: list


def seam_metric(mosaic, wcs: WCS, frames, *, block: int = 32, erode: int = 8, min_blocks: int = 6,
                backend: str = "jax", boxes=None) -> SeamMetric:
    """How far a mosaic is from every input frame up to one gain and offset per frame.

    For each frame, reproject it onto the mosaic grid; over its footprint (edges eroded by
    ``erode`` px) take medians of the mosaic and of the frame in ``block x block`` blocks; fit
    ``mosaic = a * frame + b`` over the blocks by least absolute deviations (so the blocks that carry
    seams do not pull the fit) and take the RMS of the residuals. Channels are fitted separately
    and pooled.

    Args:
      mosaic: ``[H, W]`` or ``[H, W, C]`` (NaN = no data). wcs: its celestial WCS.
      frames: iterable of ``(data [h, w(, C)], frame_wcs)``.
      boxes: optional canvas box ``(y0, x0, y1, x1)`` per frame holding its footprint (the frame is
        then reprojected onto that box only; blocks are aligned to the box).
    """
    m = np.asarray(mosaic, np.float32)
    m = m[..., None] if m.ndim == 2 else m
    H, W, C = m.shape
    per, rms, rms_s = [], [], []
    for k, (data, fw) in enumerate(frames):
        d = jnp.asarray(data, jnp.float32)
        d = d[..., None] if d.ndim == 2 else d
        if d.shape[-1] != C:
            raise ValueError(f"frame {k} has {d.shape[-1]} channels, the mosaic {C}")
        sig = np.asarray(jax.vmap(lambda ch: noise_sigma(ch, jnp.isfinite(ch)), in_axes=2)(d))
        y0, x0, y1, x1 = (0, 0, H, W) if boxes is None else boxes[k]
        r = np.asarray(reproject_frame(d, fw, wcs, y0, x0, y1 - y0, x1 - x0, backend=backend))
        mk = m[y0:y1, x0:x1]
        foot = np.asarray(_erode(jnp.asarray(np.all(np.isfinite(r), -1) & np.all(np.isfinite(mk), -1)), erode))
        r = np.where(foot[..., None], r, np.nan)
        mm = np.where(foot[..., None], mk, np.nan)
        bf, bm = block_medians(r, block), block_medians(mm, block)
        res, res_s, fits_ = [], [], []
        for c in range(C):
            ok = np.isfinite(bf[..., c]) & np.isfinite(bm[..., c])
            if ok.sum() < min_blocks:
                continue
            a, b, e = lad_fit(bf[..., c][ok], bm[..., c][ok])
            res.append(e)
            res_s.append(e / max(abs(a) * float(sig[c]), 1e-30))
            fits_.append((a, b))
        if not res:
            per.append({"frame": k, "blocks": 0})
            continue
        e, es = np.concatenate(res), np.concatenate(res_s)
        f_rms, f_rms_s = float(np.sqrt(np.mean(e ** 2))), float(np.sqrt(np.mean(es ** 2)))
        rms.append(f_rms)
        rms_s.append(f_rms_s)
        per.append({"frame": k, "blocks": int(e.size // len(res)), "rms": f_rms, "rms_sigma": f_rms_s,
                    "gain_offset": [[float(a), float(b)] for a, b in fits_]})
    if not rms:
        return SeamMetric(float("nan"), float("nan"), per)
    return SeamMetric(float(np.sqrt(np.mean(np.square(rms)))), float(np.sqrt(np.mean(np.square(rms_s)))), per)
