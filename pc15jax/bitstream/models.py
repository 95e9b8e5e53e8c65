"""Symbol classes of a PC15 stream, their contexts and their frequency tables (numpy + stdlib only).

Per tile, in raster order, a stream carries:

* ``count``: number of atoms (0 = DC only), alphabet ``MAX_ATOMS + 1``;
* per atom: ``gen`` (generator id), one ``param`` index per searched parameter of that generator
  (table per generator and parameter), ``seed`` (table per seeded generator), ``coef`` (signed
  quantised amplitude in ``[-MAX_COEF, MAX_COEF]``);
* ``dc``: quantised tile offset, coded as the difference to its prediction, in
  ``[-MAX_DC, MAX_DC]``. The table set names the predictor (``"dc_predictor"``): ``"left"`` (the
  left neighbour, the upper one in the first column) or ``"med"`` (the median edge detector of
  LOCO-I / JPEG-LS: ``median(left, up, left + up - upper-left)``, falling back to the one
  neighbour there is on the borders); mid-grey for the first tile.

The symbols travel in two rANS streams: **A** holds every ``count`` then every ``gen``, **B**
everything else. Once A is decoded, the table of every symbol of B is known.

**Contexts.** A table set may condition three classes on what the decoder already knows:

* ``count`` on the atom counts of the left and upper tiles (:func:`count_contexts`, 49 contexts);
* ``gen`` on the previous atom's generator in the same tile (0 for the first atom);
* ``coef`` on the atom's position in its tile (1st, 2nd, 3rd, 4th and later).

A table set without context tables (``pc15-v1``) uses its one table per class for every context,
so its streams are coded exactly as before. With contexts, stream A is coded in one rANS lane
and decoded one symbol at a time (each count's context is two counts decoded before it).

With the header's ``adaptive_coding`` tool, both streams are one rANS lane whose tables start
frozen and adapt to the symbols already coded (:class:`~.rans.AdaptiveTables`, the same on both
sides), so each context's table follows the image.

Tables are frozen JSON files of counts, named by an id recorded in the stream: the package's own
(``pc15jax/bitstream/tables/<id>.json``) or ``$PC15_MODELS_DIR/rans/<id>.json``, which takes
precedence. Counts are turned into rANS tables by :func:`~.rans.build_rans_tables`, so the same
file always gives the same tables.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import BitstreamError
from .rans import AdaptiveTables, RansDecoder, RansTable, build_rans_tables, rans_decode

__all__ = ["GenLayout", "SymbolModel", "load_table_json", "DEFAULT_TABLE_ID", "MAX_ATOMS", "MAX_COEF", "MAX_DC",
           "PRECISION", "tables_dir", "count_contexts", "coef_context", "N_COUNT_CTX", "N_COEF_CTX"]

MAX_ATOMS = 16
MAX_COEF = 1023
MAX_DC = 256
PRECISION = 15
DEFAULT_TABLE_ID = "pc15-v2"
# Count contexts: the left and upper tiles' counts, each in one of 6 buckets or "no such tile".
COUNT_BUCKET = np.asarray([0, 1, 2, 3, 3, 4, 4, 4, 4] + [5] * (MAX_ATOMS - 8), np.int64)
NO_TILE = 6
N_COUNT_CTX = 7 * 7
N_COEF_CTX = 4
_CONTEXT_KEYS = ("count_ctx", "gen_ctx", "coef_ctx")
DC_PREDICTORS = ("left", "med")


def count_contexts(count, ny: int, nx: int) -> np.ndarray:
    """Context of every tile's count symbol from its left and upper neighbours' counts.

    Args:
      count: int ``[ny * nx]`` atom counts in raster order.

    Returns:
      int64 ``[ny * nx]`` in ``[0, N_COUNT_CTX)``: ``7 * bucket(left) + bucket(up)``.
    """
    c = np.asarray(count, np.int64).reshape(ny, nx)
    b = COUNT_BUCKET[np.clip(c, 0, MAX_ATOMS)]
    left = np.full((ny, nx), NO_TILE, np.int64)
    up = np.full((ny, nx), NO_TILE, np.int64)
    left[:, 1:] = b[:, :-1]
    up[1:, :] = b[:-1, :]
    return (7 * left + up).reshape(-1)


def coef_context(k: int) -> int:
    """Context of the amplitude of a tile's ``k``-th atom (0-based)."""
    return min(int(k), N_COEF_CTX - 1)
