"""The matching pursuit: stage 1 (the DC and the first atom), then one more atom per stage while
any tile gains, all in one jitted program (no round trip to the host between stages).

A stage runs over the active tiles only, in blocks (:mod:`.blocks`): the exhaustive or
coarse-to-fine stage (:mod:`.rd`), or the hooked one (:mod:`.hooked`) when a hook plan is given.
Between stages the pursuit is a :class:`PursuitState`; a stage reads a :class:`~.rd.StageInput`.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from shared_runtime import aot

from ...bitstream.models import COUNT_BUCKET, MAX_ATOMS, NO_TILE
from .. import hooks as _hooks
from ..config import CodecConfig
from .blocks import block_size, blocks, stage_order
from .hooked import stage_hooked
from .rd import SearchResult, StageInput, prepare, prepare_more, search_block, search_more_block
from .tables import SearchParams, SearchTables, default_tables, dictionary_for, generator_layout

__all__ = ["TILE_BUCKET", "StageSpec", "PursuitState", "CountGrid", "AtomsResult", "stage", "run_stage", "pursue",
           "pad_tiles", "search_tiles", "search_atoms", "count_context"]

TILE_BUCKET = 64


class StageSpec(NamedTuple):
    """The static choices of a stage (hashable: one compiled program per spec and shape).

    ``plan`` is a hook plan (:func:`pc15jax._src.hooks.prepare_hooks`) or ``None`` for the
    exhaustive / coarse-to-fine stage; ``layout`` is :func:`~.tables.generator_layout` with a plan."""

    mode: str
    beam: int
    shortlist: int
    plan: Any = None
    layout: tuple | None = None

    @classmethod
    def from_config(cls, cfg: CodecConfig, plan=None) -> "StageSpec":
        layout = None if plan is None else generator_layout(cfg)
        return cls(cfg.search, cfg.beam, cfg.shortlist, plan, layout)


class PursuitState(NamedTuple):
    """The pursuit between stages (device arrays, leading axis = padded tiles ``Np``).

    Attributes:
      atom, coef_q: int32 ``[Np, K]`` atoms and amplitudes so far (0 beyond ``count``).
      count: int32 ``[Np]`` atoms so far. dc_q: int32 ``[Np]``. recon: float32 ``[Np, T, T]``.
    """

    atom: jax.Array
    coef_q: jax.Array
    count: jax.Array
    dc_q: jax.Array
    recon: jax.Array


class CountGrid(NamedTuple):
    """Where each tile's count context comes from (int32/bool ``[Np]`` device arrays): the rows of
    its left and upper tiles (-1: none) and whether the context applies at all (``False``: a
    padding row, or tiles searched without a grid: the count is priced whatever the neighbours)."""

    left: jax.Array
    up: jax.Array
    priced: jax.Array

    @classmethod
    def of(cls, Np: int, grid: tuple[int, int] | None) -> "CountGrid":
        left = np.full(Np, -1, np.int32)
        up = np.full(Np, -1, np.int32)
        priced = np.zeros(Np, bool)
        if grid is not None:
            ny, nx = grid
            r = np.arange(ny * nx)
            left[r] = np.where(r % nx > 0, r - 1, -1)
            up[r] = np.where(r >= nx, r - nx, -1)
            priced[r] = True
        return cls(aot.device_array(left), aot.device_array(up), aot.device_array(priced))


def count_context(count, cg: CountGrid) -> jax.Array:
    """Context of every tile's count symbol from its neighbours' counts so far -> int32 ``[Np]``
    (-1: none); on the device what :func:`pc15jax.bitstream.models.count_contexts` computes."""
    b = jnp.asarray(COUNT_BUCKET, jnp.int32)[jnp.clip(count, 0, MAX_ATOMS)]
    left = jnp.where(cg.left >= 0, b[jnp.maximum(cg.left, 0)], NO_TILE)
    up = jnp.where(cg.up >= 0, b[jnp.maximum(cg.up, 0)], NO_TILE)
    return jnp.where(cg.priced, 7 * left + up, -1).astype(jnp.int32)


def stage(tiles, inp: StageInput | None, order, n_blocks, t: SearchTables, p: SearchParams, gt=None, hp=None, *,
          spec: StageSpec) -> SearchResult:
    """One pursuit stage of the tiles ``order[:n_blocks * block]`` (all other rows: atom 0).

    Stage 1 is ``inp=None`` (the DC and the first atom); later stages read ``inp``. ``gt`` and
    ``hp`` are the hooked stage's grid tables and model parameters (with ``spec.plan``)."""
    block = block_size(tiles.shape[0])
    first = inp is None
    if spec.plan is not None:
        pr = prepare(tiles, t, p) if first else prepare_more(tiles, inp, t, p)
        return stage_hooked(pr, order, n_blocks, block, t, p, gt, hp, first=first, plan=spec.plan,
                            layout=spec.layout, shortlist=spec.shortlist)
    kw = dict(mode=spec.mode, beam=spec.beam, shortlist=spec.shortlist)
    if first:
        return blocks(lambda a: search_block(a, t, p, **kw), tiles, order, n_blocks, block)
    return blocks(lambda a: search_more_block(a[0], a[1], t, p, **kw), (tiles, inp), order, n_blocks, block)


