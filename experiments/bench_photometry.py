"""Photometric-core figures on simulated skies: gain/offset recovery against truth (and against
ordinary least squares), the global solve on a grid with a tile far from the reference, and the
stacking throughput.

Usage: python -m experiments.bench_photometry [--pairs 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import numpy as np

import mosaic_jax as mj


def sky(H, W, rng, n_stars=30):
    yy, xx = np.mgrid[0:H, 0:W]
    s = 100 + 25 * np.exp(-((yy - H / 2) ** 2 + (xx - W / 3) ** 2) / (2 * (H / 4) ** 2)) + 0.02 * xx
    for _ in range(n_stars):
        y, x = rng.uniform(0, H), rng.uniform(0, W)
        s = s + 300 * rng.random() * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.6 ** 2))
    return s


def recovery(n_pairs: int, sigma: float = 3.0) -> dict:
    rng = np.random.default_rng(0)
    ge, oe, le, ols = [], [], [], []
    for _ in range(n_pairs):
        s = sky(160, 160, rng)
        g, o = rng.uniform(0.6, 1.6), rng.uniform(-20, 20)
        ref = (s + rng.normal(0, sigma, s.shape)).astype(np.float32)
        tgt = ((s - o) / g + rng.normal(0, sigma, s.shape)).astype(np.float32)
        tgt[rng.random(s.shape) < 0.02] = np.nan  # holes
        gg, oo = mj.compute_tile_photometric_scaling(ref, tgt)
        ge.append(float(gg[0]) / g - 1)
        oe.append((float(oo[0]) - o) / sigma)
        level = float(np.nanmedian(tgt))  # the corrected sky level is what photometry needs right
        le.append(((float(gg[0]) * level + float(oo[0])) - (g * level + o)) / sigma)
        ok = np.isfinite(tgt)
        ols.append(np.polyfit(tgt[ok], ref[ok], 1)[0] / g - 1)
    a = lambda v: np.abs(np.asarray(v))  # noqa: E731
    return {"pairs": n_pairs, "sky_sigma": sigma,
            "gain_err_pct_mean": 100 * float(np.mean(a(ge))), "gain_err_pct_max": 100 * float(a(ge).max()),
            "offset_err_sigma_mean": float(np.mean(a(oe))), "offset_err_sigma_max": float(a(oe).max()),
            "sky_level_err_sigma_mean": float(np.mean(a(le))), "sky_level_err_sigma_max": float(a(le).max()),
            "ols_gain_bias_pct_mean": 100 * float(np.mean(ols))}


def global_solve() -> dict:
    rng = np.random.default_rng(1)
    ny = nx = 5
    a = rng.uniform(0.7, 1.4, ny * nx)
    b = rng.uniform(-20, 20, ny * nx)
    pairs = [(y * nx + x, y * nx + x + 1) for y in range(ny) for x in range(nx - 1)]
    pairs += [(y * nx + x, (y + 1) * nx + x) for y in range(ny - 1) for x in range(nx)]
    pairs = np.asarray(pairs)
    i, j = pairs[:, 0], pairs[:, 1]
    g = a[j] / a[i] * (1 + rng.normal(0, 2e-3, len(pairs)))
    o = (b[j] - b[i]) / a[i] + rng.normal(0, 0.05, len(pairs))
    t = time.perf_counter()
    sol = mj.solve_tile_photometry(ny * nx, pairs, g[:, None], o[:, None])
    dt = time.perf_counter() - t
    G, O = a / a[0], (b - b[0]) / a[0]
    far = ny * nx - 1  # the opposite corner never touches the gauge tile 0
    return {"tiles": ny * nx, "pairs": len(pairs), "solve_s": dt,
            "gain_err_pct_max": 100 * float(np.max(np.abs(sol.gains[:, 0] / G - 1))),
            "offset_err_max": float(np.max(np.abs(sol.offsets[:, 0] - O))),
            "far_tile_gain_err_pct": 100 * float(abs(sol.gains[far, 0] / G[far] - 1))}


def stacking() -> dict:
    rng = np.random.default_rng(2)
    N, H, W = 12, 512, 512
    s = sky(H, W, rng, 60)
    f = np.stack([np.stack([s * (1 + 0.05 * c) for c in range(3)], -1) + rng.normal(0, 2, (H, W, 3))
                  for _ in range(N)]).astype(np.float32)
    f[1:, :100] = np.nan
    out = {}
    for norm, rej in [("none", "winsorized"), ("overlap", "winsorized"), ("overlap", "kappa")]:
        jax.block_until_ready(mj.stack_frames(f, normalize=norm, reject=rej))
        t = time.perf_counter()
        jax.block_until_ready(mj.stack_frames(f, normalize=norm, reject=rej))
        out[f"stack_{norm}_{rej}_s"] = time.perf_counter() - t
    out["frames"] = f"{N}x{H}x{W}x3 float32"
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.bench_photometry", description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    res = {"recovery": recovery(args.pairs), "global_solve": global_solve(), "stacking": stacking(),
           "backend": jax.default_backend()}
    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k}: " + (", ".join(f"{a}={b:.4g}" if isinstance(b, float) else f"{a}={b}" for a, b in v.items())
                               if isinstance(v, dict) else str(v)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
