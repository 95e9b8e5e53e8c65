"""Command line: ``python -m pc15jax [demo] [INPUT] [options]``.

``demo`` (the default command) runs the PC15 tile search on a grayscale image (default: the
``camera`` photograph shipped with scikit-image), writes the blended reconstruction and a
side-by-side figure, and prints what the search chose.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np


def _enable_compilation_cache() -> None:
    """Persist compiled programs so a second run does not recompile (``PC15_CACHE_DIR`` overrides)."""
    import jax

    cache = os.environ.get("PC15_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "pc15jax", "jax")
    try:
        os.makedirs(cache, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    except OSError:  # read-only home: run without the cache
        pass


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_gray(path: str | None) -> tuple[np.ndarray, str]:
    """Grayscale uint8 image from a file (colour converted to luma), or skimage's camera."""
    if path is None:
        from skimage import data

        return data.camera(), "skimage.data.camera"
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L")), str(path)
    except FileNotFoundError:
        raise ValueError(f"input not found: {path}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read {path} as an image: {e}") from None


def cmd_demo(args) -> int:
    import pc15jax as pc

    img, name = load_gray(args.input)
    cfg = pc.CodecConfig(tile=args.tile, overlap=args.overlap, lambda_rd=args.lambda_rd, search=args.search)
    t0 = time.perf_counter()
    out = pc.search_image(img, cfg)
    elapsed = time.perf_counter() - t0
    x = img.astype(np.float32) / 255.0
    hist = Counter(pc.get_generator(int(g)).name for g in out.symbols.gen_id)
    report = {
        "input": name,
        "shape": list(img.shape),
        "tiles": out.spec.count,
        "tile": cfg.tile,
        "overlap": cfg.overlap,
        "lambda": cfg.lambda_rd,
        "est_bpp": round(out.bpp, 5),
        "psnr": round(float(pc.psnr(x, out.recon)), 3),
        "ssim": round(float(pc.ssim(x, out.recon)), 4),
        "seconds": round(elapsed, 3),
        "generators": dict(hist.most_common()),
    }
    outdir = Path(args.out)
    from PIL import Image

    recon8 = np.round(out.recon * 255.0).astype(np.uint8)
    _atomic_write(outdir / "recon.png", lambda p: Image.fromarray(recon8).save(p, format="PNG"))
    _atomic_write(outdir / "compare.png", lambda p: _figure(x, out.recon, report, p))
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{name}: {img.shape[1]}x{img.shape[0]}, {out.spec.count} tiles of {cfg.tile}px (overlap {cfg.overlap})")
        print(f"estimated {out.bpp:.4f} bpp, PSNR {report['psnr']:.2f} dB, SSIM {report['ssim']:.4f}, "
              f"{elapsed:.2f} s (first run includes compilation)")
        print("generators: " + ", ".join(f"{k} {v}" for k, v in hist.most_common()))
        print(f"wrote {outdir / 'recon.png'} and {outdir / 'compare.png'}")
    return 0


def _figure(x, recon, report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 5 * x.shape[0] / x.shape[1] + 0.6))
    ax[0].imshow(x, cmap="gray", vmin=0, vmax=1)
    ax[0].set_title("input")
    ax[1].imshow(recon, cmap="gray", vmin=0, vmax=1)
    ax[1].set_title(f"PC15 search: {report['est_bpp']:.3f} bpp, {report['psnr']:.2f} dB, SSIM {report['ssim']:.3f}")
    for a in ax:
        a.axis("off")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("demo", "-h", "--help"):
        argv = ["demo"] + argv
    import pc15jax as pc

    ap = argparse.ArgumentParser(prog="python -m pc15jax", description="PC15 procedural tile codec")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="run the tile search on an image and write its reconstruction (default)")
    d.add_argument("input", nargs="?", default=None, help="image file (default: skimage's camera)")
    d.add_argument("-o", "--out", default="pc15_demo", help="output folder (default: ./pc15_demo)")
    d.add_argument("--tile", type=int, default=pc.CodecConfig.tile)
    d.add_argument("--overlap", type=int, default=pc.CodecConfig.overlap)
    d.add_argument("--lambda", dest="lambda_rd", type=float, default=pc.CodecConfig.lambda_rd)
    d.add_argument("--search", choices=pc.SEARCH_MODES, default=pc.CodecConfig.search)
    d.add_argument("--json", action="store_true", help="print one JSON line")
    args = ap.parse_args(argv)
    _enable_compilation_cache()
    try:
        return cmd_demo(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
