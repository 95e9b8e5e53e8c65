"""Grayscale encode/decode: device search <-> host rANS container.

``encode_y``: image -> tiles -> RD search (device) -> symbols (host, one transfer) -> two rANS
streams -> v15 container. ``decode_y``: container -> symbols -> the same atoms from the same
dictionary -> window blend. The encoder's ``recon`` is computed by the decoder's own function
from the coded symbols, so ``decode_y(encode_y(x)["bitstream"]) == encode_y(x)["recon"]``
exactly on one backend.
"""

from __future__ import annotations

import functools
import struct
import time
from collections import Counter
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..bitstream import BitstreamError, rans_decode, rans_encode
from ..bitstream.rans import check_symbol_count
from ..bitstream.container import StreamHeader, TileRec, atomic_write_bytes, grid_shape, pack_stream, unpack_stream
from ..bitstream.models import MAX_ATOMS, MAX_COEF, GenLayout, SymbolModel, load_table_json
from . import generators as gens
from .config import CodecConfig
from .dictionary import get_dictionary
from .pipeline import as_gray_float
from .score import RateModel
from .search import SearchTables, make_tables, search_atoms
from .tiling import TileGridCfg, blend, extract_tiles, tile_image

__all__ = ["encode_y", "decode_y", "read_bitstream", "write_bitstream", "stream_info", "codec_tables", "symbol_model",
           "rate_model_from_symbols", "generator_layout"]


def generator_layout() -> tuple[GenLayout, ...]:
    """The generator bank as the host coder sees it (ids, names, parameter levels, seeds)."""
    return tuple(GenLayout(g.id, g.name, g.param_names, tuple(p.levels for p in g.params), g.n_seeds)
                 for g in gens.list_generators())


@functools.lru_cache(maxsize=8)
def symbol_model(table_id: str) -> SymbolModel:
    """Frequency tables of table set ``table_id`` (cached). Raises BitstreamError if unknown."""
    return SymbolModel(generator_layout(), load_table_json(table_id))


def rate_model_from_symbols(model: SymbolModel, cfg: CodecConfig) -> RateModel:
    """Bit costs for the search from the coder's own tables (``-log2 p``).

    The DC cost does not depend on the candidate (it is coded as a difference to a neighbour),
    so it enters as a constant: the table's entropy.
    """
    bank = gens.list_generators()
    G = len(bank)
    L = max(p.levels for g in bank for p in g.params)
    S = max(max(g.n_seeds for g in bank), 1)
    cnt, gen = model.bits("count"), model.bits("gen")
    gen_bits = np.concatenate([[0.0], gen[1:]])
    param_bits = np.zeros((G, gens.MAX_PARAMS, L))
    seed_bits = np.zeros((G, S))
    for g in bank:
        for i, p in enumerate(g.params):
            if p.levels > 1:
                param_bits[g.id, i, : p.levels] = model.bits(f"param:{g.id}:{i}")
        if g.n_seeds > 1:
            seed_bits[g.id, : g.n_seeds] = model.bits(f"seed:{g.id}")
    coef = model.bits("coef")[MAX_COEF - cfg.max_coef: MAX_COEF + cfg.max_coef + 1]
    dc = model.bits("dc")
    p_dc = np.exp2(-dc)
    dc_bits = np.full((cfg.dc_levels,), float(np.sum(p_dc * dc) / np.sum(p_dc)))
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return RateModel(f32(cnt), f32(gen_bits), f32(param_bits), f32(seed_bits), f32(coef), f32(dc_bits))


@functools.lru_cache(maxsize=8)
def codec_tables(cfg: CodecConfig) -> SearchTables:
    """Search tables for ``cfg`` with bit costs from its frozen rANS tables (cached per config)."""
    dic = get_dictionary(cfg.tile, cfg.overlap, cfg.gamma_seam, cfg.seam_power, cfg.seed)
    return make_tables(dic, rate_model_from_symbols(symbol_model(cfg.table_id), cfg), cfg)


def _window_param(cfg: CodecConfig):
    wp = dict(cfg.window_params)
    return wp.get("alpha", wp.get("beta"))


