"""Mosaic quality: the error against a known truth (:func:`truth_error`), seam steps along frame
edges measured on the mosaic alone (:func:`seam_steps`), and the older frame-consistency seam
metric (:func:`seam_metric`, biased: see its docstring)."""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from astropy.wcs import WCS

from .grid import outline
from .photometry import _erode, channel_noise
from .reproject import reproject_frame
from .sky import n_terms, poly_basis

__all__ = ["SeamMetric", "seam_metric", "block_medians", "lad_fit", "TruthError", "truth_error", "SeamSteps",
           "seam_steps"]


def _row_medians(a, m):
    """Median of each row of ``a [B, n]`` over its ``m [B, n]`` entries (NaN for none): one sort
    (the other entries go last), then the middle one or two of each row's ``m.sum()`` values."""
    srt = np.sort(np.where(m, a, np.inf), axis=-1)
    n = m.sum(-1)
    lo = np.take_along_axis(srt, (np.maximum(n - 1, 0) // 2)[:, None], -1)[:, 0]
    hi = np.take_along_axis(srt, (n // 2)[:, None], -1)[:, 0]
    return np.where(n > 0, 0.5 * (lo + hi), np.nan)


def block_medians(img, block: int = 32, min_valid: float = 0.9) -> np.ndarray:
    """Medians of ``block x block`` blocks of ``[H, W]`` (or ``[H, W, C]``) -> ``[by, bx(, C)]``;
    NaN for blocks with less than ``min_valid`` valid pixels.

    :func:`_row_medians` of every block at once: what ``np.nanmedian`` gives, without its Python
    loop over the blocks that hold a NaN."""
    a = np.asarray(img, np.float32)
    squeeze = a.ndim == 2
    a = a[..., None] if squeeze else a
    H, W, C = a.shape
    by, bx = H // block, W // block
    b = a[:by * block, :bx * block].reshape(by, block, bx, block, C).transpose(0, 2, 4, 1, 3)
    b = b.reshape(by * bx * C, block * block)
    ok = np.isfinite(b)
    full = ok.sum(-1) >= min_valid * block * block
    m = np.where(full, _row_medians(b, ok), np.nan).astype(np.float32).reshape(by, bx, C)
    return m[..., 0] if squeeze else m


def lad_fits(x, y, m, n_iter: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-absolute-deviations lines ``y = a x + b`` of the rows of ``x, y [B, n]`` over their
    ``m [B, n]`` entries, all rows at once -> ``(a [B], b [B], residuals [B, n])`` (float64).

    The iteration of :func:`_robust_lstsq` with ``lad=True``: each weighted least-squares step is
    the 2 x 2 normal equations in closed form (centred on the weighted means)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m = np.asarray(m, bool)
    x, y = np.where(m, x, 0.0), np.where(m, y, 0.0)
    w = m.astype(np.float64)
    a = b = np.zeros(len(x))
    for _ in range(n_iter):
        sw = np.maximum(w.sum(-1), 1e-300)
        mx, my = (w * x).sum(-1) / sw, (w * y).sum(-1) / sw
        dx = x - mx[:, None]
        sxx = (w * dx * dx).sum(-1)
        a = np.where(sxx > 1e-300 * np.maximum(sw, 1.0), (w * dx * (y - my[:, None])).sum(-1) / np.maximum(sxx, 1e-300),
                     0.0)
        b = my - a * mx
        ar = np.abs(y - a[:, None] * x - b[:, None])
        floor = np.maximum(_row_medians(ar, m), 1e-12) * 1e-3
        w = np.where(m, 1.0 / np.maximum(ar, floor[:, None]), 0.0)
    return a, b, y - a[:, None] * x - b[:, None]


def lad_fit(x, y, n_iter: int = 50) -> tuple[float, float, np.ndarray]:
    """Least-absolute-deviations line ``y = a x + b`` (IRLS, float64) -> ``(a, b, residuals)``;
    one row of :func:`lad_fits`."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    a, b, r = lad_fits(x[None], y[None], np.ones((1, len(x)), bool), n_iter)
    return float(a[0]), float(b[0]), r[0]


class SeamMetric(NamedTuple):
    """``rms``: RMS over frames of the per-frame block-residual RMS (mosaic units).
    ``rms_sigma``: the same, each frame's residual divided by its noise as seen in the mosaic
    (``|a| * sigma_frame``): seams in units of the sky noise. ``per_frame``: one dict per frame."""

    rms: float
    rms_sigma: float
    per_frame: list


QUALITY_BLOCK_DEFAULT = 32


def seam_fit(k: int, bf, bm, sig, min_blocks: int = 6):
    """One frame's seam figure from its block medians ``bf`` and the mosaic's ``bm``
    (``[by, bx, C]``) and its noise ``sig [C]``: per channel an LAD fit ``bm = a bf + b`` ->
    ``(report row, rms or None, rms in noise units or None)``."""
    C = bf.shape[-1]
    x, y = bf.reshape(-1, C).T, bm.reshape(-1, C).T  # [C, blocks]
    ok = np.isfinite(x) & np.isfinite(y)
    use = ok.sum(-1) >= min_blocks
    res, res_s, fits_ = [], [], []
    if use.any():
        a, b, e = lad_fits(x[use], y[use], ok[use])
        for i, c in enumerate(np.flatnonzero(use)):
            res.append(e[i][ok[c]])
            res_s.append(res[-1] / max(abs(a[i]) * float(sig[c]), 1e-30))
            fits_.append((float(a[i]), float(b[i])))
    if not res:
        return {"frame": k, "blocks": 0}, None, None
    e, es = np.concatenate(res), np.concatenate(res_s)
    f_rms, f_rms_s = float(np.sqrt(np.mean(e ** 2))), float(np.sqrt(np.mean(es ** 2)))
    return ({"frame": k, "blocks": int(e.size // len(res)), "rms": f_rms, "rms_sigma": f_rms_s,
             "gain_offset": [[float(a), float(b)] for a, b in fits_]}, f_rms, f_rms_s)


def pool_seams(results) -> SeamMetric:
    """:class:`SeamMetric` from the frames' :func:`seam_fit` results: RMS over the frames with
    blocks."""
    per = [row for row, _, _ in results]
    rms = [e for _, e, _ in results if e is not None]
    rms_s = [es for _, e, es in results if e is not None]
    if not rms:
        return SeamMetric(float("nan"), float("nan"), per)
    return SeamMetric(float(np.sqrt(np.mean(np.square(rms)))), float(np.sqrt(np.mean(np.square(rms_s)))), per)


def seam_metric(mosaic, wcs: WCS, frames, *, block: int = QUALITY_BLOCK_DEFAULT, erode: int = 8, min_blocks: int = 6,
                backend: str = "jax", boxes=None) -> SeamMetric:
    """How far a mosaic is from every input frame up to one gain and offset per frame.

    For each frame, reproject it onto the mosaic grid; over its footprint (edges eroded by
    ``erode`` px) take medians of the mosaic and of the frame in ``block x block`` blocks; fit
    ``mosaic = a * frame + b`` over the blocks by least absolute deviations (so the blocks that carry
    seams do not pull the fit) and take the RMS of the residuals. Channels are fitted separately
    and pooled.

    **Bias.** It takes every raw frame as the truth up to an affine map, so a tool that removes
    per-frame sky gradients scores *worse*: on 2MASS K cut into 3x3 frames with injected planes,
    Montage scored 3.20 against 2.31 for ours and 2.39 for reproject while its true error was 26x
    smaller (issue 15). Judge skies with :func:`truth_error` (a known truth) or :func:`seam_steps`.

    Args:
      mosaic: ``[H, W]`` or ``[H, W, C]`` (NaN = no data). wcs: its celestial WCS.
      frames: iterable of ``(data [h, w(, C)], frame_wcs)``.
      boxes: optional canvas box ``(y0, x0, y1, x1)`` per frame holding its footprint (the frame is
        then reprojected onto that box only; blocks are aligned to the box).
    """
    m = np.asarray(mosaic, np.float32)
    m = m[..., None] if m.ndim == 2 else m
    H, W, C = m.shape
    results = []
    for k, (data, fw) in enumerate(frames):
        d = jnp.asarray(data, jnp.float32)
        d = d[..., None] if d.ndim == 2 else d
        if d.shape[-1] != C:
            raise ValueError(f"frame {k} has {d.shape[-1]} channels, the mosaic {C}")
        sig = np.asarray(channel_noise(d))
        y0, x0, y1, x1 = (0, 0, H, W) if boxes is None else boxes[k]
        r = np.asarray(reproject_frame(d, fw, wcs, y0, x0, y1 - y0, x1 - x0, backend=backend))
        mk = m[y0:y1, x0:x1]
        foot = np.asarray(_erode(jnp.asarray(np.all(np.isfinite(r), -1) & np.all(np.isfinite(mk), -1)), erode))
        r = np.where(foot[..., None], r, np.nan)
        mm = np.where(foot[..., None], mk, np.nan)
        bf, bm = block_medians(r, block), block_medians(mm, block)
        results.append(seam_fit(k, bf, bm, sig, min_blocks))
    return pool_seams(results)


# ----------------------------------------------------------------------------------------------
# Error against a known truth, and seam steps along frame edges
# ----------------------------------------------------------------------------------------------


class TruthError(NamedTuple):
    """``rms``: RMS of the block residuals of ``mosaic = a * truth + P(y, x)`` (mosaic units);
    ``rms_sigma``: the same in units of the truth's pixel noise (``|a| * sigma``); ``gain``: ``a``
    per channel; ``blocks``: blocks used per channel; ``sigma``: the truth's pixel noise."""

    rms: float
    rms_sigma: float
    gain: list
    blocks: list
    sigma: list


def _robust_lstsq(A, y, n_iter: int = 50, lad: bool = True):
    """Least absolute deviations (``lad``) or Huber fit ``A z ~ y`` by IRLS, float64 -> ``(z, r)``."""
    A, y = np.asarray(A, np.float64), np.asarray(y, np.float64)
    w = np.ones(len(y))
    z = np.zeros(A.shape[1])
    for _ in range(n_iter):
        sw = np.sqrt(w)
        z, *_ = np.linalg.lstsq(A * sw[:, None], y * sw, rcond=None)
        r = y - A @ z
        if lad:
            w = 1.0 / np.maximum(np.abs(r), max(float(np.median(np.abs(r))), 1e-12) * 1e-3)
        else:
            s = max(1.4826 * float(np.median(np.abs(r))), 1e-12)
            u = np.abs(r) / (1.345 * s)
            w = np.where(u <= 1, 1.0, 1.0 / np.maximum(u, 1e-12))
    return z, y - A @ z


def _lad(A, y):
    """Exact least-absolute-deviations fit ``A z ~ y`` (a linear programme, HiGHS), float64 ->
    ``(z, r)``; IRLS if the solver fails. (IRLS alone stalls near an exact fit: a mosaic off the
    truth by a pure plane would score ~1 % of the plane's amplitude instead of 0.)"""
    from scipy.optimize import linprog

    A, y = np.asarray(A, np.float64), np.asarray(y, np.float64)
    n, k = A.shape
    scale = np.maximum(np.abs(A).max(axis=0), 1e-300)
    As = A / scale
    # variables [z (free), t+ >= 0, t- >= 0]: minimise sum(t+ + t-) with As z + t+ - t- = y
    c = np.concatenate([np.zeros(k), np.ones(2 * n)])
    Aeq = np.concatenate([As, np.eye(n), -np.eye(n)], axis=1)
    bounds = [(None, None)] * k + [(0, None)] * (2 * n)
    res = linprog(c, A_eq=Aeq, b_eq=y, bounds=bounds, method="highs")
    if not res.success:
        return _robust_lstsq(A, y)
    z = res.x[:k] / scale
    return z, y - A @ z


def truth_error(mosaic, wcs: WCS, truth, truth_wcs: WCS, *, degree: int = 2, block: int = 32,
                backend: str = "jax") -> TruthError:
    """How far a mosaic is from the true sky, up to what no overlap can identify.

    The truth is reprojected onto the mosaic's grid; over the pixels both have, ``block x block``
    medians are taken; ``mosaic = a * truth + P(y, x)`` is fitted over the blocks by least absolute
    deviations (exact, a linear programme), with ``a`` one global gain and ``P`` one global
    polynomial of ``degree`` (the gauge of any photometric solve); the RMS of the residuals is the
    error. Since a median is not linear, ``P`` is refitted on block medians of ``mosaic - P``
    (pixel level) until it settles: a mosaic that differs from the truth by a pure ``P`` scores 0. Channels are fitted
    separately and pooled.

    Args:
      mosaic: ``[H, W]`` or ``[H, W, C]``. wcs: its celestial WCS.
      truth: ``[h, w]`` or ``[h, w, C]`` the true sky (with its noise, as the frames were cut from
        it). truth_wcs: its WCS.
    """
    m = np.asarray(mosaic, np.float32)
    m = m[..., None] if m.ndim == 2 else m
    t = jnp.asarray(truth, jnp.float32)
    t = t[..., None] if t.ndim == 2 else t
    if t.shape[-1] != m.shape[-1]:
        raise ValueError(f"truth has {t.shape[-1]} channels, the mosaic {m.shape[-1]}")
    H, W, C = m.shape
    sig = np.asarray(channel_noise(t))
    r = np.asarray(reproject_frame(t, truth_wcs, wcs, 0, 0, H, W, backend=backend))
    ok = np.all(np.isfinite(r), -1) & np.all(np.isfinite(m), -1)
    bt = block_medians(np.where(ok[..., None], r, np.nan), block)
    nby, nbx = bt.shape[:2]
    # P in pixel coordinates scaled to [-1, 1] over the blocks' extent (block centres included)
    yy, xx = np.mgrid[0:H, 0:W]
    u = (xx + 0.5 - nbx * block / 2) / max(nbx * block / 2, 1)
    v = (yy + 0.5 - nby * block / 2) / max(nby * block / 2, 1)
    ub, vb = block_medians(u, block), block_medians(v, block)
    nP = n_terms(degree)
    res, res_s, gains, nb = [], [], [], []
    for c in range(C):
        mc = np.where(ok, m[..., c], np.nan)
        k = np.isfinite(bt[..., c]) & np.isfinite(block_medians(mc, block))
        if k.sum() <= nP + 1:
            raise ValueError(f"truth_error: only {int(k.sum())} blocks where the mosaic and the truth overlap")
        # a block median is not linear: refit on the mosaic less the pixel-level polynomial until
        # it settles (else a pure plane would leave ~1 % of its amplitude as "error")
        coef = np.zeros(nP)
        for _ in range(4):
            bm = block_medians(mc - poly_basis(u, v, degree) @ coef, block)
            A = np.concatenate([bt[..., c][k][:, None], poly_basis(ub[k], vb[k], degree)], axis=1)
            z, e = _lad(A, bm[k])
            coef = coef + z[1:]
        res.append(e)
        res_s.append(e / max(abs(z[0]) * float(sig[c]), 1e-30))
        gains.append(float(z[0]))
        nb.append(int(k.sum()))
    e, es = np.concatenate(res), np.concatenate(res_s)
    return TruthError(float(np.sqrt(np.mean(e ** 2))), float(np.sqrt(np.mean(es ** 2))), gains, nb,
                      [float(s) for s in sig])


class SeamSteps(NamedTuple):
    """``rms_sigma``: RMS over edge segments of the step ``s`` in units of the mosaic's pixel
    noise; ``rms``: the same in mosaic units; ``segments``: segments measured; ``steps``: every
    segment's ``(frame, side, index, channel, step)``."""

    rms: float
    rms_sigma: float
    segments: int
    steps: list


def _frame_edge_coords(frame_wcs: WCS, wcs: WCS, box):
    """Frame pixel coordinates ``(fx, fy)`` of the mosaic pixels in ``box``."""
    y0, x0, y1, x1 = box
    yy, xx = np.mgrid[y0:y1, x0:x1]
    world = wcs.pixel_to_world_values(xx.ravel().astype(np.float64), yy.ravel().astype(np.float64))
    fx, fy = frame_wcs.world_to_pixel_values(*world)
    return np.asarray(fx).reshape(yy.shape), np.asarray(fy).reshape(yy.shape), yy, xx


def seam_steps(mosaic, wcs: WCS, frames, *, segment: int = 64, inner: float = 2.0, outer: float = 16.0,
               min_pixels: int = 64) -> SeamSteps:
    """Seams measured on the mosaic alone: the step across every frame footprint's edge.

    Each frame edge is cut into ``segment``-pixel segments (frame pixels). Around each, the mosaic
    pixels between ``inner`` and ``outer`` pixels from the edge on both sides are fitted robustly
    (Huber IRLS) with ``a + b*y + c*x + s*[inside]``; the step is ``s``. Segments lying on the
    mosaic's border (no data outside) are skipped. The RMS of the steps, in units of the mosaic's
    pixel noise, is the figure: 0 for a seamless mosaic, about ``sqrt(2/n)`` from noise alone.

    Args:
      mosaic: ``[H, W]`` or ``[H, W, C]`` (NaN = no data). wcs: its celestial WCS.
      frames: iterable of ``(shape (h, w), frame_wcs)`` or ``(data, frame_wcs)``.
    """
    m = np.asarray(mosaic, np.float32)
    m = m[..., None] if m.ndim == 2 else m
    H, W, C = m.shape
    mj = jnp.asarray(m)
    sig = np.asarray(channel_noise(mj))
    steps = []
    for k, (data, fw) in enumerate(frames):
        fshape = tuple(data) if isinstance(data, tuple) else np.shape(data)[:2]
        fh, fwd = fshape
        # the frame's footprint box on the mosaic, grown by ``outer``
        o = outline(fshape, fw, wcs, 17)
        if not np.all(np.isfinite(o)):
            continue
        ox, oy = o[:, 0], o[:, 1]
        g = outer + 2
        box = (max(int(np.floor(oy.min() - g)), 0), max(int(np.floor(ox.min() - g)), 0),
               min(int(np.ceil(oy.max() + g)) + 1, H), min(int(np.ceil(ox.max() + g)) + 1, W))
        if box[2] <= box[0] or box[3] <= box[1]:
            continue
        fx, fy, yy, xx = _frame_edge_coords(fw, wcs, box)
        # signed distance to each side (positive inside), the nearest side, the position along it
        d = np.stack([fy + 0.5, fwd - 0.5 - fx, fh - 0.5 - fy, fx + 0.5])  # bottom, right, top, left
        inside = np.all(d > 0, axis=0)
        side = np.argmin(d, axis=0)  # inside: the nearest side; outside: the side it is beyond
        dist = np.abs(np.take_along_axis(d, side[None], 0)[0])
        along = np.where(side % 2 == 0, fx, fy)
        length = np.where(side % 2 == 0, fwd, fh)
        in_span = (along >= 0) & (along < length)
        band = (dist >= inner) & (dist <= outer) & in_span
        seg = np.floor(along / segment).astype(np.int64)
        sub = m[box[0]:box[2], box[1]:box[3]]
        for sd in range(4):
            for s in np.unique(seg[band & (side == sd)]):
                sel = band & (side == sd) & (seg == s)
                for c in range(C):
                    v = sub[..., c][sel]
                    ok = np.isfinite(v)
                    ins = inside[sel][ok]
                    if ins.sum() < min_pixels or (~ins).sum() < min_pixels:
                        continue
                    y_, x_ = yy[sel][ok].astype(np.float64), xx[sel][ok].astype(np.float64)
                    A = np.stack([np.ones_like(y_), y_ - y_.mean(), x_ - x_.mean(), ins.astype(np.float64)], 1)
                    z, _ = _robust_lstsq(A, v[ok], n_iter=10, lad=False)
                    steps.append((k, sd, int(s), c, float(z[3])))
    if not steps:
        return SeamSteps(float("nan"), float("nan"), 0, [])
    st = np.array([s[4] for s in steps])
    ss = np.array([s[4] / max(float(sig[s[3]]), 1e-30) for s in steps])
    return SeamSteps(float(np.sqrt(np.mean(st ** 2))), float(np.sqrt(np.mean(ss ** 2))), len(steps), steps)
