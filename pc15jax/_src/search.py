"""The per-tile rate-distortion search, as jitted matrix products.

For tiles ``x`` (flattened, ``n = T*T`` pixels) and the dictionary of weighted, offset-free,
unit-norm atoms ``a`` (see :mod:`.dictionary`):

1. **Closed-form fit.** ``xw = sw * x``; its offset part gives the tile DC ``o`` (weighted mean,
   quantised with ``dc_step``); ``xc`` is the rest. The amplitude of atom ``a`` is
   ``c = <xc, a>``, quantised to ``k = round(c / (gain_step * sqrt(n)))``, and the weighted
   squared error is exactly ``|xc|^2 - c^2 + (c - c_hat)^2 + (o - o_hat)^2 |sw|^2``.
2. **Stage 1 (matmul).** ``C = xc @ atoms.T`` scores every tile against every atom
   (``"exhaustive"``), or against the even grid points only, followed by the +-1 grid
   neighbours of the best ``beam`` (``"coarse_to_fine"``). Candidates are ranked by a proxy of
   ``J`` in which ``1 - SSIM`` is approximated by ``MSE / (2 var(x) + C2)``.
3. **Re-rank.** The ``shortlist`` best candidates and FLAT (DC only) are rendered and scored
   with the full cost: seam-weighted ``alpha (1 - SSIM) + (1 - alpha) MSE`` plus
   ``lambda * bits / n`` under the rate model.
4. **Early exit.** A tile whose DC-only distortion is at most ``early_exit`` is coded FLAT; a
   batch made only of such tiles skips the search altogether (``lax.cond``).

All tile batches are padded to a multiple of ``TILE_BUCKET`` so that images whose tile counts
fall in the same bucket share one compiled program. A stage runs over the tiles still active only,
in blocks of ``STAGE_BLOCK`` tiles (:func:`_blocks`), with a traced block count.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..ai.features import tile_features
from ..bitstream.models import count_contexts
from . import generators as gens
from . import hooks as _hooks
from .config import CodecConfig
from .dictionary import Dictionary, get_dictionary
from .generators import get_generator
from .metrics import K1, K2, _gauss2, gaussian_kernel
from .score import RateModel, atom_static_bits, rd_cost, uniform_rate_model

__all__ = [
    "SearchParams",
    "SearchTables",
    "SearchResult",
    "TileSymbols",
    "make_tables",
    "search_tiles",
    "reconstruct_tiles",
    "tile_symbols",
    "TILE_BUCKET",
    "AtomsResult",
    "search_atoms",
    "pad_tiles",
    "dictionary_for",
]

TILE_BUCKET = 64
STAGE_BLOCK = 128  # tiles per block of a pursuit stage (see _blocks)
GATHER_MAX = 24  # candidate lists longer than this are scored through the full matmul
SSIM_TABLE_MAX_ELEMENTS = 1 << 25  # precompute per-atom SSIM tables up to 128 MiB each (T <= 64)
HIGHEST = lax.Precision.HIGHEST


class SearchParams(NamedTuple):
    """Traced (continuous) search settings: changing them never recompiles."""

    lam: jax.Array
    alpha: jax.Array
    gain_step: jax.Array
    dc_step: jax.Array
    early_exit: jax.Array

    @classmethod
    def from_config(cls, cfg: CodecConfig) -> "SearchParams":
        f = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
        return cls(f(cfg.lambda_rd), f(cfg.alpha_mix), f(cfg.gain_step), f(cfg.dc_step), f(cfg.early_exit))


class SearchTables(NamedTuple):
    """Device arrays the search reads (dictionary + rate model), a pytree."""

    atoms: jax.Array  # [A, n]
    coarse_atoms: jax.Array  # [Ac, n]
    sw: jax.Array  # [n]
    static_bits: jax.Array  # [G, A] gen + params + seed bits, per previous generator in the tile
    atom_gen: jax.Array  # [A] int32 generator of every atom
    allowed: jax.Array  # [A] bool
    coarse: jax.Array  # [Ac] int32
    neighbours: jax.Array  # [Ac, NB] int32, -1 = none
    coef_bits: jax.Array  # [N_COEF_CTX, 2K+1] per position of the atom in its tile
    dc_bits: jax.Array  # [dc_levels]
    count_bits: jax.Array  # [MAX_ATOMS + 1] whatever the neighbours
    count_ctx_bits: jax.Array  # [N_COUNT_CTX, MAX_ATOMS + 1] given the neighbours' counts
    atom_ga: jax.Array | None  # [A, n] G(a) of the pixel-space atoms (None: computed per candidate)
    atom_va: jax.Array | None  # [A, n] G(a^2) - G(a)^2


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


class TileSymbols(NamedTuple):
    """Host-side symbols of every tile (numpy int32), what the bitstream stores."""

    gen_id: np.ndarray  # [N]
    param_idx: np.ndarray  # [N, MAX_PARAMS]
    seed_sym: np.ndarray  # [N]
    coef_q: np.ndarray  # [N]
    dc_q: np.ndarray  # [N]


def make_tables(dic: Dictionary, rate: RateModel, cfg: CodecConfig) -> SearchTables:
    """Assemble the search's device tables for a dictionary, a rate model and a config."""
    allowed = np.array(dic.searchable)
    if cfg.generators is not None:
        ids = np.asarray([get_generator(g).id for g in cfg.generators])
        allowed &= np.isin(dic.gen_id, ids) | (dic.gen_id == 0)
    nb = np.where(allowed[dic.neighbours], dic.neighbours, -1)
    # Padding repeats the atom itself; keep one copy (column 0) so the beam has no duplicates.
    nb[:, 1:] = np.where(nb[:, 1:] == nb[:, :1], -1, nb[:, 1:])
    keep = allowed[dic.coarse]
    coarse = dic.coarse[keep]
    ga = va = None
    if dic.atoms.size <= SSIM_TABLE_MAX_ELEMENTS:
        ga, va = jax.jit(atom_ssim_tables, static_argnums=2)(dic.atoms, dic.sw, dic.tile)
    return SearchTables(
        atoms=dic.atoms,
        coarse_atoms=dic.atoms[jnp.asarray(coarse)],
        sw=dic.sw,
        static_bits=atom_static_bits(rate, dic.gen_id, dic.param_idx, dic.seed_sym),
        atom_gen=jnp.asarray(dic.gen_id, jnp.int32),
        allowed=jnp.asarray(allowed),
        coarse=jnp.asarray(coarse, jnp.int32),
        neighbours=jnp.asarray(nb[keep], jnp.int32),
        coef_bits=rate.coef_bits,
        dc_bits=rate.dc_bits,
        count_bits=rate.count_bits,
        count_ctx_bits=rate.count_ctx_bits,
        atom_ga=ga,
        atom_va=va,
    )


