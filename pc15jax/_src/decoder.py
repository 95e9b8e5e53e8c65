"""The decoder: v15 bytes -> symbols -> image, on the host, with no JAX.

Stream ``A`` and ``B`` of every plane are rANS-decoded (:mod:`pc15jax.bitstream`), the symbols
index the atoms of the stream's dictionary, read from the disk cache
(:mod:`.dictcache`; built once by :mod:`.dictionary` when it is not there), and the tiles are
summed, window-blended, clipped and loop-filtered in NumPy float32 in a fixed order of operations;
with the ``transform_residual`` tool a plane's third stream adds its 8x8 DCT residual
(:mod:`pc15jax.bitstream.residual`). The encoder reconstructs through the same functions, so ``decode(encode(x)["bitstream"])`` is
``encode(x)["recon"]`` bit for bit, on any backend; only the atoms a stream uses are read.
"""

from __future__ import annotations

import functools
import struct
import sys
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..bitstream import BitstreamError, rans_decode
from ..bitstream.container import StreamHeader, TileRec, grid_shape, plane_shapes, unpack_stream
from ..bitstream.models import MAX_ATOMS, GenLayout, SymbolModel, load_table_json
from ..bitstream.rans import check_symbol_count, symbol_bits
from ..bitstream import residual as resid
from . import blockmap, dictcache
from . import genspec as gens
from .color import upsample_420, ycbcr_to_rgb
from .loopfilter import NO_FILTER, filter_plane, unpack_filters
from .tilegrid import TileGridCfg, TileSpec, cover_table, tile_image, tile_windows

__all__ = ["decode", "decode_native", "decode_y", "read_bitstream", "stream_info", "symbol_model", "generator_layout",
           "stream_bank", "render_tiles", "blend_tiles", "PlaneSymbols", "LayeredPlane"]

_EXTRA = struct.Struct("<BIBh")  # payload_fmt 1: gen_id, qv_id, seed, gain_q of every further atom


def generator_layout(bank: str = "standard") -> tuple[GenLayout, ...]:
    """The generator bank as the host coder sees it (ids, names, parameter levels, seeds)."""
    return tuple(GenLayout(g.id, g.name, g.param_names, tuple(p.levels for p in g.params), g.n_seeds)
                 for g in gens.list_generators(bank))


@functools.lru_cache(maxsize=8)
def symbol_model(table_id: str, bank: str = "standard") -> SymbolModel:
    """Frequency tables of table set ``table_id`` for the generator grids of ``bank`` (cached; the
    large bank's finer alphabets take the set's counts resampled onto them). Raises BitstreamError
    if unknown."""
    return SymbolModel(generator_layout(bank), load_table_json(table_id), resample=bank != "standard")


def stream_bank(h: StreamHeader) -> str:
    """The dictionary a stream was coded with (its ``large_dictionary`` tool bit)."""
    return "large" if "large_dictionary" in h.tool_names else "standard"


def _header_window_params(h: StreamHeader):
    if h.window_param is None:
        return None
    return {"alpha": h.window_param} if h.window == "tukey" else {"beta": h.window_param} if h.window == "kaiser" else None


class PlaneSymbols(NamedTuple):
    """Host symbols of one plane: count ``[N]``, gen/seed/coef ``[N, K]``, params ``[N, K, P]``, dc_q ``[N]``."""

    count: np.ndarray
    gen: np.ndarray
    params: np.ndarray
    seed: np.ndarray
    coef: np.ndarray
    dc_q: np.ndarray


class LayeredPlane(NamedTuple):
    """Host symbols of a plane coded with the ``block_map`` tool (:mod:`.blockmap`).

    ``layers``: one :class:`PlaneSymbols` per tile layer, over the layer's whole grid (unused tiles:
    no atoms, their implied DC); ``used``: bool ``[N_l]`` per layer; ``block_map``: int ``[gy, gx]``;
    ``geoms``: ``(tile, overlap)`` per layer; ``region``: region size in pixels.
    """

    layers: tuple
    used: tuple
    block_map: np.ndarray
    geoms: tuple
    region: int


def plane_layers(sym) -> list[PlaneSymbols]:
    """The single-grid symbol sets of a plane (one, or one per layer)."""
    return list(sym.layers) if isinstance(sym, LayeredPlane) else [sym]


