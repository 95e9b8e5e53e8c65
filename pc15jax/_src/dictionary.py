"""The atom dictionary: every (generator, quantised parameters, seed) rendered at tile size.

Data contract:
  * ``atoms`` is float32 ``[A, T*T]``. Atom ``a`` is the raw render ``g`` of its generator,
    mapped to the seam-weighted space (``sw * g`` with ``sw = sqrt(1 + gamma * m)``), with its
    component along the offset direction ``e = sw / |sw|`` removed and scaled to unit norm.
    A tile ``x`` is then best approximated by ``o * 1 + c * (a / sw)`` with
    ``c = <sw * x, a>`` and the weighted squared error of the fit is
    ``|xc|^2 - c^2`` (``xc``: ``sw * x`` minus its ``e`` component). So the scores of all
    tiles against all atoms are one matrix product.
  * Atom 0 is FLAT: the zero atom ("DC only"). Degenerate atoms (constant renders other than
    FLAT, e.g. the (0, 0) cosine) are zero too and are never searched.
  * Index <-> symbols: atoms of generator ``g`` occupy ``offset[g] : offset[g] + grid_size``,
    in C order over ``gen.grid_shape`` (parameter levels, then seeds).

Everything is built once per (tile, overlap, gamma, power, seed) and cached, in memory and, with a
cache folder, on disk (:mod:`.dictcache`).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from shared_runtime import aot

from . import dictcache
from . import generators as gens
from .dictcache import set_dictionary_cache
from .tiling import seam_penalty_mask

__all__ = ["Dictionary", "build_dictionary", "get_dictionary", "derive_seed", "set_dictionary_cache"]

DEGENERATE_NORM = 1e-3  # relative to sqrt(T*T): below it an atom is considered constant


def derive_seed(base_seed: int, seed_sym) -> np.ndarray:
    """Raw uint32 noise seed of a seed symbol: a hash of (base seed, symbol). Host-side."""
    s = np.asarray(seed_sym, np.uint32)
    return np.asarray(gens.hash_u32(jnp.uint32(base_seed) ^ gens.hash_u32(s + jnp.uint32(0x9E3779B9))))


@dataclasses.dataclass(frozen=True, eq=False)
class Dictionary:
    """The rendered atom bank for one tile geometry (see module docstring).

    Attributes:
      tile: tile size T.
      atoms: float32 ``[A, T*T]`` device array (weighted, offset-free, unit norm; 0 = FLAT).
      sw: float32 ``[T*T]`` square root of the seam weights.
      searchable: bool ``[A]`` (False for degenerate atoms other than FLAT).
      gen_id: int32 ``[A]``. param_idx: int32 ``[A, MAX_PARAMS]`` (level index per parameter,
        0 for unsearched ones). seed_sym: int32 ``[A]``.
      offsets: int ``[G]`` first atom of each generator.
      coarse: int32 ``[Ac]`` the coarse search level: atoms on even grid points (for the large
        bank: the standard bank's atoms).
      neighbours: int32 ``[Ac, W]`` each coarse atom and its +-1 grid neighbours along every
        parameter (for the large bank: its whole fine-grid cell and every seed), padded with the
        atom itself.
    """

    tile: int
    atoms: jax.Array
    sw: jax.Array
    searchable: np.ndarray
    gen_id: np.ndarray
    param_idx: np.ndarray
    seed_sym: np.ndarray
    offsets: np.ndarray
    coarse: np.ndarray
    neighbours: np.ndarray
    bank: str = "standard"

    @property
    def size(self) -> int:
        return int(self.atoms.shape[0])

    def atom_index(self, gen_id, param_idx, seed_sym) -> np.ndarray:
        """Symbols -> atom indices (int64). ``param_idx`` is ``[..., MAX_PARAMS]``."""
        return dictcache.atom_index(self.bank, gen_id, param_idx, seed_sym)


def _grid_table(gen: gens.Generator):
    """All grid points of a generator: (level indices ``[n, P]``, values ``[n, P]``, seed syms ``[n]``)."""
    shape = gen.grid_shape
    idx = np.stack(np.unravel_index(np.arange(gen.grid_size), shape), axis=1) if shape else np.zeros((1, 0), np.int64)
    P = len(gen.params)
    lvl = idx[:, :P]
    vals = np.stack([spec.grid()[lvl[:, i]] for i, spec in enumerate(gen.params)], axis=1).astype(np.float32)
    seeds = idx[:, P] if gen.seeded else np.zeros(len(idx), np.int64)
    return lvl, vals, seeds


def _coarse_and_neighbours(gens_list, offsets):
    coarse, nbrs = [], []
    width = 2 * gens.MAX_PARAMS + 1
    for g in gens_list:
        shape = g.grid_shape
        lvl_all = np.stack(np.unravel_index(np.arange(g.grid_size), shape), axis=1) if shape else np.zeros((1, 0), np.int64)
        P = len(g.params)
        for local, lv in enumerate(lvl_all):
            on_coarse = all(lv[i] % 2 == 0 or g.params[i].levels <= 2 for i in range(P))
            if not on_coarse:
                continue
            me = offsets[g.id] + local
            row = [me]
            for i, spec in enumerate(g.params):
                if spec.levels <= 2:
                    continue
                for d in (-1, 1):
                    nb = lv.copy()
                    nb[i] += d
                    if spec.periodic:
                        nb[i] %= spec.levels
                    elif not 0 <= nb[i] < spec.levels:
                        continue
                    row.append(offsets[g.id] + np.ravel_multi_index(tuple(nb), shape))
            coarse.append(me)
            nbrs.append(row + [me] * (width - len(row)))
    return np.asarray(coarse, np.int32), np.asarray(nbrs, np.int32)


def _nested_coarse_and_neighbours(bank, offsets):
    """The large bank's coarse level is the standard bank (even levels of every refined grid, the
    standard seeds); each coarse atom's neighbours are its fine-grid cell: every refined index
    within one fine step (wrapping where periodic) with its seed, and every seed at its own levels.
    Returns (coarse int32 ``[Ac]``, neighbours int32 ``[Ac, W]`` padded with the atom itself)."""
    coarse, rows = [], []
    for g, std in zip(bank, gens.list_generators("standard")):
        shape = g.grid_shape
        P = len(g.params)
        lvl = np.stack(np.unravel_index(np.arange(g.grid_size), shape), axis=1) if shape else np.zeros((1, 0), np.int64)
        fine = [i for i in range(P) if g.params[i].levels != std.params[i].levels]
        on = np.ones(len(lvl), bool)
        for i in fine:
            on &= lvl[:, i] % 2 == 0
        if g.seeded:
            on &= lvl[:, P] < std.n_seeds
        steps = np.stack(np.meshgrid(*([[-1, 0, 1]] * len(fine)), indexing="ij"), -1).reshape(-1, len(fine)) \
            if fine else np.zeros((1, 0), np.int64)
        for local in np.flatnonzero(on):
            lv = lvl[local]
            cell = set()
            for st in steps:
                nb = lv.copy()
                ok = True
                for i, d in zip(fine, st):
                    nb[i] += d
                    if g.params[i].periodic:
                        nb[i] %= g.params[i].levels
                    elif not 0 <= nb[i] < g.params[i].levels:
                        ok = False
                if ok:
                    cell.add(int(np.ravel_multi_index(tuple(nb), shape)))
            if g.seeded:
                for sd in range(g.n_seeds):
                    nb = lv.copy()
                    nb[P] = sd
                    cell.add(int(np.ravel_multi_index(tuple(nb), shape)))
            me = int(offsets[g.id] + (np.ravel_multi_index(tuple(lv), shape) if shape else 0))
            coarse.append(me)
            rows.append([me] + sorted(offsets[g.id] + c for c in cell if offsets[g.id] + c != me))
    W = max(len(r) for r in rows)
    return (np.asarray(coarse, np.int32),
            np.asarray([r + [r[0]] * (W - len(r)) for r in rows], np.int32))


@aot.jit
def _normalise(raw, sw):
    """raw ``[A, n]`` -> weighted, offset-free, unit-norm atoms; degenerate -> 0. Also the norms."""
    e = sw / jnp.linalg.norm(sw)

    def orth(a):
        return a - jnp.dot(a, e, precision=jax.lax.Precision.HIGHEST)[:, None] * e[None, :]

    a = orth(raw * sw)
    norm = jnp.linalg.norm(a, axis=1)
    n = jnp.asarray(raw.shape[1], jnp.float32)
    ok = norm > DEGENERATE_NORM * jnp.sqrt(n)
    a = orth(a / jnp.where(ok, norm, 1.0)[:, None])  # second pass: Gram-Schmidt "twice is enough"
    a = a / jnp.maximum(jnp.linalg.norm(a, axis=1), 1e-30)[:, None]
    return jnp.where(ok[:, None], a, 0.0), ok


def build_dictionary(tile: int, overlap: int, gamma: float, power: float, seed: int,
                     bank: str = "standard") -> Dictionary:
    """Render and normalise every atom of the bank for square tiles of ``tile`` pixels.

    ``gamma`` and ``power`` are rounded to float32 first: the stream stores them as float32, so
    this is the very dictionary the codec's encoder and decoder use.

    Args:
      tile: tile size T. overlap: tile overlap (shapes the seam weights).
      gamma, power: seam penalty weight and exponent. seed: base noise seed.
      bank: ``"standard"`` or ``"large"`` (:data:`pc15jax._src.generators.BANKS`).

    Returns:
      :class:`Dictionary` (cached: the same arguments return the same object).
    """
    gens.list_generators(bank)  # ValueError for an unknown bank
    return _cached_dictionary(int(tile), int(overlap), float(np.float32(gamma)), float(np.float32(power)), int(seed),
                              str(bank))


@functools.lru_cache(maxsize=8)
def _cached_dictionary(tile: int, overlap: int, gamma: float, power: float, seed: int,
                       bank: str = "standard") -> Dictionary:
    path = dictcache.cache_path(tile, overlap, gamma, power, seed, bank)
    arrs = dictcache.load_arrays(path, tile)
    if arrs is None:
        with jax.default_device(jax.devices("cpu")[0]):  # the same atoms on every backend
            d = _build_dictionary(tile, overlap, gamma, power, seed, bank)
        arrs = {k: np.asarray(getattr(d, k)) for k in dictcache.FIELDS}
        dictcache.save_arrays(path, arrs)
    return Dictionary(tile=tile, atoms=aot.device_array(arrs["atoms"]), sw=aot.device_array(arrs["sw"]),
                      **{k: arrs[k] for k in dictcache.FIELDS[2:]}, bank=bank)


def _build_dictionary(tile: int, overlap: int, gamma: float, power: float, seed: int,
                      bank_name: str = "standard") -> Dictionary:
    bank = gens.list_generators(bank_name)
    offsets = dictcache.bank_offsets(bank_name)
    m = seam_penalty_mask(tile, overlap, power)
    sw = aot.device_array(np.sqrt(1.0 + gamma * m.astype(np.float64)).astype(np.float32).reshape(-1))
    raws, gid, pidx, ssym = [], [], [], []
    for g in bank:
        lvl, vals, seeds = _grid_table(g)
        raw_seeds = derive_seed(seed, seeds) if g.seeded else np.zeros(len(seeds), np.uint32)
        raw = gens._render_batch(aot.device_array(vals), aot.device_array(raw_seeds), gen_id=g.id, H=tile, W=tile)
        raws.append(raw.reshape(raw.shape[0], tile * tile))
        gid.append(np.full(len(lvl), g.id, np.int32))
        p = np.zeros((len(lvl), gens.MAX_PARAMS), np.int32)
        p[:, : lvl.shape[1]] = lvl
        pidx.append(p)
        ssym.append(seeds.astype(np.int32))
    atoms, ok = _normalise(jnp.concatenate(raws, axis=0), sw)
    gen_id = np.concatenate(gid)
    searchable = np.asarray(ok) & (gen_id != 0)
    searchable[0] = True  # FLAT, the DC-only candidate
    # the coarse-to-fine search's levels: even grid points, or for the large bank the standard one
    coarse, nbrs = (_nested_coarse_and_neighbours if bank_name == "large" else _coarse_and_neighbours)(bank, offsets)
    keep = searchable[coarse]
    return Dictionary(tile=tile, atoms=atoms, sw=sw, searchable=searchable, gen_id=gen_id,
                      param_idx=np.concatenate(pidx), seed_sym=np.concatenate(ssym), offsets=offsets,
                      coarse=coarse[keep], neighbours=nbrs[keep], bank=bank_name)


def get_dictionary(tile: int, overlap: int, gamma: float, power: float, seed: int,
                   bank: str = "standard") -> Dictionary:
    """The cached dictionary, with ``gamma`` and ``power`` rounded to float32 first: the stream
    stores them as float32, so encoder and decoder build the very same atoms."""
    return build_dictionary(tile, overlap, gamma, power, seed, bank)
