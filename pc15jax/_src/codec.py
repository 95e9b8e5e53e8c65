"""The encoder: image -> RD search (device) -> symbols (host, one transfer) -> two rANS streams
per plane -> v15 container.

The decoding side lives in :mod:`.decoder` (host, no JAX) and is re-exported here. The encoder's
``recon`` is computed by the decoder's own functions from the coded symbols, so
``decode_y(encode_y(x)["bitstream"]) == encode_y(x)["recon"]`` bit for bit, on any backend.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections import Counter

import jax
import numpy as np
from shared_runtime import aot, atomic_write_bytes

from ..bitstream import rans_encode
from ..bitstream import residual as resid
from ..bitstream.container import TOOLS, StreamHeader, TileRec, grid_shape, pack_stream, plane_shapes
from ..bitstream.models import MAX_COEF, SymbolModel
from . import blockmap
from . import generators as gens
from .color import as_rgb_float, rgb_to_ycbcr, subsample_420
from .config import CodecConfig, resolve_config
from .decoder import (LayeredPlane, PlaneSymbols, _class_bits, _decoded_plane, _header_window_params, _parse,  # noqa: F401
                      _plane_filters, _read_bytes, _reconstruct_all, _reconstruct_plane, _records_to_symbols,
                      _symbols_to_records, decode, decode_native, decode_y, generator_histogram, generator_layout,
                      plane_layers, plane_seams, read_bitstream, split_plane, stream_bank, stream_info, symbol_model)
from .distortion import MAP_MSE_SHARE, pixel_distortion, region_sums
from .loopfilter import NO_FILTER, fit_loop_filter, pack_filters
from .pipeline import as_gray_float
from .residual_rd import RDOQ_DEADZONE, prune_residual
from .score import RateModel
from .search import SearchTables, dictionary_for, make_tables, search_atoms
from .tiling import extract_tiles, tile_image

__all__ = ["encode_y", "decode_y", "encode", "decode", "read_bitstream", "write_bitstream", "stream_info", "codec_tables", "symbol_model",
           "ladder_geometry",
           "rate_model_from_symbols", "generator_layout"]


@functools.lru_cache(maxsize=8)
def gen_prior(table_id: str) -> np.ndarray:
    """Natural-log probabilities ``[G]`` of the generators at a tile's first atom (the coder's own
    table): the heuristic hooks' tie-break."""
    return -np.log(2.0) * symbol_model(table_id).context_bits("gen")[0]


def rate_model_from_symbols(model: SymbolModel, cfg: CodecConfig) -> RateModel:
    """Bit costs for the search from the coder's own tables (``-log2 p``), contexts included.

    The DC cost does not depend on the candidate (it is coded as a difference to a neighbour),
    so it enters as a constant: the table's entropy.
    """
    bank = gens.list_generators(cfg.dictionary)
    G = len(bank)
    L = max(p.levels for g in bank for p in g.params)
    S = max(max(g.n_seeds for g in bank), 1)
    gen_bits = model.context_bits("gen")  # [prev gen, gen]
    gen_bits[:, 0] = 0.0  # FLAT is "no atom": it costs nothing here (the count says so)
    param_bits = np.zeros((G, gens.MAX_PARAMS, L))
    seed_bits = np.zeros((G, S))
    for g in bank:
        for i, p in enumerate(g.params):
            if p.levels > 1:
                param_bits[g.id, i, : p.levels] = model.bits(f"param:{g.id}:{i}")
        if g.n_seeds > 1:
            seed_bits[g.id, : g.n_seeds] = model.bits(f"seed:{g.id}")
    coef = model.context_bits("coef")[:, MAX_COEF - cfg.max_coef: MAX_COEF + cfg.max_coef + 1]
    dc = model.bits("dc")
    p_dc = np.exp2(-dc)
    dc_bits = np.full((cfg.dc_levels,), float(np.sum(p_dc * dc) / np.sum(p_dc)))
    f32 = lambda a: aot.device_array(a, np.float32)  # noqa: E731  (cast on the host: no device programs)
    return RateModel(f32(model.bits("count")), f32(model.context_bits("count")), f32(gen_bits), f32(param_bits),
                     f32(seed_bits), f32(coef), f32(dc_bits))