def _block_tool(h: StreamHeader):
    """(loop filter taps, block map or None, every plane's residual ``(step code, taps of the filter
    after the residual, lapped)`` or None) of the tools block."""
    n = len(plane_shapes(h.layout, h.H, h.W))
    data = h.tool_data
    steps = None
    if "transform_residual" in h.tool_names:  # its parameters close the block
        steps, lapped, data = resid.unpack_steps(data, n)
    if "loop_filter" in h.tool_names:
        filters, rest = unpack_filters(data, n, rest=True)
    else:
        filters, rest = [NO_FILTER] * n, data
    if steps is not None:  # the filters after the residual follow the loop filter's
        post, rest = unpack_filters(rest, n, rest=True)
        steps = [(code, taps, lapped) for code, taps in zip(steps, post)]
    if "block_map" not in h.tool_names:
        if rest:
            raise BitstreamError(f"{len(rest)} unexpected bytes in the tools block")
        return filters, None, steps
    return filters, blockmap.unpack_block_map(rest, plane_shapes(h.layout, h.H, h.W)), steps


def split_plane(model: SymbolModel, h: StreamHeader, sym, shape):
    """A plane's symbols -> (A symbols, A table ids, B symbols, B table ids) as coded. A layered
    plane codes every layer's counts, then every layer's generators (stream A), then every layer's
    values in layer order (stream B)."""
    if not isinstance(sym, LayeredPlane):
        ny, nx = grid_shape(shape[0], shape[1], h.tile, h.overlap)
        return model.split(*sym, ny, nx)
    parts = []
    for s, u, spec in zip(sym.layers, sym.used, blockmap.layer_specs(sym.geoms, shape)):
        a, atid, b, btid = model.split(*s, spec.ny, spec.nx, used=u)
        n = int(np.sum(u))
        parts.append((a[:n], atid[:n], a[n:], atid[n:], b, btid))
    cat = lambda i: np.concatenate([p[i] for p in parts])  # noqa: E731
    return (np.concatenate([cat(0), cat(2)]), np.concatenate([cat(1), cat(3)]), cat(4), cat(5))


@functools.lru_cache(maxsize=4)
def _host_atoms(tile: int, overlap: int, gamma: float, power: float, seed: int, bank: str):
    """(atoms float32 ``[A, T*T]``, sw float32 ``[T*T]``) as numpy, read-only. In a process that has the
    dictionary module loaded (an encoder) they come from its in-memory dictionary, the very arrays
    the search used; otherwise from the disk cache when it holds them (no JAX), else built by
    :mod:`.dictionary` (which fills the cache)."""
    arrs = None
    if "pc15jax._src.dictionary" not in sys.modules:
        arrs = dictcache.load_arrays(dictcache.cache_path(tile, overlap, gamma, power, seed, bank), tile,
                                     ("atoms", "sw"))
    if arrs is None:
        from .dictionary import get_dictionary

        d = get_dictionary(tile, overlap, gamma, power, seed, bank)
        arrs = {"atoms": np.asarray(d.atoms), "sw": np.asarray(d.sw)}
    atoms, sw = (np.array(arrs[k], np.float32) for k in ("atoms", "sw"))
    atoms.setflags(write=False)
    sw.setflags(write=False)
    return atoms, sw


def render_tiles(atoms: np.ndarray, idx: np.ndarray, coef_q: np.ndarray, dc_q: np.ndarray, sw: np.ndarray,
                 gain_step: float, dc_step: float) -> np.ndarray:
    """Tiles from symbols: ``o + sum_k c_k atom_k / sw`` -> float32 ``[N, T, T]`` (host).

    ``atoms`` float32 ``[A, n]``, ``idx``/``coef_q`` int ``[N, K]`` (coefficient 0: no atom),
    ``dc_q`` int ``[N]``, ``sw`` float32 ``[n]``. The atoms are summed in their coded order, in
    float32, so every machine gets the same bits."""
    n = sw.shape[0]
    T = int(round(n ** 0.5))
    step = np.float32(gain_step) * np.sqrt(np.float32(n))
    acc = np.zeros((idx.shape[0], n), np.float32)
    for k in range(idx.shape[1]):
        live = coef_q[:, k] != 0
        if live.any():
            c = coef_q[live, k].astype(np.float32) * step
            acc[live] += c[:, None] * atoms[idx[live, k]]
    r = dc_q.astype(np.float32)[:, None] * np.float32(dc_step) + acc / sw
    return r.reshape(-1, T, T)