def _header_window_params(h: StreamHeader):
    if h.window_param is None:
        return None
    return {"alpha": h.window_param} if h.window == "tukey" else {"beta": h.window_param} if h.window == "kaiser" else None


@jax.jit
def _reconstruct(atom, coef_q, dc_q, atoms, sw, gain_step, dc_step):
    """Tiles from symbols: ``o + sum_k c_k atom_k / sw`` -> ``[N, T, T]`` (atom/coef are ``[N, K]``)."""
    n = sw.shape[0]
    T = int(round(n ** 0.5))
    step = gain_step * jnp.sqrt(jnp.asarray(n, jnp.float32))
    c = coef_q.astype(jnp.float32) * step
    r = dc_q.astype(jnp.float32)[:, None] * dc_step + jnp.einsum("nk,nkd->nd", c, atoms[atom],
                                                                 precision=jax.lax.Precision.HIGHEST) / sw
    return r.reshape(-1, T, T)


def _reconstruct_image(h: StreamHeader, count, gen, params, seed, coef, dc_q) -> np.ndarray:
    dic = get_dictionary(h.tile, h.overlap, h.gamma_seam, h.seam_power, h.seed)
    N, K = gen.shape
    live = np.arange(K)[None, :] < count[:, None]
    atom = np.where(live, dic.atom_index(np.where(live, gen, 0), np.where(live[..., None], params, 0),
                                         np.where(live, seed, 0)), 0)
    coef = np.where(live, coef, 0)
    Kp = 1 << max(0, (K - 1).bit_length())  # pad the atom axis to a power of two: few programs
    pad = ((0, 0), (0, Kp - K))
    tiles = _reconstruct(jnp.asarray(np.pad(atom, pad), jnp.int32), jnp.asarray(np.pad(coef, pad), jnp.int32),
                         jnp.asarray(dc_q, jnp.int32), dic.atoms, dic.sw, jnp.float32(h.gain_step),
                         jnp.float32(h.dc_step))
    spec = tile_image((h.H, h.W), TileGridCfg(h.tile, h.overlap))
    img = blend(tiles, spec, window=h.window, window_params=_header_window_params(h))
    return np.asarray(jax.device_get(jnp.clip(img, 0.0, 1.0)))


_EXTRA = struct.Struct("<BIBh")  # payload_fmt 1: gen_id, qv_id, seed, gain_q of every further atom


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


def _symbols_to_records(count, gen, params, seed, coef, dc_q) -> list[TileRec]:
    bank = gens.list_generators()
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


def _records_to_symbols(recs: list[TileRec]):
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
            g = gens.get_generator(int(g_id))
            gen[t, k], params[t, k], seed[t, k], coef[t, k] = g.id, _unqv(g, int(qv), t), sd, gq
    return count, gen, params, seed, coef, dc_q


def _header(cfg: CodecConfig, H: int, W: int) -> StreamHeader:
    meta = {"encoder": "pc15jax", "lambda": cfg.lambda_rd, "alpha": cfg.alpha_mix, "search": cfg.search}
    return StreamHeader(H=H, W=W, tile=cfg.tile, overlap=cfg.overlap, window=cfg.window,
                        window_param=_window_param(cfg), seed=cfg.seed, gain_step=cfg.gain_step,
                        dc_step=cfg.dc_step, gamma_seam=cfg.gamma_seam, seam_power=cfg.seam_power,
                        table_id=cfg.table_id, meta=meta)


def _pack(h: StreamHeader, model: SymbolModel, count, gen, params, seed, coef, dc_q) -> tuple[bytes, dict]:
    ny, nx = grid_shape(h.H, h.W, h.tile, h.overlap)
    a, atid, b, btid = model.split(count, gen, params, seed, coef, dc_q, ny, nx)
    A = rans_encode(a, model.tables, atid)
    B = rans_encode(b, model.tables, btid)
    bits = _class_bits(model, a, atid, b, btid)
    return pack_stream(h, len(a), A, len(b), B), bits