def codec_tables(cfg: CodecConfig) -> SearchTables:
    """Search tables for ``cfg`` with bit costs from its frozen rANS tables (cached on the fields
    that shape them: a lambda sweep reuses one set)."""
    return _codec_tables(cfg.tables_key())


@functools.lru_cache(maxsize=8)
def _codec_tables(cfg: CodecConfig) -> SearchTables:
    return make_tables(dictionary_for(cfg), rate_model_from_symbols(symbol_model(cfg.table_id, cfg.dictionary), cfg),
                       cfg)


def _window_param(cfg: CodecConfig):
    wp = dict(cfg.window_params)
    return wp.get("alpha", wp.get("beta"))




def _filter_geometry(cfg: CodecConfig) -> tuple[int, int]:
    """The header's (tile, overlap): the grid's, or with block sizes the finest layer's (the loop
    filter's pixel weights use it; a block-map plane's seam classes follow each region's layer)."""
    if cfg.block_sizes is None:
        return cfg.tile, cfg.overlap
    return min(cfg.block_sizes, key=lambda g: (g[0] - g[1], g[0]))


def _header(cfg: CodecConfig, H: int, W: int, layout: str = "Y", filters=None, maps=None, steps=None,
            post=None) -> StreamHeader:
    r6 = lambda v: float(f"{v:.6g}")  # noqa: E731  (the meta is informative: keep it short)
    meta = {"encoder": "pc15jax", "lambda": r6(cfg.lambda_rd), "alpha": r6(cfg.alpha_mix), "search": cfg.search}
    if cfg.ai is not None:
        meta["ai"] = cfg.ai.describe()
    if layout != "Y":
        meta["chroma_lambda"] = r6(cfg.chroma_lambda)
    lf = filters is not None and any(t.shape[0] for t in filters)  # a tools block only where a filter is signalled
    tools = (1 << TOOLS.index("loop_filter") if lf else 0) | (
        1 << TOOLS.index("large_dictionary") if cfg.dictionary == "large" else 0) | (
        1 << TOOLS.index("block_map") if maps is not None else 0) | (
        1 << TOOLS.index("adaptive_coding") if cfg.adaptive_coding else 0) | (
        1 << TOOLS.index("transform_residual") if steps is not None else 0)
    tool_data = (pack_filters(filters) if lf else b"") + (pack_filters(post) if steps is not None else b"") + (
        blockmap.pack_block_map(cfg.block_sizes, cfg.block_region, maps) if maps is not None else b"") + (
        resid.pack_steps(steps, cfg.residual_lapped) if steps is not None else b"")
    tile, overlap = _filter_geometry(cfg)
    return StreamHeader(H=H, W=W, tile=tile, overlap=overlap, window=cfg.window,
                        window_param=_window_param(cfg), seed=cfg.seed, gain_step=cfg.gain_step,
                        dc_step=cfg.dc_step, gamma_seam=cfg.gamma_seam, seam_power=cfg.seam_power,
                        table_id=cfg.table_id, layout=layout, meta=meta, tools=tools, tool_data=tool_data)


def _pack_plane(h: StreamHeader, model: SymbolModel, a, atid, b, btid, levels=None):
    """A plane's split symbols (:func:`split_plane`) and residual levels (or None) -> (payload:
    ``(n_a, A words, n_b, B words)``, with the residual tool ``(..., n_r, R words)``; ideal bits per class)."""
    ad = "adaptive_coding" in h.tool_names
    wa, bits_a = rans_encode(a, model.tables, atid, lanes=model.a_lanes, adaptive=ad, with_bits=True)
    wb, bits_b = rans_encode(b, model.tables, btid, adaptive=ad, with_bits=True)
    payload = (len(a), wa, len(b), wb)
    bits = _class_bits(model, a, atid, b, btid, adaptive=ad, bits=(bits_a, bits_b))
    if "transform_residual" in h.tool_names:
        if levels is None:
            return payload + (0, b""), bits
        s, t = resid.residual_symbols(levels)
        words, bits_r = rans_encode(s, resid.residual_tables(), t, lanes=1, adaptive=ad, with_bits=True)
        bits["residual"] = float(bits_r.sum())  # what resid.residual_bits gives
        return payload + (len(s), words), bits
    return payload, bits