def blend_tiles(tiles: np.ndarray, spec: TileSpec, window: str = "hann", window_params=None) -> np.ndarray:
    """Window-blend tiles ``[N, T, T]`` into float32 ``[H, W]`` (host): each pixel sums its covering
    tiles in tile order, ``sum(w * tile) / sum(w)``."""
    T = spec.size
    wy, wx = tile_windows(spec, window, window_params)
    ty, ly, vy = cover_table(spec.ys, T, spec.Hp)
    tx, lx, vx = cover_table(spec.xs, T, spec.Wp)
    ay = np.where(vy, wy[ty, ly], 0.0).astype(np.float32)  # [Hp, Ky]
    ax = np.where(vx, wx[tx, lx], 0.0).astype(np.float32)  # [Wp, Kx]
    flat = np.asarray(tiles, np.float32).reshape(-1)
    row_part = (ty.astype(np.int64) * spec.nx * T + ly) * T  # flat index = row_part[y] + col_part[x]
    col_part = tx.astype(np.int64) * T * T + lx
    num = np.zeros((spec.Hp, spec.Wp), np.float32)
    for k in range(ty.shape[1]):
        for m in range(tx.shape[1]):
            num += (ay[:, k, None] * ax[None, :, m]) * flat[row_part[:, k, None] + col_part[None, :, m]]
    den = ay.sum(1)[:, None] * ax.sum(1)[None, :]
    return (num / den)[: spec.H, : spec.W]


def _reconstruct_plane(h: StreamHeader, sym, shape) -> np.ndarray:
    """Tiles from symbols, window-blended and clipped -> float32 ``[H, W]`` (host), before the loop
    filter. Only the atoms the plane uses are read."""
    if isinstance(sym, LayeredPlane):
        specs = blockmap.layer_specs(sym.geoms, shape)
        tiles = [_render_plane_tiles(h, s, t, o) for s, (t, o) in zip(sym.layers, sym.geoms)]
        img = blockmap.blend_layers(tiles, specs, sym.used, shape, window=h.window,
                                    window_params=_header_window_params(h))
        return np.clip(img, np.float32(0.0), np.float32(1.0))
    tiles = _render_plane_tiles(h, sym, h.tile, h.overlap)
    spec = tile_image(tuple(shape), TileGridCfg(h.tile, h.overlap))
    img = blend_tiles(tiles, spec, window=h.window, window_params=_header_window_params(h))
    return np.clip(img, np.float32(0.0), np.float32(1.0))


def _render_plane_tiles(h: StreamHeader, sym: PlaneSymbols, tile: int, overlap: int) -> np.ndarray:
    """The tiles ``[N, T, T]`` of one grid's symbols (host)."""
    bank = stream_bank(h)
    atoms, sw = _host_atoms(tile, overlap, float(np.float32(h.gamma_seam)), float(np.float32(h.seam_power)),
                            h.seed, bank)
    count, gen, params, seed, coef, dc_q = sym
    N, K = gen.shape
    live = np.arange(K)[None, :] < count[:, None]
    atom = np.where(live, dictcache.atom_index(bank, np.where(live, gen, 0), np.where(live[..., None], params, 0),
                                               np.where(live, seed, 0)), 0)
    used, idx = np.unique(atom, return_inverse=True)
    return render_tiles(atoms[used], idx.reshape(atom.shape), np.where(live, coef, 0), dc_q, sw,
                        h.gain_step, h.dc_step)


def _plane_filters(h: StreamHeader) -> list[np.ndarray]:
    """Loop filter taps of every plane (int32 ``[C, 12]``, no rows: not filtered). Raises BitstreamError."""
    return _block_tool(h)[0]


def plane_seams(sym, shape) -> np.ndarray | None:
    """The loop filter's seam classes of a block-map plane (int32 ``[H, W]``: each region's own
    layer's seams); None for one grid, whose classes follow the header's tile and overlap."""
    if not isinstance(sym, LayeredPlane):
        return None
    return blockmap.seam_classes(shape, sym.geoms, sym.block_map, sym.region)