_ID_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


@dataclasses.dataclass(frozen=True)
class GenLayout:
    """What the coder needs to know of a generator: its id, name, parameter levels and seeds."""

    id: int
    name: str
    param_names: tuple[str, ...]
    levels: tuple[int, ...]
    n_seeds: int

    @functools.cached_property
    def searched(self) -> tuple[int, ...]:
        """Positions of the parameters that are coded (more than one level; computed once)."""
        return tuple(i for i, n in enumerate(self.levels) if n > 1)


def tables_dir() -> Path:
    return Path(__file__).resolve().parent / "tables"


def _check_id(table_id: str) -> None:
    if not table_id or len(table_id) > 64 or not set(table_id) <= _ID_OK:
        raise BitstreamError(f"invalid table id {table_id!r}")


def load_table_json(table_id: str) -> dict:
    """Counts of table set ``table_id``: ``$PC15_MODELS_DIR/rans/<id>.json`` first, then the package's.

    Raises:
      BitstreamError: unknown id or unreadable file.
    """
    _check_id(table_id)
    candidates = []
    if os.environ.get("PC15_MODELS_DIR"):
        candidates.append(Path(os.environ["PC15_MODELS_DIR"]) / "rans" / f"{table_id}.json")
    candidates.append(tables_dir() / f"{table_id}.json")
    for p in candidates:
        if p.is_file():
            try:
                data = json.loads(p.read_text())
            except (OSError, ValueError) as e:
                raise BitstreamError(f"cannot read rANS tables {p}: {e}") from None
            if not isinstance(data, dict) or data.get("id") != table_id:
                raise BitstreamError(f"rANS table file {p} does not describe table id {table_id!r}")
            return data
    raise BitstreamError(f"unknown rANS table id {table_id!r} (looked in {', '.join(map(str, candidates))})")


def _counts(d: dict, key: str, n: int, resample: bool = False) -> np.ndarray:
    """Counts of length ``n`` from ``d[key]`` (missing -> uniform; wrong length -> error, or with
    ``resample`` the counts linearly resampled onto ``n`` levels: a ``2L - 1`` grid over the same
    range takes the coarse grid's counts at its shared levels and their means between; other
    lengths, periodic ``2L`` grids and seed counts included, an interpolation of them, the same
    on both sides of the coder)."""
    v = d.get(key)
    if v is None:
        return np.ones(n)
    a = np.asarray(v, np.float64)
    if resample and a.ndim == 1 and len(a) > 1 and len(a) != n and np.all(np.isfinite(a)) and np.all(a >= 0):
        a = np.interp(np.linspace(0.0, len(a) - 1.0, n), np.arange(len(a), dtype=np.float64), a)
    if a.shape != (n,) or not np.all(np.isfinite(a)) or np.any(a < 0):
        raise BitstreamError(f"rANS table entry {key!r} must hold {n} non-negative counts")
    return a


