"""Feather weights from coverage, and weighted assembly of tiles on the canvas.

Data contract: coverage ``[H, W]`` (> 0 where a tile has data); tiles ``[h, w, C]`` float32 with
NaN for no data; offsets are integer ``(y, x)`` of each tile's top-left pixel on the canvas.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from shared_runtime import aot

__all__ = ["feather_weights", "assemble"]


@partial(aot.jit, static_argnames=("steps",))
def _chamfer(inside, steps: int):
    """Chamfer (1, sqrt 2) distance to the nearest pixel outside ``inside`` (the array border counts
    as outside), saturated at ``steps``; ``steps`` sweeps of a 3x3 min-plus filter."""
    big = jnp.float32(steps + 2)
    d = jnp.where(inside, big, 0.0)
    r2 = jnp.float32(math.sqrt(2.0))

    def sweep(_, d):
        p = jnp.pad(d, 1, constant_values=0.0)
        H, W = d.shape
        best = d
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dy == 0 and dx == 0:
                    continue
                cost = r2 if dy and dx else jnp.float32(1.0)
                best = jnp.minimum(best, p[1 + dy:1 + dy + H, 1 + dx:1 + dx + W] + cost)
        return jnp.where(inside, best, 0.0)

    return lax.fori_loop(0, steps, sweep, d)


COARSE_STEPS = 64  # wider feathers: distances on a k-times coarser grid, refined near the edge
FINE_STEPS = 4  # ... over this many pixels (a feather that wide weighs ~0 there anyway)


def _distance(inside, steps: int):
    """Chamfer distance to the nearest outside pixel, saturated at >= ``steps``. Up to
    ``COARSE_STEPS`` sweeps at full resolution; beyond, ``k = ceil(steps / COARSE_STEPS)``: the
    distance on a grid of k x k blocks (a block is inside when all its pixels are), upsampled,
    taken wherever the full-resolution distance (exact to ``FINE_STEPS``) has saturated.
    Error <= ~k px, i.e. <= ~1.5 / COARSE_STEPS of the feather's ramp."""
    if steps <= COARSE_STEPS:
        return _chamfer(inside, steps)
    k = -(-steps // COARSE_STEPS)
    H, W = inside.shape
    Hc, Wc = -(-H // k), -(-W // k)
    blocks = jnp.pad(inside, ((0, Hc * k - H), (0, Wc * k - W)))  # beyond the array: outside
    coarse = jnp.all(blocks.reshape(Hc, k, Wc, k), axis=(1, 3))
    dc = _chamfer(coarse, COARSE_STEPS + 1) * jnp.float32(k)
    up = jax.image.resize(dc, (Hc * k, Wc * k), "linear")[:H, :W]
    fine = _chamfer(inside, FINE_STEPS)
    near = jnp.float32(FINE_STEPS)
    return jnp.where(fine < near, fine, jnp.maximum(up, near))


def feather_weights(coverage, *, width: float = 32.0, use_coverage: bool = True) -> jax.Array:
    """Smooth weights that fall to 0 at the coverage edge: ``smoothstep(d / width)``.

    ``d`` is the (chamfer, within 8 % of Euclidean; for widths over 64 px multiscale, within a
    further ``width / 64`` px) distance in pixels to the nearest uncovered pixel or the array
    border. Computed once per tile, on its coverage map.

    Args:
      coverage: ``[H, W]``, > 0 where covered. width: feather width in pixels (> 0).
      use_coverage: multiply by the coverage itself (deeper pixels weigh more).

    Returns:
      float32 ``[H, W]`` in ``[0, max coverage]``; 0 outside the coverage.
    """
    cov = jnp.asarray(coverage, jnp.float32)
    if cov.ndim != 2:
        raise ValueError(f"coverage must be [H, W], got shape {cov.shape}")
    if not (math.isfinite(width) and width > 0):
        raise ValueError(f"width must be a positive number, got {width}")
    return _feather(cov, jnp.float32(width), steps=int(math.ceil(width)), use_coverage=bool(use_coverage))


@partial(aot.jit, static_argnames=("steps", "use_coverage"))
def _feather(cov, width, *, steps: int, use_coverage: bool):
    cov = jnp.where(jnp.isfinite(cov), cov, 0.0)
    inside = cov > 0
    d = _distance(inside, steps)
    t = jnp.clip(d / width, 0.0, 1.0)
    w = t * t * (3.0 - 2.0 * t)
    return jnp.where(inside, w * (cov if use_coverage else 1.0), 0.0)


def _accumulate(tiles, weights, coverage, offsets, gains, shifts, canvas_shape):
    """Sums ``sum w * (g t + o)``, ``sum w`` per channel and ``sum w * coverage`` over the
    canvas, tiles added in a fixed order: deterministic on every backend (no scatter atomics)."""
    T, h, w, C = tiles.shape
    H, W = canvas_shape
    num = jnp.zeros((H + h, W + w, C), jnp.float32)
    den = jnp.zeros((H + h, W + w, C), jnp.float32)
    cov = jnp.zeros((H + h, W + w), jnp.float32)
    ws = jnp.zeros((H + h, W + w), jnp.float32)

    def add(k, carry):
        num, den, cov, ws = carry
        t = tiles[k] * gains[k] + shifts[k]
        wt, (y, x) = weights[k], (offsets[k, 0], offsets[k, 1])
        ok = jnp.isfinite(t)
        wv = jnp.where(ok, wt[..., None], 0.0)
        num = lax.dynamic_update_slice(num, lax.dynamic_slice(num, (y, x, 0), (h, w, C)) + wv * jnp.where(ok, t, 0.0),
                                       (y, x, 0))
        den = lax.dynamic_update_slice(den, lax.dynamic_slice(den, (y, x, 0), (h, w, C)) + wv, (y, x, 0))
        cov = lax.dynamic_update_slice(cov, lax.dynamic_slice(cov, (y, x), (h, w)) + wt * coverage[k], (y, x))
        ws = lax.dynamic_update_slice(ws, lax.dynamic_slice(ws, (y, x), (h, w)) + wt, (y, x))
        return num, den, cov, ws

    return lax.fori_loop(0, T, add, (num, den, cov, ws))


@partial(aot.jit, static_argnames=("canvas_shape",))
def _assemble(tiles, weights, offsets, *, canvas_shape):
    T, _, _, C = tiles.shape
    H, W = canvas_shape
    one, zero = jnp.ones((T, C), jnp.float32), jnp.zeros((T, C), jnp.float32)
    num, den, _, _ = _accumulate(tiles, weights, jnp.zeros(weights.shape, jnp.float32), offsets, one, zero,
                                 canvas_shape)
    num, den = num[:H, :W], den[:H, :W]
    mosaic = jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), jnp.nan)
    return mosaic, jnp.max(den, axis=-1)