def _decoded_plane(h: StreamHeader, sym: PlaneSymbols, shape, taps: np.ndarray, pre=None, res=None) -> np.ndarray:
    """A plane as the decoder outputs it: rendered and blended (or ``pre``, that already), filtered,
    and with its transform residual ``res = (plane float32 [h, w], taps)`` (or None) added, clipped
    and filtered again with ``taps`` on the residual's 8 px block grid."""
    y = _reconstruct_plane(h, sym, shape) if pre is None else pre
    seams = plane_seams(sym, shape) if taps.shape[0] == 3 else None
    y = filter_plane(y, taps, h.tile, h.overlap, seams)
    if res is None:
        return y
    r, post = res
    y = np.clip(y + r, np.float32(0.0), np.float32(1.0))
    return filter_plane(y, post, resid.BLOCK, 0)  # the residual's blocks: a seam every 8 px


def _reconstruct_all(h: StreamHeader, planes: list[PlaneSymbols], filters: list[np.ndarray], pre=None,
                     residuals=None) -> np.ndarray:
    """The decoder's image: ``[H, W]`` for layout Y, ``[H, W, 3]`` RGB for YCbCr420. ``filters``:
    every plane's loop filter taps (:func:`_plane_filters`); ``pre``: the planes before the loop
    filter, when the encoder has them already; ``residuals``: every plane's transform residual or None."""
    shapes = plane_shapes(h.layout, h.H, h.W)
    pre = [None] * len(planes) if pre is None else pre
    residuals = [None] * len(planes) if residuals is None else residuals
    out = [_decoded_plane(h, sym, shp, taps, y, r)
           for sym, shp, taps, y, r in zip(planes, shapes, filters, pre, residuals)]
    if h.layout == "Y":
        return out[0]
    return ycbcr_to_rgb(np.stack([out[0], upsample_420(out[1], h.H, h.W), upsample_420(out[2], h.H, h.W)], axis=-1))


def _qv(g, params_row) -> int:
    idx = [int(params_row[i]) for i, p in enumerate(g.params) if p.levels > 1]
    shape = [p.levels for p in g.params if p.levels > 1]
    return int(np.ravel_multi_index(idx, shape)) if shape else 0


def _unqv(g, qv: int, t: int) -> np.ndarray:
    searched = [i for i, p in enumerate(g.params) if p.levels > 1]
    shape = [g.params[i].levels for i in searched]
    out = np.zeros(gens.MAX_PARAMS, np.int64)
    if shape and not 0 <= qv < int(np.prod(shape)):
        raise ValueError(f"record {t}: qv_id {qv} outside the grid of {g.name}")
    for i, v in zip(searched, np.unravel_index(qv, shape) if shape else ()):
        out[i] = v
    return out


def _symbols_to_records(count, gen, params, seed, coef, dc_q, bank_name: str = "standard") -> list[TileRec]:
    bank = gens.list_generators(bank_name)
    recs = []
    for t in range(count.shape[0]):
        if count[t] == 0:
            recs.append(TileRec(t, 0, 0, 0, rec_flags=0, gain_q=0, offset_q=int(dc_q[t])))
            continue
        g = bank[int(gen[t, 0])]
        extra = b"".join(_EXTRA.pack(int(gen[t, k]), _qv(bank[int(gen[t, k])], params[t, k]), int(seed[t, k]),
                                     int(coef[t, k])) for k in range(1, int(count[t])))
        recs.append(TileRec(t, g.id, _qv(g, params[t, 0]), int(seed[t, 0]), rec_flags=1,
                            payload_fmt=1 if extra else 0, payload=extra, gain_q=int(coef[t, 0]),
                            offset_q=int(dc_q[t])))
    return recs


def _records_to_symbols(recs: list[TileRec], bank: str = "standard"):
    N = len(recs)
    atoms = []
    dc_q = np.zeros(N, np.int64)
    for t, r in enumerate(recs):
        if r.tile_id != t:
            raise ValueError(f"records must be in tile order: record {t} has tile_id {r.tile_id}")
        dc_q[t] = r.offset_q
        if r.gen_id == 0:
            atoms.append([])
            continue
        if r.payload_fmt not in (0, 1) or len(r.payload) % _EXTRA.size:
            raise ValueError(f"record {t}: unknown payload format {r.payload_fmt}")
        row = [(r.gen_id, r.qv_id, r.seed, r.gain_q)]
        row += [_EXTRA.unpack_from(r.payload, o) for o in range(0, len(r.payload), _EXTRA.size)]
        atoms.append(row)
    K = max(1, max(len(a) for a in atoms) if atoms else 1)
    count = np.asarray([len(a) for a in atoms], np.int64)
    gen = np.zeros((N, K), np.int64)
    params = np.zeros((N, K, gens.MAX_PARAMS), np.int64)
    seed = np.zeros((N, K), np.int64)
    coef = np.zeros((N, K), np.int64)
    for t, row in enumerate(atoms):
        for k, (g_id, qv, sd, gq) in enumerate(row):
            g = gens.get_generator(int(g_id), bank)
            gen[t, k], params[t, k], seed[t, k], coef[t, k] = g.id, _unqv(g, int(qv), t), sd, gq
    return count, gen, params, seed, coef, dc_q