def _split(h: StreamHeader, model: SymbolModel, planes: list[PlaneSymbols]) -> list[tuple]:
    return [split_plane(model, h, sym, shape) for sym, shape in zip(planes, plane_shapes(h.layout, h.H, h.W))]


def _pack(h: StreamHeader, model: SymbolModel, planes: list[PlaneSymbols], splits=None, levels=None) -> tuple[bytes, dict]:
    """-> (stream bytes, ideal bits per class). ``splits``: the planes' :func:`split_plane` symbols, if made;
    ``levels``: every plane's residual levels or None (the ``transform_residual`` tool)."""
    payloads, bits = [], Counter()
    splits = _split(h, model, planes) if splits is None else splits
    for split, lv in zip(splits, levels or [None] * len(splits)):
        pl, b = _pack_plane(h, model, *split, levels=lv)
        payloads.append(pl)
        bits.update(b)
    return pack_stream(h, payloads), {k: round(v, 1) for k, v in sorted(bits.items())}


def _pack_best(h: StreamHeader, model: SymbolModel, planes: list[PlaneSymbols], levels=None
               ) -> tuple[StreamHeader, bytes, dict]:
    """:func:`_pack`, and with the ``adaptive_coding`` tool also without it: the smaller stream
    wins (the tool is used where it pays; adaptation costs bits on short streams whose statistics
    the frozen tables already fit) -> (header, bytes, ideal bits per class)."""
    splits = _split(h, model, planes)  # the symbols do not depend on the tool: split once
    data, bits = _pack(h, model, planes, splits, levels)
    tool = 1 << TOOLS.index("adaptive_coding")
    if h.tools & tool:
        h_off = dataclasses.replace(h, tools=h.tools & ~tool)
        d_off, b_off = _pack(h_off, model, planes, splits, levels)
        if len(d_off) <= len(data):
            return h_off, d_off, b_off
    return h, data, bits


def write_bitstream(header: StreamHeader, records: list[TileRec], path=None) -> bytes:
    """Records + header -> v15 bytes of a grayscale stream (written atomically to ``path`` when given)."""
    if header.layout != "Y":
        raise ValueError("write_bitstream writes grayscale (layout 'Y') streams")
    bank = stream_bank(header)
    model = symbol_model(header.table_id, bank)
    data, _ = _pack(header, model, [PlaneSymbols(*_records_to_symbols(records, bank))])
    if path is not None:
        atomic_write_bytes(path, data)
    return data


RATE_TOLERANCE = 0.03
# Tile geometry by target rate: large tiles win at low rates, small ones reach high rates. A
# one-pixel overlap is enough for the window blend and codes far fewer redundant pixels than a
# wide one (experiments/sweep_luma on kodim01-04: 16/1 beats 16/4 by about 0.3 dB at equal rate).
RATE_LADDER = ((0.05, 32, 4), (0.09, 24, 2), (0.2, 16, 1), (0.4, 12, 1), (float("inf"), 8, 1))


def ladder_geometry(target_bpp: float) -> tuple[int, int]:
    """(tile, overlap) of the rate ladder for a target bit rate."""
    for limit, tile, overlap in RATE_LADDER:
        if target_bpp < limit:
            return tile, overlap
    raise AssertionError("unreachable")

def tile_geometry(target_bpp: float | None, tile: int | None = None, overlap: int | None = None) -> tuple[int, int]:
    """(tile, overlap) for a request that may leave either open: without ``tile`` a target rate takes
    the rate ladder's geometry (its overlap unless one is given), no target the config's defaults."""
    d = CodecConfig()
    if tile is None:
        tile, ladder_overlap = ladder_geometry(target_bpp) if target_bpp is not None else (d.tile, d.overlap)
        overlap = ladder_overlap if overlap is None else overlap
    return tile, d.overlap if overlap is None else overlap


LAMBDA_RANGE = (1e-3, 1e3)


