"""The loop filter: a Wiener filter per plane, fitted by the encoder, signalled, applied by both.

After the window blend a decoded plane ``y`` (float32 ``[H, W]`` in [0, 1]) becomes

    y' = clip(y + sum_k w[c(p), k] * (y[p + d_k] + y[p - d_k] - 2 y[p]), 0, 1)

over the 12 point-symmetric offset pairs ``d_k`` of a 7x7 diamond (edge-padded). The filter keeps
flat regions flat (its taps act on differences only) and needs no normalisation. ``c(p)`` is the
pixel's class: with one class every pixel shares one filter; with three, the class is the
pixel's distance to the nearest tile seam of the plane's tile grid (at the seam, next to it,
inside; in a block-map plane, the grid of the pixel's region's layer), so the filter learns how
much to smooth across seams -- the deblocking -- apart from how much to restore inside tiles.

The encoder fits the taps by least squares against the original plane (plain squared error:
weighting the fit by the search's SSIM proxy lowered both PSNR and SSIM on Kodak), quantises them
to ``STEP`` (int8), and keeps a class's filter only where it lowers the search's own cost
``w dSSE - lambda * bits`` (``w`` the plane's mean SSIM/MSE weight of a pixel, as the search
weighs distortion); then it picks one or three classes, or none, the same way. The stream's tools block holds, per plane,
``u8 classes`` (0 = off, 1 or 3) and ``classes * 12`` int8 taps. Decoder and encoder apply it
through :func:`apply_loop_filter`, one host function in float32, so the encoder's reconstruction
is the decoder's output bit for bit. The module imports no JAX.
"""

from __future__ import annotations

import functools

import numpy as np

from ..bitstream.errors import BitstreamError
from .tilegrid import tile_starts

__all__ = ["OFFSETS", "STEP", "CLASS_CHOICES", "NO_FILTER", "pixel_classes", "apply_loop_filter", "fit_loop_filter",
           "pack_filters", "unpack_filters", "filter_plane"]

RADIUS = 3
OFFSETS = tuple((dy, dx) for dy in range(-RADIUS, RADIUS + 1) for dx in range(-RADIUS, RADIUS + 1)
                if abs(dy) + abs(dx) <= RADIUS and (dy, dx) > (0, 0))  # 12 pairs of the 7x7 diamond
STEP = 1.0 / 128.0  # tap quantum
CLASS_CHOICES = (1, 3)  # filters per plane a stream may signal (0: the plane is not filtered)
NO_FILTER = np.zeros((0, len(OFFSETS)), np.int32)  # the taps of a plane that is not filtered
NO_FILTER.setflags(write=False)
_BITS_PER_FILTER = 8 * len(OFFSETS)
_MIN_PIXELS = 64  # a class with fewer pixels keeps no filter (nothing to fit)


def pixel_classes(H: int, W: int, tile: int, overlap: int, n_classes: int) -> np.ndarray:
    """Class of every pixel of an ``[H, W]`` plane coded with ``tile``/``overlap`` -> int32 ``[H, W]``.

    One class: all 0. Three: 0 within one pixel of a seam centre (the middle of the overlap of
    two neighbouring tiles), 1 within 2.5 pixels, 2 farther (or no seam at all), along either
    axis -- the nearer axis decides. Integer arithmetic only.
    """
    if n_classes == 1:
        return np.zeros((H, W), np.int32)
    if n_classes != 3:
        raise ValueError(f"n_classes must be one of {CLASS_CHOICES}, got {n_classes}")

    def axis(L):
        twice = np.full(L, 1 << 20, np.int64)  # twice the distance to the nearest seam centre
        i2 = 2 * np.arange(L, dtype=np.int64)
        for s in tile_starts(L, tile, overlap)[1:]:
            twice = np.minimum(twice, np.abs(i2 - (2 * int(s) + overlap - 1)))
        return np.digitize(twice, [2, 5]).astype(np.int32)  # < 1 px: 0, < 2.5 px: 1, else 2

    return np.minimum(axis(H)[:, None], axis(W)[None, :])


def apply_loop_filter(img, classes, taps_q) -> np.ndarray:
    """Filter a plane: float32 ``[H, W]``, int32 classes ``[H, W]``, int32 taps ``[C, 12]`` -> float32
    ``[H, W]`` (host NumPy, float32 sums in a fixed order: the same on every machine and run)."""
    img = np.asarray(img, np.float32)
    H, W = img.shape
    R = RADIUS
    p = np.pad(img, R, mode="edge")
    w = np.asarray(taps_q).astype(np.float32) * np.float32(STEP)
    classes = np.asarray(classes)
    out = img
    two = np.float32(2.0)
    for k, (dy, dx) in enumerate(OFFSETS):
        d = p[R + dy:R + dy + H, R + dx:R + dx + W] + p[R - dy:R - dy + H, R - dx:R - dx + W] - two * img
        out = out + w[classes, k] * d
    return np.clip(out, np.float32(0.0), np.float32(1.0))


