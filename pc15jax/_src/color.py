"""RGB <-> YCbCr (BT.601 full range, as JPEG/JFIF) and 4:2:0 chroma subsampling.

Data contract: float32 in [0, 1]; RGB ``[H, W, 3]``; YCbCr planes with Cb and Cr centred on 0.5.
Chroma is subsampled by averaging 2x2 blocks (odd sizes edge-padded) to ``[ceil(H/2), ceil(W/2)]``
and upsampled back with linear interpolation (half-pixel centres), then cropped to ``[H, W]``.

The encoder's forward direction (:func:`rgb_to_ycbcr`, :func:`subsample_420`) runs in JAX; the
way back (:func:`upsample_420`, :func:`ycbcr_to_rgb`) is the decoder's and runs on the host in
NumPy float32, in a fixed order of operations, so that the encoder's reconstruction is the
decoder's output bit for bit and decoding needs no JAX. This module imports JAX only when the
forward direction is first used.
"""

from __future__ import annotations

import functools

import numpy as np

from shared_runtime import aot

__all__ = ["rgb_to_ycbcr", "ycbcr_to_rgb", "subsample_420", "upsample_420", "as_rgb_float"]

_FWD = np.array([[0.299, 0.587, 0.114],
                 [-0.168735892, -0.331264108, 0.5],
                 [0.5, -0.418687589, -0.081312411]], np.float32)
_INV = np.linalg.inv(_FWD.astype(np.float64)).astype(np.float32)
_CENTRE = np.asarray([0.0, 0.5, 0.5], np.float32)


@functools.lru_cache(maxsize=1)
def _forward_programs():
    import jax
    import jax.numpy as jnp

    @aot.jit
    def fwd(rgb):
        ycc = jnp.einsum("...c,kc->...k", rgb, jnp.asarray(_FWD), precision=jax.lax.Precision.HIGHEST)
        return ycc + jnp.asarray(_CENTRE)

    @aot.jit
    def sub(plane):
        H, W = plane.shape
        p = jnp.pad(plane, ((0, H % 2), (0, W % 2)), mode="edge")
        return p.reshape(p.shape[0] // 2, 2, p.shape[1] // 2, 2).mean(axis=(1, 3))

    return fwd, sub


def rgb_to_ycbcr(rgb):
    """``[..., 3]`` RGB -> ``[..., 3]`` YCbCr (JFIF), all in [0, 1] (a JAX array)."""
    return _forward_programs()[0](rgb)


def subsample_420(plane):
    """``[H, W]`` -> ``[ceil(H/2), ceil(W/2)]``: mean of each 2x2 block (edges replicated; a JAX array)."""
    return _forward_programs()[1](plane)


def ycbcr_to_rgb(ycc) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr`, clipped to [0, 1]: float32 ``[..., 3]`` (host)."""
    d = np.asarray(ycc, np.float32) - _CENTRE
    out = [d[..., 0] * _INV[k, 0] + d[..., 1] * _INV[k, 1] + d[..., 2] * _INV[k, 2] for k in range(3)]
    return np.clip(np.stack(out, axis=-1), 0.0, 1.0).astype(np.float32, copy=False)


def _upsample_axis(a: np.ndarray, axis: int) -> np.ndarray:
    """Twice the samples along ``axis``: output ``i`` sits at input ``i / 2 - 0.25``, linear
    weights 3/4 and 1/4, the borders repeated."""
    a = np.moveaxis(a, axis, 0)
    prev = np.concatenate([a[:1], a[:-1]], axis=0)
    nxt = np.concatenate([a[1:], a[-1:]], axis=0)
    out = np.empty((2 * a.shape[0],) + a.shape[1:], np.float32)
    out[0::2] = np.float32(0.75) * a + np.float32(0.25) * prev
    out[1::2] = np.float32(0.75) * a + np.float32(0.25) * nxt
    return np.moveaxis(out, 0, axis)


def upsample_420(plane, H: int, W: int) -> np.ndarray:
    """``[ceil(H/2), ceil(W/2)]`` -> ``[H, W]`` by linear interpolation (float32, host)."""
    p = np.asarray(plane, np.float32)
    return np.ascontiguousarray(_upsample_axis(_upsample_axis(p, 0), 1)[:H, :W])


def as_rgb_float(image) -> np.ndarray:
    """Validate an RGB image -> float32 ``[H, W, 3]`` in [0, 1] (uint8 / unsigned / float in [0, 1])."""
    from .pipeline import to_unit_float

    a = np.asarray(image)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"expected an RGB [H, W, 3] image, got shape {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"image must be at least 1x1, got {a.shape[0]}x{a.shape[1]}")
    return to_unit_float(a)
