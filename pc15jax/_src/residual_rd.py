"""The ``transform_residual`` tool's encoder-side decisions (host, NumPy): the levels of every
coefficient (:func:`rdoq`, rate-distortion optimised quantisation) and which 8x8 blocks keep their
levels at all (:func:`prune_residual`). The symbols and the transform live in
:mod:`pc15jax.bitstream.residual`; neither decision changes the format."""

from __future__ import annotations

import numpy as np

from ..bitstream import residual as resid
from ..bitstream.rans import adapted_frequencies
from .distortion import mixed_distortion, pixel_distortion, region_sums

__all__ = ["prune_residual", "rdoq", "table_bits", "RDO_PASSES", "RDOQ_DEADZONE"]

RDO_PASSES = 2
# The dead zone RDOQ starts from (the quantiser's rounding offset 1/2 - 0.1): RDOQ decides which
# small levels pay, so the quantiser rounds finer than the 0.32 it uses alone. Probed on
# kodim01/05/07/12 (luma, blocks + residual, base lambda 0.6): 0.2 -1.12 % / -1.36 %, 0.1 -1.26 % /
# -1.94 %, 0.0 -1.16 % / -1.69 % BD-rate on PSNR / SSIM against 0.32.
RDOQ_DEADZONE = 0.1


def prune_residual(x, base, q, step: float, lam: float, alpha: float, adaptive: bool = True,
                   lapped: bool = False, coefs: np.ndarray | None = None) -> np.ndarray:
    """Per-block RD decision on the residual levels with the codec's own cost: a block keeps its
    levels only where they lower ``sum(d) + lambda * bits``.

    Args:
      x: the original plane, float ``[H, W]`` in [0, 1]. base: the decoded plane without the
        residual, float32 ``[H, W]``. q: the levels, int64 ``[by, bx, 64]``. step: their quantiser
        step. lam: the plane's lambda. alpha: ``alpha_mix``. adaptive: price the bits with adapted
        tables (the ``adaptive_coding`` tool) or the frozen ones. lapped: the levels are of the
        lapped transform (a block's levels then reach 4 pixels into its neighbours; the regions
        summed stay the blocks, and the second pass sees the first's decisions). coefs: the
        coefficients ``q`` quantises, float64 ``[by, bx, 64]``; given, the levels go through
        :func:`rdoq` first, each block's lambda brought to squared-error units by its ratio of
        ``d`` to its squared error at the dead-zone levels.

    ``d`` is :func:`~.distortion.mixed_distortion` (half the search's SSIM-mixed distortion, half
    the squared error scaled to the same plane total, as the block map weighs them), ``bits`` the
    block's ideal bits (:func:`~pc15jax.bitstream.residual.block_bits`). Two passes (the contexts of
    a block's neighbours change). Returns the levels with the dropped blocks zeroed, int64
    ``[by, bx, 64]``.
    """
    by, bx = q.shape[:2]
    B = resid.BLOCK
    xf = np.asarray(x, np.float64)
    dmix = pixel_distortion(x, base, alpha)
    scale = dmix.sum() / max(((xf - base) ** 2).sum(), 1e-12)
    sums = lambda d: region_sums(d, B, by, bx).reshape(by, bx)  # noqa: E731
    decoded = lambda q: np.clip(base + resid.inverse(q, step, base.shape, lapped),  # noqa: E731
                                np.float32(0.0), np.float32(1.0))
    d0 = sums(mixed_distortion(x, base, alpha, scale, dmix))
    if coefs is not None and q.any():
        y = decoded(q)
        w = (sums(mixed_distortion(x, y, alpha, scale)) + 1e-12) / (sums((xf - y) ** 2) + 1e-12)
        q = rdoq(coefs, q, step, lam / w, table_bits(q, adaptive))
    for _ in range(RDO_PASSES):
        if not q.any():
            break
        y = decoded(q)
        d1 = sums(mixed_distortion(x, y, alpha, scale))
        bits = resid.block_bits(q, adaptive)
        # an empty block still codes its `last`: compare against the cost of that one symbol
        keep = d1 + lam * bits < d0 + lam * np.minimum(bits, 1.0)
        keep |= ~q.any(-1)
        if keep.all():
            break
        q = np.where(keep[..., None], q, 0)
    return q


def table_bits(q: np.ndarray, adaptive: bool) -> list[np.ndarray]:
    """Every residual table's cost per symbol, float64, as the plane's levels ``q`` would leave it:
    the frozen tables, or with ``adaptive`` each one re-quantised from its frozen counts and all of
    the symbols ``q`` codes with it (the adapted tables' end point, an estimate of their costs)."""
    tables = resid.residual_tables()
    if not adaptive:
        return [t.bits() for t in tables]
    s, t = resid.residual_symbols(q)
    out = []
    for k, tab in enumerate(tables):
        f = adapted_frequencies(tab, np.bincount(s[t == k], minlength=tab.size))
        out.append(tab.precision - np.log2(f.astype(np.float64)))
    return out