def _difference_planes(y: np.ndarray, padded: np.ndarray, r0: int, r1: int) -> np.ndarray:
    """Host float64 ``[12, r1 - r0, W]`` second differences of ``y`` along every offset pair, for the
    rows ``[r0, r1)``, one contiguous plane per offset; ``padded`` is ``y`` edge-padded by ``RADIUS``."""
    W = y.shape[1]
    R = RADIUS
    out = np.empty((len(OFFSETS), r1 - r0, W))
    for k, (dy, dx) in enumerate(OFFSETS):
        np.add(padded[R + dy + r0:R + dy + r1, R + dx:R + dx + W],
               padded[R - dy + r0:R - dy + r1, R - dx:R - dx + W], out=out[k])
        out[k] -= 2.0 * y[r0:r1]
    return out


def _differences(y: np.ndarray) -> np.ndarray:
    """Host float64 ``[H, W, 12]`` second differences of ``y`` along every offset pair."""
    return np.moveaxis(_difference_planes(y, np.pad(y, RADIUS, mode="edge"), 0, y.shape[0]), 0, -1)


def _pixel_weights(x: np.ndarray, tile: int, alpha: float) -> np.ndarray:
    """The search's distortion weight per pixel: ``alpha * kappa + (1 - alpha)`` with ``kappa =
    1 / (2 var + C2)`` of the tile-sized neighbourhood (``1 - SSIM ~ kappa * MSE``)."""
    x = np.asarray(x, np.float64)
    m = box_mean(x, tile)
    var = np.maximum(box_mean(x * x, tile) - m * m, 0.0)
    from .metrics import K2

    return alpha / (2.0 * var + K2 * K2) + (1.0 - alpha)


def box_mean(x: np.ndarray, size: int) -> np.ndarray:
    """Mean over ``size x size`` windows, edges repeated -> float64 ``[H, W]``: what
    ``scipy.ndimage.uniform_filter(x, size, mode="nearest")`` gives (window ``[i - size // 2,
    i + size - 1 - size // 2]``), by cumulative sums (and without importing scipy)."""
    lo, hi = size // 2, size - 1 - size // 2
    out = np.asarray(x, np.float64)
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (lo + 1, hi)
        c = np.cumsum(np.pad(out, pad, mode="edge"), axis=axis)
        n = out.shape[axis]
        out = (np.take(c, np.arange(size, size + n), axis=axis) - np.take(c, np.arange(n), axis=axis)) / size
    return out


_STRIP_ROWS = 32  # rows of the plane whose differences are formed at once (they stay in cache)


def _class_normal_equations(y: np.ndarray, e: np.ndarray, classes: np.ndarray, n_classes: int) -> list[tuple]:
    """Per class ``c``: ``(A^T A, A^T e, pixels)`` of the least-squares fit ``A taps ~ e``, ``A`` the
    second differences of the class's pixels (float64; ``y``, ``e`` float64 ``[H, W]``, ``classes``
    int ``[H, W]``). Strips of ``_STRIP_ROWS`` rows at a time: no ``[12, H, W]`` array."""
    H, W = y.shape
    K = len(OFFSETS)
    p = np.pad(y, RADIUS, mode="edge")
    G, h, n = np.zeros((n_classes, K, K)), np.zeros((n_classes, K)), np.zeros(n_classes, np.int64)
    for r0 in range(0, H, _STRIP_ROWS):
        r1 = min(r0 + _STRIP_ROWS, H)
        F = _difference_planes(y, p, r0, r1).reshape(K, -1)  # [12, rows * W]
        cls, es = classes[r0:r1].reshape(-1), e[r0:r1].reshape(-1)
        for c in range(n_classes):
            idx = np.flatnonzero(cls == c)
            A = F[:, idx]
            G[c] += A @ A.T
            h[c] += A @ es[idx]
            n[c] += idx.size
    return [(G[c], h[c], int(n[c])) for c in range(n_classes)]


