"""Rate models (bits of every tile symbol) and the rate-distortion cost ``J = D + lambda * R / n``.

A :class:`RateModel` is a pytree of cost tables in bits, the interface between the search and
the entropy coder: the coder's probability tables become ``-log2(p)`` tables here, so the
search's ``R`` is the rate the coder will spend. :func:`uniform_rate_model` is the fixed model
used until trained tables are plugged in (uniform symbols, Elias-gamma amplitudes).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from shared_runtime import aot

from ..bitstream.models import N_COEF_CTX, N_COUNT_CTX
from . import generators as gens
from .metrics import ssim_map

__all__ = ["RateModel", "uniform_rate_model", "atom_static_bits", "tile_distortion", "rd_cost"]


class RateModel(NamedTuple):
    """Symbol costs in bits (float32 device arrays).

    The context-conditioned classes (see :mod:`pc15jax.bitstream.models`) have one row per context.

    Attributes:
      count_bits: ``[MAX_ATOMS + 1]`` number of atoms of a tile, whatever its neighbours.
      count_ctx_bits: ``[N_COUNT_CTX, MAX_ATOMS + 1]`` the same, given the neighbours' counts.
      gen_bits: ``[G, G]`` generator id of an atom given the previous atom's generator (row 0:
        the tile's first atom); column 0 (FLAT, "no atom") costs 0.
      param_bits: ``[G, MAX_PARAMS, L]`` level index of each parameter (0 for unsearched ones).
      seed_bits: ``[G, S]`` seed symbol (0 for unseeded generators).
      coef_bits: ``[N_COEF_CTX, 2 * max_coef + 1]`` quantised amplitude index ``k`` at position
        ``k + max_coef``, per position of the atom in its tile.
      dc_bits: ``[dc_levels]`` quantised tile offset.
    """

    count_bits: jax.Array
    count_ctx_bits: jax.Array
    gen_bits: jax.Array
    param_bits: jax.Array
    seed_bits: jax.Array
    coef_bits: jax.Array
    dc_bits: jax.Array

    @property
    def max_coef(self) -> int:
        return (self.coef_bits.shape[-1] - 1) // 2


def uniform_rate_model(max_coef: int, dc_levels: int, max_atoms: int = 16) -> RateModel:
    """Fixed model: uniform counts, generators, levels, seeds and DC; signed Elias-gamma amplitudes
    (the same in every context)."""

    bank = gens.list_generators()
    G = len(bank)
    L = max(p.levels for g in bank for p in g.params)
    S = max(max(g.n_seeds for g in bank), 1)
    count_bits = np.full((max_atoms + 1,), np.log2(max_atoms + 1))
    gen_bits = np.full((G, G), np.log2(G))
    gen_bits[:, 0] = 0.0
    param_bits = np.zeros((G, gens.MAX_PARAMS, L))
    seed_bits = np.zeros((G, S))
    for g in bank:
        for i, p in enumerate(g.params):
            param_bits[g.id, i, :] = np.log2(p.levels)
        if g.seeded:
            seed_bits[g.id, :] = np.log2(g.n_seeds)
    k = np.abs(np.arange(-max_coef, max_coef + 1))
    coef_bits = np.where(k == 0, 1.0, 2.0 * np.floor(np.log2(np.maximum(k, 1))) + 2.0)
    dc_bits = np.full((dc_levels,), np.log2(dc_levels))
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return RateModel(f32(count_bits), f32(np.tile(count_bits, (N_COUNT_CTX, 1))), f32(gen_bits), f32(param_bits),
                     f32(seed_bits), f32(np.tile(coef_bits, (N_COEF_CTX, 1))), f32(dc_bits))


@aot.jit  # one program (eager, each gather would be compiled on its own in a new process)
def atom_static_bits(model: RateModel, gen_id: np.ndarray, param_idx: np.ndarray,
                     seed_sym: np.ndarray) -> jax.Array:
    """Bits of (generator, parameter indices, seed) per atom, for every previous generator in the
    tile -> float32 ``[G, A]`` (row 0: the tile's first atom)."""
    g = jnp.asarray(gen_id)
    p = jnp.asarray(param_idx)
    P = p.shape[1]
    bits = model.param_bits[g[:, None], jnp.arange(P)[None, :], p].sum(axis=1)
    bits = bits + model.seed_bits[g, jnp.asarray(seed_sym)]
    return model.gen_bits[:, g] + bits[None, :]


def tile_distortion(x, r, w, alpha, max_val: float = 1.0) -> jax.Array:
    """Seam-weighted distortion ``D`` of reconstructions ``r`` of tiles ``x``.

    ``D = sum(w * (alpha * (1 - ssim_map) + (1 - alpha) * (x - r)^2 / max_val^2)) / sum(w)``.

    Args:
      x, r: ``[..., T, T]`` (broadcastable). w: ``[T, T]`` weights ``1 + gamma * m``.
      alpha: SSIM share, scalar.

    Returns:
      float32 ``[...]``.
    """
    x, r = jnp.broadcast_arrays(x, r)
    s = ssim_map(x, r, max_val)
    d = alpha * (1.0 - s) + (1.0 - alpha) * ((x - r) / max_val) ** 2
    return jnp.sum(d * w, axis=(-2, -1)) / jnp.sum(w)


def rd_cost(distortion, bits, lam, n_pixels) -> jax.Array:
    """``J = D + lam * bits / n_pixels`` (``lam`` is the distortion worth one bit per pixel)."""
    return distortion + lam * bits / n_pixels
