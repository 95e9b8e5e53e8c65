"""The ``transform_residual`` tool's encoder-side decision: which 8x8 blocks keep their levels
(host, NumPy). The symbols and the transform live in :mod:`pc15jax.bitstream.residual`."""

from __future__ import annotations

import numpy as np

from ..bitstream import residual as resid
from .distortion import mixed_distortion, pixel_distortion, region_sums

__all__ = ["prune_residual", "RDO_PASSES"]

RDO_PASSES = 2


def prune_residual(x, base, q, step: float, lam: float, alpha: float, adaptive: bool = True,
                   lapped: bool = False) -> np.ndarray:
    """Per-block RD decision on the residual levels with the codec's own cost: a block keeps its
    levels only where they lower ``sum(d) + lambda * bits``.

    Args:
      x: the original plane, float ``[H, W]`` in [0, 1]. base: the decoded plane without the
        residual, float32 ``[H, W]``. q: the levels, int64 ``[by, bx, 64]``. step: their quantiser
        step. lam: the plane's lambda. alpha: ``alpha_mix``. adaptive: price the bits with adapted
        tables (the ``adaptive_coding`` tool) or the frozen ones. lapped: the levels are of the
        lapped transform (a block's levels then reach 4 pixels into its neighbours; the regions
        summed stay the blocks, and the second pass sees the first's decisions).

    ``d`` is :func:`~.distortion.mixed_distortion` (half the search's SSIM-mixed distortion, half
    the squared error scaled to the same plane total, as the block map weighs them), ``bits`` the
    block's ideal bits (:func:`~pc15jax.bitstream.residual.block_bits`). Two passes (the contexts of
    a block's neighbours change). Returns the levels with the dropped blocks zeroed, int64
    ``[by, bx, 64]``.
    """
    by, bx = q.shape[:2]
    B = resid.BLOCK
    e = (np.asarray(x, np.float64) - base) ** 2
    dmix = pixel_distortion(x, base, alpha)
    scale = dmix.sum() / max(e.sum(), 1e-12)
    sums = lambda d: region_sums(d, B, by, bx).reshape(by, bx)  # noqa: E731
    d0 = sums(mixed_distortion(x, base, alpha, scale, dmix))
    for _ in range(RDO_PASSES):
        if not q.any():
            break
        y = np.clip(base + resid.inverse(q, step, base.shape, lapped), np.float32(0.0), np.float32(1.0))
        d1 = sums(mixed_distortion(x, y, alpha, scale))
        bits = resid.block_bits(q, adaptive)
        # an empty block still codes its `last`: compare against the cost of that one symbol
        keep = d1 + lam * bits < d0 + lam * np.minimum(bits, 1.0)
        keep |= ~q.any(-1)
        if keep.all():
            break
        q = np.where(keep[..., None], q, 0)
    return q
