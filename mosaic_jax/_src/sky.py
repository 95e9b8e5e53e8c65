"""Per-frame sky models and gains, solved once over the frame overlap graph.

Frame ``k`` is corrected to ``c_k(x) = g_k * f_k(x) - P_k(x)``: a gain ``g_k`` and a sky polynomial
``P_k`` of degree ``d`` (``offset`` 0, ``plane`` 1, ``poly2`` 2, ``poly3`` 3) in the frame's own
*footprint coordinates* ``u = (x - cx_k) / hx_k``, ``v = (y - cy_k) / hy_k``: canvas pixels centred
on the frame's footprint box and scaled by its half-sides. These are an affine image of the
frame's own pixel coordinates (exactly so for an affine pixel map, to the TAN distortion across
one frame otherwise), so they span the same polynomials, and every coefficient is of order one.

Two stages, both vectorised:

1. **Pair statistics** (:func:`pair_statistics`, jitted, over a batch of pairs): on every
   overlapping pair's good pixels (finite, positive weight, eroded, packed into a list; the
   pipeline first blurs the sharper frame of the pair to the other's seeing and averages both
   in 8x8-pixel bins, so a sharper frame does not read as a brighter one) a robust
   fit ``f_i = a * f_j + Q(x)`` (``Q`` a polynomial of the pair's degree): IRLS with Tukey
   weights on the residual, the gain by Deming regression on the polynomial-free parts (noise in
   both frames), so stars, nebulae and trails do not pull it. The pair reduces to numbers: its
   gain ``a``, whether the gain is identifiable (correlation of the polynomial-free parts above
   ``MIN_CORRELATION``: a pure-sky overlap carries no gain information), the weighted pixel count,
   and the weighted Gram matrix of ``[f_i - a f_j, f_j, phi_i(x), phi_j(x)]`` (``phi_k``: frame
   ``k``'s polynomial basis), ``(2 + 2M)^2`` numbers for ``M`` terms.
2. **Global solve** (:func:`solve_frame_sky`, host, float64, dense or sparse): the gains first, in log space
   (``log g_j - log g_i = log a_ij``) over the identifiable pairs, robust (Huber IRLS); then, given
   the gains, every polynomial coefficient at once from the normal equations assembled from the
   Gram matrices (``P_i - P_j = g_i f_i - g_j f_j`` on every overlap), robust over pairs. Neither
   stage sees a pixel, so the solve scales to thousands of frames.

**The gauge.** Overlaps fix only relative gains and relative skies. In each connected component
of the frame graph the reference frame (the one with most good pixels, or ``gauge``) keeps gain 1:
the mosaic is in its data units. The global polynomial no overlap can see is fixed by zero-mean
corrections: the solved ``P_k`` have the canvas polynomial of degree ``d`` that best fits all of
them (over their footprints, weighted by area) removed, so the mosaic's sky is the frames' average
sky, not one frame's.

**Ill-posed cases** fall back and are logged (``[SKY]``) and listed in ``SkySolution.notes``: a
pair with no common signal keeps only its sky equations; a frame with no identifiable pair keeps
gain 1; a frame whose overlaps cannot support the requested degree (the normalised Gram matrix of
its basis over its overlaps is near singular) gets the highest degree they support.
"""

from __future__ import annotations

import logging
import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from shared_runtime import aot

from .photometry import COARSE_SAMPLES, MIN_CORRELATION, _deming, _masked_median
from .photometry import _components as _graph_components

__all__ = ["SKY_MODELS", "n_terms", "poly_basis", "frame_norm", "PairStats", "pair_statistics",
           "SkySolution", "solve_frame_sky", "select_sky_degree", "apply_frame_sky"]

log = logging.getLogger("mosaic_jax")

SKY_MODELS = {"offset": 0, "plane": 1, "poly2": 2, "poly3": 3, "auto": 2}  # auto: the data choose, up to 2
MIN_PAIR_WEIGHT = 64.0  # weighted pixels a pair needs to enter the solve
MIN_BASIS_EIGEN = 1e-4  # smallest eigenvalue of a frame's normalised basis Gram for its degree to hold


def n_terms(degree: int) -> int:
    """Monomials of total degree <= ``degree`` in two variables."""
    return (degree + 1) * (degree + 2) // 2


