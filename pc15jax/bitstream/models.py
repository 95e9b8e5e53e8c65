"""Symbol classes of a PC15 stream and their frequency tables (numpy + stdlib only).

Per tile, in raster order, a stream carries:

* ``count``: number of atoms (0 = DC only), alphabet ``MAX_ATOMS + 1``;
* per atom: ``gen`` (generator id), one ``param`` index per searched parameter of that generator
  (table per generator and parameter), ``seed`` (table per seeded generator), ``coef`` (signed
  quantised amplitude in ``[-MAX_COEF, MAX_COEF]``);
* ``dc``: quantised tile offset, coded as the difference to its prediction (left neighbour,
  the upper one in the first column, mid-grey for the first tile), in ``[-MAX_DC, MAX_DC]``.

The symbols travel in two rANS streams: **A** holds every ``count`` then every ``gen``, **B**
everything else. Once A is decoded, the table of every symbol of B is known.

Tables are frozen JSON files of counts, named by an id recorded in the stream: the package's own
(``pc15jax/bitstream/tables/<id>.json``) or ``$PC15_MODELS_DIR/rans/<id>.json``, which takes
precedence. Counts are turned into rANS tables by :func:`~.rans.build_rans_tables`, so the same
file always gives the same tables.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import BitstreamError
from .rans import RansTable, build_rans_tables

__all__ = ["GenLayout", "SymbolModel", "load_table_json", "DEFAULT_TABLE_ID", "MAX_ATOMS", "MAX_COEF", "MAX_DC",
           "PRECISION", "tables_dir"]

MAX_ATOMS = 16
MAX_COEF = 1023
MAX_DC = 256
PRECISION = 15
DEFAULT_TABLE_ID = "pc15-v1"
_ID_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


@dataclasses.dataclass(frozen=True)
class GenLayout:
    """What the coder needs to know of a generator: its id, name, parameter levels and seeds."""

    id: int
    name: str
    param_names: tuple[str, ...]
    levels: tuple[int, ...]
    n_seeds: int

    @property
    def searched(self) -> tuple[int, ...]:
        """Positions of the parameters that are coded (more than one level)."""
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


def _counts(d: dict, key: str, n: int) -> np.ndarray:
    """Counts of length ``n`` from ``d[key]`` (missing -> uniform; wrong length -> error)."""
    v = d.get(key)
    if v is None:
        return np.ones(n)
    a = np.asarray(v, np.float64)
    if a.shape != (n,) or not np.all(np.isfinite(a)) or np.any(a < 0):
        raise BitstreamError(f"rANS table entry {key!r} must hold {n} non-negative counts")
    return a


class SymbolModel:
    """Frequency tables of every symbol class, for one generator layout and one table set.

    Args:
      layout: the generator bank as :class:`GenLayout` s (index = generator id).
      table: the JSON dict of counts (see :func:`load_table_json`); ``{"id": ...}`` alone gives
        uniform tables.
    """

    def __init__(self, layout: Sequence[GenLayout], table: dict):
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
                add(f"param:{g.id}:{i}", _counts(params, f"{g.name}.{g.param_names[i]}", g.levels[i]))
            if g.n_seeds > 1:
                add(f"seed:{g.id}", _counts(seeds, g.name, g.n_seeds))

    def bits(self, key: str) -> np.ndarray:
        """Cost in bits of every symbol of class ``key`` (``"gen"``, ``"param:G:P"``, ...)."""
        return self.tables[self.index[key]].bits()

    # ------------------------------------------------------------------------------ streams

    def split(self, count, gen, params, seed, coef, dc_q, ny: int, nx: int):
        """Per-tile symbols -> (A symbols, A table ids, B symbols, B table ids).

        Args:
          count: int ``[N]`` atoms per tile. gen: int ``[N, K]``, params: int ``[N, K, P]``,
          seed: int ``[N, K]``, coef: int ``[N, K]`` (entries beyond ``count`` ignored).
          dc_q: int ``[N]`` quantised offsets in ``[0, 2 * MAX_DC]``. ny, nx: tile grid.
        """
        count = np.asarray(count, np.int64)
        N = count.shape[0]
        if np.any((count < 0) | (count > MAX_ATOMS)):
            raise ValueError(f"atom counts must lie in [0, {MAX_ATOMS}]")
        a_sym = [count]
        a_tid = [np.full(N, self.index["count"])]
        b_sym, b_tid = [], []
        for t in range(N):
            for k in range(int(count[t])):
                g = self.layout[int(gen[t, k])]
                a_sym.append([g.id])
                a_tid.append([self.index["gen"]])
                for i in g.searched:
                    b_sym.append(int(params[t, k, i]))
                    b_tid.append(self.index[f"param:{g.id}:{i}"])
                if g.n_seeds > 1:
                    b_sym.append(int(seed[t, k]))
                    b_tid.append(self.index[f"seed:{g.id}"])
                c = int(coef[t, k])
                if not -MAX_COEF <= c <= MAX_COEF:
                    raise ValueError(f"amplitude index {c} outside [-{MAX_COEF}, {MAX_COEF}]")
                b_sym.append(c + MAX_COEF)
                b_tid.append(self.index["coef"])
        delta = dc_delta(np.asarray(dc_q, np.int64), ny, nx)
        b_sym.extend((delta + MAX_DC).tolist())
        b_tid.extend([self.index["dc"]] * N)
        return (np.concatenate([np.asarray(v, np.int64) for v in a_sym]), np.concatenate(a_tid).astype(np.int64),
                np.asarray(b_sym, np.int64), np.asarray(b_tid, np.int64))

    def a_table_ids(self, n_tiles: int, n_a: int) -> np.ndarray:
        tid = np.full(n_a, self.index["gen"], np.int64)
        tid[:n_tiles] = self.index["count"]
        return tid

    def b_table_ids(self, count: np.ndarray, gens: np.ndarray) -> np.ndarray:
        """Table of every B symbol, given the decoded counts and generator ids (flat, tile order)."""
        tid = []
        for g_id in gens.tolist():
            if not 0 < g_id < len(self.layout):
                raise BitstreamError(f"invalid generator id {g_id} in stream")
            g = self.layout[g_id]
            tid.extend(self.index[f"param:{g.id}:{i}"] for i in g.searched)
            if g.n_seeds > 1:
                tid.append(self.index[f"seed:{g.id}"])
            tid.append(self.index["coef"])
        tid.extend([self.index["dc"]] * int(count.shape[0]))
        return np.asarray(tid, np.int64)

    def join(self, count, gens, b_sym, ny: int, nx: int, P: int):
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
        dc_q = dc_undelta(np.asarray(b[pos:pos + N], np.int64) - MAX_DC, ny, nx)
        return gen, params, seed, coef, dc_q


def dc_prediction_order(ny: int, nx: int):
    """For each tile (raster order) the tile whose DC predicts it (-1: mid-grey)."""
    idx = np.arange(ny * nx).reshape(ny, nx)
    pred = np.full((ny, nx), -1, np.int64)
    pred[:, 1:] = idx[:, :-1]
    pred[1:, 0] = idx[:-1, 0]
    return pred.reshape(-1)


def dc_delta(dc_q: np.ndarray, ny: int, nx: int) -> np.ndarray:
    pred = dc_prediction_order(ny, nx)
    base = np.where(pred >= 0, dc_q[np.maximum(pred, 0)], MAX_DC // 2)
    d = dc_q - base
    if d.size and (d.min() < -MAX_DC or d.max() > MAX_DC):
        raise ValueError("DC difference out of range")
    return d


def dc_undelta(delta: np.ndarray, ny: int, nx: int) -> np.ndarray:
    """Inverse of :func:`dc_delta`: cumulative sums down the first column, then along each row."""
    d = np.asarray(delta, np.int64).reshape(ny, nx)
    col0 = MAX_DC // 2 + np.cumsum(d[:, 0])
    rows = np.concatenate([np.zeros((ny, 1), np.int64), np.cumsum(d[:, 1:], axis=1)], axis=1)
    return (col0[:, None] + rows).reshape(-1)
