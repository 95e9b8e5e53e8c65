"""Tile features for the learned hooks, computed on device (pure JAX, any tile size).

Data contract:
  * input: ``resid`` float32 ``[N, T, T]``, the part of each tile still to explain (pixel units,
    offset-free: the tile minus its current reconstruction), ``stage`` int32 ``[N]`` (atoms
    already in the tile), ``prev_gen`` int32 ``[N]`` (generator of the tile's last atom, 0: none).
  * output: float32 ``[N, N_FEATURES]``, raw (the models normalise with frozen training
    statistics): an 8x8 and a 4x4 pyramid of the contrast-normalised residual, a 4x4 map of its
    structure tensor (``gx^2, gy^2, gx gy``), global statistics (log RMS, mean |gradients|,
    orientation coherence, log2 T), the stage (one-hot, 4 buckets) and the previous generator
    (one-hot).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from shared_runtime import aot

from .._src.generators import list_generators

__all__ = ["tile_features", "N_FEATURES", "N_GENERATORS", "N_STAGES", "summary_features", "COL_PYRAMID4",
           "COL_LOG_RMS", "COL_COHERENCE"]

N_GENERATORS = len(list_generators())
N_STAGES = 4
EPS = 1e-6
N_FEATURES = 64 + 16 + 48 + 5 + N_STAGES + N_GENERATORS
# Columns of tile_features' output that code reads by name.
COL_PYRAMID4 = slice(64, 80)  # the 4x4 pyramid of the unit-RMS residual
COL_LOG_RMS = 128  # summary_features()[:, 0]
COL_COHERENCE = 131  # summary_features()[:, 3]


def _resize(v, s):
    return jax.image.resize(v, v.shape[:-2] + (s, s), "linear", antialias=True)


def _grads(z):
    gx = jnp.pad(z[:, :, 1:] - z[:, :, :-1], ((0, 0), (0, 0), (0, 1)))
    gy = jnp.pad(z[:, 1:, :] - z[:, :-1, :], ((0, 0), (0, 1), (0, 0)))
    return gx, gy


def summary_features(resid: jax.Array) -> jax.Array:
    """Global statistics ``[N, 5]``: log RMS, mean |gx|, mean |gy|, coherence, log2 T / 5."""
    N, T, _ = resid.shape
    r = resid.astype(jnp.float32)
    rms = jnp.sqrt(jnp.mean(r * r, axis=(1, 2)))
    z = r / jnp.maximum(rms, 1e-3)[:, None, None]
    gx, gy = _grads(z)
    jxx, jyy, jxy = jnp.mean(gx * gx, (1, 2)), jnp.mean(gy * gy, (1, 2)), jnp.mean(gx * gy, (1, 2))
    coh = jnp.sqrt((jxx - jyy) ** 2 + 4.0 * jxy * jxy) / (jxx + jyy + EPS)
    return jnp.stack([jnp.log(rms + 1e-4), jnp.mean(jnp.abs(gx), (1, 2)), jnp.mean(jnp.abs(gy), (1, 2)), coh,
                      jnp.full((N,), jnp.log2(T) / 5.0, jnp.float32)], axis=1)


@aot.jit
def tile_features(resid: jax.Array, stage: jax.Array, prev_gen: jax.Array) -> jax.Array:
    """Raw features of residual tiles -> float32 ``[N, N_FEATURES]`` (see the module docstring)."""
    N = resid.shape[0]
    r = resid.astype(jnp.float32)
    rms = jnp.sqrt(jnp.mean(r * r, axis=(1, 2)))
    z = r / jnp.maximum(rms, 1e-3)[:, None, None]
    gx, gy = _grads(z)
    st = _resize(jnp.stack([gx * gx, gy * gy, gx * gy], axis=1), 4).reshape(N, -1)
    return jnp.concatenate([
        _resize(z, 8).reshape(N, -1), _resize(z, 4).reshape(N, -1), st, summary_features(r),
        jax.nn.one_hot(jnp.minimum(stage, N_STAGES - 1), N_STAGES, dtype=jnp.float32),
        jax.nn.one_hot(prev_gen, N_GENERATORS, dtype=jnp.float32),
    ], axis=1)
