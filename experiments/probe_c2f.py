"""Coarse-to-fine searches against the exhaustive one, in the codec, on held-out Kodak luma.

1. The standard bank's ``search="coarse_to_fine"`` (even grid points, then +-1 along one axis at
   a time) against its exhaustive search, loop filter off: mean bpp, PSNR and encode seconds per
   mode, and the BD-rate (PSNR) per image. It is the companion of ``probe_large_dictionary``,
   whose coarse level is the whole standard bank rather than its even grid points.
2. ``--large-beams B ...``: the large bank's coarse-to-fine (the standard bank, then the best
   ``B`` atoms' fine-grid cells) at every beam, against the standard exhaustive search with the
   default configuration (loop filter on): search seconds, PSNR and bpp change at equal lambda,
   BD-rate.

kodim01-04 (held out from training) at lambdas 0.1 / 0.3 / 1.0; compile excluded (one warm-up
encode per configuration and image).

  python -m experiments.probe_c2f [--large-beams 2 4 8 16]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import pc15jax as pc
from experiments.bench_hooks import encode_point, held_out_images
from experiments.bench_rd import bd_rate

LAMBDAS = (0.1, 0.3, 1.0)


def run(images, cfg) -> list[list[dict]]:
    """Per image, per lambda: :func:`experiments.bench_hooks.encode_point` plus the wall time."""
    out = []
    for _, img in images:
        pc.encode_y(img, cfg.replace(lambda_rd=LAMBDAS[0]))  # warm-up: compile
        rows = []
        for lam in LAMBDAS:
            t0 = time.perf_counter()
            r = encode_point(img, cfg.replace(lambda_rd=lam))
            rows.append({**r, "wall_s": time.perf_counter() - t0})
        out.append(rows)
    return out


def _curve(rows) -> np.ndarray:
    return np.asarray(sorted((r["bpp"], r["psnr"]) for r in rows))


def compare(test, ref) -> dict:
    """Mean search seconds, PSNR / bpp change at equal lambda and BD-rate of ``test`` against ``ref``."""
    pairs = [(m, r) for ms, rs in zip(test, ref) for m, r in zip(ms, rs)]
    bd = [bd_rate(_curve(m), _curve(r), window=(0.0, np.inf)) for m, r in zip(test, ref)]
    return {"search_s": float(np.mean([m["search_s"] for m, _ in pairs])),
            "ref_search_s": float(np.mean([r["search_s"] for _, r in pairs])),
            "dpsnr_db": float(np.mean([m["psnr"] - r["psnr"] for m, r in pairs])),
            "dbpp_pct": float(np.mean([100.0 * (m["bpp"] / r["bpp"] - 1.0) for m, r in pairs])),
            "bd_rate_pct": float(np.mean([b for b in bd if b is not None])),
            "bd_per_image": [None if b is None else round(b, 2) for b in bd]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--large-beams", type=int, nargs="*", default=[], help="beams of the large bank's c2f")
    a = ap.parse_args(argv)
    images = held_out_images(None)
    off = pc.CodecConfig(loop_filter=False)
    ex, c2f = run(images, off), run(images, off.replace(search="coarse_to_fine"))
    for name, res in (("exhaustive", ex), ("coarse_to_fine", c2f)):
        print(f"standard {name} (loop filter off): mean bpp {np.mean([r['bpp'] for rs in res for r in rs]):.4f}, "
              f"PSNR {np.mean([r['psnr'] for rs in res for r in rs]):.3f} dB, "
              f"encode {np.mean([r['wall_s'] for rs in res for r in rs]):.3f} s")
    c = compare(c2f, ex)
    print(f"standard coarse_to_fine against exhaustive: BD-rate {c['bd_rate_pct']:+.2f} % (per image {c['bd_per_image']})")
    if a.large_beams:
        ref = run(images, pc.CodecConfig())
        for beam in a.large_beams:
            c = compare(run(images, pc.CodecConfig(dictionary="large", search="coarse_to_fine", beam=beam)), ref)
            print(f"large c2f beam {beam}: search {c['search_s']:.3f} s (standard exhaustive {c['ref_search_s']:.3f} s), "
                  f"dPSNR {c['dpsnr_db']:+.3f} dB, dbpp {c['dbpp_pct']:+.2f} %, BD-rate {c['bd_rate_pct']:+.2f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