def _exponents(degree: int) -> list[tuple[int, int]]:
    """``(p, q)`` of ``u^p v^q``, ordered by total degree: a lower degree is a prefix."""
    return [(t - q, q) for t in range(degree + 1) for q in range(t + 1)]


def poly_basis(u, v, degree: int):
    """Monomials ``u^p v^q`` (total degree <= ``degree``) of float arrays ``u, v [...]`` ->
    ``[..., n_terms(degree)]``, same dtype; the first column is 1."""
    xp = jnp if isinstance(u, jax.Array) or isinstance(v, jax.Array) else np
    return xp.stack([u ** p * v ** q for p, q in _exponents(degree)], axis=-1)


def frame_norm(box) -> np.ndarray:
    """Footprint box ``(y0, x0, y1, x1)`` (canvas pixels) -> ``(cy, cx, hy, hx)`` float64: the
    centre and half-sides that map it onto ``[-1, 1]^2``."""
    y0, x0, y1, x1 = box
    return np.array([(y0 + y1 - 1) / 2.0, (x0 + x1 - 1) / 2.0, max((y1 - y0) / 2.0, 1.0),
                     max((x1 - x0) / 2.0, 1.0)])


def _uv(y, x, norm):
    return (x - norm[1]) / norm[3], (y - norm[0]) / norm[2]


# ----------------------------------------------------------------------------------------------
# Pair statistics (device)
# ----------------------------------------------------------------------------------------------


class PairStats(NamedTuple):
    """Sufficient statistics of a batch of pairs, per channel (``P`` pairs, ``C`` channels,
    ``M`` terms): ``gain`` ``[P, C]`` (``f_i ~ gain * f_j + Q``), ``identifiable`` bool ``[P, C]``,
    ``corr`` ``[P, C]``, ``weight`` ``[P, C]`` (weighted pixels), ``centre`` ``[P, C, 2]`` (the
    medians ``c_i, c_j`` subtracted from ``f_i`` and ``f_j``), ``gram`` ``[P, C, 2 + 2M, 2 + 2M]``
    (weighted Gram matrix of ``[d, f_j - c_j, phi_i, phi_j]`` with ``d = (f_i - c_i) - gain (f_j -
    c_j)``, in which the common signal cancels), ``scale`` ``[P, C]``
    (robust sigma of the pair residual)."""

    gain: jax.Array
    identifiable: jax.Array
    corr: jax.Array
    weight: jax.Array
    centre: jax.Array
    gram: jax.Array
    scale: jax.Array


def _spd_solve(A, Y):
    """``A^-1 Y`` for a symmetric positive definite ``A [m, m]`` and ``Y [m, r]``, by a Cholesky
    factorisation unrolled over the (small, static) ``m``: plain arithmetic, so the program needs
    no LAPACK kernels (whose registration costs a fresh process 0.2 s)."""
    m = A.shape[0]
    L = [[None] * m for _ in range(m)]
    for j in range(m):
        d = A[j, j] - sum((L[j][k] * L[j][k] for k in range(j)), jnp.zeros((), A.dtype))
        L[j][j] = jnp.sqrt(jnp.maximum(d, jnp.finfo(A.dtype).tiny))
        for i in range(j + 1, m):
            L[i][j] = (A[i, j] - sum((L[i][k] * L[j][k] for k in range(j)), jnp.zeros((), A.dtype))) / L[j][j]
    z = []
    for i in range(m):  # L z = Y
        z.append((Y[i] - sum((L[i][k] * z[k] for k in range(i)), jnp.zeros_like(Y[i]))) / L[i][i])
    x = [None] * m
    for i in reversed(range(m)):  # L^T x = z
        x[i] = (z[i] - sum((L[k][i] * x[k] for k in range(i + 1, m)), jnp.zeros_like(Y[i]))) / L[i][i]
    return jnp.stack(x)


def _wls(X, w, Y, ridge=1e-6):
    """Weighted least squares ``X beta ~ Y`` for ``X [K, m]``, ``Y [K, r]`` -> ``[m, r]``."""
    Xw = X * w[:, None]
    A = X.T @ Xw
    A = A + ridge * jnp.trace(A) / A.shape[0] * jnp.eye(A.shape[0], dtype=A.dtype)
    return _spd_solve(A, Xw.T @ Y)