run_stage = aot.jit(stage, static_argnames="spec")
run_stage.__doc__ = "Jitted :func:`stage` (one stage on its own, for benchmarks and tests)."


def _pursue(tiles, n_tiles, cg: CountGrid, t: SearchTables, p: SearchParams, gt, hp, *, spec: StageSpec,
            max_atoms: int) -> PursuitState:
    Np = tiles.shape[0]
    block = block_size(Np)
    res = stage(tiles, None, *stage_order(jnp.arange(Np) < n_tiles, block), t, p, gt, hp, spec=spec)
    first = lambda v: jnp.zeros((Np, max_atoms), jnp.int32).at[:, 0].set(v)  # noqa: E731
    st = PursuitState(first(res.atom), first(res.coef_q), (res.atom != 0).astype(jnp.int32), res.dc_q, res.recon)

    def more(c):  # stage k: the tiles that gained at every stage so far
        k, st = c
        active = st.count == k
        last = lax.dynamic_index_in_dim(st.atom, k - 1, axis=1, keepdims=False)
        inp = StageInput(st.recon, st.dc_q, st.count, t.atom_gen[last], count_context(st.count, cg))
        r = stage(tiles, inp, *stage_order(active, block), t, p, gt, hp, spec=spec)
        add = active & (r.atom != 0)
        put = lambda a, v: lax.dynamic_update_index_in_dim(a, jnp.where(add, v, 0), k, axis=1)  # noqa: E731
        return k + 1, PursuitState(put(st.atom, r.atom), put(st.coef_q, r.coef_q), st.count + add.astype(jnp.int32),
                                   st.dc_q, jnp.where(add[:, None, None], r.recon, st.recon))

    keep_going = lambda c: (c[0] < max_atoms) & jnp.any(c[1].count == c[0])  # noqa: E731
    return lax.while_loop(keep_going, more, (jnp.int32(1), st))[1]


pursue = aot.jit(_pursue, static_argnames=("spec", "max_atoms"))
pursue.__doc__ = """Greedy matching pursuit of a padded batch ``tiles`` float32 ``[Np, T, T]``, of which the
first ``n_tiles`` (int32 scalar, traced) are real, up to ``max_atoms`` atoms per tile, on the
device -> :class:`PursuitState`. One program per (``Np``, ``spec``, ``max_atoms``, table shapes)."""