def _encode_to_target(x: np.ndarray, cfg: CodecConfig, encode_fn) -> dict:
    """Bisection on log(lambda) until the stream is within 3 % of ``cfg.target_bpp``."""
    target = float(cfg.target_bpp)
    t0 = time.perf_counter()
    free = cfg.replace(target_bpp=None)
    tried = []

    def run(lam):
        enc = encode_fn(x, free.replace(lambda_rd=float(lam)))
        tried.append((abs(enc["bpp"] / target - 1.0), enc, lam))
        return enc

    lo, hi = np.log(LAMBDA_RANGE[0]), np.log(LAMBDA_RANGE[1])  # rate falls as lambda grows
    richest, leanest = run(np.exp(lo)), run(np.exp(hi))
    if leanest["bpp"] < target < richest["bpp"]:
        for _ in range(20):
            if min(t[0] for t in tried) <= RATE_TOLERANCE:
                break
            mid = 0.5 * (lo + hi)
            if run(np.exp(mid))["bpp"] > target:
                lo = mid
            else:
                hi = mid
    err, enc, lam = min(tried, key=lambda t: t[0])
    enc["stats"].update(target_bpp=target, lambda_rd=float(lam), rate_control_encodes=len(tried),
                        rate_error=float(enc["bpp"] / target - 1.0), encode_s=time.perf_counter() - t0)
    return enc


def encode_y(image, cfg: CodecConfig | None = None) -> dict:
    """Encode a grayscale image.

    Args:
      image: ``[H, W]`` uint8, or float in [0, 1]; any size >= 1x1.
      cfg: :class:`CodecConfig` (default ``CodecConfig()``). With ``cfg.target_bpp`` set, lambda
        is found by bisection (``stats`` then report the lambda and the rate error).

    Returns:
      dict with ``bitstream`` (bytes), ``bpp`` (every byte counted), ``recon`` (float32
      ``[H, W]``, exactly what :func:`decode_y` returns) and ``stats`` (tiles, atoms, generator
      histogram, ideal bits per symbol class, ``search_s``, ``encode_s``).

    Examples:
      >>> import pc15jax as pc
      >>> from skimage import data
      >>> enc = pc.encode_y(data.camera()[:64, :64], pc.CodecConfig(tile=16, overlap=4))
      >>> img = pc.decode_y(enc["bitstream"])
      >>> bool((img == enc["recon"]).all())
      True
    """
    cfg = resolve_config(cfg)
    x = as_gray_float(image)
    if cfg.target_bpp is not None:
        return _encode_to_target(x, cfg, _encode_gray)
    return _encode_gray(x, cfg)


def encode_y_with_hooks(image, cfg: CodecConfig | None = None, hooks=None) -> dict:
    """:func:`encode_y` with search hooks (``cfg.ai`` replaced by ``hooks``; ``None`` keeps ``cfg.ai``).

    The stream is a plain v15 stream that :func:`decode_y` reads; its header meta records the
    hooks and the sha256 of their weights.

    Examples:
      >>> import pc15jax as pc
      >>> from skimage import data
      >>> enc = pc.encode_y_with_hooks(data.camera()[:64, :64], hooks=pc.HeuristicHooks(topk=8))
      >>> pc.stream_info(enc["bitstream"])["meta"]["ai"]
      {'name': 'heuristic', 'topk': 8}
    """
    cfg = resolve_config(cfg)
    if hooks is not None:
        cfg = cfg.replace(ai=hooks)
    return encode_y(image, cfg)


def encode(image, cfg: CodecConfig | None = None) -> dict:
    """Encode an RGB image: YCbCr (BT.601 full range), chroma 4:2:0, Y then Cb then Cr.

    The chroma planes use ``lambda_rd * cfg.chroma_lambda``. A 2-D (grayscale) image is coded as
    luma only, as :func:`encode_y` does.

    Returns:
      dict like :func:`encode_y`; ``recon`` is float32 ``[H, W, 3]``, exactly what :func:`decode`
      returns.
    """
    cfg = resolve_config(cfg)
    if np.ndim(image) == 2:
        return encode_y(image, cfg)
    x = as_rgb_float(image)
    if cfg.target_bpp is not None:
        return _encode_to_target(x, cfg, _encode_rgb)
    return _encode_rgb(x, cfg)


