"""Frame stages: scan the inputs, reproject every frame onto its canvas window once, measure every
overlapping frame pair down to sufficient statistics, solve each frame's gain and sky.

Storage (a :class:`~.workdir.WorkDir`), per frame ``k`` under key ``("f", k)``: ``d`` float32
``[h, w, C]`` (NaN = no data), ``w`` float32 ``[h, w]`` (pixel weight, 0 = no data), ``m`` bool
``[h, w]`` (good pixels eroded by ``erode``); under ``("fm", k)`` its small measures (noise, the
seam metric's block medians). ``h, w`` come from :func:`frame_window`: a few bucketed shapes, so a
few compiled programs serve any number of frames.
"""

from __future__ import annotations

import logging
import math
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from shared_runtime import aot

from .devices import Cluster, local_mesh, pad_batch, shard_batch
from .io import FrameInfo, FrameSkipped, MosaicInputError, find_inputs, load_frame, scan_frame
from .photometry import _erode, channel_noise
from .reproject import reproject_frame
from .sky import SKY_MODELS, apply_frame_sky, frame_norm, pair_statistics, select_sky_degree, solve_frame_sky
from .workdir import WorkDir

__all__ = ["scan_inputs", "frame_window", "reproject_frames", "frame_pair_items", "normalise_frames"]

log = logging.getLogger("mosaic_jax")

MIN_PAIR_PIXELS = 64
PAIR_FIT_PIXELS = 1 << 17  # at most this many bins (frame pairs) or pixels (tile pairs) a pair fit uses
PAIR_BIN = 8  # frame-pair sky fits on the means of 8x8-pixel bins (see bin_pair)
MIN_PAIR_BINS = 256  # ... or smaller bins, down to single pixels, where fewer would be left
QUALITY_BLOCK = 32  # the seam metric's block side
QUALITY_ERODE = 8


# ---------------------------------------------------------------------------------------------
# Scan
# ---------------------------------------------------------------------------------------------


def scan_inputs(inputs, report) -> list[FrameInfo]:
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


# ---------------------------------------------------------------------------------------------
# Reprojection
# ---------------------------------------------------------------------------------------------


