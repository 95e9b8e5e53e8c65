"""The grid-mode pipeline, end to end (the order of ``ARCHITECTURE.md``):

scan frames -> global WCS + grid -> per tile: reproject its frames (all channels at once), stack,
equalise RGB medians -> pairwise fits on coverage-masked overlaps -> global (or reference) gain/offset
solve -> paste the corrected tiles into the canvas by offset, feathered -> optional two-pass
renormalisation -> mosaic.fits, preview.png, report.json (written atomically).

Frames are read when a tile needs them (a small LRU cache); stacked tiles are kept in memory up to a
budget and spilled to a temporary folder beyond it, so peak memory is a few tile stacks plus the
canvas.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from astropy.io import fits
from jax import lax
from astropy.wcs import WCS

from .feather import feather_weights
from .grid import Grid, make_grid
from .io import FrameInfo, FrameSkipped, MosaicInputError, atomic_write, find_inputs, load_frame, scan_frame
from .photometry import (
    _erode,
    _scaling,
    apply_tile_photometric_scaling,
    compute_tile_photometric_scaling,
    equalize_rgb_medians,
    noise_sigma,
    overlap_mask,
    solve_tile_photometry,
)
from .reproject import BACKENDS, reproject_frame
from .sky import (SKY_MODELS, apply_frame_sky, degree_of, frame_norm, pair_statistics, select_sky_degree,
                  solve_frame_sky)
from .stack import REJECT, stack_frames

__all__ = ["MosaicConfig", "MosaicResult", "build_mosaic", "write_outputs", "stretch_preview", "SOLVES"]

log = logging.getLogger("mosaic_jax")

SOLVES = ("global", "reference")
FRAME_NORMALIZE = ("overlap", "none")
MIN_PAIR_PIXELS = 64
PAIR_FIT_PIXELS = 1 << 17  # at most this many pixels (tile pairs) or bins (frame pairs) a pair fit
PAIR_BIN = 8  # frame-pair sky fits on the means of 8x8-pixel bins (see _bin_pair)
MIN_PAIR_BINS = 256  # ... or smaller bins, down to single pixels, where fewer would be left


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
      tile_memory_mb: reprojected frames and stacked tiles kept in memory before spilling to a
        temporary folder.
      quality: compute the seam metric for the report (one more reprojection per frame).
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
    tile_memory_mb: float = 1024.0
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


class MosaicResult(NamedTuple):
    """``mosaic``: float32 ``[H, W, C]`` (NaN = no data); ``weight``: float32 ``[H, W]`` coverage
    (frames per pixel, feather-weighted); ``wcs``: the celestial WCS; ``grid``; ``report``: dict."""

    mosaic: np.ndarray
    weight: np.ndarray
    wcs: WCS
    grid: Grid
    report: dict


class _Timer:
    def __init__(self):
        self.t: dict[str, float] = {}

    def add(self, name, dt):
        self.t[name] = self.t.get(name, 0.0) + dt


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (``getrusage``)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024.0 if sys.platform != "darwin" else r / 2 ** 20


class _TileStore:
    """Stacked tiles ``(data [h, w, C], coverage [h, w])`` in memory up to a budget, then on disk."""

    def __init__(self, budget_bytes: float):
        self.budget, self.used, self.mem, self.tmp = budget_bytes, 0, {}, None

    def put(self, k, data: np.ndarray, cov: np.ndarray):
        n = data.nbytes + cov.nbytes
        if self.used + n <= self.budget:
            self.mem[k] = (data, cov)
            self.used += n
            return
        if self.tmp is None:
            self.tmp = tempfile.TemporaryDirectory(prefix="mosaic_jax_tiles_")
        np.save(os.path.join(self.tmp.name, f"{self._name(k)}_d.npy"), data)
        np.save(os.path.join(self.tmp.name, f"{self._name(k)}_c.npy"), cov)
        self.mem[k] = None

    def get(self, k):
        v = self.mem[k]
        if v is not None:
            return v
        return (np.load(os.path.join(self.tmp.name, f"{self._name(k)}_d.npy"), mmap_mode="r"),
                np.load(os.path.join(self.tmp.name, f"{self._name(k)}_c.npy"), mmap_mode="r"))

    @staticmethod
    def _name(k) -> str:
        return "_".join(map(str, k)) if isinstance(k, tuple) else str(k)

    def drop(self, k):
        v = self.mem.pop(k, None)
        if v is not None:
            self.used -= v[0].nbytes + v[1].nbytes
        elif self.tmp is not None:
            for suffix in ("d", "c"):
                f = os.path.join(self.tmp.name, f"{self._name(k)}_{suffix}.npy")
                if os.path.exists(f):
                    os.unlink(f)

    def __contains__(self, k):
        return k in self.mem

    def close(self):
        if self.tmp is not None:
            self.tmp.cleanup()


def _scan(inputs, report) -> list[FrameInfo]:
    """Scan every input; register the frames without a WCS (:mod:`.register`); list what is used
    and what is skipped (with the reason) in the report."""
    from .register import register_frames

    scanned, channels = [], set()
    for path, w, e in find_inputs(inputs):
        try:
            scanned.append(scan_frame(path, w, e, allow_unsolved=True))
        except FrameSkipped as why:
            log.warning("[GRID] skipping %s: %s", path, why)
            report["inputs_skipped"].append({"path": str(path), "reason": str(why)})
    if any(f.wcs is None for f in scanned):
        frames, skipped = register_frames(scanned)
        for f, why in skipped:
            report["inputs_skipped"].append({"path": f.path, "reason": why})
    else:
        frames = scanned
    for info in frames:
        channels.add(info.channels)
        report["inputs_used"].append({"path": info.path, "shape": list(info.shape), "channels": info.channels,
                                      "bayer": info.bayer, "weight": info.weight, "exposure": info.exposure,
                                      "alpha": info.alpha_hdu is not None, "wcs": info.wcs_source})
    report["calibration"] = "approximate" if any(f.wcs_source == "approximate" for f in frames) else "plate-solved"
    if not frames:
        raise MosaicInputError(f"no usable frames among {len(report['inputs_skipped'])} input(s): "
                               + "; ".join(f"{Path(s['path']).name}: {s['reason']}" for s in report["inputs_skipped"]))
    if len(channels) > 1:
        raise MosaicInputError(f"frames mix mono and colour ({sorted(channels)} channels): build them separately")
    return frames


def _frame_window(box, shape, q: int = 32):
    """A frame's canvas window: its footprint box grown to multiples of ``q`` (few distinct shapes,
    few compilations), kept inside the canvas."""
    y0, x0, y1, x1 = box
    H, W = shape
    h, w = min(-(-(y1 - y0) // q) * q, H), min(-(-(x1 - x0) // q) * q, W)
    y0, x0 = min(y0, H - h), min(x0, W - w)
    return y0, x0, h, w


def _reproject_frames(frames, grid, cfg, store, timer, progress):
    """Read and reproject every frame once, onto its window of the canvas (a tile's frames are
    crops of these: tiles share the global WCS). Stores ``(data [h, w, C], weight [h, w])``."""
    from tqdm.auto import tqdm

    C = frames[0].channels
    windows = {}
    for k in tqdm(range(len(frames)), desc="frames", unit="frame", disable=not progress):
        t0 = time.perf_counter()
        data, alpha = load_frame(frames[k])
        timer.add("read", time.perf_counter() - t0)
        t0 = time.perf_counter()
        if alpha is not None:
            data = jnp.concatenate([data, alpha[..., None]], axis=-1)
        y0, x0, h, w = _frame_window(grid.footprints[k], grid.shape)
        r = reproject_frame(data, frames[k].wcs, grid.wcs, y0, x0, h, w, backend=cfg.backend)
        d = r[..., :C]
        ok = jnp.all(jnp.isfinite(d), axis=-1)
        wm = jnp.full(ok.shape, frames[k].weight, jnp.float32)
        if r.shape[-1] > C:
            a = jnp.nan_to_num(r[..., C])
            ok = ok & (a > 0)
            wm = wm * a
        d = np.asarray(jnp.where(ok[..., None], d, jnp.nan))
        timer.add("reproject", time.perf_counter() - t0)
        if not ok.any():
            log.warning("[GRID] %s: no pixel lands on the grid; skipped", frames[k].name)
            continue
        store.put(("f", k), d, np.asarray(jnp.where(ok, wm, 0.0)))
        windows[k] = (y0, x0, h, w)
    return windows


@jax.jit
def _frame_noise(d):
    """Pixel noise per channel of a frame window ``[h, w, C]`` -> ``[C]``."""
    return jax.vmap(lambda ch: noise_sigma(ch, jnp.isfinite(ch)), in_axes=2)(d)


def _intersect(a, b):
    y0, x0 = max(a[0], b[0]), max(a[1], b[1])
    y1, x1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    return (y0, x0, y1, x1) if y1 > y0 and x1 > x0 else None


def _crop(store, key, win, box, step: int = 1):
    """Canvas box ``(y0, x0, y1, x1)`` of a stored window -> ``(data, weight)``, every ``step``-th
    pixel."""
    y0, x0, y1, x1 = box
    d, w = store.get(key)
    sl = (slice(y0 - win[0], y1 - win[0], step), slice(x0 - win[1], x1 - win[1], step))
    return np.asarray(d[sl]), np.asarray(w[sl])


@partial(jax.jit, static_argnames=("batch",))
def _batched_scaling(A, B, M, lo, hi, SA, SB, batch: int):
    """Pair fits, ``batch`` pairs at a time (bounded memory for large overlaps). ``batch == 1`` is
    a plain ``lax.map``: ``lax.map(..., batch_size=1)`` runs ~10x slower on CPU."""
    return lax.map(lambda x: _scaling(x[0], x[1], x[2], lo, hi, noise_ref=x[3], noise_tgt=x[4]),
                   (A, B, M, SA, SB), batch_size=batch if batch > 1 else None)


def _win(tile) -> tuple[int, int, int, int]:
    """A tile's canvas window ``(y0, x0, h, w)``, as frame windows are stored."""
    return tile.y0, tile.x0, tile.h, tile.w