def _pair_channel(a, b, m, Bp, Bi, Bj, sa, sb, fit_gain, lo, hi, n_iter: int):
    """One pair, one channel. ``a, b [K]`` values of frames i and j, ``m [K]`` bool, ``Bp, Bi, Bj
    [K, M]`` the pair's and the frames' bases, ``sa, sb`` noise sigmas."""
    m = m & jnp.isfinite(a) & jnp.isfinite(b)
    ca, cb = _masked_median(a, m, COARSE_SAMPLES), _masked_median(b, m, COARSE_SAMPLES)
    ca, cb = jnp.where(jnp.isfinite(ca), ca, 0.0), jnp.where(jnp.isfinite(cb), cb, 0.0)
    at, bt = jnp.where(m, a - ca, 0.0), jnp.where(m, b - cb, 0.0)
    w0 = m.astype(jnp.float32)
    delta = jnp.where((sa > 0) & (sb > 0) & jnp.isfinite(sa) & jnp.isfinite(sb), (sa / jnp.maximum(sb, 1e-30)) ** 2,
                      1.0)
    Y = jnp.stack([at, bt], axis=1)

    def fit(w):
        beta = _wls(Bp, w, Y)
        ra, rb = at - Bp @ beta[:, 0], bt - Bp @ beta[:, 1]  # polynomial-free parts
        g, _, corr = _deming(rb, ra, w, delta)
        g = jnp.where(fit_gain & jnp.isfinite(g) & (g > 0), jnp.clip(g, lo, hi), 1.0)
        r = (ra - g * rb) / jnp.sqrt((delta + g * g) / (1.0 + delta))  # residual of f_i - g f_j - Q
        return g, corr, r

    def step(_, w):
        _, _, r = fit(w)
        s = 1.4826 * _masked_median(jnp.abs(r), w0 > 0, COARSE_SAMPLES)
        u = r / jnp.maximum(4.685 * s, 1e-30)
        return w0 * jnp.where(jnp.abs(u) < 1.0, (1.0 - u * u) ** 2, 0.0)  # Tukey biweight

    w = lax.fori_loop(0, n_iter, step, w0)
    g, corr, r = fit(w)
    s = 1.4826 * _masked_median(jnp.abs(r), w > 0, COARSE_SAMPLES)
    # f_i - g f_j first: the stars and nebulae cancel in it, so the float32 sums keep the sky's digits
    Z = jnp.concatenate([(at - g * bt)[:, None], bt[:, None], Bi, Bj], axis=1)
    gram = Z.T @ (Z * w[:, None])
    W = jnp.sum(w)
    ident = fit_gain & (W >= MIN_PAIR_WEIGHT) & (corr >= MIN_CORRELATION)
    return (g, ident, jnp.where(jnp.isfinite(corr), corr, 0.0), W, jnp.stack([ca, cb]), gram,
            jnp.where(jnp.isfinite(s), s, 0.0))


@partial(aot.jit, static_argnames=("degree", "pair_degree", "n_iter", "batch"))
def pair_statistics(A, B, mask, yx, norm_i, norm_j, norm_p, sig_a, sig_b, fit_gain, gain_bounds, *,
                    degree: int, pair_degree: int | None = None, n_iter: int = 6, batch: int = 1) -> PairStats:
    """Sufficient statistics of a batch of frame pairs (see the module docstring).

    Args:
      A, B: float32 ``[P, K, C]`` packed good pixels of frames i and j (NaN: padding).
      mask: bool ``[P, K]``. yx: float32 ``[P, K, 2]`` canvas coordinates of the pixels.
      norm_i, norm_j, norm_p: float32 ``[P, 4]`` footprint normalisations (:func:`frame_norm`) of
        frame i, frame j and of the overlap itself (the robust fit's own basis).
      sig_a, sig_b: float32 ``[P, C]`` pixel noise of the two frames.
      fit_gain: bool scalar; ``False`` fixes every pair gain to 1. gain_bounds: ``(lo, hi)``.
      degree: the frames' polynomial degree. pair_degree: the robust fit's (default ``degree``).
      batch: pairs per step of the map (bounded memory).

    Returns:
      :class:`PairStats`, deterministic.
    """
    pd = degree if pair_degree is None else pair_degree
    lo, hi = gain_bounds

    def one(args):
        a, b, m, c, ni, nj, np_, sa, sb = args
        y, x = c[:, 0], c[:, 1]
        Bp = poly_basis(*_uv(y, x, np_), pd)
        Bi = poly_basis(*_uv(y, x, ni), degree)
        Bj = poly_basis(*_uv(y, x, nj), degree)
        return jax.vmap(lambda ac, bc, sac, sbc: _pair_channel(ac, bc, m, Bp, Bi, Bj, sac, sbc, fit_gain, lo, hi,
                                                               n_iter), in_axes=(1, 1, 0, 0))(a, b, sa, sb)

    out = lax.map(one, (A, B, mask, yx, norm_i, norm_j, norm_p, sig_a, sig_b),
                  batch_size=batch if batch > 1 else None)
    return PairStats(*out)