def pad_tiles(tiles: jax.Array, pad_to: int = 0) -> jax.Array:
    """Pad a tile batch with zero tiles to a multiple of ``TILE_BUCKET`` (at least one bucket, and
    at least ``pad_to`` tiles). The padding is done on the host and the batch put back on the
    device: no device program of its own (in a fresh process every eager ``jnp`` op lowers and
    loads one, 5-90 ms each on a 2-core CPU)."""
    N = tiles.shape[0]
    Np = max(TILE_BUCKET, -(-max(N, int(pad_to)) // TILE_BUCKET) * TILE_BUCKET)
    if Np == N:
        return tiles
    host = np.asarray(tiles)
    out = np.zeros((Np,) + host.shape[1:], host.dtype)
    out[:N] = host
    return aot.device_array(out)


def _head(tree, n: int):
    """The first ``n`` rows of every array of a result -> host NumPy arrays (sliced on the host: no
    slicing programs)."""
    return jax.tree.map(lambda a: np.asarray(a)[:n], jax.device_get(tree))


def _check_tiles(tiles, cfg: CodecConfig) -> jax.Array:
    tiles = aot.device_array(tiles, np.float32)
    if tiles.ndim != 3 or tiles.shape[1:] != (cfg.tile, cfg.tile):
        raise ValueError(f"tiles must have shape [N, {cfg.tile}, {cfg.tile}], got {tuple(tiles.shape)}")
    return tiles


@functools.partial(aot.jit, static_argnames="spec")
def _first_stage(tiles, n_tiles, t: SearchTables, p: SearchParams, *, spec: StageSpec) -> SearchResult:
    order, n_blocks = stage_order(jnp.arange(tiles.shape[0]) < n_tiles, block_size(tiles.shape[0]))
    return stage(tiles, None, order, n_blocks, t, p, spec=spec)


def search_tiles(tiles, cfg: CodecConfig, tables: SearchTables | None = None) -> SearchResult:
    """Choose the best (atom, amplitude, offset) for every tile.

    Args:
      tiles: float ``[N, T, T]`` with values in [0, 1] and ``T == cfg.tile``.
      cfg: :class:`CodecConfig`.
      tables: precomputed :func:`make_tables` output (built from ``cfg`` when omitted).

    Returns:
      :class:`SearchResult` of host NumPy arrays with leading axis ``N``.
    """
    tiles = _check_tiles(tiles, cfg)
    if tables is None:
        tables = default_tables(cfg)
    N = tiles.shape[0]
    res = _first_stage(pad_tiles(tiles), np.int32(N), tables, SearchParams.from_config(cfg),
                       spec=StageSpec.from_config(cfg))
    return _head(res, N)


class AtomsResult(NamedTuple):
    """Greedy matching pursuit outcome (host NumPy arrays, leading axis = tiles).

    Attributes:
      atom, coef_q: int32 ``[N, cfg.max_atoms]`` (entries at or beyond ``count`` are 0).
      count: int32 ``[N]``. dc_q: int32 ``[N]``. recon: float32 ``[N, T, T]``.
    """

    atom: np.ndarray
    coef_q: np.ndarray
    count: np.ndarray
    dc_q: np.ndarray
    recon: np.ndarray


def search_atoms(tiles, cfg: CodecConfig, tables: SearchTables | None = None,
                 grid: tuple[int, int] | None = None, *, hooks="config", gen_prior=None,
                 pad_to: int = 0) -> AtomsResult:
    """Several atoms per tile: greedy matching pursuit with an RD stopping rule.

    Stage 1 chooses the DC and the first atom (:func:`search_tiles`); every later stage searches
    the best atom for the residual of the current reconstruction and keeps it only where it lowers
    ``J`` (its bits, the amplitude's and the larger atom count's included). A tile stops at its
    first stage without gain, or at ``cfg.max_atoms``. The whole pursuit is one device program.

    Rates follow the coder's contexts: a generator is priced given the tile's previous one, an
    amplitude given its position, and from the second stage on the count given the left and
    upper tiles' counts so far (``grid = (ny, nx)`` of the raster-ordered tiles; without it the
    count is priced whatever the neighbours).

    ``hooks`` (``"config"``, the default: ``cfg.ai``; ``None``: the exhaustive search; or a preset
    name such as ``"m1"``) narrows every stage's candidates (see :mod:`pc15jax._src.hooks`);
    ``gen_prior`` [G] is the log-prior of the generators that :class:`~pc15jax.HeuristicHooks`
    uses to break ties (default: flat). ``pad_to``: pad the batch to at least this many tiles, so that
    batches of different sizes (an image's luma and chroma planes) share one compiled program; the
    padding tiles are empty and skip the search.

    Example:
      >>> import numpy as np, pc15jax as pc
      >>> cfg = pc.CodecConfig(max_atoms=3)
      >>> res = pc.search_atoms(np.full((5, cfg.tile, cfg.tile), 0.5, np.float32), cfg)
      >>> res.atom.shape, int(res.count.max())
      ((5, 3), 0)
    """
    tiles = _check_tiles(tiles, cfg)
    t = default_tables(cfg) if tables is None else tables
    N = tiles.shape[0]
    if grid is not None and grid[0] * grid[1] != N:
        raise ValueError(f"grid {grid} does not hold {N} tiles")
    tiles = pad_tiles(tiles, pad_to)
    if isinstance(hooks, str):  # "config": the config's hooks; else a preset name ("none", "m1", ...)
        hooks = cfg.ai if hooks == "config" else _hooks.hooks_from_name(hooks)
    layout = generator_layout(cfg)
    prepared = _hooks.prepare_hooks(hooks, np.zeros(len(layout)) if gen_prior is None else gen_prior)
    if prepared is not None:
        plan, hp = prepared
        gt = _hooks.grid_tables(dictionary_for(cfg))
    else:
        plan = hp = gt = None
    st = pursue(tiles, np.int32(N), CountGrid.of(tiles.shape[0], grid), t, SearchParams.from_config(cfg), gt, hp,
                spec=StageSpec.from_config(cfg, plan), max_atoms=cfg.max_atoms)
    return AtomsResult(*_head((st.atom, st.coef_q, st.count, st.dc_q, st.recon), N))
