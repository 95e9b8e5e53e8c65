"""Does a dictionary with 8x the atoms pay in rate-distortion? (issue 19, the "large" bank)

The probe holds everything but the bank fixed and asks the one question the issue poses
before any format work: at equal rate, does an exhaustive search over a bank with finer
parameter grids and more seeds give a better picture than the standard bank?

* **Banks.** ``standard`` is today's bank (:func:`pc15jax.list_generators`). ``large`` refines
  every searched, non-integer parameter grid to about twice its levels (periodic grids
  ``2L``, others ``2L - 1``, which keeps every standard grid point) and gives every noise
  generator four times its seeds: 8.0x the atoms. Both are rendered by the codec's own
  generators at the codec's tile size and normalised the codec's way (zero mean, unit norm,
  constant renders dropped).
* **Search.** Greedy matching pursuit per 16x16 luma tile of the Kodak photographs, each
  amplitude quantised (``gain_step`` of the codec's default) before the residual update.
  Every tile is pursued to ``--max-atoms`` once; for each lambda every tile then keeps the
  prefix of its atoms that minimises ``D + lambda * R``.
* **Rate.** One model for both banks: an atom costs ``log2(searchable atoms)`` bits for its
  index (so the large bank pays 3 bits more per atom), an Elias-gamma code for its amplitude
  index plus a sign, and one continue/stop flag; every tile pays 8 bits for its DC, which is
  taken as exact for both. The codec's static tables would lower every index cost, for both.
* **Searches over the large bank.** ``large``: every atom (exhaustive). ``c2f beam B``: score
  the coarse atoms (the standard bank: it is exactly the large bank's even levels with the
  standard seeds), then the fine-grid neighbours (every refined index within one fine step, any
  seed) of the best ``B``: the codec's ``coarse_to_fine`` rule one level down. ``top-K
  generators``: every large atom of the ``K`` generators whose best coarse atom scores highest,
  an oracle for what a generator selector such as M1 would choose. The last two are emulated
  (all atoms are scored, then masked): their "atoms scored" is what a real search scores, their
  wall time is not a search's.

Prints the RD points, a table of BD-rate (PSNR, over the standard's rates) and PSNR change at
equal rate against the standard exhaustive search with the atoms scored per step, writes the RD
curves and the BD-rate / search-cost Pareto plot (``--plot``), and one JSON line (``--json``).

  python -m experiments.probe_large_dictionary [--images 12] [--max-atoms 8] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from tqdm import tqdm

from pc15jax._src import generators as gens
from pc15jax._src.config import CodecConfig
from pc15jax._src.dictionary import DEGENERATE_NORM, derive_seed
from shared_runtime import atomic_write

from .bench_rd import bd_rate

KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"


@dataclasses.dataclass
class Bank:
    """The large bank's atoms and, per atom, where it sits on the grids.

    atoms: float32 ``[A, T*T]`` (zero mean, unit norm; constant renders and FLAT dropped).
    gid: int32 ``[A]`` generator id. fine: int32 ``[A, MAX_PARAMS]`` level index on the large
    grid. levels: int32 ``[A, MAX_PARAMS]`` levels of that grid (1 for absent parameters).
    periodic: bool ``[A, MAX_PARAMS]``. coarse: bool ``[A]``, the atom is on the standard grid
    (every refined index even, seed symbol among the standard seeds): the standard bank exactly.
    """

    atoms: np.ndarray
    gid: np.ndarray
    fine: np.ndarray
    levels: np.ndarray
    periodic: np.ndarray
    coarse: np.ndarray


def render_bank(tile: int, seed: int) -> Bank:
    """Render every grid point of the large bank (the standard one is its ``coarse`` subset:
    standard level ``i`` of a refined grid is large level ``2 i``, the seeds are the same)."""
    out, gid, fine, levels, periodic, coarse = [], [], [], [], [], []
    M = gens.MAX_PARAMS
    for std in gens.list_generators():
        if std.id == 0:
            continue
        g = gens.refined(std)
        shape = g.grid_shape
        idx = np.stack(np.unravel_index(np.arange(g.grid_size), shape), axis=1)
        P = len(g.params)
        vals = np.stack([spec.grid()[idx[:, i]] for i, spec in enumerate(g.params)], axis=1).astype(np.float32)
        seeds = derive_seed(seed, idx[:, P]) if g.seeded else np.zeros(len(idx), np.uint32)
        raws = []
        for s in range(0, len(vals), 4096):  # the noise generators are memory-hungry in one batch
            cols = {spec.name: vals[s:s + 4096, i] if spec.periodic
                    else np.clip(vals[s:s + 4096, i].astype(np.float64), spec.lo, spec.hi)
                    for i, spec in enumerate(g.params)}
            raws.append(np.asarray(gens.render_batch(g.id, tile, tile, cols, seeds[s:s + 4096])))
        raw = np.concatenate(raws).reshape(len(vals), tile * tile).astype(np.float64)
        raw -= raw.mean(axis=1, keepdims=True)
        norm = np.linalg.norm(raw, axis=1)
        ok = norm > DEGENERATE_NORM * tile
        out.append((raw[ok] / norm[ok, None]).astype(np.float32))
        gid.append(np.full(int(ok.sum()), g.id, np.int32))
        f = np.zeros((len(idx), M), np.int32)
        f[:, :P] = idx[:, :P]
        lv = np.ones((len(idx), M), np.int32)
        lv[:, :P] = [p.levels for p in g.params]
        per = np.zeros((len(idx), M), bool)
        per[:, :P] = [p.periodic for p in g.params]
        on = np.ones(len(idx), bool)
        for i, (ps, pl) in enumerate(zip(std.params, g.params)):
            if pl.levels != ps.levels:
                on &= idx[:, i] % 2 == 0
        if g.seeded:
            on &= idx[:, P] < std.n_seeds
        fine.append(f[ok])
        levels.append(lv[ok])
        periodic.append(per[ok])
        coarse.append(on[ok])
    cat = np.concatenate
    return Bank(cat(out), cat(gid), cat(fine), cat(levels), cat(periodic), cat(coarse))


def luma_tiles(paths, tile: int) -> np.ndarray:
    """Non-overlapping ``tile``-square luma tiles in [0, 1], their means removed: float32 ``[N, T*T]``."""
    tiles = []
    for p in paths:
        y = np.asarray(Image.open(p).convert("L"), np.float32) / 255.0
        H, W = (y.shape[0] // tile) * tile, (y.shape[1] // tile) * tile
        t = y[:H, :W].reshape(H // tile, tile, W // tile, tile).transpose(0, 2, 1, 3).reshape(-1, tile * tile)
        tiles.append(t - t.mean(axis=1, keepdims=True))
    return np.concatenate(tiles)


def amp_bits(k):
    """Elias-gamma bits of ``|k|`` plus a sign bit (0 for ``k == 0``), elementwise."""
    a = np.abs(k)
    return np.where(a > 0, 2 * np.floor(np.log2(np.maximum(a, 1))) + 2, 0.0)


@functools.partial(jax.jit, static_argnames=("rule", "k"))
def _select(r, atoms, bank, *, rule: str, k: int):
    """One greedy step for a chunk of residuals ``r`` float32 ``[n, d]`` over ``atoms`` ``[A, d]``.

    rule ``"standard"``: the best coarse atom. ``"large"``: the best atom. ``"c2f"``: the best
    among the fine-grid neighbours (every refined index within one fine step, any seed) of the
    ``k`` best coarse atoms. ``"generators"``: the best large atom of the ``k`` generators whose
    best coarse atom scores highest (what a generator selector such as M1 decides).
    Returns (atom ``[n]``, coefficient ``[n]``, atoms scored ``[n]``).
    """
    gid, coarse, nbrs, row_of = bank
    c = r @ atoms.T
    a = jnp.abs(c)
    n_coarse = jnp.sum(coarse)
    if rule == "standard":
        mask = jnp.broadcast_to(coarse, a.shape)
        scored = jnp.full(r.shape[0], n_coarse)
    elif rule == "large":
        mask = jnp.ones_like(a, bool)
        scored = jnp.full(r.shape[0], atoms.shape[0])
    elif rule == "c2f":
        _, top = jax.lax.top_k(jnp.where(coarse, a, -1.0), k)  # [n, k]
        cand = nbrs[row_of[top]].reshape(r.shape[0], -1)  # [n, k * W]
        mask = jnp.zeros_like(a, bool).at[jnp.arange(r.shape[0])[:, None], cand].set(True) | coarse[None]
        scored = jnp.sum(mask, axis=1)
    elif rule == "generators":
        G = len(gens.list_generators())
        best_g = jax.ops.segment_max(jnp.where(coarse, a, -1.0).T, gid, num_segments=G).T  # [n, G]
        _, top = jax.lax.top_k(best_g, k)
        mask = jnp.any(gid[None, None] == top[:, :, None], axis=1) | coarse[None]
        scored = jnp.sum(mask, axis=1)
    else:
        raise ValueError(rule)
    best = jnp.argmax(jnp.where(mask, a, -1.0), axis=1)
    return best, jnp.take_along_axis(c, best[:, None], axis=1)[:, 0], scored


def neighbour_table(bank: Bank):
    """Fine-grid neighbourhoods of the coarse atoms: every atom of the same generator whose refined
    indices are all within one fine step (wrapping where periodic), any seed. Returns (int32
    ``[C, W]`` large-atom indices padded with the atom itself, int32 ``[A]`` row of each coarse
    atom, 0 elsewhere)."""
    rows, row_of = [], np.zeros(len(bank.gid), np.int32)
    for g in np.unique(bank.gid):
        ids = np.flatnonzero(bank.gid == g)
        cs = ids[bank.coarse[ids]]
        d = np.abs(bank.fine[cs][:, None] - bank.fine[ids][None])  # [Cg, Ag, P]
        lv = bank.levels[ids][None]
        d = np.where(bank.periodic[ids][None], np.minimum(d, lv - d), d)
        near = np.all(d <= 1, axis=-1)
        for c, m in zip(cs, near):
            row_of[c] = len(rows)
            rows.append(ids[m])
    W = max(len(x) for x in rows)
    table = np.stack([np.concatenate([x, np.full(W - len(x), x[0])]) for x in rows]).astype(np.int32)
    return table, row_of


def pursue(tiles, bank: Bank, q, max_atoms, rule, k=0, *, chunk=512):
    """Greedy pursuit with quantised amplitudes under ``rule`` (see :func:`_select`).

    Returns (squared error after j atoms ``[N, K+1]``, amplitude bits of atom j ``[N, K]``,
    mean atoms scored per step)."""
    N = len(tiles)
    err = np.zeros((N, max_atoms + 1), np.float64)
    ab = np.zeros((N, max_atoms), np.float64)
    if rule == "standard":  # the standard bank alone, searched exhaustively: time what it costs
        keep = bank.coarse
        bank = Bank(bank.atoms[keep], bank.gid[keep], bank.fine[keep], bank.levels[keep], bank.periodic[keep],
                    bank.coarse[keep])
        rule = "large"
    A = jnp.asarray(bank.atoms)
    nbrs = neighbour_table(bank) if rule == "c2f" else (np.zeros((1, 1), np.int32), np.zeros(len(bank.gid), np.int32))
    meta = tuple(jnp.asarray(x) for x in (bank.gid, bank.coarse, *nbrs))
    scored = []
    for s in range(0, N, chunk):
        r = jnp.asarray(tiles[s:s + chunk])
        err[s:s + chunk, 0] = np.asarray(jnp.sum(r * r, axis=1))
        for j in range(max_atoms):
            best, c, n = _select(r, A, meta, rule=rule, k=k)
            kq = np.round(np.asarray(c) / q)
            r = r - jnp.asarray((kq * q).astype(np.float32))[:, None] * A[best]
            err[s:s + chunk, j + 1] = np.asarray(jnp.sum(r * r, axis=1))
            ab[s:s + chunk, j] = amp_bits(kq)
            scored.append(np.asarray(n))
    return err, ab, float(np.mean(np.concatenate(scored)))


def rd_points(err, ab, index_bits, lambdas, npix):
    """Per lambda: every tile keeps the atom prefix minimising ``D + lambda R`` (D the pixel
    squared error, R in bits). Returns a list of (bpp, PSNR dB, mean atoms per tile)."""
    rate = np.zeros_like(err)
    rate[:, 0] = 8.0 + 1.0  # DC + the stop flag
    rate[:, 1:] = 9.0 + np.cumsum(ab + index_bits + 1.0, axis=1)
    pts = []
    for lam in lambdas:
        j = err + lam * rate
        k = np.argmin(j, axis=1)
        d = err[np.arange(len(k)), k].sum()
        r = rate[np.arange(len(k)), k].sum()
        mse = d / npix
        pts.append((r / npix, 10 * np.log10(1.0 / max(mse, 1e-12)), float(np.mean(k))))
    return pts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=12, help="Kodak photographs used (default 12)")
    ap.add_argument("--max-atoms", type=int, default=8)
    ap.add_argument("--beams", default="1,4", help="coarse-to-fine beams B over the large bank (comma separated)")
    ap.add_argument("--shortlists", default="1,3", help="generator shortlist sizes K (comma separated)")
    ap.add_argument("--json", action="store_true", help="also print one JSON line")
    ap.add_argument("--plot", default="results/large_dictionary.png",
                    help="RD curves and the BD-rate / atoms-scored Pareto plot ('' for none)")
    a = ap.parse_args(argv)
    paths = sorted(KODAK.glob("kodim*.png"))[: a.images]
    if not paths:
        print(f"error: no Kodak photographs under {KODAK}", file=sys.stderr)
        return 2
    cfg = CodecConfig()
    T = cfg.tile
    q = cfg.gain_step * T  # the codec's amplitude step, pixel-RMS units -> coefficient units
    tiles = luma_tiles(paths, T)
    npix = tiles.size
    bank = render_bank(T, cfg.seed)
    n_std, n_big = int(bank.coarse.sum()), len(bank.gid)
    print(f"{len(paths)} photographs, {len(tiles)} luma tiles of {T}x{T}; atoms: standard {n_std}, "
          f"large {n_big} ({n_big / n_std:.2f}x)")
    lambdas = np.geomspace(0.002, 0.3, 9) * (q * q)
    runs = [("standard", "standard", 0, n_std), ("large", "large", 0, n_big)]
    runs += [(f"large c2f beam {b}", "c2f", b, n_big) for b in (int(x) for x in a.beams.split(",") if x)]
    runs += [(f"large top-{k} generators", "generators", k, n_big) for k in (int(x) for x in a.shortlists.split(",") if x)]
    res = {}
    for name, rule, k, alphabet in tqdm(runs, desc="pursuits", file=sys.stderr):
        pursue(tiles[:64], bank, q, 1, rule, k)  # compile outside the clock
        t0 = time.perf_counter()
        err, ab, scored = pursue(tiles, bank, q, a.max_atoms, rule, k)
        wall = time.perf_counter() - t0
        res[name] = dict(points=rd_points(err, ab, np.log2(alphabet), lambdas, npix), wall_s=wall, atoms_scored=scored)
    print(f"\n{'search':<26}{'atoms scored/step':>18}   (bpp, PSNR dB, mean atoms per tile) at every other lambda")
    for name, r in res.items():
        pts = " ".join(f"({b:.3f},{p:.2f},{m:.2f})" for b, p, m in r["points"][::2])
        print(f"{name:<26}{r['atoms_scored']:>18.0f}   {pts}")
    ref = np.asarray(sorted((b, p) for b, p, _ in res["standard"]["points"]))
    out = {"atoms_standard": n_std, "atoms_large": n_big, "tiles": len(tiles), "images": [p.name for p in paths]}
    print("\nAgainst the standard bank's exhaustive search (PSNR; BD-rate over the standard's rates):")
    print("| search | BD-rate | PSNR change at equal rate | atoms scored per step | pursuit wall s |")
    print("|---|---|---|---|---|")
    for name, r in res.items():
        pts = np.asarray(sorted((b, p) for b, p, _ in r["points"]))
        bd = bd_rate(pts, ref, window=(ref[0, 0], ref[-1, 0])) if name != "standard" else 0.0
        dp = float(np.mean(np.interp(np.log(ref[:, 0]), np.log(pts[:, 0]), pts[:, 1]) - ref[:, 1]))
        ratio = r["atoms_scored"] / n_std
        print(f"| {name} | {bd:+.2f} % | {dp:+.3f} dB | {r['atoms_scored']:.0f} ({ratio:.2f}x) | {r['wall_s']:.1f} |")
        out[name] = dict(bd_rate_pct=bd, dpsnr_db=dp, atoms_scored=r["atoms_scored"], wall_s=r["wall_s"],
                         points=r["points"])
    print("(wall: the c2f and generator rules are emulated by scoring every atom and masking, so only the\n"
          " standard and large rows time a search, compile excluded; the atoms scored are what a real\n"
          " search would score)")
    if a.plot:
        _plot(res, n_std, Path(a.plot))
        print(f"-> {a.plot}")
    if a.json:
        print(json.dumps(out))
    return 0


def _plot(res, n_std, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .bench_hooks import pareto_front

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    ref = np.asarray(sorted((b, p) for b, p, _ in res["standard"]["points"]))
    pts = []
    for name, r in res.items():
        c = np.asarray(sorted((b, p) for b, p, _ in r["points"]))
        ax[0].plot(c[:, 0], c[:, 1], "o-", ms=3, label=name)
        bd = 0.0 if name == "standard" else bd_rate(c, ref, window=(ref[0, 0], ref[-1, 0]))
        pts.append((r["atoms_scored"] / n_std, bd))
        ax[1].plot(*pts[-1], "o")
        ax[1].annotate(name, pts[-1], textcoords="offset points", xytext=(4, 4), fontsize=8)
    front = pareto_front(pts)
    ax[1].plot([pts[i][0] for i in front], [pts[i][1] for i in front], "k--", lw=1, label="Pareto front")
    ax[0].set(xlabel="bpp (uniform index cost)", ylabel="PSNR of the tiles' AC (dB)", title="greedy pursuit, Kodak luma")
    ax[1].set(xlabel="atoms scored per step / standard bank", ylabel="BD-rate against standard (%)",
              title="RD against search cost")
    for x in ax:
        x.grid(alpha=0.3)
        x.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
