"""Canvas stages: the feathered assembly of the scaled tiles, band by band, into the one canvas
the build holds in memory, and the seam metric from what the build already measured.

Assembly goes through :func:`~.feather.assemble_scaled` (the one assembly path): the canvas is
cut into bands of rows; each band's tile pieces (data, feather weights, coverage) are read from
the work folder, padded to one bucketed shape, and accumulated in a fixed order.
"""

from __future__ import annotations

import numpy as np

from shared_runtime import aot

from .feather import assemble_scaled
from .photometry import _erode
from .quality import QUALITY_BLOCK_DEFAULT, block_medians, pool_seams, seam_fit
from .tiles import read_tile

__all__ = ["assemble_canvas", "frame_seam_metric"]


def _band_height(grid, C: int, budget: float) -> int:
    S_w = grid.tiles[0].w
    per_row = 4 * S_w * (C + 2) * 4  # up to 4 tile pieces per band, data + weight + coverage
    r = int(budget // max(1, per_row))
    r = 1 << max(4, r.bit_length() - 1)
    return int(min(r, 1 << max(4, (grid.tiles[0].h - 1).bit_length())))


def assemble_canvas(grid, work, ids, gains, offsets, C: int, *, batch_bytes: float, timer=None):
    """Feathered mosaic of the scaled tiles -> ``(mosaic [H, W, C], weight [H, W])`` float32."""
    H, W = grid.shape
    mosaic = np.empty((H, W, C), np.float32)
    weight = np.empty((H, W), np.float32)
    R = _band_height(grid, C, batch_bytes)
    S_w = grid.tiles[0].w
    tiles = [grid.tiles[i] for i in ids]
    for y0 in range(0, H, R):
        y1 = min(H, y0 + R)
        hits = [t for t in tiles if t.y0 < y1 and t.y0 + t.h > y0]
        T = max(2, 1 << (max(1, len(hits)) - 1).bit_length())
        d = np.full((T, R, S_w, C), np.nan, np.float32)
        fw = np.zeros((T, R, S_w), np.float32)
        cv = np.zeros((T, R, S_w), np.float32)
        off = np.zeros((T, 2), np.int32)
        g = np.ones((T, C), np.float32)
        o = np.zeros((T, C), np.float32)
        for k, t in enumerate(hits):
            a, b = max(y0, t.y0), min(y1, t.y0 + t.h)
            rel = (a - t.y0, 0, b - t.y0, t.w)
            d[k, :b - a, :t.w] = read_tile(work, t.index, "d", rel)
            fw[k, :b - a, :t.w] = work.get(("t", t.index), "fw", rel)
            cv[k, :b - a, :t.w] = work.get(("t", t.index), "c", rel)
            off[k] = (a - y0, t.x0)
            g[k], o[k] = gains[t.index], offsets[t.index]
        m, w = assemble_scaled(*map(aot.device_array, (d, fw, cv, off, g, o)), canvas_shape=(R, W))
        mosaic[y0:y1] = np.asarray(m)[:y1 - y0]
        weight[y0:y1] = np.asarray(w)[:y1 - y0]
    return mosaic, weight


def frame_seam_metric(mosaic, windows, work, frames_meta, *, block: int = QUALITY_BLOCK_DEFAULT, erode: int = 8,
                      min_blocks: int = 6):
    """:func:`~.quality.seam_metric` from the build's own frame windows: each frame's block
    medians were taken when it was reprojected (before its sky correction), so nothing is
    reprojected again. ``frames_meta``: ``{k: (blocks [by, bx, C], raw noise [C])}``."""
    results = []
    for k in sorted(frames_meta):
        bf, sig = frames_meta[k]
        y0, x0, h, w = windows[k]
        mk = mosaic[y0:y0 + h, x0:x0 + w]
        ok = work.get(("f", k), "w") > 0
        foot = np.asarray(_erode(aot.device_array(ok & np.all(np.isfinite(mk), -1)), erode))
        bm = block_medians(np.where(foot[..., None], mk, np.nan), block)
        results.append(seam_fit(k, bf, bm, sig, min_blocks))
    return pool_seams(results)