# ----------------------------------------------------------------------------------------------
# Global solve (host)
# ----------------------------------------------------------------------------------------------


class SkySolution(NamedTuple):
    """Result of :func:`solve_frame_sky` for ``n`` frames, ``C`` channels, ``M`` terms.

    Attributes:
      gains: float32 ``[n, C]``. coeffs: float32 ``[n, C, M]``: ``c_k = g_k f_k - P_k``, ``P_k``
        in frame ``k``'s footprint coordinates (zeros beyond a frame's degree).
      degrees: int ``[n]`` degree each frame got (-1: in no pair, left as it is).
      norms: float64 ``[n, 4]`` the frames' footprint normalisations.
      component: int ``[n]`` connected component (-1: in no pair). anchors: reference frames.
      pair_rms_before, pair_rms_after: float ``[P, C]`` weighted RMS of ``f_i - f_j`` (before) and
        of ``c_i - c_j`` (after) over each overlap, in the reference's units.
      pair_weights: float ``[P, C]`` final robust weight of each pair in the sky solve.
      notes: the fallbacks taken, one line each.
    """

    gains: np.ndarray
    coeffs: np.ndarray
    degrees: np.ndarray
    norms: np.ndarray
    component: np.ndarray
    anchors: tuple
    pair_rms_before: np.ndarray
    pair_rms_after: np.ndarray
    pair_weights: np.ndarray
    notes: tuple


def _components(n, pairs):
    return _graph_components(n, np.asarray(pairs, np.int64).reshape(-1, 2))


DENSE_UNKNOWNS = 1024  # normal equations up to this size are solved dense (numpy), larger ones sparse (scipy)


def _normal_solve(rows, cols, vals, rhs, ridge):
    """``(H + ridge I) x = rhs`` with ``H [nu, nu]`` the sum of the COO triplets ``(rows, cols,
    vals)`` (duplicates add), float64 -> ``x [nu]``. Dense up to ``DENSE_UNKNOWNS`` unknowns (a
    mosaic of a few hundred frames, and no scipy import in a small run), sparse beyond."""
    nu = len(rhs)
    if nu <= DENSE_UNKNOWNS:
        H = np.zeros((nu, nu))
        np.add.at(H, (rows, cols), vals)
        H[np.diag_indices(nu)] += ridge
        return np.linalg.solve(H, rhs)
    from scipy import sparse
    from scipy.sparse.linalg import spsolve

    H = sparse.csc_matrix((vals, (rows, cols)), shape=(nu, nu)) + sparse.identity(nu) * ridge
    return np.atleast_1d(spsolve(H, rhs))


