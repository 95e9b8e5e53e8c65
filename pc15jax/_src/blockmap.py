"""Block sizes chosen per region (the ``block_map`` coding tool), host side, no JAX.

A plane is covered by square regions of ``region`` pixels. Each region is coded by one of a few
tile *layers*: regular tile grids ``(tile, overlap)`` whose strides divide ``region``, e.g. 32, 16
and 8 pixels. A layer codes only the tiles whose core (the ``stride`` pixels a tile starts with; the
last tile of an axis: up to the border) meets a region assigned to it; its other tiles are
*implied*: no atoms, and a DC equal to its own prediction, so they cost no symbols at all.

The decoder renders every layer's coded tiles and blends all of them together, ``sum(w * tile) /
sum(w)`` over the coded tiles of every layer with their usual separable windows, so the windows of
a large tile and of its small neighbours meet across a region boundary like the tiles of one grid.
Every pixel lies in the core of a coded tile, where the window is positive, so the blend is
defined everywhere.

Tools block layout (after the loop filter's bytes, when that tool is on)::

    u8 n_layers | n_layers x (u8 tile, u8 overlap) | u16 region |
    per plane: its map in raster order, 5 regions per byte (base ``n_layers``), ``ceil(n_regions / 5)`` bytes

Data contract: maps are int ``[gy, gx]`` of layer indices, ``gy = ceil(H / region)``.
"""

from __future__ import annotations

import struct

import numpy as np

from ..bitstream import BitstreamError
from ..bitstream.models import MAX_COEF, MAX_DC, coef_context, count_contexts, dc_delta
from .tilegrid import TileGridCfg, TileSpec, cover_table, tile_image, tile_windows

__all__ = ["layer_specs", "tile_bits", "DEFAULT_LAYERS", "DEFAULT_REGION", "region_grid", "used_tiles", "tile_regions",
           "implied_dc", "blend_layers", "pack_block_map", "unpack_block_map", "check_layers", "seam_classes"]

DEFAULT_LAYERS = ((34, 2), (17, 1), (9, 1))  # kodim01/07/12 luma: 34/2 beat 36/4 (see README)
DEFAULT_REGION = 64
MAX_LAYERS = 3  # 5 map entries per byte (3 ** 5 = 243)
_HEAD = struct.Struct("<BH")


def check_layers(layers, region: int) -> tuple[tuple[int, int], ...]:
    """Validate a layer list -> tuple of ``(tile, overlap)``. Raises ValueError."""
    try:
        layers = tuple((int(t), int(o)) for t, o in layers)
    except (TypeError, ValueError):
        raise ValueError(f"block_sizes must be (tile, overlap) pairs, got {layers!r}") from None
    if not 2 <= len(layers) <= MAX_LAYERS:
        raise ValueError(f"block_sizes needs 2 to {MAX_LAYERS} layers, got {len(layers)}")
    if not isinstance(region, (int, np.integer)) or not 8 <= region <= 1024:
        raise ValueError(f"block_region must be an integer in [8, 1024], got {region!r}")
    for t, o in layers:
        if not (8 <= t <= 255 and 0 <= o < t):
            raise ValueError(f"block size ({t}, {o}) must have 8 <= tile <= 255 and 0 <= overlap < tile")
        if region % (t - o):
            raise ValueError(f"block_region {region} must be a multiple of every layer's stride, not of {t - o}")
    if len(set(layers)) != len(layers):
        raise ValueError(f"block_sizes repeats a layer: {layers}")
    return layers