def _class_bits(model: SymbolModel, a, atid, b, btid) -> dict:
    """Ideal bits per symbol class (``-log2 p`` of the coded symbols)."""
    out: Counter = Counter()
    names = {i: k.split(":")[0] for k, i in model.index.items()}
    for sym, tid in ((a, atid), (b, btid)):
        for k in np.unique(tid):
            sel = tid == k
            out[names[int(k)]] += float(model.tables[int(k)].bits()[sym[sel]].sum())
    return {k: round(v, 1) for k, v in sorted(out.items())}


def write_bitstream(header: StreamHeader, records: list[TileRec], path=None) -> bytes:
    """Records + header -> v15 bytes (written atomically to ``path`` when given)."""
    model = symbol_model(header.table_id)
    data, _ = _pack(header, model, *_records_to_symbols(records))
    if path is not None:
        atomic_write_bytes(path, data)
    return data


def _parse(data: bytes):
    h, n_a, A, n_b, B = unpack_stream(data)
    model = symbol_model(h.table_id)
    ny, nx = grid_shape(h.H, h.W, h.tile, h.overlap)
    N = ny * nx
    if n_a > N * (1 + MAX_ATOMS):
        raise BitstreamError(f"stream claims {n_a} structure symbols for {N} tiles")
    a_tables = [model.index["count"], model.index["gen"]]
    check_symbol_count(len(A), [model.tables[i] for i in a_tables], n_a)
    check_symbol_count(len(B), [t for i, t in enumerate(model.tables) if i not in a_tables], n_b)
    a = rans_decode(A, model.tables, n_a, model.a_table_ids(N, n_a))
    count, gens_flat = a[:N], a[N:]
    if int(count.sum()) != n_a - N:
        raise BitstreamError("atom counts do not match the number of generator symbols")
    btid = model.b_table_ids(count, gens_flat)
    if btid.shape[0] != n_b:
        raise BitstreamError(f"stream claims {n_b} value symbols, its structure implies {btid.shape[0]}")
    b = rans_decode(B, model.tables, n_b, btid)
    gen, params, seed, coef, dc_q = model.join(count, gens_flat, b, ny, nx, gens.MAX_PARAMS)
    dc_levels = int(round(1.0 / h.dc_step)) + 1
    if dc_q.size and (dc_q.min() < 0 or dc_q.max() >= dc_levels):
        raise BitstreamError("decoded DC values out of range (corrupt stream)")
    return h, count, gen, params, seed, coef, dc_q


def read_bitstream(data_or_path) -> tuple[StreamHeader, list[TileRec]]:
    """Parse a v15 stream (bytes or a file path) -> (header, one :class:`TileRec` per tile)."""
    data = _read_bytes(data_or_path)
    h, count, gen, params, seed, coef, dc_q = _parse(data)
    return h, _symbols_to_records(count, gen, params, seed, coef, dc_q)


def _read_bytes(data_or_path) -> bytes:
    if isinstance(data_or_path, (bytes, bytearray, memoryview)):
        return bytes(data_or_path)
    if isinstance(data_or_path, (str, Path)):
        try:
            return Path(data_or_path).read_bytes()
        except OSError as e:
            raise BitstreamError(f"cannot read {data_or_path}: {e.strerror}") from None
    raise BitstreamError(f"expected bytes or a path, got {type(data_or_path).__name__}")