def _solve_gains(n, pairs, a, info, comp, anchors, huber=2.5, n_iter=8):
    """Robust log-gain solve over the identifiable pairs (``info``: their weights, 0 = unusable).
    -> ``log g [n]``; frames outside the identifiable graph get 0."""
    use = info > 0
    lg = np.zeros(n)
    if not use.any():
        return lg, np.zeros(n, bool)
    p, la, w0 = pairs[use], np.log(a[use]), info[use]
    gcomp = _components(n, p)
    fixed = np.zeros(n, bool)
    for k in range(int(gcomp.max()) + 1):
        members = np.flatnonzero(gcomp == k)
        hits = [x for x in anchors if x in members]
        fixed[hits[0] if hits else members[0]] = True
    fixed |= gcomp < 0
    free = np.flatnonzero(~fixed)
    col = -np.ones(n, np.int64)
    col[free] = np.arange(len(free))
    # each pair's row of the design matrix is +1 at its frame j, -1 at its frame i (free frames only)
    cp = np.stack([col[p[:, 1]], col[p[:, 0]]], 1)  # [Q, 2]
    sp = np.array([1.0, -1.0])
    both = (cp[:, :, None] >= 0) & (cp[:, None, :] >= 0)
    rr = np.broadcast_to(cp[:, :, None], both.shape)[both]
    cc = np.broadcast_to(cp[:, None, :], both.shape)[both]
    ss = np.broadcast_to(sp[:, None] * sp[None, :], both.shape)
    w = w0.copy()
    for _ in range(n_iter):
        if len(free):
            rhs = np.zeros(len(free))
            keep = cp >= 0
            np.add.at(rhs, cp[keep], ((w * la)[:, None] * sp)[keep])
            lg[free] = _normal_solve(rr, cc, (w[:, None, None] * ss)[both], rhs, 1e-12 * w.sum())
        r = lg[p[:, 1]] - lg[p[:, 0]] - la
        s = max(1.4826 * float(np.median(np.abs(r))), 1e-6)
        u = np.abs(r) / (huber * s)
        w = w0 * np.where(u <= 1, 1.0, 1.0 / np.maximum(u, 1e-12))
    return lg, gcomp >= 0


def _frame_degrees(n, pairs, gram, degree, members_deg):
    """Highest degree <= ``degree`` that each frame's overlaps support (from its basis Gram)."""
    M = n_terms(degree)
    G = np.zeros((n, M, M))
    if len(pairs):
        np.add.at(G, pairs[:, 0], gram[:, 2:2 + M, 2:2 + M])
        np.add.at(G, pairs[:, 1], gram[:, 2 + M:, 2 + M:])
    deg = np.full(n, -1, np.int64)
    for k in members_deg:
        for d in range(degree, -1, -1):
            m = n_terms(d)
            g = G[k, :m, :m]
            dia = np.sqrt(np.maximum(np.diag(g), 1e-300))
            ev = np.linalg.eigvalsh(g / dia[:, None] / dia[None, :]) if m > 1 else np.array([1.0])
            if np.all(np.isfinite(ev)) and ev.min() >= MIN_BASIS_EIGEN and dia.min() > 0:
                deg[k] = d
                break
        else:
            deg[k] = 0
    return deg