def region_grid(shape, region: int) -> tuple[int, int]:
    """``(gy, gx)`` regions covering a plane of ``shape = (H, W)``."""
    return -(-int(shape[0]) // region), -(-int(shape[1]) // region)


def _core_regions(starts: np.ndarray, stride: int, L: int, region: int, n_regions: int):
    """For each tile of an axis, the first and last region its core meets -> (lo, hi) int ``[n]``."""
    s = np.asarray(starts, np.int64)
    end = np.minimum(s + stride, L)
    end[-1] = max(L, 1)  # the last tile's core reaches the border
    lo = np.minimum(s // region, n_regions - 1)
    hi = np.minimum((end - 1) // region, n_regions - 1)
    return lo, hi


def used_tiles(block_map: np.ndarray, layer: int, spec: TileSpec, shape, region: int) -> np.ndarray:
    """Tiles of ``layer`` (raster order, bool ``[N]``) whose core meets a region mapped to it."""
    gy, gx = block_map.shape
    stride = spec.size - spec.overlap
    ylo, yhi = _core_regions(spec.ys, stride, int(shape[0]), region, gy)
    xlo, xhi = _core_regions(spec.xs, stride, int(shape[1]), region, gx)
    mine = (np.asarray(block_map) == layer).astype(np.int64)
    # summed-area table: does the rectangle of regions [ylo..yhi] x [xlo..xhi] hold a mapped one?
    sat = np.zeros((gy + 1, gx + 1), np.int64)
    sat[1:, 1:] = mine.cumsum(0).cumsum(1)
    y0, y1 = ylo[:, None], yhi[:, None] + 1
    x0, x1 = xlo[None, :], xhi[None, :] + 1
    n = sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
    return (n > 0).reshape(-1)


def tile_regions(spec: TileSpec, shape, region: int) -> np.ndarray:
    """Region (raster index) holding each tile's first core pixel, int ``[N]`` (the encoder's rate
    bookkeeping)."""
    gy, gx = region_grid(shape, region)
    ry = np.minimum(np.asarray(spec.ys) // region, gy - 1)
    rx = np.minimum(np.asarray(spec.xs) // region, gx - 1)
    return (ry[:, None] * gx + rx[None, :]).reshape(-1)


def implied_dc(dc_q: np.ndarray, used: np.ndarray, ny: int, nx: int, predictor: str) -> np.ndarray:
    """DCs with every unused tile set to its own prediction (raster order, causal), so that its DC
    difference is 0 and it needs no symbol. int64 ``[N]``."""
    dc = np.asarray(dc_q, np.int64).reshape(ny, nx).copy()
    use = np.asarray(used, bool).reshape(ny, nx)
    for y, x in zip(*np.nonzero(~use)):
        if predictor == "med":
            if y and x:
                a, b, c = dc[y, x - 1], dc[y - 1, x], dc[y, x - 1] + dc[y - 1, x] - dc[y - 1, x - 1]
                p = max(min(a, b), min(max(a, b), c))
            elif x:
                p = dc[y, x - 1]
            elif y:
                p = dc[y - 1, x]
            else:
                p = MAX_DC // 2
        else:
            p = dc[y, x - 1] if x else dc[y - 1, 0] if y else MAX_DC // 2
        dc[y, x] = p
    return dc.reshape(-1)


def _layer_sums(tiles: np.ndarray, spec: TileSpec, used: np.ndarray, window: str, window_params):
    """(``sum(w * tile)``, ``sum(w)``) of the coded tiles of one layer, float32 ``[Hp, Wp]`` each."""
    T = spec.size
    wy, wx = tile_windows(spec, window, window_params)
    ty, ly, vy = cover_table(spec.ys, T, spec.Hp)
    tx, lx, vx = cover_table(spec.xs, T, spec.Wp)
    ay = np.where(vy, wy[ty, ly], 0.0).astype(np.float32)
    ax = np.where(vx, wx[tx, lx], 0.0).astype(np.float32)
    use = np.asarray(used, bool).reshape(spec.ny, spec.nx)
    flat = np.asarray(tiles, np.float32).reshape(-1)
    row_part = (ty.astype(np.int64) * spec.nx * T + ly) * T
    col_part = tx.astype(np.int64) * T * T + lx
    num = np.zeros((spec.Hp, spec.Wp), np.float32)
    den = np.zeros((spec.Hp, spec.Wp), np.float32)
    for k in range(ty.shape[1]):
        for m in range(tx.shape[1]):
            w = (ay[:, k, None] * ax[None, :, m]) * use[ty[:, k, None], tx[None, :, m]]
            num += w * flat[row_part[:, k, None] + col_part[None, :, m]]
            den += w
    return num, den


def blend_layers(layer_tiles, specs, used, shape, window: str = "hann", window_params=None) -> np.ndarray:
    """Blend the coded tiles of every layer into one float32 ``[H, W]`` plane, in layer order."""
    H, W = int(shape[0]), int(shape[1])
    num = np.zeros((H, W), np.float32)
    den = np.zeros((H, W), np.float32)
    for tiles, spec, u in zip(layer_tiles, specs, used):
        n, d = _layer_sums(tiles, spec, u, window, window_params)
        num += n[:H, :W]
        den += d[:H, :W]
    return num / den


def seam_classes(shape, layers, block_map: np.ndarray, region: int) -> np.ndarray:
    """The loop filter's three seam classes of a block-map plane -> int32 ``[H, W]``.

    Each pixel takes its class (0 at a seam centre, 1 next to it, 2 inside: see
    :func:`pixel_classes`) from the tile grid of its own region's layer, so a pixel inside a large
    tile is not classed by the finest layer's seams. Region boundaries are seams of every layer
    (the strides divide ``region``), so each region's classes meet its neighbours' there."""
    from .loopfilter import _classes  # pixel_classes, cached per plane size and grid

    H, W = int(shape[0]), int(shape[1])
    per_layer = np.stack([_classes(H, W, t, o, 3) for t, o in layers])  # [n_layers, H, W]
    ry = np.minimum(np.arange(H) // region, block_map.shape[0] - 1)
    rx = np.minimum(np.arange(W) // region, block_map.shape[1] - 1)
    layer = np.asarray(block_map, np.int64)[ry[:, None], rx[None, :]]
    return np.take_along_axis(per_layer, layer[None], axis=0)[0].astype(np.int32)


def layer_specs(layers, shape) -> list[TileSpec]:
    return [tile_image(tuple(int(v) for v in shape), TileGridCfg(t, o)) for t, o in layers]


def pack_block_map(layers, region: int, maps) -> bytes:
    """Layers, region size and every plane's map -> the tools block's bytes."""
    layers = check_layers(layers, region)
    out = bytearray(_HEAD.pack(len(layers), region))
    for t, o in layers:
        out += bytes((t, o))
    for m in maps:
        v = np.asarray(m, np.int64).reshape(-1)
        if v.size and (v.min() < 0 or v.max() >= len(layers)):
            raise ValueError("block map entries must index a layer")
        v = np.concatenate([v, np.zeros((-v.size) % 5, np.int64)]).reshape(-1, 5)
        out += (v @ (len(layers) ** np.arange(5))).astype(np.uint8).tobytes()
    return bytes(out)


def unpack_block_map(data: bytes, shapes) -> tuple[tuple[tuple[int, int], ...], int, list[np.ndarray]]:
    """The tools block's bytes -> (layers, region, one int64 ``[gy, gx]`` map per plane). Raises BitstreamError."""
    if len(data) < _HEAD.size:
        raise BitstreamError("truncated block map")
    n, region = _HEAD.unpack_from(data)
    pos = _HEAD.size
    if len(data) < pos + 2 * n:
        raise BitstreamError("truncated block map")
    layers = tuple((data[pos + 2 * i], data[pos + 2 * i + 1]) for i in range(n))
    pos += 2 * n
    try:
        layers = check_layers(layers, region)
    except ValueError as e:
        raise BitstreamError(f"invalid block map: {e}") from None
    maps = []
    for shp in shapes:
        gy, gx = region_grid(shp, region)
        nb = -(-gy * gx // 5)
        if len(data) < pos + nb:
            raise BitstreamError("truncated block map")
        b = np.frombuffer(data[pos:pos + nb], np.uint8).astype(np.int64)
        pos += nb
        if b.size and b.max() >= n ** 5:
            raise BitstreamError("invalid block map byte")
        v = (b[:, None] // (n ** np.arange(5))[None, :]) % n
        maps.append(v.reshape(-1)[: gy * gx].reshape(gy, gx))
    if pos != len(data):
        raise BitstreamError(f"{len(data) - pos} unexpected bytes after the block map")
    return layers, region, maps


def tile_bits(model, sym, ny: int, nx: int) -> np.ndarray:
    """Ideal bits (``-log2 p`` under the coder's tables and contexts) of every tile of a full grid's
    symbols ``sym`` (count, gen, params, seed, coef, dc_q), float64 ``[N]``: the encoder's rate of a
    tile when choosing the block map. Vectorised; it sums to the bits of :meth:`SymbolModel.split`'s
    symbols (``tests/test_blockmap.py``)."""
    count, gen, params, seed, coef, dc_q = (np.asarray(v, np.int64) for v in sym)
    N = count.shape[0]
    K = gen.shape[1] if gen.ndim == 2 else 0
    bits = lambda tid: model.tables[int(tid)].bits()  # noqa: E731
    ctx = count_contexts(count, ny, nx)
    per = np.zeros(N)
    for c in np.unique(ctx):
        sel = ctx == c
        per[sel] += bits(model.count_tid[c])[count[sel]]
    live = np.arange(K)[None, :] < count[:, None]
    g = np.where(live, gen, 0)
    prev = np.concatenate([np.zeros((N, 1), np.int64), g[:, :-1]], axis=1)
    for pg in np.unique(prev[live]):
        sel = live & (prev == pg)
        np.add.at(per, np.nonzero(sel)[0], bits(model.gen_tid[pg])[g[sel]])
    for k in range(K):
        sel = live[:, k]
        if sel.any():
            per[sel] += bits(model.coef_tid[coef_context(k)])[coef[sel, k] + MAX_COEF]
    for lay in model.layout:
        sel = live & (g == lay.id)
        if not sel.any():
            continue
        rows = np.nonzero(sel)[0]
        for i in lay.searched:
            np.add.at(per, rows, model.bits(f"param:{lay.id}:{i}")[params[..., i][sel]])
        if lay.n_seeds > 1:
            np.add.at(per, rows, model.bits(f"seed:{lay.id}")[seed[sel]])
    per += model.bits("dc")[dc_delta(dc_q, ny, nx, model.dc_predictor) + MAX_DC]
    return per