class SymbolModel:
    """Frequency tables of every symbol class, for one generator layout and one table set.

    Args:
      layout: the generator bank as :class:`GenLayout` s (index = generator id).
      table: the JSON dict of counts (see :func:`load_table_json`); ``{"id": ...}`` alone gives
        uniform tables.
      resample: take parameter and seed counts of another length resampled onto the layout's
        levels (the large dictionary's finer grids under a table set fitted on the standard one).
    """

    def __init__(self, layout: Sequence[GenLayout], table: dict, resample: bool = False):
        self.layout = tuple(layout)
        self.table_id = str(table.get("id", ""))
        self.sha256 = hashlib.sha256(json.dumps(table, sort_keys=True).encode()).hexdigest()
        G = len(self.layout)
        self.tables: list[RansTable] = []
        self.index: dict[str, int] = {}

        def add(key, counts):
            self.index[key] = len(self.tables)
            self.tables.append(build_rans_tables(counts, PRECISION))

        add("count", _counts(table, "count", MAX_ATOMS + 1))
        add("gen", _counts(table, "gen", G))
        add("coef", _counts(table, "coef", 2 * MAX_COEF + 1))
        add("dc", _counts(table, "dc", 2 * MAX_DC + 1))
        params, seeds = table.get("param", {}), table.get("seed", {})
        for g in self.layout:
            for i in g.searched:
                add(f"param:{g.id}:{i}", _counts(params, f"{g.name}.{g.param_names[i]}", g.levels[i], resample))
            if g.n_seeds > 1:
                add(f"seed:{g.id}", _counts(seeds, g.name, g.n_seeds, resample))
        present = [k in table for k in _CONTEXT_KEYS]
        if any(present) and not all(present):
            raise BitstreamError(f"rANS table set {self.table_id!r} must give all of {_CONTEXT_KEYS} or none")
        self.contexts = all(present)
        self.dc_predictor = table.get("dc_predictor", "left")
        if self.dc_predictor not in DC_PREDICTORS:
            raise BitstreamError(f"unknown DC predictor {self.dc_predictor!r} (expected one of {DC_PREDICTORS})")
        # Context -> table index (without context tables every context uses the class's one table).
        self.count_tid = self._context_rows(table, "count_ctx", "count", N_COUNT_CTX, MAX_ATOMS + 1, add)
        self.gen_tid = self._context_rows(table, "gen_ctx", "gen", G, G, add)
        self.coef_tid = self._context_rows(table, "coef_ctx", "coef", N_COEF_CTX, 2 * MAX_COEF + 1, add)
        self._class = {i: k.split(":")[0] for k, i in self.index.items()}

    def _context_rows(self, table, key, base, n_ctx, n_sym, add) -> np.ndarray:
        if not self.contexts:
            return np.full(n_ctx, self.index[base], np.int64)
        rows = table[key]
        if not isinstance(rows, list) or len(rows) != n_ctx:
            raise BitstreamError(f"rANS table entry {key!r} must hold {n_ctx} rows")
        for c, row in enumerate(rows):
            add(f"{base}:{c}", _counts({key: row}, key, n_sym))
        return np.asarray([self.index[f"{base}:{c}"] for c in range(n_ctx)], np.int64)

    @property
    def a_lanes(self) -> int | None:
        """rANS lanes of stream A: one with contexts (decoded symbol by symbol), else the default."""
        return 1 if self.contexts else None

    def bits(self, key: str) -> np.ndarray:
        """Cost in bits of every symbol of class ``key`` (``"gen"``, ``"param:G:P"``, ...)."""
        return self.tables[self.index[key]].bits()

    def context_bits(self, which: str) -> np.ndarray:
        """Bits of every symbol in every context of ``"count"``, ``"gen"`` or ``"coef"`` -> ``[n_ctx, n_sym]``."""
        tid = {"count": self.count_tid, "gen": self.gen_tid, "coef": self.coef_tid}[which]
        return np.stack([self.tables[int(i)].bits() for i in tid])

    def class_of(self, table_index: int) -> str:
        """Symbol class (``"count"``, ``"gen"``, ``"param"``, ...) of a table."""
        return self._class[int(table_index)]

    # ------------------------------------------------------------------------------ streams

    def split(self, count, gen, params, seed, coef, dc_q, ny: int, nx: int, used=None):
        """Per-tile symbols -> (A symbols, A table ids, B symbols, B table ids).

        Args:
          count: int ``[N]`` atoms per tile. gen: int ``[N, K]``, params: int ``[N, K, P]``,
          seed: int ``[N, K]``, coef: int ``[N, K]`` (entries beyond ``count`` ignored).
          dc_q: int ``[N]`` quantised offsets in ``[0, 2 * MAX_DC]``. ny, nx: tile grid.
          used: bool ``[N]`` or None (every tile). An unused tile must have no atoms and the DC
            its prediction gives (:func:`pc15jax._src.blockmap.implied_dc`); it codes no symbol.
        """
        count = np.asarray(count, np.int64)
        N = count.shape[0]
        if np.any((count < 0) | (count > MAX_ATOMS)):
            raise ValueError(f"atom counts must lie in [0, {MAX_ATOMS}]")
        use = np.ones(N, bool) if used is None else np.asarray(used, bool)
        if np.any(count[~use]):
            raise ValueError("an unused tile cannot hold atoms")
        gen, params, seed = np.asarray(gen, np.int64), np.asarray(params, np.int64), np.asarray(seed, np.int64)
        coef = np.asarray(coef, np.int64)
        if N and count.max() > gen.shape[1]:
            raise ValueError(f"atom counts up to {int(count.max())} for {gen.shape[1]} atom slots")
        # The live atoms, tile by tile and in order within a tile (what the stream holds).
        tt, kk = np.nonzero(np.arange(gen.shape[1])[None, :] < count[:, None])
        gi = gen[tt, kk]
        ids = self._gen_ids[gi]
        prev = np.where(kk > 0, np.concatenate([[0], ids[:-1]]), 0)  # the tile's previous atom (0: none)
        c = coef[tt, kk]
        bad = np.flatnonzero(np.abs(c) > MAX_COEF)
        if bad.size:
            raise ValueError(f"amplitude index {int(c[bad[0]])} outside [-{MAX_COEF}, {MAX_COEF}]")
        # B symbols of every atom from its generator's template: the searched parameters, the
        # seed (if it has several), the amplitude; row by row, so in stream order.
        src, idx, tid = (v[gi] for v in self._b_template)
        val = np.where(src == 0, params[tt[:, None], kk[:, None], np.maximum(idx, 0)],
                       np.where(src == 1, seed[tt, kk][:, None], c[:, None] + MAX_COEF))
        tid = np.where(src == 2, self.coef_tid[np.minimum(kk, N_COEF_CTX - 1)][:, None], tid)
        live = src >= 0
        delta = dc_delta(np.asarray(dc_q, np.int64), ny, nx, self.dc_predictor)
        if np.any(delta[~use]):
            raise ValueError("an unused tile's DC must equal its prediction")
        n_dc = int(use.sum())
        count_tid = self.count_tid[count_contexts(count, ny, nx)][use]
        return (np.concatenate([count[use], ids]), np.concatenate([count_tid, self.gen_tid[prev]]).astype(np.int64),
                np.concatenate([val[live], delta[use] + MAX_DC]),
                np.concatenate([tid[live], np.full(n_dc, self.index["dc"], np.int64)]))

    @functools.cached_property
    def _gen_ids(self) -> np.ndarray:
        return np.asarray([g.id for g in self.layout], np.int64)

    @functools.cached_property
    def _b_template(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per generator (layout index) its B symbols' (source, parameter position, table), int64
        ``[G, M]`` each: source 0 a parameter, 1 the seed, 2 the amplitude (its table is the
        atom's amplitude context's), -1 none."""
        rows = [[(0, i, self.index[f"param:{g.id}:{i}"]) for i in g.searched]
                + ([(1, -1, self.index[f"seed:{g.id}"])] if g.n_seeds > 1 else []) + [(2, -1, -1)] for g in self.layout]
        M = max(len(r) for r in rows)
        out = np.full((3, len(rows), M), -1, np.int64)
        for gi, r in enumerate(rows):
            out[:, gi, :len(r)] = np.asarray(r, np.int64).T
        return out[0], out[1], out[2]

    def a_tables(self) -> list[RansTable]:
        """Every table stream A may use."""
        return [self.tables[int(i)] for i in np.unique(np.concatenate([self.count_tid, self.gen_tid]))]

    def b_tables(self) -> list[RansTable]:
        """Every table stream B may use."""
        a = set(np.concatenate([self.count_tid, self.gen_tid]).tolist())
        return [t for i, t in enumerate(self.tables) if i not in a]

    def decode_a(self, data: bytes, n_a: int, ny: int, nx: int, used=None,
                 adaptive: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Stream A -> (counts ``[N]``, generator ids of every atom in tile order). ``used``: bool
        ``[N]`` or None, as in :meth:`split` (unused tiles have no symbol and no atoms).
        ``adaptive``: the stream was coded with backward-adaptive tables (the ``adaptive_coding``
        tool: one lane, :class:`~.rans.AdaptiveTables`).

        Raises:
          BitstreamError: corrupt data, or counts that disagree with ``n_a``.
        """
        return self.decode_a_layers(data, n_a, [(ny, nx, used)], adaptive)[0]

    def decode_a_layers(self, data: bytes, n_a: int, grids, adaptive: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
        """Stream A of several tile grids ``[(ny, nx, used), ...]`` coded one after the other: every
        grid's counts first, then every grid's generator ids (:func:`join_a`) -> per grid (counts,
        generator ids)."""
        uses = [[True] * (ny * nx) if u is None else np.asarray(u, bool).tolist() for ny, nx, u in grids]
        n_coded = sum(sum(u) for u in uses)
        if n_a < n_coded:
            raise BitstreamError(f"stream claims {n_a} structure symbols for {n_coded} tiles")
        if not self.contexts:
            tid = np.full(n_a, self.gen_tid[0], np.int64)
            tid[:n_coded] = self.count_tid[0]
            a = rans_decode(data, self.tables, n_a, tid, lanes=self.a_lanes, adaptive=adaptive)
            counts, pos = [], 0
            for u in uses:
                c = np.zeros(len(u), np.int64)
                k = sum(u)
                c[np.asarray(u, bool)] = a[pos:pos + k]
                counts.append(c)
                pos += k
            total = sum(int(c.sum()) for c in counts)
            if total != n_a - n_coded:
                raise BitstreamError("atom counts do not match the number of generator symbols")
            out, pos = [], n_coded
            for c in counts:
                n = int(c.sum())
                out.append((c, a[pos:pos + n]))
                pos += n
            return out
        dec = RansDecoder(data, PRECISION)
        if adaptive:
            ad = AdaptiveTables(self.tables)
            lists, update = ad.lists, ad.update
        else:
            tables = self.tables
            lists, update = (lambda k: tables[k].lists), None  # cached on each table
        step = dec.decode_lists
        ctid = self.count_tid.tolist()
        gtid = self.gen_tid.tolist()
        bucket = COUNT_BUCKET.tolist()
        counts = []
        for (ny, nx, _), use in zip(grids, uses):
            count = [0] * (ny * nx)
            for t in range(ny * nx):
                if not use[t]:
                    continue
                x = t % nx
                left = bucket[count[t - 1]] if x else NO_TILE
                up = bucket[count[t - nx]] if t >= nx else NO_TILE
                k = ctid[7 * left + up]
                count[t] = v = step(*lists(k))
                if update:
                    update(k, v)
            counts.append(count)
        if sum(sum(c) for c in counts) != n_a - n_coded:
            raise BitstreamError("atom counts do not match the number of generator symbols")
        out = []
        for count in counts:
            gens = []
            for n in count:
                prev = 0
                for _ in range(n):
                    k = gtid[prev]
                    prev = step(*lists(k))
                    if update:
                        update(k, prev)
                    if prev == 0:
                        raise BitstreamError("invalid generator id 0 in stream")
                    gens.append(prev)
            out.append((np.asarray(count, np.int64), np.asarray(gens, np.int64)))
        dec.finish()
        return out

    def b_table_ids(self, count: np.ndarray, gens: np.ndarray, n_dc: int | None = None) -> np.ndarray:
        """Table of every B symbol, given the decoded counts and generator ids (flat, tile order);
        ``n_dc``: the number of coded DCs (default: every tile's)."""
        tid = []
        gl = gens.tolist()
        pos = 0
        per_gen = [[self.index[f"param:{g.id}:{i}"] for i in g.searched]
                   + ([self.index[f"seed:{g.id}"]] if g.n_seeds > 1 else []) for g in self.layout]
        coef_tids = [int(self.coef_tid[coef_context(k)]) for k in range(max(count.tolist(), default=0))]
        G = len(self.layout)
        for n in count.tolist():
            for k in range(n):
                g_id = gl[pos]
                pos += 1
                if not 0 < g_id < G:
                    raise BitstreamError(f"invalid generator id {g_id} in stream")
                tid.extend(per_gen[g_id])
                tid.append(coef_tids[k])
        if pos != len(gl):
            raise BitstreamError("atom counts do not match the number of generator symbols")
        tid.extend([self.index["dc"]] * (int(count.shape[0]) if n_dc is None else int(n_dc)))
        return np.asarray(tid, np.int64)

    def join(self, count, gens, b_sym, ny: int, nx: int, P: int, used=None):
        """Inverse of :meth:`split` -> (gen ``[N, K]``, params ``[N, K, P]``, seed, coef ``[N, K]``, dc_q ``[N]``)."""
        N = count.shape[0]
        K = max(1, int(count.max()) if N else 1)
        gen = np.zeros((N, K), np.int64)
        params = np.zeros((N, K, P), np.int64)
        seed = np.zeros((N, K), np.int64)
        coef = np.zeros((N, K), np.int64)
        pos, gi = 0, 0
        b = b_sym.tolist()
        for t in range(N):
            for k in range(int(count[t])):
                g = self.layout[int(gens[gi])]
                gi += 1
                gen[t, k] = g.id
                for i in g.searched:
                    params[t, k, i] = b[pos]
                    pos += 1
                if g.n_seeds > 1:
                    seed[t, k] = b[pos]
                    pos += 1
                coef[t, k] = b[pos] - MAX_COEF
                pos += 1
        if used is None:
            delta = np.asarray(b[pos:pos + N], np.int64) - MAX_DC
        else:
            delta = np.zeros(N, np.int64)
            use = np.asarray(used, bool)
            delta[use] = np.asarray(b[pos:pos + int(use.sum())], np.int64) - MAX_DC
        dc_q = dc_undelta(delta, ny, nx, self.dc_predictor)
        return gen, params, seed, coef, dc_q


def dc_prediction_order(ny: int, nx: int):
    """For each tile (raster order) the tile whose DC predicts it (-1: mid-grey), predictor ``"left"``."""
    idx = np.arange(ny * nx).reshape(ny, nx)
    pred = np.full((ny, nx), -1, np.int64)
    pred[:, 1:] = idx[:, :-1]
    pred[1:, 0] = idx[:-1, 0]
    return pred.reshape(-1)


def _med_prediction(dc: np.ndarray) -> np.ndarray:
    """MED prediction of every DC of a ``[ny, nx]`` grid from its (causal) neighbours."""
    ny, nx = dc.shape
    pred = np.full((ny, nx), MAX_DC // 2, np.int64)
    pred[0, 1:] = dc[0, :-1]
    pred[1:, 0] = dc[:-1, 0]
    if ny > 1 and nx > 1:
        left, up, ul = dc[1:, :-1], dc[:-1, 1:], dc[:-1, :-1]
        pred[1:, 1:] = np.median(np.stack([left, up, left + up - ul]), axis=0).astype(np.int64)
    return pred


def dc_delta(dc_q: np.ndarray, ny: int, nx: int, predictor: str = "left") -> np.ndarray:
    """DC symbols -> differences to their predictions (raster order)."""
    dc_q = np.asarray(dc_q, np.int64)
    if predictor == "med":
        d = dc_q - _med_prediction(dc_q.reshape(ny, nx)).reshape(-1)
    else:
        pred = dc_prediction_order(ny, nx)
        d = dc_q - np.where(pred >= 0, dc_q[np.maximum(pred, 0)], MAX_DC // 2)
    if d.size and (d.min() < -MAX_DC or d.max() > MAX_DC):
        raise ValueError("DC difference out of range")
    return d


def dc_undelta(delta: np.ndarray, ny: int, nx: int, predictor: str = "left") -> np.ndarray:
    """Inverse of :func:`dc_delta`."""
    d = np.asarray(delta, np.int64).reshape(ny, nx)
    if predictor == "med":  # each prediction needs the decoded left, upper and upper-left values
        rows = d.tolist()
        out = [[0] * nx for _ in range(ny)]
        for y in range(ny):
            o, r = out[y], rows[y]
            u = out[y - 1] if y else None
            for x in range(nx):
                if y and x:
                    a, b, c = o[x - 1], u[x], o[x - 1] + u[x] - u[x - 1]
                    p = max(min(a, b), min(max(a, b), c))  # median of three
                elif x:
                    p = o[x - 1]
                elif y:
                    p = u[0]
                else:
                    p = MAX_DC // 2
                o[x] = p + r[x]
        return np.asarray(out, np.int64).reshape(-1)
    # "left": cumulative sums down the first column, then along each row
    col0 = MAX_DC // 2 + np.cumsum(d[:, 0])
    rows = np.concatenate([np.zeros((ny, 1), np.int64), np.cumsum(d[:, 1:], axis=1)], axis=1)
    return (col0[:, None] + rows).reshape(-1)