def solve_frame_sky(n: int, pairs, stats: PairStats, *, degree: int, noise, fit_gains: bool = True,
                    gauge=None, sky_gauge: str = "mean", norms=None, n_iter: int = 6,
                    huber: float = 2.5) -> SkySolution:
    """Every frame's gain and sky polynomial from the pair statistics (see the module docstring).

    Args:
      n: number of frames. pairs: int ``[P, 2]`` frame indices ``(i, j)``.
      stats: :class:`PairStats` of those pairs (host or device arrays; ``[P, ...]``).
      degree: polynomial degree of every frame's sky. noise: ``[n, C]`` pixel noise per frame.
      fit_gains: solve the gains (else all 1). gauge: preferred reference frame.
      sky_gauge: ``"mean"`` (zero-mean corrections) or ``"reference"`` (the reference frame's sky
        is left as it is).
      norms: ``[n, 4]`` footprint normalisations (needed for ``sky_gauge="mean"``).

    Returns:
      :class:`SkySolution`. Deterministic.
    """
    if sky_gauge not in ("mean", "reference"):
        raise ValueError(f"sky_gauge must be 'mean' or 'reference', got {sky_gauge!r}")
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    P = len(pairs)
    st = PairStats(*(np.asarray(x, np.float64) for x in stats))
    C = st.gain.shape[1] if P else np.asarray(noise).shape[1]
    M = n_terms(degree)
    noise = np.asarray(noise, np.float64).reshape(n, -1)
    notes: list[str] = []
    gains = np.ones((n, C))
    coeffs = np.zeros((n, C, M))
    wout = np.zeros((P, C))
    rms_b, rms_a = np.zeros((P, C)), np.zeros((P, C))
    ok_pair = st.weight.min(axis=1) >= MIN_PAIR_WEIGHT if P else np.zeros(0, bool)
    pairs_ok = pairs[ok_pair]
    comp = _components(n, pairs_ok) if len(pairs_ok) else np.full(n, -1, np.int64)
    anchors = []
    for k in range(int(comp.max()) + 1 if (comp >= 0).any() else 0):
        members = np.flatnonzero(comp == k)
        anchors.append(int(gauge) if gauge is not None and gauge in members else int(members[0]))
    if len(anchors) > 1:
        notes.append(f"frame graph has {len(anchors)} disconnected groups, each anchored on its own frame {anchors}")
    for k in np.flatnonzero(comp < 0):
        notes.append(f"frame {int(k)} overlaps no other frame usefully: left as it is")
    members_all = np.flatnonzero(comp >= 0)
    degrees = _frame_degrees(n, pairs_ok, st.gram[ok_pair].sum(axis=1) if P else np.zeros((0, 2 + 2 * M, 2 + 2 * M)),
                             degree, members_all)
    for k in members_all:
        if degrees[k] < degree:
            notes.append(f"frame {int(k)}: its overlaps support sky degree {int(degrees[k])}, not {degree}")
    norms = np.zeros((n, 4)) if norms is None else np.asarray(norms, np.float64)
    # unknowns: every coefficient within each frame's degree. The global polynomial no overlap sees
    # is held by a faint ridge (the minimum-norm solution: well conditioned however far a frame is
    # from the reference), then set exactly by the gauge below.
    fixed = np.zeros((n, M), bool)
    for k in range(n):
        fixed[k, n_terms(max(int(degrees[k]), 0)):] = True
        if comp[k] < 0:
            fixed[k] = True
    idx = -np.ones((n, M), np.int64)
    idx[~fixed] = np.arange(int((~fixed).sum()))
    nu = int((~fixed).sum())
    for c in range(C):
        if fit_gains and P:
            info = np.where(ok_pair & st.identifiable[:, c].astype(bool) & (st.gain[:, c] > 0),
                            st.weight[:, c] * np.minimum(st.corr[:, c], 0.999) ** 2
                            / (1 - np.minimum(st.corr[:, c], 0.999) ** 2), 0.0)
            lg, in_graph = _solve_gains(n, pairs, np.where(st.gain[:, c] > 0, st.gain[:, c], 1.0), info, comp,
                                        anchors)
            gains[:, c] = np.exp(lg)
            if c == 0:
                for k in members_all:
                    if not in_graph[k]:
                        notes.append(f"frame {int(k)}: no overlap with common signal to fix its gain (pure sky?): "
                                     f"gain 1")
        g = gains[:, c]
        # every usable pair at once: theta = t + S p, residual energy theta^T Gram theta, with S
        # mapping [p_i, p_j] -> [0, 0, -p_i, +p_j]
        q = np.flatnonzero(ok_pair)
        pi, pj = pairs[q, 0], pairs[q, 1]
        Gm = st.gram[q, c]  # [Q, D, D]
        t = np.zeros((len(q), 2 + 2 * M))
        t[:, 0], t[:, 1] = g[pi], g[pi] * st.gain[q, c] - g[pj]  # g_i f_i - g_j f_j on [d, f_j]
        t[:, 2] = g[pi] * st.centre[q, c, 0] - g[pj] * st.centre[q, c, 1]  # the medians, via phi_i's constant
        sig2 = (g[pi] * noise[pi, c]) ** 2 + (g[pj] * noise[pj, c]) ** 2
        good = np.isfinite(sig2) & (sig2 > 0)
        sig2 = np.where(good, sig2, np.median(sig2[good]) if good.any() else 1.0)
        sgn = np.concatenate([-np.ones(M), np.ones(M)])
        ids = np.concatenate([idx[pi], idx[pj]], axis=1)  # [Q, 2M], -1 = fixed
        Gp = Gm[:, 2:, 2:] * sgn[None, :, None] * sgn[None, None, :]
        bp = -np.einsum("qkd,qd->qk", Gm[:, 2:, :], t) * sgn
        both = (ids[:, :, None] >= 0) & (ids[:, None, :] >= 0)
        rr = np.broadcast_to(ids[:, :, None], both.shape)[both]
        cc = np.broadcast_to(ids[:, None, :], both.shape)[both]
        omega = np.ones(len(q))
        full = np.zeros((n, M))
        res = np.zeros(len(q))
        for it in range(n_iter):
            wq = omega / sig2
            if nu:
                vals = (wq[:, None, None] * Gp)[both]
                dia = rr == cc
                ridge = max(1e-8 * float(np.bincount(rr[dia], vals[dia], minlength=nu).mean()), 1e-300)
                rhs = np.zeros(nu)
                keep = ids >= 0
                np.add.at(rhs, ids[keep], (wq[:, None] * bp)[keep])
                full = np.zeros((n, M))
                full[~fixed] = _normal_solve(rr, cc, vals, rhs, ridge)
            th = t.copy()
            th[:, 2:2 + M] -= full[pi]
            th[:, 2 + M:] += full[pj]
            res = np.sqrt(np.maximum(np.einsum("qd,qde,qe->q", th, Gm, th), 0.0) / np.maximum(st.weight[q, c], 1e-30))
            if it == n_iter - 1 or not len(res):
                break
            z = res / np.sqrt(sig2)
            u = z / (huber * max(float(np.median(z)), 0.05))  # exact overlaps (residuals ~ 0): no outliers
            omega = np.where(u <= 1, 1.0, 1.0 / np.maximum(u, 1e-12))
        coeffs[:, c] = full
        wout[q, c], rms_a[q, c] = omega, res
        th0 = np.zeros((len(q), 2 + 2 * M))
        th0[:, 0], th0[:, 1], th0[:, 2] = 1.0, st.gain[q, c] - 1.0, st.centre[q, c, 0] - st.centre[q, c, 1]
        rms_b[q, c] = np.sqrt(np.maximum(np.einsum("qd,qde,qe->q", th0, Gm, th0), 0.0)
                              / np.maximum(st.weight[q, c], 1e-30))
    if nu:
        coeffs = _regauge(coeffs, degrees, comp, norms, anchors if sky_gauge == "reference" else None)
    for k in range(n):
        if comp[k] < 0:
            gains[k], coeffs[k] = 1.0, 0.0
    for line in notes:
        log.warning("[SKY] %s", line)
    return SkySolution(gains.astype(np.float32), coeffs.astype(np.float32), degrees, norms, comp, tuple(anchors),
                       rms_b, rms_a, wout, tuple(notes))


