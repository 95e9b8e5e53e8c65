"""Tile extraction and window blending in JAX (the grids, windows and seam mask: :mod:`.tilegrid`).

Data contract:
  * Images are float32 ``[H, W]``; tiles are float32 ``[N, T, T]`` in row-major tile order
    (``tile = iy * nx + ix``), ``N = ny * nx``.
  * Tile starts along an axis of length ``L`` are ``min(i * (T - O), L - T)``: monotone,
    never past ``L - T``, the last tile ends exactly at the border.
  * An image smaller than a tile along an axis is **edge-padded** up to ``T`` on that axis
    (``spec.Hp``/``spec.Wp``); :func:`blend` returns the padded canvas cropped back to
    ``[H, W]``.
  * Blending is a partition of unity: ``sum(w * tile) / sum(w)``. Windows taper only on the
    sides that have a neighbour (over the actual overlap with it), so image borders keep full
    weight. It is computed as a *gather* (each pixel sums its covering tiles in a fixed order),
    which is deterministic on every backend (no scatter-add atomics).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from shared_runtime import aot

from .tilegrid import (WINDOWS, TileGridCfg, TileSpec, _image_hw, cover_table, resolve_window,  # noqa: F401
                       seam_penalty_mask, tile_image, tile_starts, tile_windows)

__all__ = [
    "TileGridCfg",
    "TileSpec",
    "tile_starts",
    "tile_image",
    "extract_tiles",
    "blend",
    "tile_windows",
    "seam_penalty_mask",
    "WINDOWS",
]


@partial(aot.jit, static_argnames=("spec",))
def _extract(image, *, spec: TileSpec):
    T = spec.size
    pad = ((0, spec.Hp - spec.H), (0, spec.Wp - spec.W))
    img = jnp.pad(image, pad, mode="edge") if pad != ((0, 0), (0, 0)) else image
    starts = jnp.asarray(spec.starts)
    return jax.vmap(lambda s: lax.dynamic_slice(img, (s[0], s[1]), (T, T)))(starts)


def extract_tiles(image, spec: TileSpec) -> jax.Array:
    """Cut the tiles of ``spec`` out of ``image`` -> float32 ``[N, T, T]`` (edge-padded if small)."""
    H, W = _image_hw(image)
    if (H, W) != (spec.H, spec.W):
        raise ValueError(f"image is {H}x{W} but the spec was made for {spec.H}x{spec.W}")
    return _extract(aot.device_array(image, np.float32), spec=spec)


@partial(aot.jit, static_argnames=("spec", "window", "window_params"))
def _blend(tiles, *, spec: TileSpec, window: str, window_params):
    T = spec.size
    wy, wx = tile_windows(spec, window, dict(window_params) if window_params else None)
    ty, ly, vy = cover_table(spec.ys, T, spec.Hp)
    tx, lx, vx = cover_table(spec.xs, T, spec.Wp)
    ay = np.where(vy, wy[ty, ly], 0.0).astype(np.float32)  # [Hp, Ky]
    ax = np.where(vx, wx[tx, lx], 0.0).astype(np.float32)  # [Wp, Kx]
    flat = tiles.astype(jnp.float32).reshape(-1)
    # Flat index of pixel (y, x) in tile (ty, tx) at local (ly, lx) is
    # ((ty * nx + tx) * T + ly) * T + lx = row_part[y] + col_part[x], separable per axis.
    row_part = jnp.asarray((ty * spec.nx * T + ly) * T, jnp.int32)  # [Hp, Ky]
    col_part = jnp.asarray(tx * T * T + lx, jnp.int32)  # [Wp, Kx]
    ay, ax = jnp.asarray(ay), jnp.asarray(ax)
    num = jnp.zeros((spec.Hp, spec.Wp), jnp.float32)
    for k in range(ty.shape[1]):  # K <= ceil(T / stride) + 1: a handful of static steps,
        for l in range(tx.shape[1]):  # summed in a fixed order -> deterministic everywhere
            vals = flat[row_part[:, k, None] + col_part[None, :, l]]
            num = num + (ay[:, k, None] * ax[None, :, l]) * vals
    den = ay.sum(1)[:, None] * ax.sum(1)[None, :]
    return (num / den)[: spec.H, : spec.W]


def blend(tiles, spec: TileSpec, H: int | None = None, W: int | None = None, window: str = "hann",
          window_params: dict | None = None) -> jax.Array:
    """Window-blend tiles into an image (partition of unity; deterministic gather).

    Args:
      tiles: float ``[N, T, T]`` in the row-major order of ``spec``.
      spec: the :class:`TileSpec` the tiles were cut with.
      H, W: output size; default (and must equal) ``spec.H``, ``spec.W``.
      window: ``"hann"`` (raised cosine over each overlap), ``"tukey"`` (cosine taper of width
        ``alpha * size / 2``, ``alpha`` defaults to ``2 * overlap / size``) or ``"kaiser"``
        (Kaiser taper, ``beta`` defaults to 6.5).
      window_params: ``{"alpha": a}`` for tukey, ``{"beta": b}`` for kaiser.

    Returns:
      float32 ``[H, W]``.
    """
    if H is not None and H != spec.H or W is not None and W != spec.W:
        raise ValueError(f"H, W = {H}, {W} do not match the spec's {spec.H}, {spec.W}")
    shape = tuple(np.shape(tiles))
    if shape != (spec.count, spec.size, spec.size):
        raise ValueError(f"tiles must have shape {(spec.count, spec.size, spec.size)}, got {shape}")
    resolve_window(window, window_params, spec.size, spec.overlap)  # validate eagerly
    wp = tuple(sorted((window_params or {}).items()))
    return _blend(aot.device_array(tiles), spec=spec, window=window, window_params=wp)
