"""Grayscale codec benchmark: bytes, bpp, PSNR, SSIM, encode and decode seconds per image.

Conventions of ``../shared/data/README.md``: luma via Pillow ``convert('L')``, PSNR with peak 255
on the uint8-rounded reconstruction, SSIM as ``pc15jax.ssim`` (skimage-compatible), bpp = every
byte of the stream * 8 / pixels. Timings are steady state: one warm-up encode/decode first. Then
the throughput of encoding the whole set, in images/s, on one local device and on all of them
(``XLA_FLAGS=--xla_force_host_platform_device_count=4`` forces 4 CPU devices).

Usage: python -m experiments.bench_codec [IMAGES...] [--lambda L] [--tile T] [--overlap O] [--json]
(default images: kodim01-04 from ../shared/data/kodak, else scikit-image's camera)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import pc15jax as pc

KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"


def _load(path):
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


def run(paths, cfg):
    if not paths:
        paths = [KODAK / f"kodim{i:02d}.png" for i in range(1, 5)] if KODAK.is_dir() else []
    images = [(Path(p).name, _load(p)) for p in paths]
    if not images:
        from skimage import data

        images = [("skimage.camera", data.camera())]
    warm = pc.encode_y(images[0][1], cfg)
    pc.decode_y(warm["bitstream"])
    rows = []
    for name, img in images:
        t = time.perf_counter()
        enc = pc.encode_y(img, cfg)
        enc_s = time.perf_counter() - t
        t = time.perf_counter()
        dec = pc.decode_y(enc["bitstream"])
        dec_s = time.perf_counter() - t
        assert np.array_equal(dec, enc["recon"])
        x = img.astype(np.float32)
        r = np.round(dec * 255.0).astype(np.float32)
        rows.append({"image": name, "bytes": len(enc["bitstream"]), "bpp": enc["bpp"],
                     "psnr": float(pc.psnr(x, r, 255.0)), "ssim": float(pc.ssim(x, r, 255.0)),
                     "encode_s": enc_s, "search_s": enc["stats"]["search_s"], "decode_s": dec_s})
    mean = {k: statistics.fmean(r[k] for r in rows) for k in rows[0] if k != "image"}
    return rows, dict(mean, image="mean"), throughput([img for _, img in images], cfg)


def throughput(images, cfg) -> dict:
    """Images/s encoding the whole set on one local device and on all of them (one image per
    device at a time, :func:`pc15jax._src.devices.map_over_devices`), after a warm-up pass."""
    import jax

    from pc15jax._src.devices import map_over_devices

    out = {}
    for devs in ([jax.local_devices()[0]], jax.local_devices()):
        if len(devs) in out:
            continue
        enc = lambda x: pc.encode_y(x, cfg)["bitstream"]  # noqa: E731
        list(map_over_devices(enc, images, devs))  # warm-up: every shape on every device
        t = time.perf_counter()
        list(map_over_devices(enc, images, devs))
        out[len(devs)] = len(images) / (time.perf_counter() - t)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.bench_codec", description=__doc__.split("\n")[0])
    ap.add_argument("images", nargs="*")
    d = pc.CodecConfig()
    ap.add_argument("--lambda", dest="lam", type=float, default=d.lambda_rd)
    ap.add_argument("--tile", type=int, default=d.tile)
    ap.add_argument("--overlap", type=int, default=d.overlap)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        rows, mean, rate = run(args.images, pc.CodecConfig(tile=args.tile, overlap=args.overlap, lambda_rd=args.lam))
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in rows + [mean]:
        if args.json:
            print(json.dumps(r))
        else:
            print(f"{r['image']:>14}  {r['bytes']:8.0f} B  {r['bpp']:.4f} bpp  {r['psnr']:6.2f} dB  SSIM {r['ssim']:.4f}"
                  f"  encode {r['encode_s']:.2f} s (search {r['search_s']:.2f})  decode {r['decode_s']:.3f} s")
    if args.json:
        print(json.dumps({"images_per_s": {f"{n}_devices": v for n, v in rate.items()}}))
    else:
        print("throughput: " + ", ".join(f"{v:.2f} images/s on {n} device{'s' if n > 1 else ''}"
                                         for n, v in rate.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