def _search_plane(x, cfg: CodecConfig, pad_to: int = 0, keep=None) -> tuple[PlaneSymbols, float, int]:
    """RD search of one plane -> (symbols, search seconds, tiles). ``pad_to``: see :func:`search_atoms`.
    ``keep``: bool ``[N]`` or None; the other tiles are searched as their mean on the DC grid, which
    the DC alone codes exactly, so they skip the atom search (their symbols are not meant to be used)."""
    spec = tile_image(tuple(int(v) for v in x.shape), cfg.grid)
    tiles = extract_tiles(x, spec)
    if keep is not None and not np.all(keep):
        t = np.asarray(tiles)
        flat = np.round(t.mean(axis=(1, 2)) / np.float32(cfg.dc_step)) * np.float32(cfg.dc_step)
        tiles = aot.device_array(np.where(np.asarray(keep)[:, None, None], t, flat[:, None, None]), np.float32)
    t1 = time.perf_counter()
    res = jax.block_until_ready(search_atoms(tiles, cfg, codec_tables(cfg), grid=(spec.ny, spec.nx),
                                             gen_prior=gen_prior(cfg.table_id), pad_to=pad_to))
    search_s = time.perf_counter() - t1
    return plane_symbols(res, cfg), search_s, spec.count


def _search_layered(x: np.ndarray, cfg: CodecConfig, pads) -> tuple[LayeredPlane, float, list[int]]:
    """RD search of one plane with the ``block_map`` tool -> (symbols, search seconds, tiles per layer).

    Every layer searches the whole plane; each region then takes the layer whose own reconstruction
    gives it the lowest ``sum(d) + lambda * bits``: ``d`` is half the search's distortion and half
    the squared error scaled to the first layer's plane total (:data:`MAP_MSE_SHARE`), ``bits`` the
    ideal bits of the tiles that start in the region. A third layer is searched only in the regions
    where the second beat the first; its other tiles are searched as flat tiles that skip the atom
    search. The tiles no region needs become implied (:mod:`.blockmap`). ``pads[i]``: layer ``i``'s batch
    padding, as :func:`search_atoms`'s ``pad_to``.
    """
    shape = tuple(int(v) for v in x.shape)
    model = symbol_model(cfg.table_id, cfg.dictionary)
    region = cfg.block_region
    gy, gx = blockmap.region_grid(shape, region)
    specs = blockmap.layer_specs(cfg.block_sizes, shape)
    syms, J, search_s, counts, scale = [], [], 0.0, [], None
    for i, ((t, o), spec, pad) in enumerate(zip(cfg.block_sizes, specs, pads)):
        c = cfg.replace(tile=t, overlap=o, block_sizes=None)
        cand = None
        if i >= 2:  # a third layer only where the second beat the first (on kodim01/07/12 this gave
            # the same maps as searching it everywhere, and 7 % less encode time)
            cand = J[i - 1] < J[i - 2]
        keep = None if cand is None else blockmap.used_tiles(cand.reshape(gy, gx).astype(np.int64), 1, spec, shape,
                                                             region)
        sym, s_, n_ = _search_plane(x, c, pad_to=pad, keep=keep)
        search_s += s_
        counts.append(n_)
        y = _reconstruct_plane(_header(c, *shape), sym, shape)
        dmix = pixel_distortion(x, y, cfg.alpha_mix)
        e = (np.asarray(x, np.float64) - y) ** 2
        if scale is None:
            scale = dmix.sum() / max(e.sum(), 1e-12)
        rr = np.bincount(blockmap.tile_regions(spec, shape, region), blockmap.tile_bits(model, sym, spec.ny, spec.nx),
                         gy * gx)
        w = MAP_MSE_SHARE
        j = (1 - w) * region_sums(dmix, region, gy, gx) + w * scale * region_sums(e, region, gy, gx) \
            + cfg.lambda_rd * rr
        syms.append(sym)
        J.append(j if cand is None else np.where(cand, j, np.inf))
    bmap = np.argmin(np.stack(J), axis=0).reshape(gy, gx)
    layers, used = [], []
    for i, (sym, spec) in enumerate(zip(syms, specs)):
        u = blockmap.used_tiles(bmap, i, spec, shape, region)
        count = np.where(u, sym.count, 0)
        dc_q = blockmap.implied_dc(sym.dc_q, u, spec.ny, spec.nx, model.dc_predictor)
        layers.append(sym._replace(count=count, dc_q=dc_q))
        used.append(u)
    return LayeredPlane(tuple(layers), tuple(used), bmap, cfg.block_sizes, region), search_s, counts