def _sub_stats(st: PairStats, degree: int, sub: int) -> PairStats:
    """The statistics of a lower degree: the Gram's rows of the prefix bases (a lower degree's
    monomials are a prefix of a higher one's)."""
    M, m = n_terms(degree), n_terms(sub)
    idx = np.r_[0, 1, 2:2 + m, 2 + M:2 + M + m]
    g = np.asarray(st.gram)
    return st._replace(gram=g[:, :, idx][:, :, :, idx])


def select_sky_degree(n: int, pairs, stats: PairStats, *, max_degree: int, **kw) -> tuple[int, SkySolution, dict]:
    """The sky degree the overlaps support, by the Bayesian information criterion.

    Solves every degree ``0..max_degree`` from the same statistics and scores each by
    ``E_d / c + k_d ln N``: ``E_d`` the pairs' residual energy in units of each pair's residual
    variance (its robust scale), ``c >= 1`` the overdispersion the richest model leaves
    (``E_max / (N - k_max)``), ``k_d`` the number of sky coefficients, ``N`` the weighted
    overlap bins. A degree is taken only where it removes more than noise would: on frames whose
    skies are flat, higher degrees only add noise to the frames' interiors.

    Returns:
      ``(degree, solution, scores)`` (``scores``: degree -> BIC).
    """
    st = PairStats(*(np.asarray(x, np.float64) for x in stats))
    E, k, sols = {}, {}, {}
    scale2 = np.maximum(st.scale, 1e-12) ** 2
    N = max(float(np.sum(st.weight)), 2.0)
    for d in range(max_degree + 1):
        sol = solve_frame_sky(n, pairs, _sub_stats(st, max_degree, d), degree=d, **kw)
        E[d] = float(np.sum(st.weight * sol.pair_rms_after ** 2 / scale2))
        k[d] = int(np.sum(sol.component >= 0)) * st.gain.shape[1] * n_terms(d)
        sols[d] = sol
    # overdispersion: where even the richest model leaves residuals far above the pairs' own scale
    # (frames of other nights, structured skies), a few more coefficients always "explain"
    # something; the energies are judged in units of what the richest model leaves
    c_hat = max(1.0, E[max_degree] / max(N - k[max_degree], 1.0))
    scores = {d: E[d] / c_hat + k[d] * math.log(N) for d in E}
    best = min(scores, key=lambda d: (scores[d], d))
    return best, sols[best], scores