def generator_histogram(sym) -> Counter:
    """Atoms per generator name of a plane (``FLAT``: coded tiles without atoms)."""
    hist: Counter = Counter()
    used = sym.used if isinstance(sym, LayeredPlane) else [None]
    for s, u in zip(plane_layers(sym), used):
        live = np.arange(s.gen.shape[1])[None, :] < s.count[:, None]
        hist.update(gens.get_generator(int(g)).name for g in s.gen[live])
        hist["FLAT"] += int(((s.count == 0) & (True if u is None else u)).sum())
    return hist


def _class_bits(model: SymbolModel, a, atid, b, btid, adaptive: bool = False, bits=None) -> dict:
    """Ideal bits per symbol class (``-log2 p`` of the coded symbols, under the tables that coded
    them: the frozen ones, or with ``adaptive`` the adapted ones). ``bits``: the two streams'
    per-symbol bits where already known (``rans_encode(..., with_bits=True)``)."""
    out: Counter = Counter()
    for i, (sym, tid) in enumerate(((a, atid), (b, btid))):
        bits_i = symbol_bits(sym, model.tables, tid, adaptive) if bits is None else bits[i]
        for k in np.unique(tid):
            out[model.class_of(int(k))] += float(bits_i[tid == k].sum())
    return {k: round(v, 1) for k, v in sorted(out.items())}


def _parse_plane(model: SymbolModel, h: StreamHeader, shape, n_a, A, n_b, B) -> PlaneSymbols:
    ny, nx = grid_shape(shape[0], shape[1], h.tile, h.overlap)
    N = ny * nx
    if n_a > N * (1 + MAX_ATOMS):
        raise BitstreamError(f"stream claims {n_a} structure symbols for {N} tiles")
    ad = "adaptive_coding" in h.tool_names
    check_symbol_count(len(A), model.a_tables(), n_a, ad)
    check_symbol_count(len(B), model.b_tables(), n_b, ad)
    count, gens_flat = model.decode_a(A, n_a, ny, nx, adaptive=ad)
    btid = model.b_table_ids(count, gens_flat)
    if btid.shape[0] != n_b:
        raise BitstreamError(f"stream claims {n_b} value symbols, its structure implies {btid.shape[0]}")
    b = rans_decode(B, model.tables, n_b, btid, adaptive=ad)
    gen, params, seed, coef, dc_q = model.join(count, gens_flat, b, ny, nx, gens.MAX_PARAMS)
    dc_levels = int(round(1.0 / h.dc_step)) + 1
    if dc_q.size and (dc_q.min() < 0 or dc_q.max() >= dc_levels):
        raise BitstreamError("decoded DC values out of range (corrupt stream)")
    return PlaneSymbols(count, gen, params, seed, coef, dc_q)


