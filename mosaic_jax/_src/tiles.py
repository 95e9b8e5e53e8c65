"""Tile stages: stack every grid tile from its (corrected) frames in batches of row bands, then
fit and solve the tiles' photometric scale on their coverage-masked overlaps.

A tile's stack is per pixel, so a tile is stacked band by band: a band's cube
``[D, rows, S, C]`` (``D`` = the frames' overlap depth inside the tile, by greedy layering) is
built on the host from crops of the stored frame windows, and batches of same-shape bands go
through one jitted program sharded over every local device (:func:`stack_bands`). Bands are
written into the tile's disk arrays as they come back; a finished tile then gets its RGB
channel gains, noise and feather weights (:func:`finish_tile`).

Storage, per tile ``i`` under key ``("t", i)``: ``d`` float32 ``[h, w, C]`` (before its RGB
gains), ``c`` float32 ``[h, w]`` (frames kept per pixel), ``fw`` float32 ``[h, w]`` (feather
weights); under ``("tm", i)`` its measures (RGB gains, noise, coverage sums).
"""

from __future__ import annotations

import logging
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from shared_runtime import aot

from .devices import Cluster, local_mesh, pad_batch, shard_batch
from .feather import feather_weights
from .frames import MIN_PAIR_PIXELS, PAIR_FIT_PIXELS, frame_noise, intersect
from .photometry import _scaling, overlap_mask, solve_tile_photometry
from .stack import combine_values
from .workdir import WorkDir

__all__ = ["layers", "stack_tiles", "tile_pair_fits", "solve_tiles", "read_tile"]

log = logging.getLogger("mosaic_jax")

DIFF_SAMPLES = 4096  # pixels kept per pair for the report's before/after median differences


def tile_box(tile) -> tuple[int, int, int, int]:
    """A tile's canvas window ``(y0, x0, h, w)``."""
    return tile.y0, tile.x0, tile.h, tile.w


def layers(tile, windows, frame_ids):
    """Greedy layering: frames whose windows (clipped to the tile) do not overlap share a layer, so
    the per-pixel stack is ``[depth, h, w, C]`` with depth = overlap depth, not the frame count."""
    out: list[list[tuple[int, tuple]]] = []
    tbox = tile_box(tile)
    for k in frame_ids:
        box = intersect(windows[k], tbox)
        if box is None:
            continue
        for lay in out:
            if all(not (box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3]) for _, b in lay):
                lay.append((k, box))
                break
        else:
            out.append([(k, box)])
    return out


@partial(aot.jit, static_argnames=("reject", "n_iter"))
def stack_bands(cube, wts, klo, khi, lims, *, reject: str, n_iter: int):
    """A batch of tile bands: ``cube [B, D, r, w, C]`` (NaN = no data), ``wts [B, D, r, w]`` ->
    ``(data [B, r, w, C], kept [B, r, w])``. Each band on its own: the batch axis is split over
    the devices, and the result does not depend on how."""
    return jax.vmap(lambda v, w: combine_values(v, w, klo, khi, lims, reject=reject, n_iter=n_iter))(cube, wts)


