"""Mean bpp and PSNR of PC15 on grayscale images for one configuration and several lambdas.

A quick tuning aid (the full comparison is ``experiments.bench_rd``). PSNR uses peak 255 on the
uint8-rounded reconstruction, averaged over the images.

Usage:
  python -m experiments.sweep_luma [IMAGES...] --tile 16 --overlap 4 --gain-step 0.03125 --alpha 0.7
                                    --lambdas 0.3,0.1 [--max-atoms 16]
(default images: kodim01-04 from ../shared/data/kodak, else scikit-image's camera)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import pc15jax as pc

KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"


def main(argv=None) -> int:
    d = pc.CodecConfig()
    ap = argparse.ArgumentParser(prog="python -m experiments.sweep_luma", description=__doc__.split("\n")[0])
    ap.add_argument("images", nargs="*")
    ap.add_argument("--tile", type=int, default=d.tile)
    ap.add_argument("--overlap", type=int, default=d.overlap)
    ap.add_argument("--gain-step", type=float, default=d.gain_step)
    ap.add_argument("--alpha", type=float, default=d.alpha_mix)
    ap.add_argument("--max-atoms", type=int, default=d.max_atoms)
    ap.add_argument("--lambdas", default="1,0.3,0.1")
    args = ap.parse_args(argv)
    paths = args.images or ([KODAK / f"kodim{i:02d}.png" for i in range(1, 5)] if KODAK.is_dir() else [])
    try:
        imgs = [np.asarray(Image.open(p).convert("L")) for p in paths]
        if not imgs:
            from skimage import data

            imgs = [data.camera()]
        for lam in (float(v) for v in args.lambdas.split(",")):
            cfg = pc.CodecConfig(tile=args.tile, overlap=args.overlap, gain_step=args.gain_step, alpha_mix=args.alpha,
                                 lambda_rd=lam, max_atoms=args.max_atoms)
            b, p = [], []
            for im in imgs:
                e = pc.encode_y(im, cfg)
                b.append(e["bpp"])
                r = np.round(e["recon"] * 255.0)
                p.append(10 * np.log10(255.0 ** 2 / np.mean((im.astype(np.float64) - r) ** 2)))
            print(f"tile {args.tile} overlap {args.overlap} gain_step {args.gain_step} alpha {args.alpha} "
                  f"lambda {lam}: bpp {np.mean(b):.4f} psnr {np.mean(p):.2f}", flush=True)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