def _parse_layered(model: SymbolModel, h: StreamHeader, shape, geoms, region, bmap, n_a, A, n_b, B) -> LayeredPlane:
    specs = blockmap.layer_specs(geoms, shape)
    used = tuple(blockmap.used_tiles(bmap, i, spec, shape, region) for i, spec in enumerate(specs))
    N = sum(int(u.sum()) for u in used)
    if n_a > N * (1 + MAX_ATOMS):
        raise BitstreamError(f"stream claims {n_a} structure symbols for {N} tiles")
    ad = "adaptive_coding" in h.tool_names
    check_symbol_count(len(A), model.a_tables(), n_a, ad)
    check_symbol_count(len(B), model.b_tables(), n_b, ad)
    decoded = model.decode_a_layers(A, n_a, [(s.ny, s.nx, u) for s, u in zip(specs, used)], adaptive=ad)
    btids = [model.b_table_ids(c, g, n_dc=int(u.sum())) for (c, g), u in zip(decoded, used)]
    total = sum(t.shape[0] for t in btids)
    if total != n_b:
        raise BitstreamError(f"stream claims {n_b} value symbols, its structure implies {total}")
    b = rans_decode(B, model.tables, n_b, np.concatenate(btids), adaptive=ad)
    layers, pos = [], 0
    dc_levels = int(round(1.0 / h.dc_step)) + 1
    for (count, gens_flat), t, spec, u in zip(decoded, btids, specs, used):
        gen, params, seed, coef, dc_q = model.join(count, gens_flat, b[pos:pos + t.shape[0]], spec.ny, spec.nx,
                                                   gens.MAX_PARAMS, used=u)
        pos += t.shape[0]
        if dc_q.size and (dc_q.min() < 0 or dc_q.max() >= dc_levels):
            raise BitstreamError("decoded DC values out of range (corrupt stream)")
        layers.append(PlaneSymbols(count, gen, params, seed, coef, dc_q))
    return LayeredPlane(tuple(layers), used, bmap, geoms, region)


def _parse(data: bytes) -> tuple[StreamHeader, list, list[np.ndarray]]:
    """Bytes -> (header, every plane's symbols, every plane's loop filter taps), all checked before
    anything is rendered."""
    return _parse_full(data)[:3]


def _parse_full(data: bytes) -> tuple[StreamHeader, list, list[np.ndarray], list]:
    """:func:`_parse`, and every plane's transform residual as ``(levels [by, bx, 64], step, taps of
    the filter after it)`` or None."""
    h, payloads = unpack_stream(data)
    filters, block, steps = _block_tool(h)
    model = symbol_model(h.table_id, stream_bank(h))
    shapes = plane_shapes(h.layout, h.H, h.W)
    if block is None:
        planes = [_parse_plane(model, h, shape, *pl[:4]) for shape, pl in zip(shapes, payloads)]
    else:
        geoms, region, maps = block
        planes = [_parse_layered(model, h, shape, geoms, region, m, *pl[:4])
                  for shape, m, pl in zip(shapes, maps, payloads)]
    residuals = [None] * len(planes)
    if steps is not None:
        ad = "adaptive_coding" in h.tool_names
        for k, (shape, (code, post, lapped), pl) in enumerate(zip(shapes, steps, payloads)):
            n_r, R = pl[4], pl[5]
            if not code:
                if n_r or R or post.shape[0]:
                    raise BitstreamError("residual symbols or filter in a plane without a residual")
                continue
            by, bx = resid.block_grid(shape)
            if n_r > by * bx * (1 + 4 * resid.N_COEF):
                raise BitstreamError(f"stream claims {n_r} residual symbols for {by * bx} blocks")
            check_symbol_count(len(R), resid.residual_tables(), n_r, ad)
            residuals[k] = (resid.decode_residual(R, n_r, shape, ad), resid.step_of(code), post, lapped)
    return h, planes, filters, residuals


def _residual_planes(h: StreamHeader, residuals) -> list:
    """:func:`_parse_full`'s residuals -> every plane's ``(residual plane float32, taps)`` or None."""
    return [None if r is None else (resid.inverse(r[0], r[1], shp, r[3]), r[2])
            for r, shp in zip(residuals, plane_shapes(h.layout, h.H, h.W))]


def read_bitstream(data_or_path) -> tuple[StreamHeader, list[TileRec]]:
    """Parse a v15 stream (bytes or a file path) -> (header, one :class:`TileRec` per tile)."""
    data = _read_bytes(data_or_path)
    h, planes, _ = _parse(data)
    if h.layout != "Y":
        raise BitstreamError("read_bitstream reads grayscale streams; a colour stream holds three planes "
                             "(use pc.decode, pc.decode_y for its luma, or the CLI's info)")
    if isinstance(planes[0], LayeredPlane):
        raise BitstreamError("read_bitstream reads single-grid streams; this one codes its block sizes per "
                             "region (the block_map tool): use pc.decode_y, or the CLI's info")
    return h, _symbols_to_records(*planes[0], stream_bank(h))


def _read_bytes(data_or_path) -> bytes:
    if isinstance(data_or_path, (bytes, bytearray, memoryview)):
        return bytes(data_or_path)
    if isinstance(data_or_path, (str, Path)):
        try:
            return Path(data_or_path).read_bytes()
        except OSError as e:
            raise BitstreamError(f"cannot read {data_or_path}: {e.strerror}") from None
    raise BitstreamError(f"expected bytes or a path, got {type(data_or_path).__name__}")


