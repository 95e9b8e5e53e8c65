"""What the search reads: its traced settings and its device tables (dictionary + rate model)."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import numpy as np
from jax import lax

from shared_runtime import aot

from .. import generators as gens
from ..config import CodecConfig
from ..dictionary import Dictionary, get_dictionary
from ..generators import get_generator
from ..metrics import _gauss2, gaussian_kernel
from ..score import RateModel, atom_static_bits, uniform_rate_model

__all__ = ["SearchParams", "SearchTables", "make_tables", "default_tables", "dictionary_for", "generator_layout",
           "atom_ssim_tables", "gauss_tiles", "HIGHEST"]

SSIM_TABLE_MAX_ELEMENTS = 1 << 25  # precompute per-atom SSIM tables up to 128 MiB each (T <= 64)
HIGHEST = lax.Precision.HIGHEST


class SearchParams(NamedTuple):
    """Traced (continuous) search settings, float32 scalars: changing them never recompiles."""

    lam: jax.Array
    alpha: jax.Array
    gain_step: jax.Array
    dc_step: jax.Array
    early_exit: jax.Array

    @classmethod
    def from_config(cls, cfg: CodecConfig) -> "SearchParams":
        f = lambda v: aot.device_array(v, np.float32)  # noqa: E731
        return cls(f(cfg.lambda_rd), f(cfg.alpha_mix), f(cfg.gain_step), f(cfg.dc_step), f(cfg.early_exit))


class SearchTables(NamedTuple):
    """Device arrays the search reads (dictionary + rate model), a pytree."""

    atoms: jax.Array  # [A, n]
    coarse_atoms: jax.Array  # [Ac, n]
    sw: jax.Array  # [n]
    static_bits: jax.Array  # [G, A] gen + params + seed bits, per previous generator in the tile
    atom_gen: jax.Array  # [A] int32 generator of every atom
    allowed: jax.Array  # [A] bool
    coarse: jax.Array  # [Ac] int32
    neighbours: jax.Array  # [Ac, NB] int32, -1 = none
    coef_bits: jax.Array  # [N_COEF_CTX, 2K+1] per position of the atom in its tile
    dc_bits: jax.Array  # [dc_levels]
    count_bits: jax.Array  # [MAX_ATOMS + 1] whatever the neighbours
    count_ctx_bits: jax.Array  # [N_COUNT_CTX, MAX_ATOMS + 1] given the neighbours' counts
    atom_ga: jax.Array | None  # [A, n] G(a) of the pixel-space atoms (None: computed per candidate)
    atom_va: jax.Array | None  # [A, n] G(a^2) - G(a)^2


def gauss_tiles(v, T: int):
    """Gaussian SSIM filter of flattened tiles ``[..., T*T]`` -> same shape."""
    return _gauss2(v.reshape(v.shape[:-1] + (T, T)), gaussian_kernel()).reshape(v.shape)


def atom_ssim_tables(atoms, sw, T: int):
    """Per-atom SSIM statistics in pixel space: ``G(a)`` and ``G(a^2) - G(a)^2`` for ``a = atom / sw``
    (float32 ``[A, n]`` each)."""
    a = atoms / sw
    ga = gauss_tiles(a, T)
    return ga, gauss_tiles(a * a, T) - ga * ga


def make_tables(dic: Dictionary, rate: RateModel, cfg: CodecConfig) -> SearchTables:
    """Assemble the search's device tables for a dictionary, a rate model and a config.

    Example:
      >>> import pc15jax as pc
      >>> cfg = pc.CodecConfig()
      >>> t = pc.make_tables(pc.dictionary_for(cfg), pc.uniform_rate_model(cfg.max_coef, cfg.dc_levels), cfg)
      >>> t.atoms.shape == (len(pc.dictionary_for(cfg).gen_id), cfg.tile * cfg.tile)
      True
    """
    allowed = np.array(dic.searchable)
    if cfg.generators is not None:
        ids = np.asarray([get_generator(g).id for g in cfg.generators])
        allowed &= np.isin(dic.gen_id, ids) | (dic.gen_id == 0)
    nb = np.where(allowed[dic.neighbours], dic.neighbours, -1)
    # Padding repeats the atom itself; keep one copy (column 0) so the beam has no duplicates.
    nb[:, 1:] = np.where(nb[:, 1:] == nb[:, :1], -1, nb[:, 1:])
    keep = allowed[dic.coarse]
    coarse = dic.coarse[keep]
    ga = va = None
    if dic.atoms.size <= SSIM_TABLE_MAX_ELEMENTS:
        ga, va = aot.jit(atom_ssim_tables, static_argnums=2)(dic.atoms, dic.sw, dic.tile)
    return SearchTables(
        atoms=dic.atoms,
        coarse_atoms=aot.device_array(np.asarray(dic.atoms)[coarse]),  # gathered on the host: no program to compile
        sw=dic.sw,
        static_bits=atom_static_bits(rate, dic.gen_id, dic.param_idx, dic.seed_sym),
        atom_gen=aot.device_array(dic.gen_id, np.int32),
        allowed=aot.device_array(allowed),
        coarse=aot.device_array(coarse, np.int32),
        neighbours=aot.device_array(nb[keep], np.int32),
        coef_bits=rate.coef_bits,
        dc_bits=rate.dc_bits,
        count_bits=rate.count_bits,
        count_ctx_bits=rate.count_ctx_bits,
        atom_ga=ga,
        atom_va=va,
    )


def dictionary_for(cfg: CodecConfig) -> Dictionary:
    """The (cached) atom dictionary of a configuration."""
    return get_dictionary(cfg.tile, cfg.overlap, cfg.gamma_seam, cfg.seam_power, cfg.seed, cfg.dictionary)


def generator_layout(cfg: CodecConfig) -> tuple[tuple[int, int], ...]:
    """(first atom, atoms) of every generator in the dictionary: static shapes of the hooked dispatch."""
    dic = dictionary_for(cfg)
    return tuple((int(o), int(g.grid_size)) for o, g in zip(dic.offsets, gens.list_generators(dic.bank)))


def default_tables(cfg: CodecConfig) -> SearchTables:
    """Dictionary + fixed uniform rate model tables for ``cfg`` (cached per table-shaping fields)."""
    return _default_tables(cfg.tables_key())


@functools.lru_cache(maxsize=8)
def _default_tables(cfg: CodecConfig) -> SearchTables:
    return make_tables(dictionary_for(cfg), uniform_rate_model(cfg.max_coef, cfg.dc_levels), cfg)
