"""Probes of RD levers before building them: how much each could give, measured on real streams.

  python -m experiments.probe_levers [--images kodim07,kodim01,...] [--probe entropy,lf,dcsurface]

* ``entropy``: the luma streams' symbols (16/1, λ 0.15 and 0.6) priced three ways -- the frozen
  tables (what the codec pays), backward-adaptive counts seeded by those tables (what an adaptive
  rANS would pay, prior weights 8 / 32 / 128) -- and the empirical conditional entropy of
  amplitudes and parameters in richer contexts (a two-pass lower bound of trained context tables).
* ``lf``: the loop filter's least-squares gain (dB, unquantised taps) with the shipped classes
  (1, 3 by seam distance) and with seam x local-activity classes.
* ``dcsurface``: tiles coded against a smooth surface interpolated from the tile DCs (the
  "prediction from decoded neighbours" the decoder could form without extra symbols), against
  today's flat DC, at equal λ.

Prints one line per image and setting, then the totals. Nothing here changes the codec.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from PIL import Image

import pc15jax as pc
from pc15jax._src import codec as C
from pc15jax._src import generators as gens
from pc15jax._src import loopfilter as LF
from pc15jax._src.config import resolve_config
from pc15jax._src.search import dictionary_for, search_atoms
from pc15jax._src.tiling import blend, extract_tiles, tile_image
from pc15jax.bitstream.container import grid_shape
from pc15jax.bitstream.models import coef_context

KODAK = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "kodak"


def _load(name: str) -> np.ndarray:
    return np.asarray(Image.open(KODAK / f"{name}.png").convert("L"))


def _cond_entropy(rows) -> float:
    """Total bits of ``(context, symbol)`` rows under their empirical conditional distribution."""
    joint = collections.Counter(rows)
    ctx = collections.Counter(c for c, _ in rows)
    return -sum(n * np.log2(n / ctx[c]) for (c, _), n in joint.items())


def probe_entropy(names) -> None:
    static, adaptive = collections.Counter(), collections.Counter()
    rows = collections.defaultdict(list)
    bank = gens.list_generators()
    for name in names:
        x = _load(name)
        for lam in (0.15, 0.6):
            enc = pc.encode_y(x, pc.CodecConfig(tile=16, overlap=1, lambda_rd=lam))
            h, planes, _ = C._parse(enc["bitstream"])
            model = C.symbol_model(h.table_id)
            ny, nx = grid_shape(h.H, h.W, h.tile, h.overlap)
            a, atid, b, btid = model.split(*planes[0], ny, nx)
            for sym, tid in ((a, atid), (b, btid)):
                for k in np.unique(tid):
                    s, t = sym[tid == k], model.tables[int(k)]
                    cls = model.class_of(int(k))
                    static[cls] += float(t.bits()[s].sum())
                    for w in (8, 32, 128):
                        cnt = w * 2.0 ** -t.bits()
                        total = cnt.sum()
                        for v in s.tolist():
                            adaptive[cls, w] -= np.log2(cnt[v] / total)
                            cnt[v] += 1.0
                            total += 1.0
            count, gen, params, _, coef, _ = planes[0]
            for t in range(count.shape[0]):
                prev = None
                for k in range(int(count[t])):
                    c, g = int(coef[t, k]), int(gen[t, k])
                    mag = 0 if prev is None else min(int(np.log2(1 + abs(prev))), 7)
                    rows["coef | position"].append((coef_context(k), c))
                    rows["coef | position, previous magnitude"].append(((coef_context(k), mag), c))
                    rows["coef | position, generator"].append(((coef_context(k), g), c))
                    prev = c
                    for i, p in enumerate(bank[g].params):
                        if p.levels > 1:
                            v = int(params[t, k, i])
                            rows["param | generator, index"].append(((g, i), v))
                            rows["param | generator, index, position"].append(((g, i, min(k, 3)), v))
                            rows["param | generator, index, previous generator"].append(
                                ((g, i, int(gen[t, k - 1]) if k else 0), v))
            print(f"{name} λ {lam}: {enc['bpp']:.3f} bpp", flush=True)
    total = sum(static.values())
    print(f"\nframe tables: {total:.0f} bits")
    for cls in sorted(static):
        gains = ", ".join(f"w{w} {100 * (adaptive[cls, w] / static[cls] - 1):+.1f} %" for w in (8, 32, 128))
        print(f"  {cls:6s} {static[cls]:9.0f} bits ({100 * static[cls] / total:4.1f} %)  adaptive: {gains}")
    best = sum(min(adaptive[cls, w] for w in (8, 32, 128)) for cls in static)
    print(f"  adaptive, best prior weight per class: {100 * (best / total - 1):+.1f} % of all bits")
    print("empirical conditional entropy (two-pass, no model cost):")
    for key, r in rows.items():
        print(f"  {key:45s} {_cond_entropy(r):9.0f} bits, {len({c for c, _ in r})} contexts")


def _lf_gain_db(F, e, classes) -> float:
    sse = float(np.sum(e * e))
    gain = 0.0
    for c in np.unique(classes):
        m = classes == c
        if m.sum() < 64:
            continue
        sol, *_ = np.linalg.lstsq(F[m], e[m], rcond=None)
        gain += float(np.sum(e[m] ** 2 - (e[m] - F[m] @ sol) ** 2))
    return 10 * np.log10(sse / (sse - gain))


def probe_lf(names) -> None:
    out = collections.defaultdict(list)
    for name in names:
        x8 = _load(name)
        x = x8.astype(np.float64) / 255
        for tile, ov in ((24, 2), (16, 1)):
            enc = pc.encode_y(x8, pc.CodecConfig(tile=tile, overlap=ov, lambda_rd=0.3, loop_filter=False))
            y = enc["recon"].astype(np.float64)
            H, W = y.shape
            F, e = LF._differences(y), x - y
            seam = LF.pixel_classes(H, W, tile, ov, 3)
            act = LF.box_mean(np.abs(F[..., :2].sum(-1)), 5)
            res = {"1 class": _lf_gain_db(F, e, np.zeros((H, W), int)), "3 seam": _lf_gain_db(F, e, seam)}
            for na in (2, 3, 4):
                a = np.digitize(act, np.quantile(act, np.linspace(0, 1, na + 1)[1:-1]))
                res[f"3 seam x {na} activity"] = _lf_gain_db(F, e, seam * na + a)
            for k, v in res.items():
                out[k].append(v)
            print(f"{name} {tile}/{ov} {enc['bpp']:.3f} bpp: " + ", ".join(f"{k} {v:+.3f} dB" for k, v in res.items()),
                  flush=True)
    print("\nmean least-squares gain (taps not quantised, not paid for; 96 bits per class):")
    for k, v in out.items():
        print(f"  {k:22s} {np.mean(v):+.3f} dB")


def _dc_surface(o_hat, spec, T) -> np.ndarray:
    """Bilinear interpolation of the tile DCs ``[ny, nx]`` between tile centres -> ``[Hp, Wp]``."""
    def weights(c, n):
        p = np.arange(n, dtype=np.float64)
        if len(c) == 1:
            z = np.zeros(n, int)
            return z, z, np.zeros(n)
        i = np.clip(np.searchsorted(c, p) - 1, 0, len(c) - 2)
        return i, i + 1, np.clip((p - c[i]) / (c[i + 1] - c[i]), 0, 1)

    i0, i1, fy = weights(np.asarray(spec.ys) + (T - 1) / 2, spec.Hp)
    j0, j1, fx = weights(np.asarray(spec.xs) + (T - 1) / 2, spec.Wp)
    top = o_hat[i0][:, j0] * (1 - fx) + o_hat[i0][:, j1] * fx
    bot = o_hat[i1][:, j0] * (1 - fx) + o_hat[i1][:, j1] * fx
    return top * (1 - fy[:, None]) + bot * fy[:, None]


def _code_with_base(x, cfg, use_surface: bool):
    """(bpp, PSNR) of a luma plane coded as today, or against the DC surface (offset-free per tile)."""
    cfg = resolve_config(cfg)
    spec, T = tile_image(x.shape, cfg.grid), cfg.tile
    tiles = np.asarray(extract_tiles(x, spec))
    dic = dictionary_for(cfg)
    w = np.asarray(dic.sw).reshape(T, T) ** 2
    S = np.zeros_like(tiles)
    if use_surface:
        o = (tiles * w).sum((1, 2)) / w.sum()
        o_hat = np.clip(np.round(o / cfg.dc_step), 0, cfg.dc_levels - 1) * cfg.dc_step
        B = np.asarray(extract_tiles(_dc_surface(o_hat.reshape(spec.ny, spec.nx), spec, T).astype(np.float32), spec))
        S = B - ((B * w).sum((1, 2)) / w.sum())[:, None, None]  # offset-free: the DCs stay what they were
    res = search_atoms(jnp.asarray(tiles - S), cfg, C.codec_tables(cfg), grid=(spec.ny, spec.nx),
                       gen_prior=C.gen_prior(cfg.table_id))
    sym = C.plane_symbols(res, cfg)
    h = C._header(cfg, *x.shape, "Y")
    data, _ = C._pack(h, C.symbol_model(cfg.table_id), [sym])
    rt = jnp.asarray(np.asarray(res.recon).reshape(-1, T, T) + S)
    img = np.clip(np.asarray(blend(rt, spec, window=h.window, window_params=C._header_window_params(h))), 0, 1)
    return 8 * len(data) / x.size, float(pc.psnr(x, img))


def probe_dcsurface(names) -> None:
    d_rate, d_psnr = [], []
    for name in names:
        x = _load(name).astype(np.float32) / 255
        for tile, ov in ((32, 4), (24, 2), (16, 1)):
            for lam in (0.1, 0.3, 1.0):
                cfg = pc.CodecConfig(tile=tile, overlap=ov, lambda_rd=lam, loop_filter=False)
                (r0, p0), (r1, p1) = _code_with_base(x, cfg, False), _code_with_base(x, cfg, True)
                d_rate.append(100 * (r1 / r0 - 1))
                d_psnr.append(p1 - p0)
                print(f"{name} {tile}/{ov} λ {lam}: flat DC {r0:.4f} bpp {p0:.2f} dB | DC surface {r1:.4f} bpp "
                      f"{p1:.2f} dB", flush=True)
    print(f"\nDC surface against flat DC at equal λ: rate {np.mean(d_rate):+.2f} %, PSNR {np.mean(d_psnr):+.3f} dB")


PROBES = {"entropy": probe_entropy, "lf": probe_lf, "dcsurface": probe_dcsurface}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.probe_levers", description=__doc__.split("\n")[0])
    ap.add_argument("--images", default="kodim07,kodim01,kodim12,kodim05,kodim03,kodim09",
                    help="Kodak names in ../shared/data/kodak")
    ap.add_argument("--probe", default=",".join(PROBES), help=f"any of {','.join(PROBES)}")
    args = ap.parse_args(argv)
    if not KODAK.is_dir():
        print(f"error: {KODAK} is missing (the probes run on the shared Kodak photographs)", file=sys.stderr)
        return 2
    for p in args.probe.split(","):
        if p not in PROBES:
            print(f"error: unknown probe {p!r}; choose from {sorted(PROBES)}", file=sys.stderr)
            return 2
        print(f"== {p}")
        PROBES[p]([n.strip() for n in args.images.split(",") if n.strip()])
    return 0


if __name__ == "__main__":
    sys.exit(main())
