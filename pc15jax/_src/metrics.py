"""Image quality metrics: PSNR and SSIM (Wang et al. 2004).

Data contract: planes are ``[..., H, W]`` float arrays (leading axes are a batch); every
metric returns one float32 value per plane, shape ``[...]``.

SSIM uses an 11x11 Gaussian window (sigma 1.5, truncated at 3.5 sigma), K1 = 0.01,
K2 = 0.03, population covariances, reflect (``d c b a | a b c d``) boundary handling and a
crop of 5 pixels before averaging: numerically the same definition as scikit-image's
``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=max_val)``.

References:
  Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image quality assessment: from error
  visibility to structural similarity", IEEE TIP 13(4), 2004.
"""

from __future__ import annotations

import functools

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from shared_runtime import aot

__all__ = ["psnr", "ssim", "ssim_map", "mse", "gaussian_kernel"]

SSIM_SIGMA = 1.5
SSIM_RADIUS = int(3.5 * SSIM_SIGMA + 0.5)  # 5 -> 11 taps, as scipy.ndimage / skimage
K1, K2 = 0.01, 0.03


def gaussian_kernel(sigma: float = SSIM_SIGMA, radius: int = SSIM_RADIUS) -> np.ndarray:
    """Normalised 1-D Gaussian, float32 ``[2 * radius + 1]``."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def _as_float(x):
    x = aot.device_array(x)
    return x.astype(jnp.result_type(x.dtype, jnp.float32)) if x.dtype != jnp.float64 else x


def _check_pair(a, b):
    a, b = _as_float(a), _as_float(b)
    if a.shape != b.shape:
        raise ValueError(f"images must have the same shape, got {a.shape} and {b.shape}")
    if a.ndim < 2:
        raise ValueError(f"expected [..., H, W] planes, got shape {a.shape}")
    dt = jnp.promote_types(a.dtype, b.dtype)
    return a.astype(dt), b.astype(dt)


def _filter_1d(x, k, axis):
    """Correlate the last-two-axes plane with ``k`` along ``axis`` (-2 or -1), reflect padding."""
    r = (k.shape[0] - 1) // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (r, r)
    xp = jnp.pad(x, pad, mode="symmetric")
    n = x.shape[axis]
    out = jnp.zeros_like(x)
    for i in range(k.shape[0]):  # 11 static taps: fused multiply-adds, exact order on any backend
        out = out + jnp.asarray(k[i], x.dtype) * lax.slice_in_dim(xp, i, i + n, axis=axis % x.ndim)
    return out


MATRIX_FILTER_MAX = 128  # planes up to this size are filtered by matrix products


def filter_matrix(L: int, k: np.ndarray) -> np.ndarray:
    """``[L, L]`` matrix ``G`` with ``G @ v`` = ``v`` correlated with ``k``, reflect boundaries."""
    r = (k.shape[0] - 1) // 2
    G = np.zeros((L, L), np.float64)
    for i in range(L):
        for j in range(-r, r + 1):
            p = i + j
            while p < 0 or p >= L:  # scipy 'reflect' (d c b a | a b c d), valid for any r
                p = -p - 1 if p < 0 else 2 * L - p - 1
            G[i, p] += k[j + r]
    return G.astype(np.float32)


def _taps2(x, k):
    """Separable Gaussian of the last two axes by 11 shifted multiply-adds per axis."""
    return _filter_1d(_filter_1d(x, k, -2), k, -1)


def _gauss2(x, k):
    """Separable Gaussian of the last two axes. Small planes: ``G_H @ x @ G_W^T`` (matmul units,
    cheap on every backend); large planes: 11 shifted multiply-adds per axis."""
    H, W = x.shape[-2:]
    if max(H, W) <= MATRIX_FILTER_MAX:
        gh = jnp.asarray(filter_matrix(H, k), x.dtype)
        gw = jnp.asarray(filter_matrix(W, k), x.dtype)
        # Two plain matrix products over the flattened batch (a batched three-operand einsum
        # lowers to many tiny products: 6x slower on CPU for [N, 5, 16, 16] stacks).
        mm = functools.partial(jnp.matmul, precision=lax.Precision.HIGHEST)
        y = jnp.swapaxes(mm(x, gw.T), -1, -2)  # filtered along W, then H to the last axis
        return jnp.swapaxes(mm(y, gh.T), -1, -2)
    return _taps2(x, k)


def ssim_map(a, b, max_val: float = 1.0) -> jax.Array:
    """Per-pixel SSIM map ``[..., H, W]`` (no crop), reflect boundaries.

    Also used by the search on single tiles, where every pixel counts: small planes are filtered
    by matrix products there, whose rounding may differ with the batch a plane is in (float32
    SSIM carries ~1e-5 of rounding either way).
    """
    return _ssim_map(a, b, max_val, _gauss2, jnp.mean)


def _ssim_map(a, b, max_val, gauss, centre) -> jax.Array:
    """SSIM map with the Gaussian ``gauss(x, k)`` and the plane shift ``centre(a, axis, keepdims)``."""
    a, b = _check_pair(a, b)
    k = gaussian_kernel()
    c1 = (K1 * max_val) ** 2
    c2 = (K2 * max_val) ** 2
    # (co)variances are shift invariant: centre both planes on a central value of a to avoid float32
    # cancellation in E[x^2] - E[x]^2, then shift the means back.
    m = centre(a, axis=(-2, -1), keepdims=True)
    a0, b0 = a - m, b - m
    ux0, uy0, uxx, uyy, uxy = gauss(jnp.stack([a0, b0, a0 * a0, b0 * b0, a0 * b0]), k)
    vx = uxx - ux0 * ux0
    vy = uyy - uy0 * uy0
    vxy = uxy - ux0 * uy0
    ux, uy = ux0 + m, uy0 + m
    num = (2.0 * ux * uy + c1) * (2.0 * vxy + c2)
    den = (ux * ux + uy * uy + c1) * (vx + vy + c2)
    return num / den


def _subsampled_median(a, axis, keepdims):
    """Median of every 4th pixel of each plane ``[..., H, W]``: a central value, batch-invariant."""
    return jnp.median(a[..., ::4, ::4], axis=axis, keepdims=keepdims)


def ssim(a, b, max_val: float = 1.0) -> jax.Array:
    """Mean SSIM per plane (Wang et al.; skimage-compatible, see module docstring).

    Args:
      a, b: ``[..., H, W]``. Planes smaller than the 11x11 window on a side (down to 1x1) are
        scored with one window covering the whole plane, uniformly weighted (means, variances
        and covariance over all its pixels).
      max_val: dynamic range of the data (1.0 for [0, 1] images, 255 for uint8 values).

    Returns:
      float32 ``[...]``.

    Examples:
      >>> import numpy as np, pc15jax as pc
      >>> x = np.random.default_rng(0).random((32, 32), dtype=np.float32)
      >>> float(pc.ssim(x, x))
      1.0
    """
    a, b = _check_pair(a, b)
    return _ssim_planes(a, b, max_val)


@aot.jit  # one program per shape (eager, its ~50 operations would each be compiled in a new process)
def _ssim_planes(a, b, max_val):
    H, W = a.shape[-2:]
    if min(H, W) < 2 * SSIM_RADIUS + 1:  # no full window fits: one window, the whole plane
        return _global_ssim(a, b, max_val)
    # Batch-invariant: shifted multiply-adds in a fixed order and the median as the shift (a sort
    # is exact, a mean's summation order is not), so a plane scores the same alone or in a batch.
    m = _ssim_map(a, b, max_val, _taps2, _subsampled_median)
    r = SSIM_RADIUS
    return jnp.mean(m[..., r:H - r, r:W - r], axis=(-2, -1))


def _global_ssim(a, b, max_val: float) -> jax.Array:
    """SSIM with one uniform window over each whole plane ``[..., H, W]`` -> ``[...]``."""
    c1, c2 = (K1 * max_val) ** 2, (K2 * max_val) ** 2
    ux, uy = jnp.mean(a, axis=(-2, -1)), jnp.mean(b, axis=(-2, -1))
    da, db = a - ux[..., None, None], b - uy[..., None, None]
    vx, vy = jnp.mean(da * da, axis=(-2, -1)), jnp.mean(db * db, axis=(-2, -1))
    vxy = jnp.mean(da * db, axis=(-2, -1))
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))


def mse(a, b) -> jax.Array:
    """Mean squared error per plane, ``[...]``."""
    a, b = _check_pair(a, b)
    return _mse(a, b)


@aot.jit
def _mse(a, b):
    return jnp.mean((a - b) ** 2, axis=(-2, -1))


def psnr(a, b, max_val: float = 1.0) -> jax.Array:
    """Peak signal-to-noise ratio in dB per plane, ``[...]`` (``inf`` for identical planes).

    Args:
      a, b: ``[..., H, W]``.
      max_val: peak value (1.0 for [0, 1] data, 255 for 8-bit values).
    """
    if not (math.isfinite(max_val) and max_val > 0):
        raise ValueError(f"max_val must be a positive number, got {max_val}")
    e = mse(a, b)
    return 10.0 * jnp.log10(jnp.asarray(max_val * max_val, e.dtype) / e)