# ----------------------------------------------------------------------------------------------
# The jitted core
# ----------------------------------------------------------------------------------------------


class _Prep(NamedTuple):
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


def _prepare(tiles, t: SearchTables, p: SearchParams) -> _Prep:
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
    return _Prep(x, jnp.broadcast_to(o_hat[:, None], x.shape), jnp.zeros((N,), jnp.int32), xc, energy, dc_q,
                 o_hat, dc_err, kappa, jnp.zeros((N,), jnp.int32),
                 jnp.broadcast_to(t.count_bits[None, :], (N, t.count_bits.shape[0])))


def _prepare_more(tiles, recon, dc_q, n_prev, prev_gen, count_ctx, t: SearchTables, p: SearchParams) -> _Prep:
    """Later stages: the residual of the current reconstruction (atoms are offset-free, so the
    offset coordinate of the residual -- the DC quantisation error -- no longer changes)."""
    N = tiles.shape[0]
    x = tiles.reshape(N, -1).astype(jnp.float32)
    r = recon.reshape(N, -1).astype(jnp.float32)
    s2 = jnp.sum(t.sw * t.sw)
    proj, xc = _weighted_split(x - r, t)
    _, x0 = _weighted_split(x, t)
    kappa = 1.0 / (2.0 * jnp.sum(x0 * x0, axis=1) / s2 + K2 * K2)
    o_hat = dc_q.astype(jnp.float32) * p.dc_step
    return _Prep(x, r, n_prev.astype(jnp.int32), xc, jnp.sum(xc * xc, axis=1), dc_q.astype(jnp.int32), o_hat,
                 proj * proj, kappa, prev_gen.astype(jnp.int32),
                 jnp.where(count_ctx[:, None] < 0, t.count_bits[None, :], t.count_ctx_bits[jnp.maximum(count_ctx, 0)]))


def _quantise(c, t: SearchTables, p: SearchParams):
    n = t.sw.shape[0]
    K = (t.coef_bits.shape[1] - 1) // 2
    step = p.gain_step * jnp.sqrt(jnp.asarray(n, jnp.float32))
    k = jnp.clip(jnp.round(c / step), -K, K).astype(jnp.int32)
    return k, k.astype(jnp.float32) * step


def _bits(atom, k, pr: _Prep, t: SearchTables):
    """Bits of the tile's symbols that differ between candidates ``atom`` ([N, M] or [1, A]; 0 = no
    further atom), with amplitude indices ``k`` [N, M]: each symbol in its context."""
    Kc, nk = t.coef_bits.shape
    K = (nk - 1) // 2
    safe = jnp.maximum(atom, 0)
    coef = jnp.where(atom == 0, 0.0, t.coef_bits[jnp.minimum(pr.n_prev, Kc - 1)[:, None], k + K])
    n_new = jnp.minimum(pr.n_prev[:, None] + (atom != 0).astype(jnp.int32), pr.count_row.shape[1] - 1)
    count = jnp.take_along_axis(pr.count_row, jnp.broadcast_to(n_new, k.shape), axis=1)
    return t.static_bits[pr.prev_gen[:, None], safe] + coef + count + t.dc_bits[pr.dc_q][:, None]


