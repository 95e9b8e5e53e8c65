"""Search results as stream symbols, and tiles re-rendered from symbols (what a decoder computes)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from shared_runtime import aot

from ..config import CodecConfig
from ..dictionary import Dictionary
from .rd import SearchResult
from .tables import HIGHEST

__all__ = ["TileSymbols", "tile_symbols", "reconstruct_tiles", "render_symbols"]


class TileSymbols(NamedTuple):
    """Host-side symbols of every tile (numpy int32), what the bitstream stores."""

    gen_id: np.ndarray  # [N]
    param_idx: np.ndarray  # [N, MAX_PARAMS]
    seed_sym: np.ndarray  # [N]
    coef_q: np.ndarray  # [N]
    dc_q: np.ndarray  # [N]


@aot.jit
def render_symbols(atom, coef_q, dc_q, atoms, sw, gain_step, dc_step):
    """Tiles from symbols: ``o + sum_k c_k atom_k / sw`` -> float32 ``[N, T, T]``.

    ``atom``/``coef_q`` int32 ``[N, K]``, ``dc_q`` int32 ``[N]``, ``atoms`` ``[A, n]`` (or only the
    atoms a stream uses, ``atom`` indexing them), ``sw`` ``[n]``, the steps float32 scalars."""
    n = sw.shape[0]
    T = int(round(n ** 0.5))
    step = gain_step * jnp.sqrt(jnp.asarray(n, jnp.float32))
    c = coef_q.astype(jnp.float32) * step
    r = dc_q.astype(jnp.float32)[:, None] * dc_step + jnp.einsum("nk,nkd->nd", c, atoms[atom],
                                                                 precision=HIGHEST) / sw
    return r.reshape(-1, T, T)


def reconstruct_tiles(dic: Dictionary, atom, coef_q, dc_q, cfg: CodecConfig) -> jax.Array:
    """Re-render tiles from their symbols -> float32 ``[N, T, T]`` (what a decoder computes).

    ``atom``/``coef_q`` are ``[N]`` (one atom per tile) or ``[N, K]`` (atom 0 contributes nothing).
    """
    atom, coef_q = jnp.asarray(atom, jnp.int32), jnp.asarray(coef_q, jnp.int32)
    if atom.ndim == 1:
        atom, coef_q = atom[:, None], coef_q[:, None]
    f = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    return render_symbols(atom, coef_q, jnp.asarray(dc_q, jnp.int32), dic.atoms, dic.sw, f(cfg.gain_step),
                        f(cfg.dc_step))


def tile_symbols(dic: Dictionary, res: SearchResult) -> TileSymbols:
    """Device -> host once: the symbols of every tile."""
    atom, coef_q, dc_q = jax.device_get((res.atom, res.coef_q, res.dc_q))
    atom = np.asarray(atom)
    return TileSymbols(gen_id=dic.gen_id[atom], param_idx=dic.param_idx[atom], seed_sym=dic.seed_sym[atom],
                       coef_q=np.asarray(coef_q, np.int32), dc_q=np.asarray(dc_q, np.int32))