@partial(aot.jit, static_argnames=("canvas_shape",))
def assemble_scaled(tiles, weights, coverage, offsets, gains, shifts, *, canvas_shape):
    """The pipeline's assembly of one canvas band: tiles ``[T, h, w, C]`` scaled ``g t + o``
    (``gains``, ``shifts`` ``[T, C]``), feather ``weights`` and ``coverage`` ``[T, h, w]``, int32
    ``offsets [T, 2]`` -> ``(mosaic [H, W, C], coverage-weighted weight [H, W])`` where the weight
    is ``sum w c / sum w`` (frames per pixel, feathered; 0 where no tile lands)."""
    H, W = canvas_shape
    num, den, cov, ws = _accumulate(tiles, weights, coverage, offsets, gains, shifts, canvas_shape)
    num, den, cov, ws = num[:H, :W], den[:H, :W], cov[:H, :W], ws[:H, :W]
    mosaic = jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), jnp.nan)
    return mosaic, jnp.where(ws > 0, cov / jnp.where(ws > 0, ws, 1.0), 0.0)


def assemble(tiles, weights, offsets_in_canvas, canvas_shape) -> tuple[jax.Array, jax.Array]:
    """Weighted coadd of tiles on a canvas: ``sum(w * tile) / sum(w)`` per pixel and channel.

    Args:
      tiles: sequence of ``[h_k, w_k, C]`` (or ``[h_k, w_k]``) float arrays, NaN = no data.
      weights: sequence of ``[h_k, w_k]`` (e.g. :func:`feather_weights`); never modified.
      offsets_in_canvas: int ``[T, 2]`` top-left ``(y, x)`` of each tile on the canvas (>= 0).
      canvas_shape: ``(H, W)``.

    Returns:
      ``(mosaic [H, W, C] float32, NaN where no tile contributes; weight [H, W] float32)``.
    """
    tiles = [jnp.asarray(t, jnp.float32) for t in tiles]
    tiles = [t[..., None] if t.ndim == 2 else t for t in tiles]
    if not tiles:
        raise ValueError("at least one tile is required")
    C = tiles[0].shape[-1]
    if any(t.ndim != 3 or t.shape[-1] != C for t in tiles):
        raise ValueError("tiles must all be [h, w, C] with one C")
    weights = [jnp.asarray(w, jnp.float32) for w in weights]
    if len(weights) != len(tiles) or any(w.shape != t.shape[:2] for w, t in zip(weights, tiles)):
        raise ValueError("weights must be one [h, w] map per tile, matching the tile")
    off = np.asarray(offsets_in_canvas, np.int64).reshape(-1, 2)
    H, W = (int(v) for v in canvas_shape)
    if off.shape[0] != len(tiles):
        raise ValueError(f"need one offset per tile, got {off.shape[0]} for {len(tiles)} tiles")
    for (y, x), t in zip(off, tiles):
        if y < 0 or x < 0 or y + t.shape[0] > H or x + t.shape[1] > W:
            raise ValueError(f"tile of shape {t.shape[:2]} at {(int(y), int(x))} does not fit the canvas {(H, W)}")
    hm, wm = max(t.shape[0] for t in tiles), max(t.shape[1] for t in tiles)
    stack = jnp.stack([jnp.pad(t, ((0, hm - t.shape[0]), (0, wm - t.shape[1]), (0, 0)), constant_values=jnp.nan)
                       for t in tiles])
    wstack = jnp.stack([jnp.pad(w, ((0, hm - w.shape[0]), (0, wm - w.shape[1]))) for w in weights])
    return _assemble(stack, wstack, jnp.asarray(off, jnp.int32), canvas_shape=(H, W))