PSF_BLURS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)  # Gaussian sigmas (px) tried to match the two frames' seeing
SEEING_GAIN = 0.5  # a blur is used only if it at least halves the pair's decorrelation 1 - r


def _blur(x, m, s):
    """Normalised Gaussian blur of ``x [h, w, C]`` over the good pixels ``m`` (``s = 0``: itself)."""
    from scipy import ndimage

    if s <= 0:
        return x
    w = ndimage.gaussian_filter(m.astype(np.float32), s)
    out = np.stack([ndimage.gaussian_filter(np.where(m, x[..., c], 0.0), s) for c in range(x.shape[-1])], -1)
    return np.where(m[..., None], out / np.maximum(w, 1e-6)[..., None], np.nan).astype(np.float32)


def _match_seeing(a, b, m, side: int = 256):
    """Blur the sharper of two frame crops to the other's seeing: the Gaussian (one of
    ``PSF_BLURS``, on either frame) that best correlates their central ``side``-pixel luminance.
    A sharper frame read pixel by pixel looks brighter than a softer one (stars' peaks); matched,
    the pair's gain is the ratio of fluxes. -> ``(a', b', sigma, which)``."""
    h, w = m.shape
    y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    sl = (slice(y0, y0 + side), slice(x0, x0 + side))
    la, lb, mm = a[sl].sum(-1, keepdims=True), b[sl].sum(-1, keepdims=True), m[sl]
    if mm.sum() < 64:
        return a, b, 0.0, 0
    # high-passed (less an 8-px blur): the frames' own skies, which differ, must not sway the choice
    la, lb = la - _blur(la, mm, 8.0), lb - _blur(lb, mm, 8.0)
    best = (-np.inf, 0.0, 0)
    for s in PSF_BLURS:
        for which in ((0,) if s == 0 else (0, 1)):
            xa = _blur(la, mm, s) if which == 0 else la
            xb = _blur(lb, mm, s) if which == 1 else lb
            va, vb = xa[mm, 0], xb[mm, 0]
            c = np.corrcoef(va, vb)[0, 1] if va.std() > 0 and vb.std() > 0 else -np.inf
            if s == 0:
                c0 = c
            if c > best[0]:
                best = (c, s, which)
    c, s, which = best
    if not (1.0 - c < SEEING_GAIN * (1.0 - c0)):  # blur only where it clearly pays: same seeing stays as it is
        return a, b, 0.0, 0
    return (_blur(a, m, s) if which == 0 else a), (_blur(b, m, s) if which == 1 else b), s, which