def _code_plane(x: np.ndarray, cfg: CodecConfig, pads):
    """One plane's search, on one grid or with block sizes -> (symbols, seconds, tiles, batch sizes)."""
    if cfg.block_sizes is None:
        sym, s_, n_ = _search_plane(x, cfg, pad_to=pads[0] if pads else 0)
        return sym, s_, n_, [n_]
    sym, s_, counts = _search_layered(x, cfg, pads or [0] * len(cfg.block_sizes))
    return sym, s_, int(sum(u.sum() for u in sym.used)), counts


def plane_symbols(res, cfg: CodecConfig) -> PlaneSymbols:
    """The search's result (:class:`AtomsResult`) -> the host symbols the stream codes."""
    atom, coef_q, count, dc_q = (np.asarray(v, np.int64) for v in jax.device_get((res.atom, res.coef_q, res.count,
                                                                                     res.dc_q)))
    dic = dictionary_for(cfg)
    return PlaneSymbols(count, dic.gen_id[atom].astype(np.int64), dic.param_idx[atom].astype(np.int64),
                        dic.seed_sym[atom].astype(np.int64), coef_q, dc_q)


def _with_filters(cfg: CodecConfig, originals, planes, H: int, W: int, layout: str):
    """-> (the stream header, every plane's loop filter taps fitted to it, the planes before the filter)."""
    maps = [p.block_map for p in planes] if isinstance(planes[0], LayeredPlane) else None
    h0 = _header(cfg, H, W, layout, maps=maps)
    pre = [_reconstruct_plane(h0, sym, shp) for sym, shp in zip(planes, plane_shapes(layout, H, W))]
    if not cfg.loop_filter:
        return h0, [NO_FILTER] * len(planes), pre
    lams = [lam for lam, _ in _plane_lambdas(cfg, len(planes))]
    shapes = plane_shapes(layout, H, W)
    filters = [fit_loop_filter(x, y, h0.tile, h0.overlap, lam, cfg.alpha_mix, plane_seams(sym, shp))
               for x, y, lam, sym, shp in zip(originals, pre, lams, planes, shapes)]
    return _header(cfg, H, W, layout, filters, maps), filters, pre


def _plane_lambdas(cfg: CodecConfig, n: int) -> list[tuple[float, float]]:
    """Every plane's (search lambda, lambda): the luma's ``lambda_rd``, the chroma's times ``chroma_lambda``."""
    cs = [cfg] + [cfg.replace(lambda_rd=cfg.lambda_rd * cfg.chroma_lambda)] * (n - 1)
    return [(c.search_lambda, c.lambda_rd) for c in cs]


def _searched(cfg: CodecConfig) -> CodecConfig:
    """The config the atom search of a plane runs with (its lambda: :attr:`CodecConfig.search_lambda`)."""
    return cfg.replace(lambda_rd=cfg.search_lambda) if cfg.transform_residual else cfg


def _with_residual(cfg: CodecConfig, h: StreamHeader, originals, planes, filters, pre, maps):
    """The ``transform_residual`` tool: every plane's residual levels against its decoded plane, and
    the Wiener filter fitted after it on the residual's 8 px block grid (kept where it lowers the
    cost, as the loop filter; none without ``loop_filter``) -> (header, every plane's ``(residual
    plane, filter taps)`` or None, levels or None, step codes). A plane whose levels are all zero has no
    residual (step 0); where no plane has one, the tool is left out."""
    n = len(planes)
    shapes = plane_shapes(h.layout, h.H, h.W)
    steps, planes_r, levels = [], [], []
    for x, sym, shp, taps, y, (_, lam) in zip(originals, planes, shapes, filters, pre, _plane_lambdas(cfg, n)):
        base = _decoded_plane(h, sym, shp, taps, y)
        code = resid.step_code(cfg.residual_step * np.sqrt(lam))  # at least 1 / STEP_UNIT (lambda 0)
        lapped = cfg.residual_lapped
        c = resid.forward(np.asarray(x, np.float64) - base, lapped)
        q = resid.quantise(c, resid.step_of(code), RDOQ_DEADZONE if cfg.residual_rdoq else resid.DEADZONE)
        q = prune_residual(x, base, q, resid.step_of(code), lam, cfg.alpha_mix, cfg.adaptive_coding, lapped,
                           coefs=c if cfg.residual_rdoq else None)
        if not q.any():
            steps.append(0)
            planes_r.append(None)
            levels.append(None)
            continue
        steps.append(code)
        levels.append(q)
        r = resid.inverse(q, resid.step_of(code), shp, lapped)
        post = fit_loop_filter(x, np.clip(base + r, np.float32(0.0), np.float32(1.0)), resid.BLOCK, 0, lam,
                               cfg.alpha_mix) if cfg.loop_filter else NO_FILTER
        planes_r.append((r, post))
    if not any(steps):
        return h, None, None, []
    posts = [NO_FILTER if p is None else p[1] for p in planes_r]
    return _header(cfg, h.H, h.W, h.layout, filters, maps, steps, posts), planes_r, levels, steps


