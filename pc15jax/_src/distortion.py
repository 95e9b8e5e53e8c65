"""The encoder's per-pixel distortion and its sums over regions (host, NumPy + scikit-image).

The search's cost is ``J = D + lambda * R`` with ``D = alpha * (1 - SSIM) + (1 - alpha) * MSE``;
the encoder's region decisions after the search (the block map, the residual's blocks) weigh that
distortion and the squared error by :data:`MAP_MSE_SHARE`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pixel_distortion", "MAP_MSE_SHARE", "region_sums", "mixed_distortion"]


def pixel_distortion(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """The search's distortion per pixel, ``alpha * (1 - SSIM map) + (1 - alpha) * (x - y)^2``, float64
    ``[H, W]`` (host; planes under 11 px on a side take the squared error alone)."""
    e = (np.asarray(x, np.float64) - y) ** 2
    if alpha == 0 or min(x.shape) < 11:
        return e
    from skimage.metrics import structural_similarity

    _, smap = structural_similarity(x, y, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, full=True)
    return alpha * (1.0 - smap) + (1.0 - alpha) * e


# The block map weighs the search's distortion and the squared error (scaled to the first layer's total over
# the plane) equally: the search's own SSIM-heavy cost alone buys SSIM with PSNR (kodim01/07/12 luma
# against 17/1 alone: PSNR -6.6/-11.6/+0.1 %, SSIM -13.3/-17.6/-20.4 %), the squared error alone the
# reverse (-7.7/-11.8/-12.8 %, SSIM -6.9/-11.2/+5.1 %); half and half: -8.9/-12.5/-11.8 %, SSIM
# -12.0/-14.6/-9.0 %.
MAP_MSE_SHARE = 0.5


def region_sums(d: np.ndarray, region: int, gy: int, gx: int) -> np.ndarray:
    """Sums of a per-pixel map over the ``region`` x ``region`` squares, raster order -> float64 ``[gy * gx]``."""
    pad = np.zeros((gy * region, gx * region))
    pad[: d.shape[0], : d.shape[1]] = d
    return pad.reshape(gy, region, gx, region).sum((1, 3)).reshape(-1)


def mixed_distortion(x: np.ndarray, y: np.ndarray, alpha: float, scale: float, dmix=None) -> np.ndarray:
    """The region decisions' distortion per pixel: ``(1 - MAP_MSE_SHARE) * pixel_distortion +
    MAP_MSE_SHARE * scale * (x - y)^2``, float64 ``[H, W]`` (``scale`` brings the squared error to
    the search's distortion's plane total; ``dmix``: ``pixel_distortion(x, y, alpha)`` when the
    caller has it)."""
    w = MAP_MSE_SHARE
    dmix = pixel_distortion(x, y, alpha) if dmix is None else dmix
    return (1 - w) * dmix + w * scale * (np.asarray(x, np.float64) - y) ** 2