def _bin_pair(a, b, m, box, B: int, min_fill: float = 0.75):
    """Means of ``B x B`` bins of two frame crops ``[h, w, C]`` over their good pixels ``m``:
    ``(va [n, C], vb [n, C], yx [n, 2])`` for the bins at least ``min_fill`` good, ``yx`` the bins'
    centres on the canvas. Bins hold a star's flux whatever the seeing, so frames with different
    PSFs agree on them where single pixels do not."""
    h, w = (m.shape[0] // B) * B, (m.shape[1] // B) * B
    mm = m[:h, :w].reshape(h // B, B, w // B, B)
    cnt = mm.sum(axis=(1, 3))
    keep = cnt >= min_fill * B * B

    def mean(x):
        x = np.where(mm[..., None], x[:h, :w].reshape(h // B, B, w // B, B, -1), 0.0)
        return (x.sum(axis=(1, 3)) / np.maximum(cnt, 1)[..., None])[keep].astype(np.float32)

    iy, ix = np.nonzero(keep)
    yx = np.stack([box[0] + (iy + 0.5) * B - 0.5, box[1] + (ix + 0.5) * B - 0.5], 1).astype(np.float32)
    return mean(a), mean(b), yx


def _frame_pairs(windows, store, masks, bin_px: int = PAIR_BIN, match_seeing: bool = True):
    """Every overlapping pair of frame windows -> packed good bins for :func:`sky.pair_statistics`:
    ``(pairs [P, 2], A [P, K, C], B [P, K, C], M [P, K], YX [P, K, 2], boxes)``. A pair's overlap is
    averaged in ``bin_px``-pixel bins (smaller where that would leave fewer than ``MIN_PAIR_BINS``
    bins, larger where it would leave more than ``PAIR_FIT_PIXELS``); ``boxes``: the bins' box."""
    keys = sorted(windows)
    items = []
    for a_i, i in enumerate(keys):
        for j in keys[a_i + 1:]:
            box = _intersect(windows[i], windows[j])
            if box is None:
                continue
            a, _ = _crop(store, ("f", i), windows[i], box)
            b, _ = _crop(store, ("f", j), windows[j], box)
            sl = lambda k: (slice(box[0] - windows[k][0], box[2] - windows[k][0]),
                            slice(box[1] - windows[k][1], box[3] - windows[k][1]))
            m = masks[i][sl(i)] & masks[j][sl(j)] & np.all(np.isfinite(a), -1) & np.all(np.isfinite(b), -1)
            n = int(m.sum())
            if n < MIN_PAIR_PIXELS:
                continue
            B = max(1, min(bin_px, int(math.sqrt(n / MIN_PAIR_BINS))))
            B = max(B, math.ceil(math.sqrt(n / PAIR_FIT_PIXELS)))
            if match_seeing:
                a, b, _, _ = _match_seeing(a, b, m)
            va, vb, yx = _bin_pair(a, b, m, box, B)
            if len(va) < MIN_PAIR_BINS // 4:
                continue
            items.append(((i, j), va, vb, yx))
    if not items:
        return np.zeros((0, 2), np.int64), None, None, None, None, []
    C = items[0][1].shape[-1]
    K = min(PAIR_FIT_PIXELS, max(1 << 12, 1 << (max(len(v[1]) for v in items) - 1).bit_length()))
    P = max(8, 1 << (len(items) - 1).bit_length())
    A = np.full((P, K, C), np.nan, np.float32)
    B = np.full((P, K, C), np.nan, np.float32)
    M = np.zeros((P, K), bool)
    YX = np.zeros((P, K, 2), np.float32)
    boxes = []
    for p, (_, va, vb, yx) in enumerate(items):
        s = -(-len(va) // K)
        va, vb, yx = va[::s], vb[::s], yx[::s]
        A[p, :len(va)], B[p, :len(vb)], M[p, :len(va)], YX[p, :len(va)] = va, vb, True, yx
        boxes.append((int(yx[:, 0].min()), int(yx[:, 1].min()), int(yx[:, 0].max()) + 1, int(yx[:, 1].max()) + 1))
    return np.asarray([v[0] for v in items], np.int64), A, B, M, YX, boxes


def _normalise_frames(footprints, windows, store, cfg, C, noise, gauge=None):
    """Per-frame gains and sky polynomials, once for the whole mosaic (:mod:`.sky`): robust fits
    on every overlapping pair of frames reduced to sufficient statistics, one global solve over
    the frame graph (gauge: the frame with most good pixels keeps gain 1; zero-mean skies). The
    stored frame windows are replaced by their corrected versions. Returns the solution (None for
    ``normalize="none"`` or a single frame) and the number of pairs."""
    n = len(footprints)
    degree = SKY_MODELS[cfg.sky]
    if cfg.normalize == "none" or len(windows) < 2:
        return None, 0
    masks = {k: np.asarray(_erode(jnp.asarray(store.get(("f", k))[1] > 0), int(cfg.erode))) for k in windows}
    pairs, A, B, M, YX, boxes = _frame_pairs(windows, store, masks, match_seeing=cfg.fit_gains)
    if not len(pairs):
        return None, 0
    norms = np.stack([frame_norm(footprints[k]) for k in range(n)])
    P = A.shape[0]
    pad = lambda x, fill: np.concatenate([x, np.full((P - len(x),) + x.shape[1:], fill, x.dtype)])
    ni, nj = pad(norms[pairs[:, 0]].astype(np.float32), 1.0), pad(norms[pairs[:, 1]].astype(np.float32), 1.0)
    npair = pad(np.stack([frame_norm(b) for b in boxes]).astype(np.float32), 1.0)
    sa = pad(np.nan_to_num(noise[pairs[:, 0]], nan=1.0).astype(np.float32), 1.0)
    sb = pad(np.nan_to_num(noise[pairs[:, 1]], nan=1.0).astype(np.float32), 1.0)
    K = A.shape[1]
    st = pair_statistics(jnp.asarray(A), jnp.asarray(B), jnp.asarray(M), jnp.asarray(YX), jnp.asarray(ni),
                         jnp.asarray(nj), jnp.asarray(npair), jnp.asarray(sa), jnp.asarray(sb),
                         jnp.asarray(bool(cfg.fit_gains)),
                         (jnp.float32(cfg.gain_bounds[0]), jnp.float32(cfg.gain_bounds[1])),
                         degree=degree, batch=max(1, (1 << 17) // K))
    st = type(st)(*(np.asarray(x)[:len(pairs)] for x in st))
    gauge = max(windows, key=lambda k: int(masks[k].sum())) if gauge is None else gauge
    kw = dict(noise=np.nan_to_num(noise, nan=1.0), fit_gains=cfg.fit_gains, gauge=gauge, norms=norms)
    if cfg.sky == "auto":
        degree, sol, scores = select_sky_degree(n, pairs, st, max_degree=degree, **kw)
        log.info("[SKY] auto: degree %d (BIC %s)", degree, {d: round(v, 1) for d, v in scores.items()})
    else:
        sol = solve_frame_sky(n, pairs, st, degree=degree, **kw)
    for k in windows:
        d, w = store.get(("f", k))
        y0, x0 = windows[k][:2]
        fixed = np.asarray(apply_frame_sky(jnp.asarray(d), y0, x0, jnp.asarray(sol.gains[k]),
                                           jnp.asarray(sol.coeffs[k]), jnp.asarray(norms[k], jnp.float32),
                                           degree=degree))
        w = np.array(w)  # a copy: a spilled window's file goes with the drop
        store.drop(("f", k))
        store.put(("f", k), fixed, w)
    return sol, len(pairs)


def _layers(tile, windows, frame_ids):
    """Greedy layering: frames whose windows (clipped to the tile) do not overlap share a layer, so
    the per-pixel stack is ``[depth, h, w, C]`` with depth = overlap depth, not the frame count."""
    layers: list[list[tuple[int, tuple]]] = []
    tbox = _win(tile)
    for k in frame_ids:
        box = _intersect(windows[k], tbox)
        if box is None:
            continue
        for lay in layers:
            if all(not (box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3]) for _, b in lay):
                lay.append((k, box))
                break
        else:
            layers.append([(k, box)])
    return layers


def _stack_tile(tile, windows, store, fweight, cfg, C, timer):
    """Stack the tile's (normalised) frames -> ``(data [h, w, C], coverage [h, w], frames, rgb gains)``."""
    t0 = time.perf_counter()
    layers = _layers(tile, windows, [k for k in tile.frames if k in windows])
    if not layers:
        return None
    D = len(layers) + (len(layers) % 2)  # even depth: fewer compilations
    cube = np.full((D, tile.h, tile.w, C), np.nan, np.float32)
    wts = np.zeros((D, tile.h, tile.w), np.float32)
    used = []
    for li, lay in enumerate(layers):
        for k, box in lay:
            d, w = _crop(store, ("f", k), windows[k], box)
            sl = (li, slice(box[0] - tile.y0, box[2] - tile.y0), slice(box[1] - tile.x0, box[3] - tile.x0))
            cube[sl] = d
            wts[sl] = w * fweight[k]
            used.append(int(k))
    data, cov = stack_frames(cube, wts, normalize="none", reject=cfg.reject, kappa=cfg.kappa)
    rgb_gains = [1.0] * C
    if C == 3:
        data, g = equalize_rgb_medians(data, tile_id=tile.index)
        rgb_gains = np.asarray(g).tolist()
    data, cov = np.asarray(data), np.asarray(cov)
    timer.add("stack", time.perf_counter() - t0)
    return data, cov, sorted(used), rgb_gains


def _robust_diff(a, b, m):
    """Per channel median of ``a - b`` over mask ``m`` -> float64 ``[C]``."""
    d = np.where(m[..., None], a - b, np.nan)
    return np.nanmedian(d.reshape(-1, d.shape[-1]), axis=0)


def _pad_to(x, shape):
    """Pad the first two axes of ``x`` to ``shape`` (NaN for data, 0 for coverage maps)."""
    pad = ((0, shape[0] - x.shape[0]), (0, shape[1] - x.shape[1])) + ((0, 0),) * (x.ndim - 2)
    return np.pad(x, pad, constant_values=np.nan if x.ndim == 3 else 0.0)


def _fit_pairs_batched(crops, noise_a, noise_b, cfg, C):
    """Robust fits of many ``(a [h, w, C], b [h, w, C], mask [h, w])`` crops in one call.

    Each pair's valid pixels are packed into a list of K values, K a power of two up to
    ``PAIR_FIT_PIXELS`` (a regular subsample where there are more: a gain and offset need no more,
    and the robust fit's cost grows with the pixels); the pair count is bucketed to a power of two
    too, so a few compiled fits serve every mosaic (the fit needs no pixel neighbourhoods: the
    noise levels are given)."""
    K = min(PAIR_FIT_PIXELS, max(1 << 12, 1 << (max(int(m.sum()) for _, _, m in crops) - 1).bit_length()))
    P = max(8, 1 << (len(crops) - 1).bit_length())
    A = np.full((P, K, 1, C), np.nan, np.float32)
    B = np.full((P, K, 1, C), np.nan, np.float32)
    M = np.zeros((P, K, 1), bool)
    SA, SB = np.ones((P, C), np.float32), np.ones((P, C), np.float32)
    for p, (a, b, m) in enumerate(crops):
        va, vb = a[m], b[m]
        step = -(-len(va) // K)
        va, vb = va[::step], vb[::step]
        A[p, :len(va), 0], B[p, :len(vb), 0], M[p, :len(va), 0] = va, vb, True
    SA[:len(crops)], SB[:len(crops)] = noise_a, noise_b
    lo, hi = jnp.float32(cfg.gain_bounds[0]), jnp.float32(cfg.gain_bounds[1])
    fit = _batched_scaling(jnp.asarray(A), jnp.asarray(B), jnp.asarray(M), lo, hi, jnp.asarray(SA), jnp.asarray(SB),
                           batch=max(1, (1 << 18) // K))
    return np.asarray(fit.gain)[:len(crops)], np.asarray(fit.offset)[:len(crops)]


@partial(jax.jit, static_argnames=("erode",))
def _pair_mask(ca, cb, a, b, min_coverage, erode: int):
    return overlap_mask(ca, cb, a, b, min_coverage=min_coverage, erode=erode)


def _pair_fits(grid, store, cfg, C):
    """Fits of every overlapping pair of stacked tiles on its coverage-masked, eroded overlap."""
    ids = [t.index for t in grid.tiles if t.index in store]
    noise = {i: np.asarray(_frame_noise(jnp.asarray(store.get(i)[0]))) for i in ids}
    boxes = {(i, j): box for a_i, i in enumerate(ids) for j in ids[a_i + 1:]
             for box in [grid.tiles[i].intersection(grid.tiles[j])] if box is not None}
    # overlaps are strips: each laid lengthwise (masks and fits do not care) and padded to one
    # bucketed shape, so one compiled mask serves them all
    sides = [sorted((y1 - y0, x1 - x0)) for y0, x0, y1, x1 in boxes.values()]
    bucket = tuple(-(-max((s[k] for s in sides), default=1) // 64) * 64 for k in (0, 1))  # (short, long)
    pairs, crops, cnt, before = [], [], [], []
    for (i, j), box in boxes.items():
        a, ca = _crop(store, i, _win(grid.tiles[i]), box)
        b, cb = _crop(store, j, _win(grid.tiles[j]), box)
        if a.shape[0] > a.shape[1]:  # short side first
            a, b, ca, cb = (np.swapaxes(v, 0, 1) for v in (a, b, ca, cb))
        a, b, ca, cb = (_pad_to(v, bucket) for v in (a, b, ca, cb))
        m = np.asarray(_pair_mask(ca, cb, a, b, jnp.float32(cfg.min_coverage), int(cfg.erode)))
        n = int(m.sum())
        if n < MIN_PAIR_PIXELS:
            continue
        pairs.append((i, j))
        crops.append((a, b, m))
        cnt.append(n)
        before.append(_robust_diff(a, b, m))
    if not pairs:
        z = np.zeros((0, C))
        return np.zeros((0, 2), np.int64), z, z, np.zeros(0), z, z
    pa = np.asarray(pairs, np.int64)
    sig = np.stack([noise[i] for i in pa[:, 0]])
    pg, po = _fit_pairs_batched(crops, sig, np.stack([noise[j] for j in pa[:, 1]]), cfg, C)
    return pa, pg, po, np.asarray(cnt, np.float64), np.asarray(before).reshape(-1, C), sig


def _reference_solution(n, ref, pairs, g, o, C):
    gains, offsets = np.ones((n, C), np.float32), np.zeros((n, C), np.float32)
    touched = {ref}
    for (i, j), gg, oo in zip(pairs, g, o):
        if i == ref:  # tile_ref ~ g tile_j + o: correct j directly
            gains[j], offsets[j] = gg, oo
            touched.add(int(j))
        elif j == ref:  # tile_i ~ g tile_ref + o: tile_ref ~ (tile_i - o) / g
            gains[i], offsets[i] = 1.0 / gg, -oo / gg
            touched.add(int(i))
    return gains, offsets, touched


def _assemble(grid, store, gains, offsets, width, C, ids):
    H, W = grid.shape
    num = np.zeros((H, W, C), np.float32)
    den = np.zeros((H, W, C), np.float32)
    cov_num = np.zeros((H, W), np.float32)
    wsum = np.zeros((H, W), np.float32)
    for i in ids:
        t = grid.tiles[i]
        d, cov = store.get(i)
        fw = np.asarray(feather_weights(np.asarray(cov), width=width))
        x = np.asarray(apply_tile_photometric_scaling(np.asarray(d), gains[i], offsets[i]))
        ok = np.isfinite(x)
        wv = np.where(ok, fw[..., None], 0.0).astype(np.float32)
        sl = (slice(t.y0, t.y0 + t.h), slice(t.x0, t.x0 + t.w))
        num[sl] += wv * np.where(ok, x, 0.0)
        den[sl] += wv
        cov_num[sl] += fw * np.asarray(cov)
        wsum[sl] += fw
    with np.errstate(invalid="ignore", divide="ignore"):
        mosaic = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan).astype(np.float32)
        weight = np.where(wsum > 0, cov_num / np.where(wsum > 0, wsum, 1.0), 0.0).astype(np.float32)
    return mosaic, weight


def build_mosaic(inputs, cfg: MosaicConfig = MosaicConfig(), *, progress: bool = True) -> MosaicResult:
    """Build a grid-mode mosaic from FITS frames, folders or ``stack_plan.csv`` files.

    Returns:
      :class:`MosaicResult`. Raises :class:`MosaicInputError` (nothing written) when no frame is
      usable or the frames do not form one mosaic.
    """
    from tqdm.auto import tqdm

    timer = _Timer()
    report: dict = {"inputs_used": [], "inputs_skipped": [], "config": asdict(cfg)}
    t0 = time.perf_counter()
    frames = _scan(inputs, report)
    timer.add("scan", time.perf_counter() - t0)
    C = frames[0].channels
    t0 = time.perf_counter()
    grid = make_grid(frames, tile_size_factor=cfg.tile_size_factor, overlap=cfg.overlap)
    timer.add("grid", time.perf_counter() - t0)
    log.info("[GRID] canvas %s, %d tiles of %d px (stride %d), %d frames", grid.shape, len(grid.tiles),
             grid.tile_size, grid.stride, len(frames))
    store = _TileStore(cfg.tile_memory_mb * 2 ** 20)
    tiles_rep = {}
    try:
        windows = _reproject_frames(frames, grid, cfg, store, timer, progress)
        if not windows:
            raise MosaicInputError("no frame has data on the grid")
        t0 = time.perf_counter()
        noise = np.full((len(frames), C), np.nan, np.float32)
        for k in windows:
            noise[k] = np.asarray(_frame_noise(jnp.asarray(store.get(("f", k))[0])))
        sky, n_frame_pairs = _normalise_frames(grid.footprints, windows, store, cfg, C, noise)
        fgain = np.ones((len(frames), C), np.float32) if sky is None else sky.gains
        with warnings.catch_warnings():  # frames with no pixel on the grid have no noise: NaN, weight 0
            warnings.simplefilter("ignore", RuntimeWarning)
            sig = np.nanmean(noise * fgain, axis=1)  # noise after normalisation
        good = np.isfinite(sig) & (sig > 0)
        fweight = np.where(good, 1.0 / np.where(good, sig, 1.0) ** 2, 0.0)
        fweight = (fweight / fweight[good].mean()).astype(np.float32) if good.any() else np.ones(len(frames), np.float32)
        timer.add("frame_normalisation", time.perf_counter() - t0)
        report["frames"] = [{"index": k, "file": frames[k].name, "gains": np.asarray(fgain[k]).tolist(),
                             "sky_degree": None if sky is None else int(sky.degrees[k]),
                             "sky_coeffs": None if sky is None else np.asarray(sky.coeffs[k]).tolist(),
                             "weight": float(fweight[k])} for k in sorted(windows)]
        report["frame_pairs"] = n_frame_pairs
        report["sky"] = _sky_report(cfg, sky)
        for tile in tqdm(grid.tiles, desc="tiles", unit="tile", disable=not progress):
            out = _stack_tile(tile, windows, store, fweight, cfg, C, timer)
            if out is None:
                log.info("[GRID] tile %d: no frame has data inside it; left empty", tile.index)
                continue
            data, cov, used, rgb_gains = out
            store.put(tile.index, data, cov)
            tiles_rep[tile.index] = {"frames": used, "rgb_gains": rgb_gains,
                                     "coverage_mean": float(np.mean(cov)), "valid_fraction": float(np.mean(cov > 0))}
        for k in windows:
            store.drop(("f", k))
        ids = [t.index for t in grid.tiles if t.index in store]
        if not ids:
            raise MosaicInputError("no frame has data on the grid")
        # ---- photometry between tiles -----------------------------------------------------
        t0 = time.perf_counter()
        pairs, pg, po, cnt, before, sig = _pair_fits(grid, store, cfg, C)
        n = len(grid.tiles)
        healthy = [i for i in ids if np.isfinite(store.get(i)[0]).any()]
        ref = max(healthy, key=lambda i: float(np.sum(store.get(i)[1]))) if healthy else None
        if ref is None:
            log.warning("[GRID] Photometric scaling disabled: no valid reference tile found (all tiles invalid)")
            gains, offsets = np.ones((n, C), np.float32), np.zeros((n, C), np.float32)
        elif cfg.solve == "global" and len(pairs):
            sol = solve_tile_photometry(n, pairs, pg, po, pair_weights=cnt, gauge=ref)
            gains, offsets = sol.gains, sol.offsets
        elif len(pairs):
            gains, offsets, touched = _reference_solution(n, ref, pairs, pg, po, C)
            for i in ids:
                if i not in touched:
                    log.info("[GRID] tile %d does not overlap the reference tile %d: not scaled", i, ref)
        else:
            gains, offsets = np.ones((n, C), np.float32), np.zeros((n, C), np.float32)
        after = []
        for (i, j), b in zip(pairs, before):
            ti, tj = grid.tiles[i], grid.tiles[j]
            # corrected difference at the pair's typical level: shift of the medians after scaling
            box = ti.intersection(tj)
            a, bb = _crop(store, i, _win(ti), box)[0], _crop(store, j, _win(tj), box)[0]
            m = np.all(np.isfinite(a), -1) & np.all(np.isfinite(bb), -1)
            after.append(_robust_diff(a * gains[i] + offsets[i], bb * gains[j] + offsets[j], m))
        after = np.asarray(after).reshape(-1, C)
        timer.add("photometry", time.perf_counter() - t0)
        # ---- assembly -----------------------------------------------------------------------
        t0 = time.perf_counter()
        width = cfg.feather_width or max(8.0, (grid.tile_size - grid.stride) / 2.0)
        mosaic, weight = _assemble(grid, store, gains, offsets, width, C, ids)
        if cfg.two_pass:
            for i in ids:
                t = grid.tiles[i]
                d, cov = store.get(i)
                x = np.asarray(apply_tile_photometric_scaling(np.asarray(d), gains[i], offsets[i]))
                ref_crop = mosaic[t.y0:t.y0 + t.h, t.x0:t.x0 + t.w]
                m = overlap_mask(weight[t.y0:t.y0 + t.h, t.x0:t.x0 + t.w], np.asarray(cov), ref_crop, x,
                                 min_coverage=cfg.min_coverage, erode=cfg.erode, tile_id=i)
                g2, o2 = compute_tile_photometric_scaling(ref_crop, x, mask=m, gain_bounds=cfg.gain_bounds, tile_id=i)
                g2, o2 = np.asarray(g2), np.asarray(o2)
                gains[i], offsets[i] = gains[i] * g2, offsets[i] * g2 + o2
            mosaic, weight = _assemble(grid, store, gains, offsets, width, C, ids)
        timer.add("assemble", time.perf_counter() - t0)
    finally:
        store.close()
    report["grid"] = grid.describe()
    report["channels"] = C
    report["reference_tile"] = ref
    report["tiles"] = [dict(index=i, gains=np.asarray(gains[i]).tolist(), offsets=np.asarray(offsets[i]).tolist(),
                            **tiles_rep[i]) for i in ids]
    report["pairs"] = [{"tiles": [int(i), int(j)], "pixels": int(c), "fit_gain": g.tolist(), "fit_offset": o.tolist(),
                        "median_diff_before": b.tolist(), "median_diff_after": a.tolist(), "noise_sigma": s.tolist()}
                       for (i, j), c, g, o, b, a, s in zip(pairs, cnt, pg, po, before, after, sig)]
    report["pair_residual_summary"] = _residual_summary(before, after, sig)
    if cfg.quality:
        from .quality import seam_metric

        t0 = time.perf_counter()
        sm = seam_metric(mosaic, grid.wcs, ((load_frame(f)[0], f.wcs) for f in frames), backend=cfg.backend,
                         boxes=grid.footprints)
        timer.add("quality", time.perf_counter() - t0)
        report["seam_metric"] = {"rms": sm.rms, "rms_sigma": sm.rms_sigma, "per_frame": sm.per_frame}
    report["timings_s"] = {k: round(v, 4) for k, v in timer.t.items()}
    report["peak_memory_mb"] = round(peak_rss_mb(), 1)
    return MosaicResult(mosaic, weight, grid.wcs, grid, report)


def _sky_report(cfg, sky) -> dict:
    deg = SKY_MODELS[cfg.sky] if sky is None else degree_of(sky.coeffs.shape[-1])
    rep = {"model": cfg.sky, "degree": deg, "fit_gains": bool(cfg.fit_gains),
           "coordinates": "frame footprint: u = (x - cx) / hx, v = (y - cy) / hy on the canvas; c = g f - P(u, v)"}
    if sky is None:
        return rep
    rep["reference_frames"] = list(sky.anchors)
    rep["fallbacks"] = list(sky.notes)
    if len(sky.pair_rms_before):
        rep["frame_pair_rms_before"] = float(np.median(sky.pair_rms_before))
        rep["frame_pair_rms_after"] = float(np.median(sky.pair_rms_after))
    return rep


def _residual_summary(before, after, sig) -> dict:
    if not len(before):
        return {"pairs": 0}
    s = np.maximum(sig, 1e-30)
    return {"pairs": int(len(before)),
            "median_abs_diff_before_sigma": float(np.median(np.abs(before) / s)),
            "median_abs_diff_after_sigma": float(np.median(np.abs(after) / s)),
            "max_abs_diff_before_sigma": float(np.max(np.abs(before) / s)),
            "max_abs_diff_after_sigma": float(np.max(np.abs(after) / s))}


def stretch_preview(img, *, beta: float = 8.0) -> np.ndarray:
    """Auto-stretch ``[H, W]`` or ``[H, W, C]`` -> uint8 ``[H, W(, 3)]``: per channel, black point at
    the background (median - 2 sigma, sigma from the MAD), white point at the 99.9th percentile of
    the luminance above background (shared by the channels, so colours keep their balance), then
    ``asinh(beta x) / asinh(beta)``. NaN is black."""
    a = np.asarray(img, np.float32)
    a = a[..., None] if a.ndim == 2 else a
    out = np.zeros(a.shape, np.float32)
    if not np.isfinite(a).any():
        return np.zeros(a.shape[:2] + ((3,) if a.shape[-1] == 3 else ()), np.uint8)
    sub = np.empty_like(a)
    for c in range(a.shape[-1]):
        v = a[..., c][np.isfinite(a[..., c])]
        med = float(np.median(v))
        mad = float(np.median(np.abs(v - med))) * 1.4826
        sub[..., c] = a[..., c] - (med - 2.0 * mad)
    with warnings.catch_warnings():  # pixels with no data in any channel
        warnings.simplefilter("ignore", RuntimeWarning)
        lum = np.nanmean(sub, axis=-1)
    hi = float(np.nanpercentile(lum, 99.9))
    hi = hi if hi > 0 else 1.0
    x = np.clip(np.nan_to_num(sub / hi, nan=0.0), 0.0, 1.0)
    out = np.arcsinh(beta * x) / np.arcsinh(beta)
    u8 = (out * 255 + 0.5).astype(np.uint8)
    return u8[..., 0] if u8.shape[-1] == 1 else u8


def write_outputs(result: MosaicResult, out_dir) -> dict:
    """Write ``mosaic.fits`` (primary float32 image with the WCS, ``WEIGHT`` extension),
    ``preview.png`` and ``report.json`` into ``out_dir``, each atomically. Returns their paths."""
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    m = result.mosaic
    data = m[..., 0] if m.shape[-1] == 1 else np.moveaxis(m, -1, 0)
    hdr = result.wcs.to_header()
    hdr["BUNIT"] = ("ADU", "reference-tile units")
    hdr["CREATOR"] = "mosaic_jax"
    if result.report.get("calibration") == "approximate":
        hdr["WCSAPPRX"] = (True, "approximate WCS: header pointing, no solve")
    prim = fits.PrimaryHDU(data.astype(np.float32), header=hdr)
    wh = fits.ImageHDU(result.weight.astype(np.float32), header=result.wcs.to_header(), name="WEIGHT")
    paths = {"fits": out / "mosaic.fits", "preview": out / "preview.png", "report": out / "report.json"}
    atomic_write(paths["fits"], lambda tmp: fits.HDUList([prim, wh]).writeto(tmp, overwrite=True))
    img = stretch_preview(np.flipud(m))  # FITS row 0 is the bottom of the sky image
    atomic_write(paths["preview"], lambda tmp: Image.fromarray(img).save(tmp, format="PNG"))
    result.report.setdefault("timings_s", {})["write"] = round(time.perf_counter() - t0, 4)
    result.report["outputs"] = {k: str(v) for k, v in paths.items()}
    atomic_write(paths["report"], lambda tmp: Path(tmp).write_text(json.dumps(result.report, indent=1)))
    return paths