def _finish(cfg: CodecConfig, originals, planes, H: int, W: int, layout: str, search_s, tiles, t0) -> dict:
    h, filters, pre = _with_filters(cfg, originals, planes, H, W, layout)
    planes_r = levels = None
    steps = []
    if cfg.transform_residual:
        maps = [p.block_map for p in planes] if isinstance(planes[0], LayeredPlane) else None
        h, planes_r, levels, steps = _with_residual(cfg, h, originals, planes, filters, pre, maps)
    h, data, bits = _pack_best(h, symbol_model(cfg.table_id, cfg.dictionary), planes, levels)
    recon = _reconstruct_all(h, planes, filters, pre, planes_r)
    hist: Counter = Counter()
    for sym in planes:
        hist.update(generator_histogram(sym))
    grids = [s for p in planes for s in plane_layers(p)]
    ny, nx = grid_shape(h.H, h.W, h.tile, h.overlap)
    stats = {"layout": h.layout, "tiles": tiles, "grid": [ny, nx], "bytes": len(data),
             "atoms": int(sum(s.count.sum() for s in grids)),
             "max_atoms_used": int(max(s.count.max() if s.count.size else 0 for s in grids)),
             "generators": dict(hist.most_common()), "bits_by_class": bits, "tools": list(h.tool_names),
             "loop_filter_classes": [int(t.shape[0]) for t in filters], "search_s": search_s,
             "residual_steps": [resid.step_of(c) for c in steps],
             "lambda_rd": cfg.lambda_rd, "encode_s": time.perf_counter() - t0}
    if isinstance(planes[0], LayeredPlane):
        stats["block_sizes"] = [list(g) for g in cfg.block_sizes]
        stats["regions_per_layer"] = [np.bincount(p.block_map.ravel(), minlength=len(cfg.block_sizes)).tolist()
                                      for p in planes]
    return {"bitstream": data, "bpp": 8.0 * len(data) / (h.H * h.W), "recon": recon, "stats": stats}


def _encode_gray(x: np.ndarray, cfg: CodecConfig) -> dict:
    t0 = time.perf_counter()
    sym, search_s, tiles, _ = _code_plane(x, _searched(cfg), None)
    return _finish(cfg, [x], [sym], *x.shape, "Y", search_s, tiles, t0)


def _encode_rgb(rgb: np.ndarray, cfg: CodecConfig) -> dict:
    t0 = time.perf_counter()
    H, W = rgb.shape[:2]
    ycc = np.asarray(rgb_to_ycbcr(aot.device_array(rgb)))  # planes sliced on the host: no slicing programs
    planes, originals, search_s, tiles, luma_batches = [], [], 0.0, 0, None
    chroma = cfg.replace(lambda_rd=cfg.lambda_rd * cfg.chroma_lambda)
    for plane, c in ((ycc[..., 0], cfg), (subsample_420(np.ascontiguousarray(ycc[..., 1])), chroma),
                     (subsample_420(np.ascontiguousarray(ycc[..., 2])), chroma)):
        x = np.clip(np.asarray(plane), 0.0, 1.0)
        sym, s_, n_, batches = _code_plane(x, _searched(c), luma_batches)  # chroma padded to the luma's batch: one program
        luma_batches = luma_batches or batches
        planes.append(sym)
        originals.append(x)
        search_s += s_
        tiles += n_
    return _finish(cfg, originals, planes, H, W, "YCbCr420", search_s, tiles, t0)