def _regauge(coeffs, degrees, comp, norms, anchors=None, samples: int = 9):
    """Fix the global polynomial of every component: remove from every frame's sky the canvas
    polynomial that best fits all the component's skies over their footprints (area-weighted;
    zero-mean corrections), or, with ``anchors``, the anchor frame's own sky (the reference
    gauge: the anchor's sky is left as it is)."""
    n, C, M = coeffs.shape
    out = coeffs.copy()
    t = np.linspace(-1.0, 1.0, samples)
    uu, vv = np.meshgrid(t, t)
    for k in range(int(comp.max()) + 1 if (comp >= 0).any() else 0):
        members = np.flatnonzero(comp == k)
        d = int(min(degrees[members].min(), degree_of(M)))
        if d < 0:
            continue
        ys, xs, wts, vals = [], [], [], []
        for f in (members if anchors is None else [anchors[k]]):
            cy, cx, hy, hx = norms[f]
            ys.append(cy + vv.ravel() * hy)
            xs.append(cx + uu.ravel() * hx)
            wts.append(np.full(uu.size, hy * hx / uu.size))
            vals.append(poly_basis(uu.ravel(), vv.ravel(), degree_of(M)) @ coeffs[f].T)  # [S, C]
        y, x, w, v = np.concatenate(ys), np.concatenate(xs), np.concatenate(wts), np.concatenate(vals)
        cy, cx = np.average(y, weights=w), np.average(x, weights=w)
        hy, hx = max(float(np.ptp(y)) / 2, 1.0), max(float(np.ptp(x)) / 2, 1.0)
        R = poly_basis((x - cx) / hx, (y - cy) / hy, d)
        sw = np.sqrt(w)[:, None]
        r, *_ = np.linalg.lstsq(R * sw, v * sw, rcond=None)  # [m, C]
        for f in members:
            fcy, fcx, fhy, fhx = norms[f]
            Bf = poly_basis(uu.ravel(), vv.ravel(), d)
            Rf = poly_basis((fcx + uu.ravel() * fhx - cx) / hx, (fcy + vv.ravel() * fhy - cy) / hy, d) @ r  # [S, C]
            delta, *_ = np.linalg.lstsq(Bf, Rf, rcond=None)  # exact: the same polynomial space
            out[f, :, :n_terms(d)] -= delta.T
    return out


def degree_of(M: int) -> int:
    """The degree whose polynomials have ``M`` terms (inverse of :func:`n_terms`)."""
    d = 0
    while n_terms(d) < M:
        d += 1
    return d


@partial(aot.jit, static_argnames=("degree",))
def apply_frame_sky(data, y0, x0, gains, coeffs, norm, *, degree: int):
    """Corrected frame window ``gains * data - P(y, x)``.

    Args:
      data: float32 ``[h, w, C]`` the frame reprojected onto canvas rows ``y0..y0+h``, columns
        ``x0..x0+w`` (NaN = no data, kept NaN). gains: ``[C]``. coeffs: ``[C, M]``. norm: ``[4]``.
    """
    h, w, _ = data.shape
    y = (y0 + jnp.arange(h, dtype=jnp.float32))[:, None] * jnp.ones((1, w), jnp.float32)
    x = (x0 + jnp.arange(w, dtype=jnp.float32))[None, :] * jnp.ones((h, 1), jnp.float32)
    u, v = _uv(y, x, norm.astype(jnp.float32))
    sky = poly_basis(u, v, degree) @ coeffs.astype(jnp.float32).T  # [h, w, C]
    return jnp.where(jnp.isfinite(data), data * gains.astype(jnp.float32) - sky, jnp.nan)
