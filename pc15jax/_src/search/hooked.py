"""The hooked stage (see :mod:`pc15jax._src.hooks`): per-tile candidate sets instead of every atom.

M1 selects each tile's generators, one dispatch scores every (tile, generator) pair against all of
that generator's atoms at matmul speed (or M2 proposes atoms and their grid neighbourhoods), and
the blocks re-rank their candidates with the full cost (M3 optionally re-ranking the proxy's best).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ...ai.features import tile_features
from .. import hooks as _hooks
from .blocks import blocks
from .rd import Residual, SearchResult, finalise, gather_scores, proxy_cost, proxy_terms
from .tables import SearchParams, SearchTables

__all__ = ["GATHER_MAX", "score_list", "dispatch", "levels_of", "select", "rerank", "stage_hooked"]

GATHER_MAX = 24  # candidate lists longer than this are scored through the full matmul


def score_list(pr: Residual, t: SearchTables, p: SearchParams, cand):
    """Proxy ``(J, D, R, c)`` of per-tile candidate lists ``cand`` [N, M] (-1: none).

    Long lists read their amplitudes off the full ``[N, A]`` product: one plain matmul beats a
    gathered ``[N, M, n]`` batch of matrix-vector products (3.5x on CPU at M = 132)."""
    if cand.shape[1] > GATHER_MAX:
        c = jnp.take_along_axis(jnp.dot(pr.xc, t.atoms.T), jnp.maximum(cand, 0), axis=1)
    else:
        c, _ = gather_scores(pr.xc, t, cand)
    j, d, bits = proxy_terms(c, cand, pr, t, p)
    return j, d, bits, c


def _dedupe(cand, j):
    """``J`` of repeated (and -1) candidates in each row -> inf, so a shortlist has no duplicates."""
    order = jnp.argsort(cand, axis=1)
    sc = jnp.take_along_axis(cand, order, axis=1)
    dup_sorted = jnp.concatenate([jnp.zeros_like(sc[:, :1], bool), sc[:, 1:] == sc[:, :-1]], axis=1)
    rows = jnp.arange(cand.shape[0])[:, None]
    dup = jnp.zeros(cand.shape, bool).at[rows, order].set(dup_sorted)
    return jnp.where(dup | (cand < 0), jnp.inf, j)


def dispatch(pr: Residual, t: SearchTables, p: SearchParams, topg, layout, per_gen: int):
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
            j = proxy_cost(jnp.dot(sub.xc, atoms_g.T), ids, sub, t, p)
            neg, best = lax.top_k(-j, s)
            val = jnp.full((B, per_gen), -1, jnp.int32).at[:, :s].set(ids[0][best])
            jv = jnp.full((B, per_gen), jnp.inf, jnp.float32).at[:, :s].set(-neg)
            dest = jnp.where(valid, pos, P)
            return out[0].at[dest].set(val), out[1].at[dest].set(jv)

        out = lax.fori_loop(0, (counts[g] + B - 1) // B, body, out)
    return tuple(v[:P].reshape(N, K * per_gen) for v in out)


def levels_of(gt, gen, atom):
    """Atoms ``[P]`` of generators ``[P]`` -> their grid levels ``[P, D]``."""
    local = (atom - gt.offset[gen])[:, None]
    st = gt.stride[gen]
    return jnp.where(st > 0, (local // jnp.maximum(st, 1)) % gt.levels[gen], 0)


def _m2_candidates(pr: Residual, t: SearchTables, p: SearchParams, feats, topg, plan, hp, gt):
    """M2's atom for each selected generator and its grid neighbourhood, then the +-1
    neighbours of the best of them -> (candidates ``[N, M]``, their proxy terms)."""
    N, K = topg.shape
    g = topg.reshape(-1)
    lg = _hooks.merge_model(plan.m2_def, hp["m2"])(jnp.repeat(feats, K, axis=0), g)  # [P, D, L]
    lv = gt.levels[g]
    lg = jnp.where(jnp.arange(lg.shape[-1])[None, None, :] < lv[:, :, None], lg, -jnp.inf)
    idx = jnp.argmax(lg, axis=-1).astype(jnp.int32)
    c1 = _hooks.neighbourhood(gt, g, idx, radius=2, all_seeds=True)  # [P, M1]
    M1 = c1.shape[1]
    c1 = c1.reshape(N, K * M1)
    s1 = score_list(pr, t, p, c1)
    j1 = s1[0].reshape(N * K, M1)
    best = jnp.take_along_axis(c1.reshape(N * K, M1), jnp.argmin(j1, axis=1)[:, None], axis=1)[:, 0]
    best = jnp.where(best >= 0, best, _hooks.atoms_of(gt, g, idx))
    c2 = _hooks.neighbourhood(gt, g, levels_of(gt, g, best), radius=1, all_seeds=False)[:, 1:]
    c2 = c2.reshape(N, -1)
    s2 = score_list(pr, t, p, c2)
    return jnp.concatenate([c1, c2], axis=1), tuple(jnp.concatenate([a, b], axis=1) for a, b in zip(s1, s2))


def select(pr: Residual, t: SearchTables, hp, plan, G: int):
    """Tile features and the selector's ``plan.topk`` generators of every tile -> (``[N, F]``, ``[N, K]``)."""
    N, n = pr.xc.shape
    T = int(round(n ** 0.5))
    feats = tile_features((pr.xc / t.sw).reshape(N, T, T), pr.n_prev, pr.prev_gen)
    gen_ok = jnp.zeros((G,), bool).at[t.atom_gen].max(t.allowed).at[0].set(False)
    logits = jnp.where(gen_ok[None, :], _hooks.selector_logits(feats, plan, hp), -jnp.inf)
    _, topg = lax.top_k(logits, plan.topk)
    return feats, topg.astype(jnp.int32)


