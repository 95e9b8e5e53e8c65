"""Rate-distortion scoring of candidate atoms: the closed-form fit, the stage-1 proxy and the
full-cost re-rank (see :mod:`pc15jax._src.search`).

Every function here works on one block of tiles (leading axis ``N``) and is pure; the scheduler
(:mod:`.pursuit`) runs them over the active tiles of a stage.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from shared_runtime import aot

from ..metrics import K1, K2
from ..score import rd_cost
from .tables import HIGHEST, SearchParams, SearchTables, atom_ssim_tables, gauss_tiles

__all__ = ["SearchResult", "StageInput", "Residual", "Costs", "prepare", "prepare_more", "quantise",
           "proxy_terms", "proxy_cost", "gather_scores", "shortlist_of", "finalise", "finalise_costs",
           "search_block", "search_more_block"]


class SearchResult(NamedTuple):
    """Per-tile outcome of the search (device arrays, leading axis = tiles).

    Attributes:
      atom: int32 ``[N]`` dictionary index (0 = FLAT). coef_q: int32 ``[N]`` quantised amplitude.
      dc_q: int32 ``[N]`` quantised offset. cost, distortion, bits: float32 ``[N]`` (``J``, ``D``, ``R``).
      recon: float32 ``[N, T, T]`` reconstructed tiles.
    """

    atom: jax.Array
    coef_q: jax.Array
    dc_q: jax.Array
    cost: jax.Array
    distortion: jax.Array
    bits: jax.Array
    recon: jax.Array


class StageInput(NamedTuple):
    """What a later pursuit stage reads of every tile (device arrays, leading axis = tiles)."""

    recon: jax.Array  # float32 [N, T, T] the reconstruction so far
    dc_q: jax.Array  # int32 [N] quantised offset
    n_prev: jax.Array  # int32 [N] atoms so far
    prev_gen: jax.Array  # int32 [N] generator of the tile's last atom (0: none yet)
    count_ctx: jax.Array  # int32 [N] context of the count symbol from the neighbours' counts (-1: none)


class Residual(NamedTuple):
    """A block of tiles against the reconstruction so far: what every candidate is scored on."""

    x: jax.Array  # [N, n] tiles
    p: jax.Array  # [N, n] current reconstruction (pixel space): the DC, then DC + atoms so far
    n_prev: jax.Array  # [N] int32 atoms so far
    xc: jax.Array  # [N, n] weighted residual sw * (x - p), offset-free
    energy: jax.Array  # [N] |xc|^2
    dc_q: jax.Array  # [N] int32
    o_hat: jax.Array  # [N] dequantised offset
    dc_err: jax.Array  # [N] weighted SSE along the offset direction (fixed once the DC is chosen)
    kappa: jax.Array  # [N] 1 / (2 var + C2): MSE -> (1 - SSIM) proxy
    prev_gen: jax.Array  # [N] int32 generator of the tile's last atom (0: none yet)
    count_row: jax.Array  # [N, MAX_ATOMS + 1] bits of the tile's atom count (its context's row)


def _weighted_split(v, t: SearchTables):
    """``sw * v`` -> (its offset coordinate ``<sw v, e>``, the offset-free rest)."""
    e = t.sw / jnp.sqrt(jnp.sum(t.sw * t.sw))
    vw = v * t.sw
    proj = jnp.dot(vw, e, precision=HIGHEST)
    return proj, vw - proj[:, None] * e


def prepare(tiles, t: SearchTables, p: SearchParams) -> Residual:
    """First stage: choose the DC; the residual to explain is the tile minus its DC."""
    N = tiles.shape[0]
    x = tiles.reshape(N, -1).astype(jnp.float32)
    s2 = jnp.sum(t.sw * t.sw)
    proj, xc = _weighted_split(x, t)
    o = proj / jnp.sqrt(s2)
    energy = jnp.sum(xc * xc, axis=1)
    n_dc = t.dc_bits.shape[0]
    dc_q = jnp.clip(jnp.round(o / p.dc_step), 0, n_dc - 1).astype(jnp.int32)
    o_hat = dc_q.astype(jnp.float32) * p.dc_step
    dc_err = (o - o_hat) ** 2 * s2
    kappa = 1.0 / (2.0 * energy / s2 + K2 * K2)
    return Residual(x, jnp.broadcast_to(o_hat[:, None], x.shape), jnp.zeros((N,), jnp.int32), xc, energy, dc_q,
                    o_hat, dc_err, kappa, jnp.zeros((N,), jnp.int32),
                    jnp.broadcast_to(t.count_bits[None, :], (N, t.count_bits.shape[0])))


def prepare_more(tiles, inp: StageInput, t: SearchTables, p: SearchParams) -> Residual:
    """Later stages: the residual of the current reconstruction (atoms are offset-free, so the
    offset coordinate of the residual -- the DC quantisation error -- no longer changes)."""
    N = tiles.shape[0]
    x = tiles.reshape(N, -1).astype(jnp.float32)
    r = inp.recon.reshape(N, -1).astype(jnp.float32)
    s2 = jnp.sum(t.sw * t.sw)
    proj, xc = _weighted_split(x - r, t)
    _, x0 = _weighted_split(x, t)
    kappa = 1.0 / (2.0 * jnp.sum(x0 * x0, axis=1) / s2 + K2 * K2)
    o_hat = inp.dc_q.astype(jnp.float32) * p.dc_step
    ctx = inp.count_ctx
    return Residual(x, r, inp.n_prev.astype(jnp.int32), xc, jnp.sum(xc * xc, axis=1), inp.dc_q.astype(jnp.int32),
                    o_hat, proj * proj, kappa, inp.prev_gen.astype(jnp.int32),
                    jnp.where(ctx[:, None] < 0, t.count_bits[None, :], t.count_ctx_bits[jnp.maximum(ctx, 0)]))


def quantise(c, t: SearchTables, p: SearchParams):
    """Amplitudes ``c`` -> (int32 indices ``k`` in ``[-K, K]``, their dequantised values)."""
    n = t.sw.shape[0]
    K = (t.coef_bits.shape[1] - 1) // 2
    step = p.gain_step * jnp.sqrt(jnp.asarray(n, jnp.float32))
    k = jnp.clip(jnp.round(c / step), -K, K).astype(jnp.int32)
    return k, k.astype(jnp.float32) * step


def bits_of(atom, k, pr: Residual, t: SearchTables):
    """Bits of the tile's symbols that differ between candidates ``atom`` ([N, M] or [1, A]; 0 = no
    further atom), with amplitude indices ``k`` [N, M]: each symbol in its context."""
    Kc, nk = t.coef_bits.shape
    K = (nk - 1) // 2
    safe = jnp.maximum(atom, 0)
    coef = jnp.where(atom == 0, 0.0, t.coef_bits[jnp.minimum(pr.n_prev, Kc - 1)[:, None], k + K])
    n_new = jnp.minimum(pr.n_prev[:, None] + (atom != 0).astype(jnp.int32), pr.count_row.shape[1] - 1)
    count = jnp.take_along_axis(pr.count_row, jnp.broadcast_to(n_new, k.shape), axis=1)
    return t.static_bits[pr.prev_gen[:, None], safe] + coef + count + t.dc_bits[pr.dc_q][:, None]


def proxy_terms(c, atom, pr: Residual, t: SearchTables, p: SearchParams):
    """Stage-1 cost of candidates ``atom`` ([N, M] or [1, A]) with amplitudes ``c`` [N, M]
    -> ``(J, D, R)``, ``J`` inf for candidates that are not allowed (or -1 padding)."""
    n = t.sw.shape[0]
    s2 = jnp.sum(t.sw * t.sw)
    k, c_hat = quantise(c, t, p)
    sse = jnp.maximum(pr.energy[:, None] - c * c + (c - c_hat) ** 2 + pr.dc_err[:, None], 0.0)
    mse = sse / s2
    d = (p.alpha * pr.kappa[:, None] + (1.0 - p.alpha)) * mse
    bits = bits_of(atom, k, pr, t)
    j = rd_cost(d, bits, p.lam, n)
    return jnp.where(t.allowed[jnp.maximum(atom, 0)] & (atom >= 0), j, jnp.inf), d, bits


def proxy_cost(c, atom, pr: Residual, t: SearchTables, p: SearchParams):
    """``J`` alone of :func:`proxy_terms`."""
    return proxy_terms(c, atom, pr, t, p)[0]


def gather_scores(xc, t: SearchTables, cand):
    """Amplitudes of tiles against per-tile candidate atoms ``cand`` [N, M] (HIGHEST precision)."""
    q = t.atoms[jnp.maximum(cand, 0)]  # [N, M, n]
    return jnp.einsum("nd,nmd->nm", xc, q, precision=HIGHEST), q


def shortlist_of(pr: Residual, t: SearchTables, p: SearchParams, mode: str, beam: int, shortlist: int):
    """The ``shortlist`` best atoms of every tile by the proxy -> int32 ``[N, shortlist]`` (-1: none)."""
    N = pr.xc.shape[0]
    if mode == "exhaustive":
        c = jnp.dot(pr.xc, t.atoms.T)  # [N, A]: the matmul the search runs at
        atom = jnp.arange(t.atoms.shape[0], dtype=jnp.int32)[None, :]
        j = proxy_cost(c, atom, pr, t, p)
        _, pos = lax.top_k(-j, min(shortlist, j.shape[1]))
        return pos.astype(jnp.int32)
    # coarse_to_fine
    c = jnp.dot(pr.xc, t.coarse_atoms.T)  # [N, Ac]
    j = proxy_cost(c, t.coarse[None, :], pr, t, p)
    _, b = lax.top_k(-j, min(beam, j.shape[1]))
    cand = t.neighbours[b].reshape(N, -1)  # [N, K * NB], -1 = padding
    c, _ = gather_scores(pr.xc, t, cand)
    j = proxy_cost(c, cand, pr, t, p)
    _, pos = lax.top_k(-j, min(shortlist, j.shape[1]))
    return jnp.take_along_axis(cand, pos, axis=1)


class Costs(NamedTuple):
    """Full costs of per-tile candidates ``[N, M + 1]`` (the last column is atom 0, "no further atom")."""

    cand: jax.Array  # [N, M + 1] int32
    k: jax.Array  # [N, M + 1] int32 quantised amplitudes
    c_hat: jax.Array  # [N, M + 1] dequantised amplitudes
    a: jax.Array  # [N, M + 1, n] the candidates in pixel space
    j: jax.Array  # [N, M + 1] J (inf: not allowed)
    d: jax.Array  # [N, M + 1] D
    bits: jax.Array  # [N, M + 1] R


def finalise(pr: Residual, t: SearchTables, p: SearchParams, cand, first: bool = True) -> SearchResult:
    """Full-cost re-rank of candidates ``cand`` [N, M]: the best of them or atom 0."""
    N, n = pr.x.shape
    T = int(round(n ** 0.5))
    f = finalise_costs(pr, t, p, cand, first)
    best = jnp.argmin(f.j, axis=1)
    take = lambda v: jnp.take_along_axis(v, best[:, None], axis=1)[:, 0]  # noqa: E731
    recon = pr.p + take(f.c_hat)[:, None] * jnp.take_along_axis(f.a, best[:, None, None], axis=1)[:, 0]
    return SearchResult(atom=take(f.cand), coef_q=take(f.k), dc_q=pr.dc_q, cost=take(f.j), distortion=take(f.d),
                        bits=take(f.bits), recon=recon.reshape(N, T, T))


def finalise_costs(pr: Residual, t: SearchTables, p: SearchParams, cand, first: bool = True) -> Costs:
    """Full-cost scores of candidates ``cand`` [N, M] (atom 0, "no further atom", is appended).

    For a candidate ``r = p + c a`` (``p`` the current reconstruction) the SSIM statistics follow
    from per-tile maps and per-atom tables: ``mu_r = G(p) + c G(a)``,
    ``var_r = var_p + 2 c cov(p, a) + c^2 var_a``, ``cov(x, r) = cov(x, p) + c cov(x, a)``; only
    ``G(x a)`` (and, after the first atom, ``G(p a)``) is filtered per candidate.
    """
    N, n = pr.x.shape
    T = int(round(n ** 0.5))
    w = t.sw * t.sw
    s2 = jnp.sum(w)
    cand = jnp.concatenate([cand, jnp.zeros((N, 1), jnp.int32)], axis=1)
    safe = jnp.maximum(cand, 0)
    c, q = gather_scores(pr.xc, t, cand)
    k, c_hat = quantise(c, t, p)
    k = jnp.where(cand == 0, 0, k)
    c_hat = jnp.where(cand == 0, 0.0, c_hat)
    a = q / t.sw  # [N, M, n] atoms in pixel space
    if t.atom_ga is None:
        ga, va = atom_ssim_tables(q, t.sw, T)
    else:
        ga, va = t.atom_ga[safe], t.atom_va[safe]
    # (Co)variances are shift invariant: filter tile and reconstruction minus the DC (no float32
    # cancellation in G(x^2) - G(x)^2 for the near-flat tiles where SSIM is most sensitive).
    o = pr.o_hat[:, None]
    xs, ps = pr.x - o, pr.p - o
    gxs = gauss_tiles(xs, T)
    vx = (gauss_tiles(xs * xs, T) - gxs * gxs)[:, None, :]
    ch = c_hat[..., None]
    cov_xa = gauss_tiles(xs[:, None, :] * a, T) - gxs[:, None, :] * ga
    if first:  # p is the DC alone
        mu_r = o[:, None, :] + ch * ga
        var_r = ch * ch * va
        cov = ch * cov_xa
    else:
        gps = gauss_tiles(ps, T)
        var_p = gauss_tiles(ps * ps, T) - gps * gps
        cov_xp = gauss_tiles(xs * ps, T) - gxs * gps
        cov_pa = gauss_tiles(ps[:, None, :] * a, T) - gps[:, None, :] * ga
        mu_r = (o + gps)[:, None, :] + ch * ga
        var_r = var_p[:, None, :] + 2.0 * ch * cov_pa + ch * ch * va
        cov = cov_xp[:, None, :] + ch * cov_xa
    gx = (gxs + o)[:, None, :]
    c1, c2 = K1 * K1, K2 * K2
    ssim = (2.0 * gx * mu_r + c1) * (2.0 * cov + c2) / ((gx * gx + mu_r * mu_r + c1) * (vx + var_r + c2))
    ssim_term = jnp.sum((1.0 - ssim) * w, axis=-1) / s2
    sse = jnp.maximum(pr.energy[:, None] - c * c + (c - c_hat) ** 2 + pr.dc_err[:, None], 0.0)
    d = p.alpha * ssim_term + (1.0 - p.alpha) * sse / s2
    bits = bits_of(cand, k, pr, t)
    j = rd_cost(d, bits, p.lam, n)
    exit_ = d[:, -1] <= p.early_exit  # good enough as it is
    j = jnp.where(t.allowed[safe] & (cand >= 0) & (~exit_[:, None] | (cand == 0)), j, jnp.inf)
    return Costs(cand, k, c_hat, a, j, d, bits)


@functools.partial(aot.jit, static_argnames=("mode", "beam", "shortlist"))
def search_block(tiles, t: SearchTables, p: SearchParams, *, mode: str, beam: int, shortlist: int) -> SearchResult:
    pr = prepare(tiles, t, p)
    flat_d_proxy = (p.alpha * pr.kappa + (1.0 - p.alpha)) * (pr.energy + pr.dc_err) / jnp.sum(t.sw * t.sw)

    def full(_):
        return finalise(pr, t, p, shortlist_of(pr, t, p, mode, beam, shortlist))

    def all_flat(_):  # every tile is good enough with its DC: skip the atom search
        shape = jax.eval_shape(lambda: shortlist_of(pr, t, p, mode, beam, shortlist)).shape
        return finalise(pr, t, p, jnp.zeros(shape, jnp.int32))

    # The proxy never underestimates a flat tile's SSIM loss by much; the exact test is in finalise.
    return lax.cond(jnp.all(flat_d_proxy <= p.early_exit), all_flat, full, None)


@functools.partial(aot.jit, static_argnames=("mode", "beam", "shortlist"))
def search_more_block(tiles, inp: StageInput, t: SearchTables, p: SearchParams, *, mode: str, beam: int,
                      shortlist: int) -> SearchResult:
    """One more matching-pursuit stage of a block: the best next atom of every tile, or atom 0 (stop)."""
    pr = prepare_more(tiles, inp, t, p)
    return finalise(pr, t, p, shortlist_of(pr, t, p, mode, beam, shortlist), first=False)