def _proxy_terms(c, atom, pr: _Prep, t: SearchTables, p: SearchParams):
    """Stage-1 cost of candidates ``atom`` ([N, M] or [1, A]) with amplitudes ``c`` [N, M]
    -> ``(J, D, R)``, ``J`` inf for candidates that are not allowed (or -1 padding)."""
    n = t.sw.shape[0]
    s2 = jnp.sum(t.sw * t.sw)
    k, c_hat = _quantise(c, t, p)
    sse = jnp.maximum(pr.energy[:, None] - c * c + (c - c_hat) ** 2 + pr.dc_err[:, None], 0.0)
    mse = sse / s2
    d = (p.alpha * pr.kappa[:, None] + (1.0 - p.alpha)) * mse
    bits = _bits(atom, k, pr, t)
    j = rd_cost(d, bits, p.lam, n)
    return jnp.where(t.allowed[jnp.maximum(atom, 0)] & (atom >= 0), j, jnp.inf), d, bits


def _proxy_cost(c, atom, pr: _Prep, t: SearchTables, p: SearchParams):
    return _proxy_terms(c, atom, pr, t, p)[0]


def _gather_scores(xc, t: SearchTables, cand):
    """Amplitudes of tiles against per-tile candidate atoms ``cand`` [N, M] (HIGHEST precision)."""
    q = t.atoms[jnp.maximum(cand, 0)]  # [N, M, n]
    return jnp.einsum("nd,nmd->nm", xc, q, precision=HIGHEST), q


def _shortlist(pr: _Prep, t: SearchTables, p: SearchParams, mode: str, beam: int, shortlist: int):
    N = pr.xc.shape[0]
    if mode == "exhaustive":
        c = jnp.dot(pr.xc, t.atoms.T)  # [N, A]: the matmul the search runs at
        atom = jnp.arange(t.atoms.shape[0], dtype=jnp.int32)[None, :]
        j = _proxy_cost(c, atom, pr, t, p)
        _, pos = lax.top_k(-j, min(shortlist, j.shape[1]))
        return pos.astype(jnp.int32)
    # coarse_to_fine
    c = jnp.dot(pr.xc, t.coarse_atoms.T)  # [N, Ac]
    j = _proxy_cost(c, t.coarse[None, :], pr, t, p)
    _, b = lax.top_k(-j, min(beam, j.shape[1]))
    cand = t.neighbours[b].reshape(N, -1)  # [N, K * NB], -1 = padding
    c, _ = _gather_scores(pr.xc, t, cand)
    j = _proxy_cost(c, cand, pr, t, p)
    _, pos = lax.top_k(-j, min(shortlist, j.shape[1]))
    return jnp.take_along_axis(cand, pos, axis=1)


def _gauss_tiles(v, T):
    """Gaussian SSIM filter of flattened tiles ``[..., T*T]`` -> same shape."""
    return _gauss2(v.reshape(v.shape[:-1] + (T, T)), gaussian_kernel()).reshape(v.shape)


def atom_ssim_tables(atoms, sw, T: int):
    """Per-atom SSIM statistics in pixel space: ``G(a)`` and ``G(a^2) - G(a)^2`` for ``a = atom / sw``."""
    a = atoms / sw
    ga = _gauss_tiles(a, T)
    return ga, _gauss_tiles(a * a, T) - ga * ga


class _Costs(NamedTuple):
    """Full costs of per-tile candidates ``[N, M + 1]`` (the last column is atom 0, "no further atom")."""

    cand: jax.Array  # [N, M + 1] int32
    k: jax.Array  # [N, M + 1] int32 quantised amplitudes
    c_hat: jax.Array  # [N, M + 1] dequantised amplitudes
    a: jax.Array  # [N, M + 1, n] the candidates in pixel space
    j: jax.Array  # [N, M + 1] J (inf: not allowed)
    d: jax.Array  # [N, M + 1] D
    bits: jax.Array  # [N, M + 1] R


def _finalise(pr: _Prep, t: SearchTables, p: SearchParams, cand, first: bool = True) -> SearchResult:
    """Full-cost re-rank of candidates ``cand`` [N, M]: the best of them or atom 0."""
    N, n = pr.x.shape
    T = int(round(n ** 0.5))
    f = _finalise_costs(pr, t, p, cand, first)
    best = jnp.argmin(f.j, axis=1)
    take = lambda v: jnp.take_along_axis(v, best[:, None], axis=1)[:, 0]  # noqa: E731
    recon = pr.p + take(f.c_hat)[:, None] * jnp.take_along_axis(f.a, best[:, None, None], axis=1)[:, 0]
    return SearchResult(atom=take(f.cand), coef_q=take(f.k), dc_q=pr.dc_q, cost=take(f.j), distortion=take(f.d),
                        bits=take(f.bits), recon=recon.reshape(N, T, T))