def _band_rows(depth: int, S: int, C: int, budget: float) -> int:
    r = int(budget // max(1, depth * S * (C + 1) * 4 * 3))
    r = 1 << max(3, r.bit_length() - 1)
    return int(min(r, 1 << max(3, (S - 1).bit_length())))


def _fill_band(cube, wts, lays, windows, work, fweight, tile, r0, r1):
    """Fill ``cube [D, r, S, C]``/``wts`` with the tile's rows ``[r0, r1)`` (tile coordinates)."""
    cube.fill(np.nan)
    wts.fill(0.0)
    y0 = tile.y0 + r0
    y1 = tile.y0 + r1
    for li, lay in enumerate(lays):
        for k, box in lay:
            a, b = max(box[0], y0), min(box[2], y1)
            if a >= b:
                continue
            win = windows[k]
            rel = (a - win[0], box[1] - win[1], b - win[0], box[3] - win[1])
            sl = (li, slice(a - y0, b - y0), slice(box[1] - tile.x0, box[3] - tile.x0))
            cube[sl] = work.get(("f", k), "d", rel)
            wts[sl] = work.get(("f", k), "w", rel) * fweight[k]


def finish_tile(work: WorkDir, tile, C: int, width: float, used):
    """A stacked tile's RGB channel gains (background medians equalised right after stacking),
    noise (after those gains), feather weights and coverage figures, into the work folder."""
    cov = work.get(("t", tile.index), "c")
    fw = np.asarray(feather_weights(cov, width=width))
    work.put(("t", tile.index), fw=fw)
    d = work.get(("t", tile.index), "d")
    gains = np.ones(C, np.float32)
    if C == 3:
        from .photometry import equalize_rgb_medians

        _, gains = equalize_rgb_medians(d, tile_id=tile.index)
        gains = np.asarray(gains, np.float32)
    noise = np.asarray(frame_noise(aot.device_array(d))) * gains
    finite = bool(np.isfinite(d).any())
    work.put(("tm", tile.index), rgb_gains=gains, noise=noise.astype(np.float32),
             cov_sum=np.asarray(float(cov.sum())), cov_mean=np.asarray(float(cov.mean())),
             valid=np.asarray(float(np.mean(cov > 0))), finite=np.asarray(finite),
             frames=np.asarray(sorted(used), np.int64))


def stack_tiles(grid, windows, work: WorkDir, fweight, cfg, C: int, *, batch_bytes: float, width: float,
                cluster: Cluster, timer, progress: bool):
    """Stack this process's share of the tiles (see the module docstring) -> the tiles with data."""
    from tqdm.auto import tqdm

    mesh = local_mesh()
    S_h, S_w = grid.tiles[0].h, grid.tiles[0].w
    plans = {}
    for tile in grid.tiles:
        lays = layers(tile, windows, [k for k in tile.frames if k in windows])
        if lays:
            plans[tile.index] = lays
    mine = cluster.share(sorted(plans))
    Dmax = max((len(v) + len(v) % 2 for v in plans.values()), default=2)
    rows = _band_rows(Dmax, S_w, C, batch_bytes / mesh.devices.size)
    B = pad_batch(1, mesh)
    klo, khi = (jnp.float32(k) for k in cfg.kappa)
    lims = jnp.asarray((0.05, 0.05), jnp.float32)
    jobs = [(i, r0) for i in mine for r0 in range(0, S_h, rows)]
    depth = {i: len(plans[i]) + len(plans[i]) % 2 for i in mine}  # even depths: fewer programs
    calls = []  # B bands of one depth per call
    for s0 in range(0, len(jobs), B):
        group = jobs[s0:s0 + B]
        for D in sorted({depth[i] for i, _ in group}):
            calls.append((D, [(i, r0) for i, r0 in group if depth[i] == D]))
    bar = tqdm(total=len(jobs), desc="tiles", unit="band", disable=not progress)
    writers, left = {}, {i: -(-S_h // rows) for i in mine}
    t_host = t_dev = 0.0

    def dispatch(D, sub):
        cube = np.full((B, D, rows, S_w, C), np.nan, np.float32)
        wts = np.zeros((B, D, rows, S_w), np.float32)
        for b, (i, r0) in enumerate(sub):
            _fill_band(cube[b], wts[b], plans[i], windows, work, fweight, grid.tiles[i], r0, min(S_h, r0 + rows))
        return stack_bands(*shard_batch(mesh, cube, wts), klo, khi, lims, reject=cfg.reject, n_iter=5)

    # one call in flight: the host fills the next batch while the devices stack this one
    pending = dispatch(*calls[0]) if calls else None
    for c, (D, sub) in enumerate(calls):
        t0 = time.perf_counter()
        nxt = dispatch(*calls[c + 1]) if c + 1 < len(calls) else None
        t1 = time.perf_counter()
        out, kept = jax.device_get(pending)
        t2 = time.perf_counter()
        pending = nxt
        for b, (i, r0) in enumerate(sub):
            if i not in writers:
                writers[i] = (work.create(("t", i), "d", (S_h, S_w, C)), work.create(("t", i), "c", (S_h, S_w)))
            n = min(S_h, r0 + rows) - r0
            writers[i][0].write(r0, out[b, :n])
            writers[i][1].write(r0, kept[b, :n])
            left[i] -= 1
            if left[i] == 0:
                for wr in writers.pop(i):
                    wr.close()
                used = {k for lay in plans[i] for k, _ in lay}
                finish_tile(work, grid.tiles[i], C, width, used)
        t_host += t1 - t0 + time.perf_counter() - t2
        t_dev += t2 - t1
        bar.update(len(sub))
    bar.close()
    timer.add("stack_host", t_host)
    timer.add("stack_device", t_dev)
    cluster.barrier("tiles")
    return [i for i in sorted(plans) if work.has(("tm", i), "finite")]


def read_tile(work: WorkDir, i: int, name: str = "d", box=None, step: int = 1) -> np.ndarray:
    """A stored tile array (``d`` with its RGB gains applied), or its tile-relative box (every
    ``step``-th pixel)."""
    a = work.get(("t", i), name, box, step)
    return a * work.get(("tm", i), "rgb_gains") if name == "d" else a


@partial(aot.jit, static_argnames=("erode",))
def _pair_mask(ca, cb, a, b, min_coverage, erode: int):
    return overlap_mask(ca, cb, a, b, min_coverage=min_coverage, erode=erode)


@partial(aot.jit, static_argnames=("batch",))
def _batched_scaling(A, B, M, lo, hi, SA, SB, batch: int):
    """Pair fits, ``batch`` pairs at a time (bounded memory for large overlaps)."""
    from jax import lax

    return lax.map(lambda x: _scaling(x[0], x[1], x[2], lo, hi, noise_ref=x[3], noise_tgt=x[4]),
                   (A, B, M, SA, SB), batch_size=batch if batch > 1 else None)


def _pad_to(x, shape):
    """``x`` in the top-left corner of an array of ``shape`` (first two axes; NaN for data, 0 for
    coverage maps)."""
    out = np.full(tuple(shape) + x.shape[2:], np.nan if x.ndim == 3 else 0.0, x.dtype)
    out[:x.shape[0], :x.shape[1]] = x
    return out


def _fit_packed(packed, noise_a, noise_b, cfg, C):
    """Robust gain/offset fits of packed pair pixels ``[(va [n, C], vb [n, C])]`` in one call;
    ``K`` (pixels) and the pair count are bucketed to powers of two."""
    K = min(PAIR_FIT_PIXELS, max(1 << 12, 1 << (max(len(v[0]) for v in packed) - 1).bit_length()))
    P = max(8, 1 << (len(packed) - 1).bit_length())
    A = np.full((P, K, 1, C), np.nan, np.float32)
    Bv = np.full((P, K, 1, C), np.nan, np.float32)
    M = np.zeros((P, K, 1), bool)
    SA, SB = np.ones((P, C), np.float32), np.ones((P, C), np.float32)
    for p, (va, vb) in enumerate(packed):
        A[p, :len(va), 0], Bv[p, :len(vb), 0], M[p, :len(va), 0] = va, vb, True
    SA[:len(packed)], SB[:len(packed)] = noise_a, noise_b
    lo, hi = jnp.float32(cfg.gain_bounds[0]), jnp.float32(cfg.gain_bounds[1])
    fit = _batched_scaling(aot.device_array(A), aot.device_array(Bv), aot.device_array(M), lo, hi, aot.device_array(SA),
                           aot.device_array(SB), batch=max(1, (1 << 18) // K))
    return np.asarray(fit.gain)[:len(packed)], np.asarray(fit.offset)[:len(packed)]


def tile_pair_fits(grid, work: WorkDir, ids, cfg, C: int, *, batch_bytes: float, cluster: Cluster):
    """Fits of every overlapping pair of stacked tiles on its coverage-masked, eroded overlap ->
    ``(pairs [P, 2], gains [P, C], offsets [P, C], pixels [P], samples, noise [P, C])``;
    ``samples``: a few thousand of each pair's masked pixel values ``(a, b)`` for the report."""
    noise = {i: work.get(("tm", i), "noise") for i in ids}
    boxes = [((i, j), box) for a_i, i in enumerate(ids) for j in ids[a_i + 1:]
             for box in [grid.tiles[i].intersection(grid.tiles[j])] if box is not None]
    sides = [sorted((y1 - y0, x1 - x0)) for _, (y0, x0, y1, x1) in boxes]
    # overlaps are read on a regular subgrid of step g (a gain and offset need no more than
    # PAIR_FIT_PIXELS pixels): masks are eroded by ceil(erode / g) steps there
    g = max(1, int(np.sqrt(max((a * b for a, b in sides), default=1) / (2 * PAIR_FIT_PIXELS))))
    erode = -(-int(cfg.erode) // g)
    bucket = tuple(-(-max((-(-s[k] // g) for s in sides), default=1) // 16) * 16 for k in (0, 1))  # (short, long)
    per_pair = PAIR_FIT_PIXELS * C * 4 * 2 * 4
    chunk = max(8, int(batch_bytes // per_pair))
    out = []
    mine = cluster.share(boxes)
    for s0 in range(0, len(mine), chunk):
        got = []
        for (i, j), box in mine[s0:s0 + chunk]:
            ti, tj = grid.tiles[i], grid.tiles[j]
            ri = (box[0] - ti.y0, box[1] - ti.x0, box[2] - ti.y0, box[3] - ti.x0)
            rj = (box[0] - tj.y0, box[1] - tj.x0, box[2] - tj.y0, box[3] - tj.x0)
            a, ca = read_tile(work, i, "d", ri, g), read_tile(work, i, "c", ri, g)
            b, cb = read_tile(work, j, "d", rj, g), read_tile(work, j, "c", rj, g)
            if a.shape[0] > a.shape[1]:  # short side first: one bucketed shape for all strips
                a, b, ca, cb = (np.swapaxes(v, 0, 1) for v in (a, b, ca, cb))
            a, b, ca, cb = (_pad_to(v, bucket) for v in (a, b, ca, cb))
            m = np.asarray(_pair_mask(ca, cb, a, b, jnp.float32(cfg.min_coverage), erode))
            n = int(m.sum())
            if n < MIN_PAIR_PIXELS:
                continue
            va, vb = a[m], b[m]
            n *= g * g  # pixels of the overlap the fit stands for
            step = -(-len(va) // PAIR_FIT_PIXELS)
            va, vb = va[::step], vb[::step]
            s = max(1, len(va) // DIFF_SAMPLES)
            got.append(((i, j), n, va, vb, (va[::s], vb[::s])))
        if not got:
            continue
        sa = np.stack([noise[i] for (i, _), *_ in got])
        sb = np.stack([noise[j] for (_, j), *_ in got])
        fg, fo = _fit_packed([(va, vb) for _, _, va, vb, _ in got], sa, sb, cfg, C)
        for k, ((i, j), n, _, _, smp) in enumerate(got):
            out.append(((i, j), fg[k], fo[k], n, smp, sa[k]))
    if cluster.count > 1:
        _exchange(work, cluster, out, C)
        out = _gathered(work, cluster)
    out.sort(key=lambda r: r[0])
    if not out:
        z = np.zeros((0, C))
        return np.zeros((0, 2), np.int64), z, z, np.zeros(0), [], z
    return (np.asarray([r[0] for r in out], np.int64), np.stack([r[1] for r in out]), np.stack([r[2] for r in out]),
            np.asarray([r[3] for r in out], np.float64), [r[4] for r in out], np.stack([r[5] for r in out]))


def _exchange(work, cluster, out, C):
    if out:
        work.put(("tp", cluster.index), pairs=np.asarray([r[0] for r in out], np.int64),
                 g=np.stack([r[1] for r in out]), o=np.stack([r[2] for r in out]),
                 n=np.asarray([r[3] for r in out], np.float64), s=np.stack([r[5] for r in out]),
                 sa=np.concatenate([r[4][0] for r in out]), sb=np.concatenate([r[4][1] for r in out]),
                 sn=np.asarray([len(r[4][0]) for r in out], np.int64))
    cluster.barrier("tile_pairs")


def _gathered(work, cluster):
    out = []
    for r in range(cluster.count):
        if not work.has(("tp", r), "pairs"):
            continue
        g = {k: work.get(("tp", r), k) for k in ("pairs", "g", "o", "n", "s", "sa", "sb", "sn")}
        ends = np.cumsum(g["sn"])
        for q in range(len(g["pairs"])):
            lo = ends[q] - g["sn"][q]
            out.append((tuple(int(v) for v in g["pairs"][q]), g["g"][q], g["o"][q], float(g["n"][q]),
                        (g["sa"][lo:ends[q]], g["sb"][lo:ends[q]]), g["s"][q]))
    return out


def reference_solution(n, ref, pairs, g, o, C):
    """Each tile scaled to the reference tile where they overlap (others untouched)."""
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


def solve_tiles(grid, work: WorkDir, ids, pairs, pg, po, cnt, cfg, C):
    """Tile gains and offsets ``[n_tiles, C]`` and the reference tile (the healthy tile with the
    largest coverage sum keeps gain 1, offset 0)."""
    n = len(grid.tiles)
    healthy = [i for i in ids if bool(work.get(("tm", i), "finite"))]
    ref = max(healthy, key=lambda i: float(work.get(("tm", i), "cov_sum"))) if healthy else None
    if ref is None:
        log.warning("[GRID] Photometric scaling disabled: no valid reference tile found (all tiles invalid)")
        return np.ones((n, C), np.float32), np.zeros((n, C), np.float32), None
    if cfg.solve == "global" and len(pairs):
        sol = solve_tile_photometry(n, pairs, pg, po, pair_weights=cnt, gauge=ref)
        return np.asarray(sol.gains, np.float32), np.asarray(sol.offsets, np.float32), ref
    if len(pairs):
        gains, offsets, touched = reference_solution(n, ref, pairs, pg, po, C)
        for i in ids:
            if i not in touched:
                log.info("[GRID] tile %d does not overlap the reference tile %d: not scaled", i, ref)
        return gains, offsets, ref
    return np.ones((n, C), np.float32), np.zeros((n, C), np.float32), ref


def pair_differences(pairs, samples, gains, offsets):
    """Median differences ``a - b`` of each pair's sampled pixels before and after scaling ->
    ``(before [P, C], after [P, C])``."""
    before, after = [], []
    for (i, j), (va, vb) in zip(pairs, samples):
        before.append(np.median(va - vb, axis=0))
        after.append(np.median((va * gains[i] + offsets[i]) - (vb * gains[j] + offsets[j]), axis=0))
    C = gains.shape[1]
    return np.asarray(before).reshape(-1, C), np.asarray(after).reshape(-1, C)