def fit_loop_filter(x: np.ndarray, y: np.ndarray, tile: int, overlap: int, lam: float, alpha: float,
                    seams: np.ndarray | None = None) -> np.ndarray:
    """The encoder's choice for one plane -> int32 taps ``[C, 12]`` (``C`` in ``CLASS_CHOICES``, or 0 rows: off).

    Args:
      x: the original plane, float ``[H, W]`` in [0, 1].
      y: its decoded plane before the filter (what :func:`apply_loop_filter` will filter).
      tile, overlap: the plane's tile grid. lam: the plane's ``lambda_rd``. alpha: ``alpha_mix``.
      seams: the three seam classes, int ``[H, W]``, where they do not follow ``tile``/``overlap``
        (a block-map plane: :func:`..blockmap.seam_classes`).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    H, W = y.shape
    w = float(np.mean(_pixel_weights(x, tile, alpha)))
    # Normal equations of the finest partition once (one pass over the pixels); a coarser class
    # choice sums them, since every choice's classes are unions of the three seam classes.
    fine = pixel_classes(H, W, tile, overlap, max(CLASS_CHOICES)) if seams is None else np.asarray(seams)
    stats = _class_normal_equations(y, x - y, fine, max(CLASS_CHOICES))
    groups = {1: [[0, 1, 2]], 3: [[0], [1], [2]]}
    best_j, best = 0.0, NO_FILTER
    for n in CLASS_CHOICES:
        taps = np.zeros((n, len(OFFSETS)), np.int32)
        j = lam * 8.0  # the plane's class count byte
        for c, members in enumerate(groups[n]):
            G = sum(stats[k][0] for k in members)
            h = sum(stats[k][1] for k in members)
            if sum(stats[k][2] for k in members) < _MIN_PIXELS:
                continue
            sol, *_ = np.linalg.lstsq(G, h, rcond=None)
            q = np.clip(np.round(sol / STEP), -127, 127).astype(np.int32)
            qs = q * STEP
            gain = w * float(2.0 * qs @ h - qs @ G @ qs)  # |e|^2 - |e - A qs|^2
            if gain > lam * _BITS_PER_FILTER:
                taps[c] = q
                j -= gain
            j += lam * _BITS_PER_FILTER  # signalled whether kept (its taps) or not (zeros)
        if j < best_j and taps.any():
            best_j, best = j, taps
    return best


def pack_filters(filters: list[np.ndarray]) -> bytes:
    """Taps of every plane (``[C, 12]`` int, ``C`` 0 / 1 / 3) -> the tools block's bytes."""
    out = bytearray()
    for t in filters:
        t = np.asarray(t)
        if t.shape[0] not in (0,) + CLASS_CHOICES or t.shape[1:] != (len(OFFSETS),):
            raise ValueError(f"loop filter taps must be [C, {len(OFFSETS)}] with C in (0, 1, 3), got {t.shape}")
        out.append(t.shape[0])
        out += np.clip(t, -127, 127).astype(np.int8).tobytes()
    return bytes(out)


def unpack_filters(data: bytes, n_planes: int, rest: bool = False):
    """The tools block's bytes -> taps of every plane (int32 ``[C, 12]``); with ``rest``, ``(taps,
    the bytes after them)``. Raises BitstreamError."""
    out, pos = [], 0
    for _ in range(n_planes):
        if pos >= len(data):
            raise BitstreamError("truncated loop filter parameters")
        n = data[pos]
        pos += 1
        if n not in (0,) + CLASS_CHOICES:
            raise BitstreamError(f"loop filter with {n} classes (allowed: 0, 1, 3)")
        k = n * len(OFFSETS)
        if pos + k > len(data):
            raise BitstreamError("truncated loop filter parameters")
        out.append(np.frombuffer(data[pos:pos + k], np.int8).astype(np.int32).reshape(n, len(OFFSETS)))
        pos += k
    if rest:
        return out, data[pos:]
    if pos != len(data):
        raise BitstreamError(f"{len(data) - pos} unexpected bytes after the loop filter parameters")
    return out


@functools.lru_cache(maxsize=16)
def _classes(H: int, W: int, tile: int, overlap: int, n: int) -> np.ndarray:
    c = pixel_classes(H, W, tile, overlap, n)
    c.setflags(write=False)
    return c


def filter_plane(y, taps: np.ndarray, tile: int, overlap: int, seams: np.ndarray | None = None) -> np.ndarray:
    """A decoded plane (float32 ``[H, W]``) through its signalled filter (unchanged when the plane has none).
    ``seams``: the plane's three seam classes where they do not follow ``tile``/``overlap``."""
    y = np.asarray(y, np.float32)
    if taps.shape[0] == 0:
        return y
    H, W = y.shape
    if taps.shape[0] == 3 and seams is not None:
        return apply_loop_filter(y, seams, taps)
    return apply_loop_filter(y, _classes(H, W, tile, overlap, taps.shape[0]), taps)