def _finalise_costs(pr: _Prep, t: SearchTables, p: SearchParams, cand, first: bool = True) -> _Costs:
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
    c, q = _gather_scores(pr.xc, t, cand)
    k, c_hat = _quantise(c, t, p)
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
    gxs = _gauss_tiles(xs, T)
    vx = (_gauss_tiles(xs * xs, T) - gxs * gxs)[:, None, :]
    ch = c_hat[..., None]
    cov_xa = _gauss_tiles(xs[:, None, :] * a, T) - gxs[:, None, :] * ga
    if first:  # p is the DC alone
        mu_r = o[:, None, :] + ch * ga
        var_r = ch * ch * va
        cov = ch * cov_xa
    else:
        gps = _gauss_tiles(ps, T)
        var_p = _gauss_tiles(ps * ps, T) - gps * gps
        cov_xp = _gauss_tiles(xs * ps, T) - gxs * gps
        cov_pa = _gauss_tiles(ps[:, None, :] * a, T) - gps[:, None, :] * ga
        mu_r = (o + gps)[:, None, :] + ch * ga
        var_r = var_p[:, None, :] + 2.0 * ch * cov_pa + ch * ch * va
        cov = cov_xp[:, None, :] + ch * cov_xa
    gx = (gxs + o)[:, None, :]
    c1, c2 = K1 * K1, K2 * K2
    ssim = (2.0 * gx * mu_r + c1) * (2.0 * cov + c2) / ((gx * gx + mu_r * mu_r + c1) * (vx + var_r + c2))
    ssim_term = jnp.sum((1.0 - ssim) * w, axis=-1) / s2
    sse = jnp.maximum(pr.energy[:, None] - c * c + (c - c_hat) ** 2 + pr.dc_err[:, None], 0.0)
    d = p.alpha * ssim_term + (1.0 - p.alpha) * sse / s2
    bits = _bits(cand, k, pr, t)
    j = rd_cost(d, bits, p.lam, n)
    exit_ = d[:, -1] <= p.early_exit  # good enough as it is
    j = jnp.where(t.allowed[safe] & (cand >= 0) & (~exit_[:, None] | (cand == 0)), j, jnp.inf)
    return _Costs(cand, k, c_hat, a, j, d, bits)


@functools.partial(jax.jit, static_argnames=("mode", "beam", "shortlist"))
def _search(tiles, t: SearchTables, p: SearchParams, *, mode: str, beam: int, shortlist: int) -> SearchResult:
    pr = _prepare(tiles, t, p)
    flat_d_proxy = (p.alpha * pr.kappa + (1.0 - p.alpha)) * (pr.energy + pr.dc_err) / jnp.sum(t.sw * t.sw)

    def full(_):
        return _finalise(pr, t, p, _shortlist(pr, t, p, mode, beam, shortlist))

    def all_flat(_):  # every tile is good enough with its DC: skip the atom search
        shape = jax.eval_shape(lambda: _shortlist(pr, t, p, mode, beam, shortlist)).shape
        return _finalise(pr, t, p, jnp.zeros(shape, jnp.int32))

    # The proxy never underestimates a flat tile's SSIM loss by much; the exact test is in _finalise.
    return lax.cond(jnp.all(flat_d_proxy <= p.early_exit), all_flat, full, None)


@functools.partial(jax.jit, static_argnames=("mode", "beam", "shortlist"))
def _search_more(tiles, recon, dc_q, n_prev, prev_gen, count_ctx, t: SearchTables, p: SearchParams, *, mode: str,
                 beam: int, shortlist: int) -> SearchResult:
    """One more matching-pursuit stage: the best next atom of every tile, or atom 0 (stop).

    ``prev_gen`` [N]: generator of each tile's last atom; ``count_ctx`` [N]: context of each
    tile's count symbol from its neighbours' counts so far (-1: whatever the neighbours)."""
    pr = _prepare_more(tiles, recon, dc_q, n_prev, prev_gen, count_ctx, t, p)
    return _finalise(pr, t, p, _shortlist(pr, t, p, mode, beam, shortlist), first=False)


# ----------------------------------------------------------------------------------------------
# The hooked stage (see .hooks): per-tile candidate sets instead of every atom
# ----------------------------------------------------------------------------------------------


def _score_list(pr: _Prep, t: SearchTables, p: SearchParams, cand):
    """Proxy ``(J, D, R, c)`` of per-tile candidate lists ``cand`` [N, M] (-1: none).

    Long lists read their amplitudes off the full ``[N, A]`` product: one plain matmul beats a
    gathered ``[N, M, n]`` batch of matrix-vector products (3.5x on CPU at M = 132)."""
    if cand.shape[1] > GATHER_MAX:
        c = jnp.take_along_axis(jnp.dot(pr.xc, t.atoms.T), jnp.maximum(cand, 0), axis=1)
    else:
        c, _ = _gather_scores(pr.xc, t, cand)
    j, d, bits = _proxy_terms(c, cand, pr, t, p)
    return j, d, bits, c


def _dedupe(cand, j):
    """``J`` of repeated (and -1) candidates in each row -> inf, so a shortlist has no duplicates."""
    order = jnp.argsort(cand, axis=1)
    sc = jnp.take_along_axis(cand, order, axis=1)
    dup_sorted = jnp.concatenate([jnp.zeros_like(sc[:, :1], bool), sc[:, 1:] == sc[:, :-1]], axis=1)
    rows = jnp.arange(cand.shape[0])[:, None]
    dup = jnp.zeros(cand.shape, bool).at[rows, order].set(dup_sorted)
    return jnp.where(dup | (cand < 0), jnp.inf, j)