def encode_y(image, cfg: CodecConfig | None = None) -> dict:
    """Encode a grayscale image.

    Args:
      image: ``[H, W]`` uint8, or float in [0, 1]; any size >= 1x1.
      cfg: :class:`CodecConfig` (default ``CodecConfig()``).

    Returns:
      dict with ``bitstream`` (bytes), ``bpp`` (every byte counted), ``recon`` (float32
      ``[H, W]``, exactly what :func:`decode_y` returns) and ``stats`` (tiles, generator
      histogram, ideal bits per symbol class, ``search_s``, ``encode_s``).

    Examples:
      >>> import pc15jax as pc
      >>> from skimage import data
      >>> enc = pc.encode_y(data.camera()[:64, :64], pc.CodecConfig(tile=16, overlap=4))
      >>> img = pc.decode_y(enc["bitstream"])
      >>> bool((img == enc["recon"]).all())
      True
    """
    t0 = time.perf_counter()
    cfg = CodecConfig() if cfg is None else cfg
    if not isinstance(cfg, CodecConfig):
        raise ValueError(f"cfg must be a CodecConfig, got {type(cfg).__name__}")
    x = as_gray_float(image)
    H, W = x.shape
    h = _header(cfg, H, W)
    model = symbol_model(cfg.table_id)
    tables = codec_tables(cfg)
    spec = tile_image(x, cfg.grid)
    tiles = extract_tiles(x, spec)
    t1 = time.perf_counter()
    res = jax.block_until_ready(search_atoms(tiles, cfg, tables))
    search_s = time.perf_counter() - t1
    atom, coef_q, count, dc_q = (np.asarray(v, np.int64) for v in jax.device_get((res.atom, res.coef_q, res.count,
                                                                                     res.dc_q)))
    dic = get_dictionary(cfg.tile, cfg.overlap, cfg.gamma_seam, cfg.seam_power, cfg.seed)
    gen = dic.gen_id[atom].astype(np.int64)
    params = dic.param_idx[atom].astype(np.int64)
    seed = dic.seed_sym[atom].astype(np.int64)
    data, bits = _pack(h, model, count, gen, params, seed, coef_q, dc_q)
    recon = _reconstruct_image(h, count, gen, params, seed, coef_q, dc_q)
    live = np.arange(gen.shape[1])[None, :] < count[:, None]
    hist = Counter(gens.get_generator(int(g)).name for g in gen[live])
    hist["FLAT"] = int((count == 0).sum())
    stats = {"tiles": spec.count, "grid": [spec.ny, spec.nx], "bytes": len(data), "atoms": int(count.sum()),
             "max_atoms_used": int(count.max()) if count.size else 0,
             "generators": dict(hist.most_common()), "bits_by_class": bits, "search_s": search_s,
             "encode_s": time.perf_counter() - t0}
    return {"bitstream": data, "bpp": 8.0 * len(data) / (H * W), "recon": recon, "stats": stats}


def decode_y(bitstream, device=None) -> np.ndarray:
    """Decode a v15 grayscale stream -> float32 ``[H, W]`` in [0, 1].

    Args:
      bitstream: bytes, or a path to a ``.pc15`` file.
      device: optional ``jax.Device`` to run on (default: JAX's default device).

    Raises:
      BitstreamError: malformed, truncated or corrupt input (a ``ValueError``).
    """
    data = _read_bytes(bitstream)
    h, count, gen, params, seed, coef, dc_q = _parse(data)
    if device is None:
        return _reconstruct_image(h, count, gen, params, seed, coef, dc_q)
    with jax.default_device(device):
        return _reconstruct_image(h, count, gen, params, seed, coef, dc_q)


def stream_info(bitstream) -> dict:
    """Header fields, tile grid, generator histogram and ideal bits per symbol class of a stream."""
    data = _read_bytes(bitstream)
    h, count, gen, params, seed, coef, dc_q = _parse(data)
    model = symbol_model(h.table_id)
    ny, nx = grid_shape(h.H, h.W, h.tile, h.overlap)
    a, atid, b, btid = model.split(count, gen, params, seed, coef, dc_q, ny, nx)
    live = np.arange(gen.shape[1])[None, :] < count[:, None]
    hist = Counter(gens.get_generator(int(g)).name for g in gen[live])
    hist["FLAT"] = int((count == 0).sum())
    return {
        "version": h.version, "layout": h.layout, "width": h.W, "height": h.H, "tile": h.tile,
        "overlap": h.overlap, "window": h.window, "window_param": h.window_param, "seed": h.seed,
        "gain_step": h.gain_step, "dc_step": h.dc_step, "table_id": h.table_id, "meta": h.meta,
        "bytes": len(data), "bpp": 8.0 * len(data) / (h.H * h.W), "tiles": ny * nx, "grid": [ny, nx],
        "atoms": int(count.sum()), "generators": dict(hist.most_common()),
        "bits_by_class": _class_bits(model, a, atid, b, btid),
    }