def rdoq(c: np.ndarray, q: np.ndarray, step: float, lam: np.ndarray, bits: list[np.ndarray]) -> np.ndarray:
    """Rate-distortion optimised levels: every block's levels lowered where ``SSE + lam * bits`` falls.

    Args:
      c: the coefficients, float64 ``[by, bx, 64]`` (zig-zag). q: their dead-zone levels, int64, same
        shape. step: the quantiser step. lam: float64 ``[by, bx]``, each block's lambda in squared
        error units. bits: :func:`table_bits`.

    Two greedy passes, vectorised over the blocks (the squared error is the coefficients', which
    the orthogonal transform keeps):
      1. along the zig-zag, each non-zero level before the last is lowered by one where that
         pays, its own bits, its sign's and its successor's (whose context is this magnitude)
         counted;
      2. each block's last non-zero level moves to the earlier non-zero position (or the block
         empties) that gives the lowest cost.
    Returns int64 levels, same shape; ``|level|`` never grows and signs are kept.
    """
    by, bx, n = q.shape
    C = np.abs(c.reshape(-1, n))
    Q = np.abs(q.reshape(-1, n)).astype(np.int64)
    neg = q.reshape(-1, n) < 0
    lam = np.asarray(lam, np.float64).reshape(-1)
    band = resid.BAND
    E = resid.ESCAPE
    mag = np.asarray([[bits[resid.T_MAG + 3 * b + p] for p in range(3)] for b in range(resid.N_BANDS)])
    top = np.asarray([bits[resid.T_TOP + b] for b in range(resid.N_BANDS)])
    last_bits = np.asarray([bits[resid.T_LAST + k] for k in range(3)])
    sign = bits[resid.T_SIGN]
    hi, lo = bits[resid.T_ESC], bits[resid.T_ESC + 1]

    def extra(m, is_neg):  # the sign and the escape of magnitudes m
        e = np.maximum(m - E, 0)
        return np.where(m > 0, sign[is_neg.astype(np.int64)], 0.0) + np.where(
            m >= E, hi[np.minimum(e >> resid.ESC_BITS, hi.size - 1)] + lo[e & ((1 << resid.ESC_BITS) - 1)], 0.0)

    def coded(i, m, prev, at_last):  # bits of magnitude m at position i (at_last: the block's last)
        return np.where(at_last, top[band[i], np.clip(m - 1, 0, E - 1)], mag[band[i], np.minimum(prev, 2),
                                                                             np.minimum(m, E)])

    lasts = resid._lasts(Q.reshape(by, bx, n)).reshape(-1)
    prev = np.zeros(Q.shape[0], np.int64)
    for i in range(n - 1):  # pass 1
        m = Q[:, i]
        cand = (m >= 1) & (i < lasts - 1)
        if cand.any():
            m1 = m - 1
            dsse = (C[:, i] - m1 * step) ** 2 - (C[:, i] - m * step) ** 2
            nxt, nxt_last = Q[:, i + 1], i + 1 == lasts - 1
            dbits = (coded(i, m1, prev, False) + extra(m1, neg[:, i]) - coded(i, m, prev, False) - extra(m, neg[:, i])
                     + coded(i + 1, nxt, m1, nxt_last) - coded(i + 1, nxt, m, nxt_last))
            take = cand & (dsse + lam * dbits < 0)
            Q[take, i] = m1[take]
        prev = Q[:, i]
    # pass 2: the cost of ending each block at position k (a non-zero level at or before its last)
    pos = np.arange(n)
    prevs = np.concatenate([np.zeros((Q.shape[0], 1), np.int64), Q[:, :-1]], axis=1)
    sign_esc = extra(Q, neg)
    # bits of each position coded before the last (its magnitude in context, its sign and escape)
    body = np.where(pos[None, :] < lasts[:, None], mag[band[None, :], np.minimum(prevs, 2), np.minimum(Q, E)],
                    0.0) + sign_esc
    cum_body = np.concatenate([np.zeros((Q.shape[0], 1)), np.cumsum(body, axis=1)[:, :-1]], axis=1)
    end_bits = top[band[None, :], np.clip(Q - 1, 0, E - 1)] + sign_esc
    ctx = resid._last_ctx(lasts.reshape(by, bx)).reshape(-1)
    err = (C - Q * step) ** 2
    sse_kept = np.cumsum(err, axis=1)
    sse_dropped = np.sum(C * C, axis=1)[:, None] - np.cumsum(C * C, axis=1)
    j_end = sse_kept + sse_dropped + lam[:, None] * (last_bits[ctx[:, None], pos[None, :] + 1] + cum_body + end_bits)
    valid = (Q > 0) & (pos[None, :] < lasts[:, None])
    j_end = np.where(valid, j_end, np.inf)
    j_empty = np.sum(C * C, axis=1) + lam * last_bits[ctx, 0]
    best = np.argmin(j_end, axis=1)
    new_last = np.where((lasts > 0) & (j_end[np.arange(Q.shape[0]), best] < j_empty), best + 1, 0)
    Q = np.where(pos[None, :] < new_last[:, None], Q, 0)
    return (np.where(neg, -Q, Q)).reshape(by, bx, n)