def _dispatch(pr: _Prep, t: SearchTables, p: SearchParams, topg, layout, per_gen: int):
    """Every atom of each tile's selected generators ``topg`` [N, K], at matmul speed: the
    (tile, generator) pairs are sorted by generator and scored in chunks against that generator's
    atoms only -> the ``per_gen`` best atoms of every pair and their proxy ``J``, ``[N, K * per_gen]``
    each (-1 and inf where none). The atoms of a row are distinct."""
    N, K = topg.shape
    P = N * K
    B = min(_hooks.DISPATCH_CHUNK, P)
    gen_of = topg.reshape(-1)
    tile_of = jnp.repeat(jnp.arange(N, dtype=jnp.int32), K)
    order = jnp.argsort(gen_of, stable=True)
    counts = jnp.zeros(len(layout), jnp.int32).at[gen_of].add(1)
    starts = jnp.cumsum(counts) - counts
    out = (jnp.full((P + 1, per_gen), -1, jnp.int32), jnp.full((P + 1, per_gen), jnp.inf, jnp.float32))
    for g, (off, size) in enumerate(layout):
        if g == 0 or size == 0:
            continue
        atoms_g = t.atoms[off:off + size]
        ids = jnp.arange(off, off + size, dtype=jnp.int32)[None, :]
        s = min(per_gen, size)

        def body(ci, out, g=g, atoms_g=atoms_g, ids=ids, s=s):
            r = ci * B + jnp.arange(B, dtype=jnp.int32)
            valid = r < counts[g]
            pos = order[jnp.minimum(starts[g] + r, P - 1)]
            sub = jax.tree.map(lambda v: v[tile_of[pos]], pr)
            j = _proxy_cost(jnp.dot(sub.xc, atoms_g.T), ids, sub, t, p)
            neg, best = lax.top_k(-j, s)
            val = jnp.full((B, per_gen), -1, jnp.int32).at[:, :s].set(ids[0][best])
            jv = jnp.full((B, per_gen), jnp.inf, jnp.float32).at[:, :s].set(-neg)
            dest = jnp.where(valid, pos, P)
            return out[0].at[dest].set(val), out[1].at[dest].set(jv)

        out = lax.fori_loop(0, (counts[g] + B - 1) // B, body, out)
    return tuple(v[:P].reshape(N, K * per_gen) for v in out)


def _levels_of(gt, gen, atom):
    """Atoms ``[P]`` of generators ``[P]`` -> their grid levels ``[P, D]``."""
    local = (atom - gt.offset[gen])[:, None]
    st = gt.stride[gen]
    return jnp.where(st > 0, (local // jnp.maximum(st, 1)) % gt.levels[gen], 0)


def _m2_candidates(pr: _Prep, t: SearchTables, p: SearchParams, feats, topg, plan, hp, gt):
    """M2's atom for each selected generator and its grid neighbourhood, then the +-1
    neighbours of the best of them -> (candidates ``[N, M]``, their proxy terms)."""
    N, K = topg.shape
    g = topg.reshape(-1)
    lg = _hooks.merge_model(plan.m2_def, hp["m2"])(jnp.repeat(feats, K, axis=0), g)  # [P, D, L]
    lv = gt.levels[g]
    lg = jnp.where(jnp.arange(lg.shape[-1])[None, None, :] < lv[:, :, None], lg, -jnp.inf)
    idx = jnp.argmax(lg, axis=-1).astype(jnp.int32)
    c1 = _hooks._neighbourhood(gt, g, idx, radius=2, all_seeds=True)  # [P, M1]
    M1 = c1.shape[1]
    c1 = c1.reshape(N, K * M1)
    s1 = _score_list(pr, t, p, c1)
    j1 = s1[0].reshape(N * K, M1)
    best = jnp.take_along_axis(c1.reshape(N * K, M1), jnp.argmin(j1, axis=1)[:, None], axis=1)[:, 0]
    best = jnp.where(best >= 0, best, _hooks._atoms_of(gt, g, idx))
    c2 = _hooks._neighbourhood(gt, g, _levels_of(gt, g, best), radius=1, all_seeds=False)[:, 1:]
    c2 = c2.reshape(N, -1)
    s2 = _score_list(pr, t, p, c2)
    return jnp.concatenate([c1, c2], axis=1), tuple(jnp.concatenate([a, b], axis=1) for a, b in zip(s1, s2))


def _select(pr: _Prep, t: SearchTables, hp, plan, G: int):
    """Tile features and the selector's ``plan.topk`` generators of every tile -> (``[N, F]``, ``[N, K]``)."""
    N, n = pr.xc.shape
    T = int(round(n ** 0.5))
    feats = tile_features((pr.xc / t.sw).reshape(N, T, T), pr.n_prev, pr.prev_gen)
    gen_ok = jnp.zeros((G,), bool).at[t.atom_gen].max(t.allowed).at[0].set(False)
    logits = jnp.where(gen_ok[None, :], _hooks.selector_logits(feats, plan, hp), -jnp.inf)
    _, topg = lax.top_k(logits, plan.topk)
    return feats, topg.astype(jnp.int32)


def _rerank(pr: _Prep, t: SearchTables, p: SearchParams, hp, plan, cand, scores, shortlist: int, first: bool,
            dedupe: bool = True):
    """Per-tile candidates ``cand`` [N, M] with their proxy terms ``(J, D, R, c)`` -> the full-cost
    stage result: the proxy's ``shortlist`` best (or, with M3, the ``rd_keep`` best of its
    re-ranking). Without M3 only ``J`` is read; ``dedupe=False`` when the rows hold no repeats."""
    n = pr.xc.shape[1]
    j, d, bits, c = scores
    if dedupe:
        j = _dedupe(cand, j)
    keep = shortlist
    rank = j
    if plan.m3_def is not None:  # M3 re-ranks the proxy's best few (what it was trained on)
        _, top = lax.top_k(-j, min(_hooks.M3_POOL, cand.shape[1]))
        cand, j, d, bits, c = (jnp.take_along_axis(v, top, axis=1) for v in (cand, j, d, bits, c))
        f = _hooks.candidate_features(j, d, bits, c, pr.energy, pr.kappa, pr.n_prev,
                                      t.atom_gen[jnp.maximum(cand, 0)], p.lam, n)
        pred = _hooks.merge_model(plan.m3_def, hp["m3"])(f)
        rank = jnp.where(jnp.isfinite(j), jnp.log(j + 1e-10) + pred, jnp.inf)
        keep = plan.rd_keep
    _, pos = lax.top_k(-rank, min(keep, cand.shape[1]))
    sl = jnp.take_along_axis(cand, pos, axis=1)
    sl = jnp.where(jnp.isfinite(jnp.take_along_axis(rank, pos, axis=1)), sl, -1)
    return _finalise(pr, t, p, sl, first)


def _search_hooked_m2(pr: _Prep, t: SearchTables, p: SearchParams, gt, hp, *, first: bool, plan, layout,
                      shortlist: int) -> SearchResult:
    """One block of a stage with M2: selected generators -> M2's atoms and their neighbourhoods."""
    feats, topg = _select(pr, t, hp, plan, len(layout))
    cand, scores = _m2_candidates(pr, t, p, feats, topg, plan, hp, gt)
    return _rerank(pr, t, p, hp, plan, cand, scores, shortlist, first)


def _stage_hooked(pr: _Prep, order, n_blocks, block: int, t: SearchTables, p: SearchParams, gt, hp, *,
                  first: bool, plan, layout, shortlist: int) -> SearchResult:
    """A hooked stage. With M2, every block runs on its own. Without, the blocks select their
    generators, one dispatch over the whole stage scores each (tile, generator) pair against all
    of that generator's atoms (in full chunks of pairs: a block alone would leave most chunks
    nearly empty), and the blocks re-rank their candidates."""
    kw = dict(first=first, plan=plan, layout=layout, shortlist=shortlist)
    if plan.m2_def is not None:
        return _blocks(lambda q: _search_hooked_m2(q, t, p, gt, hp, **kw), pr, order, n_blocks, block)
    topg = _blocks(lambda q: _select(q, t, hp, plan, len(layout))[1], pr, order, n_blocks, block)
    # Rows that no block visited select generator 0 (zeros), which the dispatch skips.
    cand, j = _dispatch(pr, t, p, topg, layout, shortlist)

    def rerank(a):
        q, c, jc = a
        scores = (jc, None, None, None) if plan.m3_def is None else _score_list(q, t, p, c)
        return _rerank(q, t, p, hp, plan, c, scores, shortlist, first, dedupe=False)

    return _blocks(rerank, (pr, cand, j), order, n_blocks, block)


# ----------------------------------------------------------------------------------------------
# Stages in blocks of tiles, active tiles only
# ----------------------------------------------------------------------------------------------


def _blocks(body, args, order, n_blocks, block: int):
    """``body`` on blocks of ``block`` rows of ``args`` (a pytree of ``[Np, ...]`` arrays), the rows
    taken in ``order`` (int32 ``[Np]``, a permutation), the first ``n_blocks`` blocks only
    (traced: one program for every stage). Rows of blocks not run are zeros in the output.

    A block's working set (its ``[block, A]`` scores, its ``[block, M, n]`` candidates) stays in
    cache, which the whole batch's does not: on CPU a stage runs 1.3-2.5x faster this way."""
    Np = order.shape[0]
    shaped = jax.tree.map(lambda v: jax.ShapeDtypeStruct((block,) + v.shape[1:], v.dtype), args)
    out = jax.tree.map(lambda s: jnp.zeros((Np,) + s.shape[1:], s.dtype), jax.eval_shape(body, shaped))

    def step(b, out):
        rows = lax.dynamic_slice_in_dim(order, jnp.minimum(b * block, Np - block), block)
        r = body(jax.tree.map(lambda v: v[rows], args))
        return jax.tree.map(lambda o, v: o.at[rows].set(v), out, r)

    return lax.fori_loop(0, n_blocks, step, out)


def _block_size(Np: int) -> int:
    return min(STAGE_BLOCK, Np)


@functools.partial(jax.jit, static_argnames=("first", "mode", "beam", "shortlist", "plan", "layout"))
def _stage(tiles, recon, dc_q, n_prev, prev_gen, count_ctx, order, n_blocks, t: SearchTables, p: SearchParams,
           gt=None, hp=None, *, first: bool, mode: str, beam: int, shortlist: int, plan=None, layout=None):
    """One pursuit stage of the tiles ``order[:n_blocks * block]`` (all other rows: atom 0), the
    exhaustive / coarse-to-fine stage, or the hooked one when ``plan`` is given. Stage 1 (``first``)
    ignores ``recon``, ``dc_q``, ``n_prev``, ``prev_gen`` and ``count_ctx``."""

    block = _block_size(tiles.shape[0])
    if plan is not None:
        pr = _prepare(tiles, t, p) if first else _prepare_more(tiles, recon, dc_q, n_prev, prev_gen, count_ctx, t, p)
        return _stage_hooked(pr, order, n_blocks, block, t, p, gt, hp, first=first, plan=plan, layout=layout,
                             shortlist=shortlist)

    def body(a):
        if first:
            return _search(a[0], t, p, mode=mode, beam=beam, shortlist=shortlist)
        return _search_more(*a, t, p, mode=mode, beam=beam, shortlist=shortlist)

    return _blocks(body, (tiles, recon, dc_q, n_prev, prev_gen, count_ctx), order, n_blocks, block)


def _stage_order(active: np.ndarray, block: int) -> tuple[jax.Array, jax.Array]:
    """Host: the active rows first (then the others) and the number of blocks that cover them."""
    order = np.concatenate([np.flatnonzero(active), np.flatnonzero(~active)]).astype(np.int32)
    return jnp.asarray(order), jnp.asarray(-(-int(active.sum()) // block), jnp.int32)


def _first_stage(tiles, N: int, t: SearchTables, p: SearchParams, gt=None, hp=None, **kw) -> SearchResult:
    """Stage 1 (the DC and the first atom) of the first ``N`` rows of a padded batch ``tiles``."""
    Np = tiles.shape[0]
    z = jnp.zeros((Np,), jnp.int32)
    return _stage(tiles, tiles, z, z, z, z, *_stage_order(np.arange(Np) < N, _block_size(Np)), t, p, gt, hp,
                  first=True, **kw)


def pad_tiles(tiles: jax.Array) -> jax.Array:
    """Pad a tile batch with zero tiles to a multiple of ``TILE_BUCKET`` (at least one bucket)."""
    N = tiles.shape[0]
    Np = max(TILE_BUCKET, -(-N // TILE_BUCKET) * TILE_BUCKET)
    if Np == N:
        return tiles
    return jnp.concatenate([tiles, jnp.zeros((Np - N,) + tiles.shape[1:], tiles.dtype)], axis=0)


def _check_tiles(tiles, cfg: CodecConfig) -> jax.Array:
    tiles = jnp.asarray(tiles, jnp.float32)
    if tiles.ndim != 3 or tiles.shape[1:] != (cfg.tile, cfg.tile):
        raise ValueError(f"tiles must have shape [N, {cfg.tile}, {cfg.tile}], got {tuple(tiles.shape)}")
    return tiles


def dictionary_for(cfg: CodecConfig) -> Dictionary:
    """The (cached) atom dictionary of a configuration."""
    return get_dictionary(cfg.tile, cfg.overlap, cfg.gamma_seam, cfg.seam_power, cfg.seed)


def search_tiles(tiles, cfg: CodecConfig, tables: SearchTables | None = None) -> SearchResult:
    """Choose the best (atom, amplitude, offset) for every tile.

    Args:
      tiles: float ``[N, T, T]`` with values in [0, 1] and ``T == cfg.tile``.
      cfg: :class:`CodecConfig`.
      tables: precomputed :func:`make_tables` output (built from ``cfg`` when omitted).

    Returns:
      :class:`SearchResult` with leading axis ``N``.
    """
    tiles = _check_tiles(tiles, cfg)
    if tables is None:
        tables = default_tables(cfg)
    N = tiles.shape[0]
    res = _first_stage(pad_tiles(tiles), N, tables, SearchParams.from_config(cfg), mode=cfg.search, beam=cfg.beam,
                       shortlist=cfg.shortlist)
    return jax.tree.map(lambda a: a[:N], res)


class AtomsResult(NamedTuple):
    """Greedy matching pursuit outcome (device arrays, leading axis = tiles).

    Attributes:
      atom, coef_q: int32 ``[N, K]`` (entries at or beyond ``count`` are 0). count: int32 ``[N]``.
      dc_q: int32 ``[N]``. recon: float32 ``[N, T, T]``.
    """

    atom: jax.Array
    coef_q: jax.Array
    count: jax.Array
    dc_q: jax.Array
    recon: jax.Array


def search_atoms(tiles, cfg: CodecConfig, tables: SearchTables | None = None,
                 grid: tuple[int, int] | None = None, *, hooks="config", gen_prior=None) -> AtomsResult:
    """Several atoms per tile: greedy matching pursuit with an RD stopping rule.

    Stage 1 chooses the DC and the first atom (:func:`search_tiles`); every later stage searches
    the best atom for the residual of the current reconstruction and keeps it only where it lowers
    ``J`` (its bits, the amplitude's and the larger atom count's included). A tile stops at its
    first stage without gain, or at ``cfg.max_atoms``.

    Rates follow the coder's contexts: a generator is priced given the tile's previous one, an
    amplitude given its position, and from the second stage on the count given the left and
    upper tiles' counts so far (``grid = (ny, nx)`` of the raster-ordered tiles; without it the
    count is priced whatever the neighbours).

    ``hooks`` (default: ``cfg.ai``; ``None``: the exhaustive search) narrows every stage's
    candidates (see :mod:`pc15jax._src.hooks`); ``gen_prior`` [G] is the log-prior of the
    generators that :class:`~pc15jax.HeuristicHooks` uses to break ties (default: flat).
    """
    tiles = _check_tiles(tiles, cfg)
    t = default_tables(cfg) if tables is None else tables
    N = tiles.shape[0]
    if grid is not None and grid[0] * grid[1] != N:
        raise ValueError(f"grid {grid} does not hold {N} tiles")
    tiles = pad_tiles(tiles)
    Np = tiles.shape[0]
    prm = SearchParams.from_config(cfg)
    kw = dict(mode=cfg.search, beam=cfg.beam, shortlist=cfg.shortlist)
    if isinstance(hooks, str):  # "config": the config's hooks; else a preset name ("none", "m1", ...)
        hooks = cfg.ai if hooks == "config" else _hooks.hooks_from_name(hooks)
    prepared = _hooks.prepare_hooks(hooks, np.zeros(len(_layout(cfg))) if gen_prior is None else gen_prior)
    if prepared is not None:
        plan, hp = prepared
        kw.update(plan=plan, layout=_layout(cfg))
        gt = _hooks.grid_tables(dictionary_for(cfg))
    else:
        hp = gt = None
    res = _first_stage(tiles, N, t, prm, gt, hp, **kw)
    atoms, coefs = [res.atom], [res.coef_q]
    count = (res.atom != 0).astype(jnp.int32)
    recon = res.recon
    for k in range(1, cfg.max_atoms):
        count_host = np.asarray(count)  # one small transfer per stage
        active = count_host == k
        if not active.any():
            break
        ctx = np.full(Np, -1, np.int32)
        if grid is not None:
            ctx[:N] = count_contexts(count_host[:N], *grid)
        order, n_blocks = _stage_order(active, _block_size(Np))
        r = _stage(tiles, recon, res.dc_q, count, t.atom_gen[atoms[-1]], jnp.asarray(ctx), order, n_blocks, t, prm, gt,
                   hp, first=False, **kw)
        add = jnp.asarray(active) & (r.atom != 0)
        atoms.append(jnp.where(add, r.atom, 0))
        coefs.append(jnp.where(add, r.coef_q, 0))
        recon = jnp.where(add[:, None, None], r.recon, recon)
        count = count + add.astype(jnp.int32)
    return AtomsResult(jnp.stack(atoms, 1)[:N], jnp.stack(coefs, 1)[:N], count[:N], res.dc_q[:N], recon[:N])


def _layout(cfg: CodecConfig) -> tuple[tuple[int, int], ...]:
    """(first atom, atoms) of every generator: static shapes of the hooked dispatch."""
    dic = dictionary_for(cfg)
    return tuple((int(o), int(g.grid_size)) for o, g in zip(dic.offsets, gens.list_generators()))


def default_tables(cfg: CodecConfig) -> SearchTables:
    """Dictionary + fixed uniform rate model tables for ``cfg`` (cached per table-shaping fields)."""
    return _default_tables(cfg.tables_key())


@functools.lru_cache(maxsize=8)
def _default_tables(cfg: CodecConfig) -> SearchTables:
    return make_tables(dictionary_for(cfg), uniform_rate_model(cfg.max_coef, cfg.dc_levels), cfg)


@jax.jit
def _reconstruct(atom, coef_q, dc_q, atoms, sw, gain_step, dc_step):
    """Tiles from symbols: ``o + sum_k c_k atom_k / sw`` -> ``[N, T, T]`` (atom/coef are ``[N, K]``)."""
    n = sw.shape[0]
    T = int(round(n ** 0.5))
    step = gain_step * jnp.sqrt(jnp.asarray(n, jnp.float32))
    c = coef_q.astype(jnp.float32) * step
    r = dc_q.astype(jnp.float32)[:, None] * dc_step + jnp.einsum("nk,nkd->nd", c, atoms[atom],
                                                                 precision=HIGHEST) / sw
    return r.reshape(-1, T, T)


def reconstruct_tiles(dic: Dictionary, atom, coef_q, dc_q, cfg: CodecConfig) -> jax.Array:
    """Re-render tiles from their symbols -> float32 ``[N, T, T]`` (what a decoder computes).

    ``atom``/``coef_q`` are ``[N]`` (one atom per tile) or ``[N, K]`` (atom 0 contributes nothing).
    """
    atom, coef_q = jnp.asarray(atom, jnp.int32), jnp.asarray(coef_q, jnp.int32)
    if atom.ndim == 1:
        atom, coef_q = atom[:, None], coef_q[:, None]
    f = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    return _reconstruct(atom, coef_q, jnp.asarray(dc_q, jnp.int32), dic.atoms, dic.sw, f(cfg.gain_step),
                        f(cfg.dc_step))


def tile_symbols(dic: Dictionary, res: SearchResult) -> TileSymbols:
    """Device -> host once: the symbols of every tile."""
    atom, coef_q, dc_q = jax.device_get((res.atom, res.coef_q, res.dc_q))
    atom = np.asarray(atom)
    return TileSymbols(gen_id=dic.gen_id[atom], param_idx=dic.param_idx[atom], seed_sym=dic.seed_sym[atom],
                       coef_q=np.asarray(coef_q, np.int32), dc_q=np.asarray(dc_q, np.int32))