def decode(bitstream, device=None) -> np.ndarray:
    """Decode a v15 stream -> float32 ``[H, W, 3]`` RGB in [0, 1] (a grayscale stream gives equal channels).

    Decoding runs on the host (NumPy), the same on every machine; ``device`` is accepted for
    compatibility and not used.

    Raises:
      BitstreamError: malformed, truncated or corrupt input (a ``ValueError``).
    """
    img = decode_native(bitstream, device)
    return np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img


def decode_native(bitstream, device=None) -> np.ndarray:
    """Decode a v15 stream to its own layout: float32 ``[H, W]`` (grayscale) or ``[H, W, 3]`` RGB."""
    h, planes, filters, residuals = _parse_full(_read_bytes(bitstream))
    return _reconstruct_all(h, planes, filters, residuals=_residual_planes(h, residuals))


def decode_y(bitstream, device=None) -> np.ndarray:
    """Decode a v15 stream -> float32 ``[H, W]`` in [0, 1] (the luma plane of a colour stream).

    Args:
      bitstream: bytes, or a path to a ``.pc15`` file.
      device: accepted for compatibility, not used (decoding runs on the host).

    Raises:
      BitstreamError: malformed, truncated or corrupt input (a ``ValueError``).
    """
    h, planes, filters, residuals = _parse_full(_read_bytes(bitstream))
    return _decoded_plane(h, planes[0], (h.H, h.W), filters[0], res=_residual_planes(h, residuals[:1])[0])


def stream_info(bitstream) -> dict:
    """Header fields, tile grids, generator histogram and ideal bits per symbol class of a stream."""
    data = _read_bytes(bitstream)
    h, planes, filters, residuals = _parse_full(data)
    model = symbol_model(h.table_id, stream_bank(h))
    hist: Counter = Counter()
    bits: Counter = Counter()
    per_plane = []
    ad = "adaptive_coding" in h.tool_names
    for name, sym, shape, res in zip(("Y", "Cb", "Cr"), planes, plane_shapes(h.layout, h.H, h.W), residuals):
        a, atid, b, btid = split_plane(model, h, sym, shape)
        bits.update(_class_bits(model, a, atid, b, btid, adaptive=ad))
        if res is not None:
            bits["residual"] += resid.residual_bits(res[0], ad)
        hist.update(generator_histogram(sym))
        row = {"plane": name, "shape": list(shape), "atoms": int(sum(s.count.sum() for s in plane_layers(sym)))}
        if isinstance(sym, LayeredPlane):
            specs = blockmap.layer_specs(sym.geoms, shape)
            row["tiles"] = int(sum(u.sum() for u in sym.used))
            row["grid"] = [[s.ny, s.nx] for s in specs]
            row["block_sizes"] = [list(g) for g in sym.geoms]
            row["block_region"] = sym.region
            row["regions_per_layer"] = np.bincount(sym.block_map.ravel(), minlength=len(sym.geoms)).tolist()
        else:
            ny, nx = grid_shape(shape[0], shape[1], h.tile, h.overlap)
            row["tiles"], row["grid"] = ny * nx, [ny, nx]
        per_plane.append(row)
    return {
        "version": h.version, "layout": h.layout, "width": h.W, "height": h.H, "tile": h.tile,
        "overlap": h.overlap, "window": h.window, "window_param": h.window_param, "seed": h.seed,
        "gain_step": h.gain_step, "dc_step": h.dc_step, "table_id": h.table_id, "meta": h.meta,
        "tools": list(h.tool_names), "loop_filter_classes": [int(t.shape[0]) for t in filters],
        "residual_steps": [0.0 if r is None else r[1] for r in residuals] if "transform_residual" in h.tool_names
        else [],
        "residual_lapped": any(r is not None and r[3] for r in residuals),
        "bytes": len(data), "bpp": 8.0 * len(data) / (h.H * h.W),
        "tiles": int(sum(p["tiles"] for p in per_plane)), "grid": per_plane[0]["grid"],
        "planes": per_plane, "atoms": int(sum(p["atoms"] for p in per_plane)),
        "generators": dict(hist.most_common()), "bits_by_class": {k: round(v, 1) for k, v in sorted(bits.items())},
    }