def rerank(pr: Residual, t: SearchTables, p: SearchParams, hp, plan, cand, scores, shortlist: int, first: bool,
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
    return finalise(pr, t, p, sl, first)


def _search_hooked_m2(pr: Residual, t: SearchTables, p: SearchParams, gt, hp, *, first: bool, plan, layout,
                      shortlist: int) -> SearchResult:
    """One block of a stage with M2: selected generators -> M2's atoms and their neighbourhoods."""
    feats, topg = select(pr, t, hp, plan, len(layout))
    cand, scores = _m2_candidates(pr, t, p, feats, topg, plan, hp, gt)
    return rerank(pr, t, p, hp, plan, cand, scores, shortlist, first)


def stage_hooked(pr: Residual, order, n_blocks, block: int, t: SearchTables, p: SearchParams, gt, hp, *,
                  first: bool, plan, layout, shortlist: int) -> SearchResult:
    """A hooked stage. With M2, every block runs on its own. Without, the blocks select their
    generators, one dispatch over the whole stage scores each (tile, generator) pair against all
    of that generator's atoms (in full chunks of pairs: a block alone would leave most chunks
    nearly empty), and the blocks re-rank their candidates."""
    kw = dict(first=first, plan=plan, layout=layout, shortlist=shortlist)
    if plan.m2_def is not None:
        return blocks(lambda q: _search_hooked_m2(q, t, p, gt, hp, **kw), pr, order, n_blocks, block)
    topg = blocks(lambda q: select(q, t, hp, plan, len(layout))[1], pr, order, n_blocks, block)
    # Rows that no block visited select generator 0 (zeros), which the dispatch skips.
    cand, j = dispatch(pr, t, p, topg, layout, shortlist)

    def rerank_block(a):
        q, c, jc = a
        scores = (jc, None, None, None) if plan.m3_def is None else score_list(q, t, p, c)
        return rerank(q, t, p, hp, plan, c, scores, shortlist, first, dedupe=False)

    return blocks(rerank_block, (pr, cand, j), order, n_blocks, block)