def frame_window(box, shape, q: int = 32):
    """A frame's canvas window: its footprint box grown to multiples of ``q`` (few distinct shapes,
    few compilations), kept inside the canvas -> ``(y0, x0, h, w)``."""
    y0, x0, y1, x1 = box
    H, W = shape
    h, w = min(-(-(y1 - y0) // q) * q, H), min(-(-(x1 - x0) // q) * q, W)
    y0, x0 = min(y0, H - h), min(x0, W - w)
    return y0, x0, h, w


@aot.jit
def frame_noise(d):
    """Pixel noise per channel of a frame window ``[h, w, C]`` -> ``[C]``."""
    return channel_noise(d)


def _products(r, C: int, weight: float, erode: int):
    d = r[..., :C]
    ok = jnp.all(jnp.isfinite(d), axis=-1)
    wm = jnp.full(ok.shape, weight, jnp.float32)
    if r.shape[-1] > C:  # an ALPHA map rides along as the last channel
        a = jnp.nan_to_num(r[..., C])
        ok = ok & (a > 0)
        wm = wm * a
    d = jnp.where(ok[..., None], d, jnp.nan)
    m = _erode(ok, erode)
    return d, jnp.where(ok, wm, 0.0), m, ok


@partial(aot.jit, static_argnames=("C", "erode"))
def _window_stage(r, weight, *, C: int, erode: int):
    d, wm, m, ok = _products(r, C, weight, erode)
    noise = channel_noise(d)
    foot = _erode(ok, QUALITY_ERODE)
    return d, wm, m, foot, noise, jnp.any(ok)


def _quality_blocks(d, foot, block: int = QUALITY_BLOCK) -> np.ndarray:
    from .quality import block_medians

    return block_medians(np.where(foot[..., None], d, np.nan), block)


def reproject_frames(frames, grid, cfg, work: WorkDir, timer, cluster: Cluster, progress: bool):
    """Read and reproject every frame (this process's share) onto its window of the canvas, once:
    a tile's frames are crops of these, since tiles share the global WCS. Stores the window's
    data, weight and eroded good mask, and its noise and quality blocks; returns every frame's
    window ``{k: (y0, x0, h, w)}`` (frames with no pixel on the grid left out) and noise ``[n, C]``."""
    from tqdm.auto import tqdm

    C = frames[0].channels
    mine = cluster.share(range(len(frames)))
    for k in tqdm(mine, desc="frames", unit="frame", disable=not progress):
        t0 = time.perf_counter()
        data, alpha = load_frame(frames[k])
        raw_noise = np.asarray(frame_noise(data if data.ndim == 3 else data[..., None]))
        timer.add("read", time.perf_counter() - t0)
        t0 = time.perf_counter()
        if alpha is not None:
            data = jnp.concatenate([data, alpha[..., None]], axis=-1)
        y0, x0, h, w = frame_window(grid.footprints[k], grid.shape)
        r = reproject_frame(data, frames[k].wcs, grid.wcs, y0, x0, h, w, backend=cfg.backend)
        d, wm, m, foot, noise, any_ok = jax.device_get(
            _window_stage(r, jnp.float32(frames[k].weight), C=C, erode=int(cfg.erode)))
        timer.add("reproject", time.perf_counter() - t0)
        meta = {"window": np.asarray([y0, x0, h, w], np.int64), "noise": noise.astype(np.float32),
                "raw_noise": raw_noise.astype(np.float32), "ok": np.asarray(bool(any_ok))}
        if any_ok:
            t0 = time.perf_counter()
            work.put(("f", k), d=d, w=wm, m=m)
            if cfg.quality:
                meta["qblocks"] = _quality_blocks(d, foot)
            timer.add("write_frames", time.perf_counter() - t0)
        work.put(("fm", k), **meta)
    cluster.barrier("frames")
    windows, noise = {}, np.full((len(frames), C), np.nan, np.float32)
    for k in range(len(frames)):
        ok = bool(work.get(("fm", k), "ok"))
        if not ok:
            log.warning("[GRID] %s: no pixel lands on the grid; skipped", frames[k].name)
            continue
        windows[k] = tuple(int(v) for v in work.get(("fm", k), "window"))
        noise[k] = work.get(("fm", k), "noise")
    return windows, noise


# ---------------------------------------------------------------------------------------------
# Frame pairs
# ---------------------------------------------------------------------------------------------


def intersect(a, b):
    """Canvas box ``(y0, x0, y1, x1)`` shared by two windows ``(y0, x0, h, w)``, or None."""
    y0, x0 = max(a[0], b[0]), max(a[1], b[1])
    y1, x1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    return (y0, x0, y1, x1) if y1 > y0 and x1 > x0 else None


def overlapping_pairs(windows) -> list[tuple[int, int, tuple]]:
    """Every pair ``(i < j)`` of windows that overlap, with the shared box (vectorised: quadratic
    in numpy, not in Python)."""
    keys = np.asarray(sorted(windows), np.int64)
    if len(keys) < 2:
        return []
    w = np.asarray([windows[int(k)] for k in keys], np.int64)
    y0, x0, y1, x1 = w[:, 0], w[:, 1], w[:, 0] + w[:, 2], w[:, 1] + w[:, 3]
    out = []
    for a in range(len(keys) - 1):
        b = np.arange(a + 1, len(keys))
        ya, xa = np.maximum(y0[a], y0[b]), np.maximum(x0[a], x0[b])
        yb, xb = np.minimum(y1[a], y1[b]), np.minimum(x1[a], x1[b])
        hit = (yb > ya) & (xb > xa)
        for bb, p, q, r, s in zip(b[hit], ya[hit], xa[hit], yb[hit], xb[hit]):
            out.append((int(keys[a]), int(keys[bb]), (int(p), int(q), int(r), int(s))))
    return out


def _rel(win, box):
    """Canvas box -> the box inside a stored window."""
    return box[0] - win[0], box[1] - win[1], box[2] - win[0], box[3] - win[1]


PSF_BLURS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)  # Gaussian sigmas (px) tried to match the two frames' seeing
SEEING_GAIN = 0.5  # a blur is used only if it at least halves the pair's decorrelation 1 - r
SEEING_SIDE = 160  # the seeing is judged on the overlap's central SEEING_SIDE^2 pixels
HIGH_PASS = 8.0  # ... of the luminance less its blur by this sigma (the frames' own skies differ)


def _blur(x, m, s):
    """Normalised Gaussian blur of ``x [h, w, C]`` over the good pixels ``m`` (``s = 0``: itself)."""
    from scipy import ndimage

    if s <= 0:
        return x
    w = ndimage.gaussian_filter(m.astype(np.float32), s)
    out = np.stack([ndimage.gaussian_filter(np.where(m, x[..., c], 0.0), s) for c in range(x.shape[-1])], -1)
    return np.where(m[..., None], out / np.maximum(w, 1e-6)[..., None], np.nan).astype(np.float32)


def _blur_matrix(n: int, s: float) -> np.ndarray:
    """``[n, n]`` matrix of a Gaussian blur along one axis (truncated at 4 sigma, zeros outside):
    on CPU two small matrix products blur faster than a convolution."""
    i = np.arange(n, dtype=np.float64)
    g = np.exp(-0.5 * ((i[:, None] - i[None, :]) / s) ** 2)
    g[np.abs(i[:, None] - i[None, :]) > math.ceil(4.0 * s)] = 0.0
    k = np.exp(-0.5 * (np.arange(-math.ceil(4.0 * s), math.ceil(4.0 * s) + 1) / s) ** 2)
    return (g / k.sum()).astype(np.float32)


def _gauss(x, s: float):
    """Separable Gaussian blur of ``x [N, h, w]``, zeros outside."""
    gy, gx = jnp.asarray(_blur_matrix(x.shape[1], s)), jnp.asarray(_blur_matrix(x.shape[2], s))
    return jnp.einsum("ij,njk,kl->nil", gy, x, gx)


def _nblur(x, m, s: float, mb=None):
    mb = _gauss(m.astype(jnp.float32), s) if mb is None else mb
    return jnp.where(m, _gauss(jnp.where(m, x, 0.0), s) / jnp.maximum(mb, 1e-6), 0.0)


def _corr(a, b, m):
    mf = m.astype(jnp.float32)
    n = jnp.maximum(mf.sum((1, 2)), 1.0)
    ma, mb = (a * mf).sum((1, 2)) / n, (b * mf).sum((1, 2)) / n
    da, db = (a - ma[:, None, None]) * mf, (b - mb[:, None, None]) * mf
    va, vb = (da * da).sum((1, 2)), (db * db).sum((1, 2))
    c = (da * db).sum((1, 2)) / jnp.sqrt(jnp.maximum(va * vb, 1e-30))
    return jnp.where((va > 0) & (vb > 0), c, -jnp.inf)


@aot.jit
def seeing_scores(la, lb, m):
    """Correlations of two frames' high-passed luminance crops ``[P, s, s]`` (good pixels ``m``)
    under each candidate blur: ``[P, 1 + 2 (len(PSF_BLURS) - 1)]``, candidate 0 unblurred, then for
    each sigma the blur on frame a, then on frame b."""
    mf = m.astype(jnp.float32)
    mb = _gauss(mf, HIGH_PASS)
    ha = jnp.where(m, la - _nblur(la, m, HIGH_PASS, mb), 0.0)
    hb = jnp.where(m, lb - _nblur(lb, m, HIGH_PASS, mb), 0.0)
    out = [_corr(ha, hb, m)]
    for s in PSF_BLURS[1:]:
        mb = _gauss(mf, s)
        out.append(_corr(_nblur(ha, m, s, mb), hb, m))
        out.append(_corr(ha, _nblur(hb, m, s, mb), m))
    return jnp.stack(out, 1)


def _candidate(c: int) -> tuple[float, int]:
    return (0.0, 0) if c == 0 else (PSF_BLURS[1 + (c - 1) // 2], (c - 1) % 2)


def bin_pair(a, b, m, box, B: int, min_fill: float = 0.75):
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


def _pair_crops(work, windows, i, j, box):
    a = work.get(("f", i), "d", _rel(windows[i], box))
    b = work.get(("f", j), "d", _rel(windows[j], box))
    m = (work.get(("f", i), "m", _rel(windows[i], box)) & work.get(("f", j), "m", _rel(windows[j], box))
         & np.all(np.isfinite(a), -1) & np.all(np.isfinite(b), -1))
    return a, b, m


def _centre(x, side):
    h, w = x.shape[:2]
    y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return x[y0:y0 + side, x0:x0 + side]


def frame_pair_items(pairs, windows, work: WorkDir, *, batch_bytes: float, match_seeing: bool = True,
                     bin_px: int = PAIR_BIN):
    """Frame pairs -> their binned good pixels ``[((i, j), va [n, C], vb [n, C], yx [n, 2])]``.

    A pair's overlap is averaged in ``bin_px``-pixel bins (smaller where that would leave fewer
    than ``MIN_PAIR_BINS`` bins, larger where it would leave more than ``PAIR_FIT_PIXELS``). With
    ``match_seeing`` the sharper frame of each pair is first blurred to the other's seeing, chosen
    for a batch of pairs at once on device (:func:`seeing_scores`)."""
    mesh = local_mesh()
    side = SEEING_SIDE
    per_pair = side * side * 4 * 24
    nb = pad_batch(max(1, int(batch_bytes // per_pair)), mesh)
    items = []
    for s0 in range(0, len(pairs), nb):
        chunk = pairs[s0:s0 + nb]
        crops = [_pair_crops(work, windows, i, j, box) for i, j, box in chunk]
        choice = [(0.0, 0)] * len(chunk)
        if match_seeing:
            La = np.zeros((nb, side, side), np.float32)
            Lb = np.zeros((nb, side, side), np.float32)
            Mm = np.zeros((nb, side, side), bool)
            for p, (a, b, m) in enumerate(crops):
                ca, cb, cm = _centre(a, side), _centre(b, side), _centre(m, side)
                h, w = cm.shape
                La[p, :h, :w] = np.where(cm, ca.sum(-1), 0.0)
                Lb[p, :h, :w] = np.where(cm, cb.sum(-1), 0.0)
                Mm[p, :h, :w] = cm
            sc = np.asarray(seeing_scores(*shard_batch(mesh, La, Lb, Mm)))
            for p in range(len(chunk)):
                if Mm[p].sum() < 64:
                    continue
                best = int(np.argmax(sc[p]))
                if 1.0 - sc[p, best] < SEEING_GAIN * (1.0 - sc[p, 0]):
                    choice[p] = _candidate(best)
        for (i, j, box), (a, b, m), (s, which) in zip(chunk, crops, choice):
            n = int(m.sum())
            if n < MIN_PAIR_PIXELS:
                continue
            B = max(1, min(bin_px, int(math.sqrt(n / MIN_PAIR_BINS))))
            B = max(B, math.ceil(math.sqrt(n / PAIR_FIT_PIXELS)))
            if s > 0:
                a, b = (_blur(a, m, s), b) if which == 0 else (a, _blur(b, m, s))
            va, vb, yx = bin_pair(a, b, m, box, B)
            if len(va) < MIN_PAIR_BINS // 4:
                continue
            items.append(((i, j), va, vb, yx))
    return items


PAIR_CHUNK = 256  # frame pairs per pair_statistics call: memory independent of the number of frames


def pack_pair_items(items, K: int | None = None, P: int | None = None):
    """Binned pairs -> padded ``(pairs [P, 2], A [P, K, C], B, M [P, K], YX [P, K, 2], boxes)``;
    ``K`` and ``P`` are bucketed to powers of two unless given (few compiled programs)."""
    C = items[0][1].shape[-1]
    K = K or min(PAIR_FIT_PIXELS, max(1 << 12, 1 << (max(len(v[1]) for v in items) - 1).bit_length()))
    P = P or max(8, 1 << (len(items) - 1).bit_length())
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


def _pair_stats(items, footprints, cfg, noise, degree, K: int):
    """Sufficient statistics of binned pairs, ``PAIR_CHUNK`` pairs per call, ``K`` bins a pair."""
    n = len(footprints)
    norms = np.stack([frame_norm(footprints[k]) for k in range(n)])
    P = min(PAIR_CHUNK, max(8, 1 << (len(items) - 1).bit_length()))
    all_pairs, out = [], []
    for c0 in range(0, len(items), P):
        pairs, A, B, M, YX, boxes = pack_pair_items(items[c0:c0 + P], K, P)
        pad = lambda x, fill: np.concatenate([x, np.full((P - len(x),) + x.shape[1:], fill, x.dtype)])  # noqa: E731
        ni, nj = pad(norms[pairs[:, 0]].astype(np.float32), 1.0), pad(norms[pairs[:, 1]].astype(np.float32), 1.0)
        npair = pad(np.stack([frame_norm(b) for b in boxes]).astype(np.float32), 1.0)
        sa = pad(np.nan_to_num(noise[pairs[:, 0]], nan=1.0).astype(np.float32), 1.0)
        sb = pad(np.nan_to_num(noise[pairs[:, 1]], nan=1.0).astype(np.float32), 1.0)
        st = pair_statistics(*map(aot.device_array, (A, B, M, YX, ni, nj, npair, sa, sb)),
                             aot.device_array(bool(cfg.fit_gains)),
                             (jnp.float32(cfg.gain_bounds[0]), jnp.float32(cfg.gain_bounds[1])),
                             degree=degree, batch=max(1, (1 << 17) // K))
        all_pairs.append(pairs)
        out.append([np.asarray(x)[:len(pairs)] for x in st])
    return np.concatenate(all_pairs), [np.concatenate([o[k] for o in out]) for k in range(len(out[0]))]


def _bins_bound(box, bin_px: int = PAIR_BIN) -> int:
    """At most how many bins :func:`frame_pair_items` makes of an overlap box."""
    n = (box[2] - box[0]) * (box[3] - box[1])
    B = max(1, min(bin_px, int(math.sqrt(n / MIN_PAIR_BINS))), math.ceil(math.sqrt(n / PAIR_FIT_PIXELS)))
    return max(1, n // (B * B))


def _measure_pairs(pairs, windows, work, footprints, cfg, noise, degree, batch_bytes):
    """Pair statistics, ``PAIR_CHUNK`` pairs at a time from crops to statistics (the binned
    pixels of a chunk are dropped once measured: memory does not grow with the frames)
    -> ``(pairs [P, 2], [statistics])`` or ``(None, None)``."""
    if not pairs:
        return None, None
    K = min(PAIR_FIT_PIXELS, max(1 << 12, 1 << (max(_bins_bound(b) for _, _, b in pairs) - 1).bit_length()))
    got_p, got_s = [], []
    for c0 in range(0, len(pairs), PAIR_CHUNK):
        items = frame_pair_items(pairs[c0:c0 + PAIR_CHUNK], windows, work, batch_bytes=batch_bytes,
                                 match_seeing=cfg.fit_gains)
        if items:
            p, st = _pair_stats(items, footprints, cfg, noise, degree, K)
            got_p.append(p)
            got_s.append(st)
    if not got_p:
        return None, None
    return np.concatenate(got_p), [np.concatenate([s[k] for s in got_s]) for k in range(len(got_s[0]))]


def normalise_frames(footprints, windows, work: WorkDir, cfg, C, noise, *, batch_bytes: float,
                     cluster: Cluster = Cluster(), gauge=None):
    """Per-frame gains and sky polynomials, once for the whole mosaic (:mod:`.sky`): robust fits
    on every overlapping pair of frames reduced to sufficient statistics (each process measures
    its share of the pairs), one global solve over the frame graph (gauge: the frame with most
    good pixels keeps gain 1; zero-mean skies). The stored frame windows are replaced by their
    corrected versions. Returns ``(solution or None, number of pairs)``."""
    from .sky import PairStats

    n = len(footprints)
    degree = SKY_MODELS[cfg.sky]
    if cfg.normalize == "none" or len(windows) < 2:
        return None, 0
    mine = cluster.share(overlapping_pairs(windows))
    pairs, st = _measure_pairs(mine, windows, work, footprints, cfg, noise, degree, batch_bytes)
    if cluster.count > 1:  # every process's statistics, in the pairs' order
        if pairs is not None:
            work.put(("pairs", cluster.index), pairs=pairs, **{f"s{k}": v for k, v in enumerate(st)})
        cluster.barrier("frame_pairs")
        got = [(work.get(("pairs", r), "pairs"), [work.get(("pairs", r), f"s{k}") for k in range(len(PairStats._fields))])
               for r in range(cluster.count) if work.has(("pairs", r), "pairs")]
        if not got:
            return None, 0
        pairs = np.concatenate([g[0] for g in got])
        st = [np.concatenate([g[1][k] for g in got]) for k in range(len(PairStats._fields))]
        order = np.lexsort((pairs[:, 1], pairs[:, 0]))
        pairs, st = pairs[order], [s[order] for s in st]
    elif pairs is None:
        return None, 0
    st = PairStats(*st)
    norms = np.stack([frame_norm(footprints[k]) for k in range(n)])
    good = {k: int(np.count_nonzero(work.get(("f", k), "m"))) for k in windows} if gauge is None else None
    gauge = max(windows, key=lambda k: good[k]) if gauge is None else gauge
    kw = dict(noise=np.nan_to_num(noise, nan=1.0), fit_gains=cfg.fit_gains, gauge=gauge, norms=norms)
    if cfg.sky == "auto":
        degree, sol, scores = select_sky_degree(n, pairs, st, max_degree=degree, **kw)
        log.info("[SKY] auto: degree %d (BIC %s)", degree, {d: round(v, 1) for d, v in scores.items()})
    else:
        sol = solve_frame_sky(n, pairs, st, degree=degree, **kw)
    for k in cluster.share(sorted(windows)):
        y0, x0 = windows[k][:2]
        fixed = apply_frame_sky(aot.device_array(work.get(("f", k), "d")), y0, x0, aot.device_array(sol.gains[k]),
                                aot.device_array(sol.coeffs[k]), aot.device_array(norms[k], jnp.float32), degree=degree)
        work.put(("f", k), d=np.asarray(fixed))
    cluster.barrier("frame_sky")
    return sol, len(pairs)
