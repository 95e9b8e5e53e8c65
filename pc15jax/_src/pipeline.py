"""Whole-image search: input checks -> tiles -> search -> symbols (host, once) -> blended reconstruction."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from .config import CodecConfig
from .config import resolve_config
from .search import SearchResult, SearchTables, TileSymbols, dictionary_for, search_tiles, tile_symbols
from .tiling import TileSpec, blend, extract_tiles, tile_image

__all__ = ["SearchOutput", "search_image", "as_gray_float", "to_unit_float", "dictionary_for"]


def to_unit_float(a: np.ndarray) -> np.ndarray:
    """uint8 / other unsigned ints (scaled by their maximum) or floats in [0, 1] -> float32 in [0, 1].

    Raises ``ValueError`` for NaN/inf, floats outside [0, 1] and any other dtype.
    """
    if np.issubdtype(a.dtype, np.unsignedinteger):
        return (a.astype(np.float64) / np.iinfo(a.dtype).max).astype(np.float32)
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise ValueError("image contains NaN or infinite values")
        lo, hi = float(a.min()), float(a.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise ValueError(f"float images must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
        return np.clip(a, 0.0, 1.0).astype(np.float32)
    raise ValueError(f"unsupported image dtype {a.dtype}; use uint8 or float in [0, 1]")


def as_gray_float(image) -> np.ndarray:
    """Validate a grayscale image -> float32 ``[H, W]`` in [0, 1].

    Accepts bool, uint8 (divided by 255), other unsigned ints (scaled by their maximum) or floats
    already in [0, 1]. Raises ``ValueError`` otherwise (wrong rank, NaN/inf, out of range).
    """
    a = np.asarray(image)
    if a.ndim != 2:
        raise ValueError(f"expected a grayscale [H, W] image, got shape {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"image must be at least 1x1, got {a.shape[0]}x{a.shape[1]}")
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    return to_unit_float(a)


@dataclasses.dataclass(frozen=True)
class SearchOutput:
    """What :func:`search_image` found.

    Attributes:
      spec: the tile grid. result: per-tile :class:`SearchResult` (device arrays).
      symbols: host-side :class:`TileSymbols`. recon: float32 ``[H, W]`` blended reconstruction,
      clipped to [0, 1]. bits: estimated total bits under the rate model. bpp: ``bits / (H * W)``.
    """

    spec: TileSpec
    result: SearchResult
    symbols: TileSymbols
    recon: np.ndarray
    bits: float
    bpp: float


def search_image(image, cfg: CodecConfig | None = None, *, tables: SearchTables | None = None) -> SearchOutput:
    """Run the RD search over every tile of a grayscale image and blend the reconstruction.

    Args:
      image: ``[H, W]`` uint8, or float in [0, 1].
      cfg: :class:`CodecConfig` (defaults to ``CodecConfig()``).
      tables: precomputed search tables (see :func:`pc15jax._src.search.make_tables`).

    Returns:
      :class:`SearchOutput`.

    Examples:
      >>> import numpy as np, pc15jax as pc
      >>> img = np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(48, 64)
      >>> out = pc.search_image(img, pc.CodecConfig(tile=16, overlap=4))
      >>> out.recon.shape
      (48, 64)
    """
    cfg = resolve_config(cfg)
    x = as_gray_float(image)
    spec = tile_image(x, cfg.grid)
    tiles = extract_tiles(x, spec)
    res = search_tiles(tiles, cfg, tables)
    recon = blend(res.recon, spec, window=cfg.window, window_params=dict(cfg.window_params) or None)
    recon, bits = jax.device_get((jnp.clip(recon, 0.0, 1.0), jnp.sum(res.bits)))
    dic = dictionary_for(cfg)
    bits = float(bits)
    return SearchOutput(spec=spec, result=res, symbols=tile_symbols(dic, res), recon=np.asarray(recon),
                        bits=bits, bpp=bits / (spec.H * spec.W))

