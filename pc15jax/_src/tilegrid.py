"""Tile grids, blend windows and the seam penalty mask: the host side of tiling (no JAX).

Data contract:
  * Images are float32 ``[H, W]``; tiles are float32 ``[N, T, T]`` in row-major tile order
    (``tile = iy * nx + ix``), ``N = ny * nx``.
  * Tile starts along an axis of length ``L`` are ``min(i * (T - O), L - T)``: monotone,
    never past ``L - T``, the last tile ends exactly at the border.
  * An image smaller than a tile along an axis is **edge-padded** up to ``T`` on that axis
    (``spec.Hp``/``spec.Wp``).
  * Windows taper only on the sides that have a neighbour (over the actual overlap with it), so
    image borders keep full weight; :func:`cover_table` lists, for every pixel of an axis, the
    tiles that cover it, in tile order: the blend sums them in that fixed order.

The JAX tile extraction and blend: :mod:`pc15jax._src.tiling`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

__all__ = ["TileGridCfg", "TileSpec", "tile_starts", "tile_image", "tile_windows", "cover_table", "resolve_window",
           "seam_penalty_mask", "WINDOWS"]

WINDOWS = ("hann", "tukey", "kaiser")


def _check_int(name, v, lo):
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")


@dataclasses.dataclass(frozen=True)
class TileGridCfg:
    """Tile grid geometry: square tiles of ``size`` pixels overlapping by ``overlap`` pixels.

    Raises:
      ValueError: unless ``size > 0`` and ``0 <= overlap < size``.
    """

    size: int = 256
    overlap: int = 24

    def __post_init__(self):
        _check_int("size", self.size, 1)
        _check_int("overlap", self.overlap, 0)
        if self.overlap >= self.size:
            raise ValueError(f"overlap must be smaller than size, got overlap={self.overlap} size={self.size}")

    @property
    def stride(self) -> int:
        return self.size - self.overlap


def tile_starts(L: int, size: int, overlap: int) -> np.ndarray:
    """Start offsets (int64 ``[n]``) of tiles covering ``max(L, size)`` pixels."""
    _check_int("L", L, 1)
    TileGridCfg(size, overlap)
    if L <= size:
        return np.zeros((1,), np.int64)
    stride = size - overlap
    n = -(-(L - size) // stride) + 1
    return np.minimum(np.arange(n, dtype=np.int64) * stride, L - size)


@dataclasses.dataclass(frozen=True)
class TileSpec:
    """Where the tiles of one image lie. Hashable: usable as a static jit argument.

    Attributes:
      H, W: image size. Hp, Wp: padded size (``max(H, size)``, ``max(W, size)``).
      size, overlap: tile geometry. ys, xs: tile starts along each axis.
    """

    H: int
    W: int
    size: int
    overlap: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]

    @property
    def Hp(self) -> int:
        return max(self.H, self.size)

    @property
    def Wp(self) -> int:
        return max(self.W, self.size)

    @property
    def ny(self) -> int:
        return len(self.ys)

    @property
    def nx(self) -> int:
        return len(self.xs)

    @property
    def count(self) -> int:
        return self.ny * self.nx

    @property
    def starts(self) -> np.ndarray:
        """``[count, 2]`` int32 (y, x) per tile, row-major."""
        yy, xx = np.meshgrid(np.asarray(self.ys), np.asarray(self.xs), indexing="ij")
        return np.stack([yy.ravel(), xx.ravel()], axis=1).astype(np.int32)


def _image_hw(image) -> tuple[int, int]:
    shape = np.shape(image)
    if len(shape) != 2:
        raise ValueError(f"expected a 2-D [H, W] image, got shape {tuple(shape)}")
    H, W = int(shape[0]), int(shape[1])
    if H < 1 or W < 1:
        raise ValueError(f"image must be at least 1x1, got {H}x{W}")
    return H, W


def tile_image(image_or_shape, grid: TileGridCfg) -> TileSpec:
    """Lay a tile grid over an image (or an ``(H, W)`` shape).

    Args:
      image_or_shape: ``[H, W]`` array, or an ``(H, W)`` tuple.
      grid: :class:`TileGridCfg`.

    Returns:
      :class:`TileSpec` with ``ny * nx`` tiles.
    """
    if not isinstance(grid, TileGridCfg):
        raise ValueError(f"grid must be a TileGridCfg, got {type(grid).__name__}")
    if isinstance(image_or_shape, tuple) and len(image_or_shape) == 2 and all(
            isinstance(v, (int, np.integer)) for v in image_or_shape):
        H, W = int(image_or_shape[0]), int(image_or_shape[1])
        if H < 1 or W < 1:
            raise ValueError(f"image must be at least 1x1, got {H}x{W}")
    else:
        H, W = _image_hw(image_or_shape)
    ys = tuple(int(v) for v in tile_starts(H, grid.size, grid.overlap))
    xs = tuple(int(v) for v in tile_starts(W, grid.size, grid.overlap))
    return TileSpec(H=H, W=W, size=grid.size, overlap=grid.overlap, ys=ys, xs=xs)


# ----------------------------------------------------------------------------------------------
# Windows
# ----------------------------------------------------------------------------------------------


def _taper(m: int, window: str, beta: float) -> np.ndarray:
    """Rising edge of length ``m`` (float64 ``[m]``, strictly positive, < 1)."""
    if m <= 0:
        return np.zeros((0,), np.float64)
    j = np.arange(m, dtype=np.float64) + 0.5
    if window in ("hann", "tukey"):
        return 0.5 - 0.5 * np.cos(np.pi * j / m)
    # kaiser: rising half of a Kaiser window of length 2m, sampled at half-integers, peak 1.
    t = (j - m) / m  # in (-1, 0)
    return np.i0(beta * np.sqrt(np.clip(1.0 - t * t, 0.0, 1.0))) / np.i0(beta)


def resolve_window(window: str, window_params, size: int, overlap: int) -> tuple[str, float, int]:
    """-> (window, kaiser beta, tukey taper width in pixels)."""
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {WINDOWS}, got {window!r}")
    wp = dict(window_params or {})
    allowed = {"hann": set(), "tukey": {"alpha"}, "kaiser": {"beta"}}[window]
    unknown = sorted(set(wp) - allowed)
    if unknown:
        raise ValueError(f"unknown window_params {unknown} for window {window!r}; allowed: {sorted(allowed)}")
    beta = float(wp.get("beta", 6.5))
    if not (math.isfinite(beta) and beta >= 0):
        raise ValueError(f"kaiser beta must be a finite number >= 0, got {beta}")
    alpha = float(wp.get("alpha", min(1.0, max(0.0, 2.0 * overlap / size))))
    if not (0.0 <= alpha <= 1.0):
        raise ValueError(f"tukey alpha must lie in [0, 1], got {alpha}")
    return window, beta, int(round(alpha * size / 2.0))


def _axis_windows(starts, size: int, window: str, beta: float, tukey_width: int) -> np.ndarray:
    """Per-tile 1-D windows along one axis, float32 ``[n, size]``."""
    n = len(starts)
    w = np.ones((n, size), np.float64)
    for i in range(n):
        if i > 0:  # left/top neighbour: taper over the actual overlap with it
            m = int(starts[i - 1] + size - starts[i])
            m = min(m, tukey_width) if window == "tukey" else m
            w[i, :m] *= _taper(m, window, beta)
        if i < n - 1:
            m = int(starts[i] + size - starts[i + 1])
            m = min(m, tukey_width) if window == "tukey" else m
            w[i, size - m:] *= _taper(m, window, beta)[::-1]
    return w.astype(np.float32)


def tile_windows(spec: TileSpec, window: str = "hann", window_params=None) -> tuple[np.ndarray, np.ndarray]:
    """Separable blend windows: (``wy`` float32 ``[ny, T]``, ``wx`` float32 ``[nx, T]``)."""
    window, beta, tw = resolve_window(window, window_params, spec.size, spec.overlap)
    return (_axis_windows(spec.ys, spec.size, window, beta, tw),
            _axis_windows(spec.xs, spec.size, window, beta, tw))


def cover_table(starts, size: int, L: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each pixel of an axis, the covering tiles: (tile idx, local offset, valid) ``[L, K]``."""
    starts = np.asarray(starts)
    pix = np.arange(L)[:, None]
    inside = (pix >= starts[None, :]) & (pix < starts[None, :] + size)  # [L, n]
    K = int(inside.sum(1).max())
    order = np.argsort(~inside, axis=1, kind="stable")[:, :K]  # covering tiles first, in tile order
    valid = np.take_along_axis(inside, order, 1)
    local = np.where(valid, pix - starts[order], 0)
    return np.where(valid, order, 0).astype(np.int32), local.astype(np.int32), valid


def seam_penalty_mask(size: int, overlap: int, power: float = 1.5) -> np.ndarray:
    """Seam penalty ``m``: 0 in the tile centre, rising to 1 at the edge over the overlap.

    Used as ``D = (1 + gamma * m) * D_base`` so the search cares more about the pixels that
    meet a neighbour.

    Returns:
      float32 ``[size, size]`` in ``[0, 1]``.
    """
    TileGridCfg(size, overlap)
    if not (math.isfinite(power) and power > 0):
        raise ValueError(f"power must be a positive number, got {power}")
    if overlap == 0:
        return np.zeros((size, size), np.float32)
    t = np.arange(size, dtype=np.float64) + 0.5
    d = np.minimum(t, size - t)  # distance to the nearest edge, >= 0.5
    m1 = np.clip((overlap - d + 0.5) / overlap, 0.0, 1.0) ** power
    return np.maximum(m1[:, None], m1[None, :]).astype(np.float32)
