"""RGB <-> YCbCr (BT.601 full range, as JPEG/JFIF) and 4:2:0 chroma subsampling.

Data contract: float32 in [0, 1]; RGB ``[H, W, 3]``; YCbCr planes with Cb and Cr centred on 0.5.
Chroma is subsampled by averaging 2x2 blocks (odd sizes edge-padded) to ``[ceil(H/2), ceil(W/2)]``
and upsampled back with linear interpolation (half-pixel centres), then cropped to ``[H, W]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .pipeline import to_unit_float

__all__ = ["rgb_to_ycbcr", "ycbcr_to_rgb", "subsample_420", "upsample_420", "as_rgb_float"]

_FWD = np.array([[0.299, 0.587, 0.114],
                 [-0.168735892, -0.331264108, 0.5],
                 [0.5, -0.418687589, -0.081312411]], np.float32)
_INV = np.linalg.inv(_FWD.astype(np.float64)).astype(np.float32)


@jax.jit
def rgb_to_ycbcr(rgb):
    """``[..., 3]`` RGB -> ``[..., 3]`` YCbCr (JFIF), all in [0, 1]."""
    ycc = jnp.einsum("...c,kc->...k", rgb, jnp.asarray(_FWD), precision=jax.lax.Precision.HIGHEST)
    return ycc + jnp.asarray([0.0, 0.5, 0.5], jnp.float32)


@jax.jit
def ycbcr_to_rgb(ycc):
    """Inverse of :func:`rgb_to_ycbcr`, clipped to [0, 1]."""
    d = ycc - jnp.asarray([0.0, 0.5, 0.5], jnp.float32)
    rgb = jnp.einsum("...c,kc->...k", d, jnp.asarray(_INV), precision=jax.lax.Precision.HIGHEST)
    return jnp.clip(rgb, 0.0, 1.0)


@jax.jit
def subsample_420(plane):
    """``[H, W]`` -> ``[ceil(H/2), ceil(W/2)]``: mean of each 2x2 block (edges replicated)."""
    H, W = plane.shape
    p = jnp.pad(plane, ((0, H % 2), (0, W % 2)), mode="edge")
    return p.reshape(p.shape[0] // 2, 2, p.shape[1] // 2, 2).mean(axis=(1, 3))


def upsample_420(plane, H: int, W: int):
    """``[ceil(H/2), ceil(W/2)]`` -> ``[H, W]`` by linear interpolation."""
    h, w = plane.shape
    return jax.image.resize(plane, (2 * h, 2 * w), method="linear")[:H, :W]


def as_rgb_float(image) -> np.ndarray:
    """Validate an RGB image -> float32 ``[H, W, 3]`` in [0, 1] (uint8 / unsigned / float in [0, 1])."""
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"expected an RGB [H, W, 3] image, got shape {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"image must be at least 1x1, got {a.shape[0]}x{a.shape[1]}")
    return to_unit_float(a)
