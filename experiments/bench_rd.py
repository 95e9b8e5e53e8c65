"""Rate-distortion benchmark: PC15 against JPEG, WebP, JPEG 2000, AVIF, HEIF (HEVC) and JPEG XL.

Usage:
  python -m experiments.bench_rd [--images DIR_OR_FILES ...] [--gray]
                                 [--codecs pc15,jpeg,webp,jpeg2000,avif,heif,jxl] [--out results/] [--quick]
                                 [--pc15 ladder|blocks|all] [--frozen-tables] [--residual [--block-dct]]
                                 [--chroma-lambda L]

Writes ``rd_points.json`` (every image/codec/setting: bytes, bpp, PSNR, SSIM, blockiness, seconds),
``rd_table.md`` (mean PSNR/SSIM at 0.05, 0.1, 0.15, 0.25, 0.5 bpp, the lowest mean bpp reached, the
blockiness at 0.1 bpp, and the BD-rate of PC15 against each reference on PSNR and on SSIM) and
``rd_curves.png``. HEIF and JPEG XL go through their maintained Pillow plugins (``pillow-heif``,
``pillow-jxl-plugin``); a codec whose plugin is missing is left out with a note.

Blockiness is the mean absolute step across tile boundaries, in 8-bit levels, over the same inside
boundaries for every codec: those of PC15's tile grid at 0.1 bpp (the rate ladder's 16 px tiles,
overlap 1), between two tiles that are both inside the image. A step is ``|r[b] - r[b - 1]|`` on
both sides of a seam pixel ``b``, along rows and columns, on luma. The original's own figure on the
same boundaries is printed beside it: that much is the picture's, not the codec's.

Conventions (``../shared/data/README.md``): grayscale is Pillow ``convert('L')``; PSNR uses peak 255
on the uint8-rounded reconstruction, per image, then the mean across images at each setting; SSIM
is Wang et al. (``pc15jax.ssim``, skimage-compatible); bpp counts every byte of the file. Mean
curves are interpolated in log(bpp). PC15's points come from its rate ladder (tile size by rate)
and several lambdas, and from its block sizes per region (``--pc15 ladder|blocks|all``); its curve is the upper envelope of the mean points, as a rate-controlled
encoder would pick. BD-rate (Bjontegaard) integrates log-rate differences over the PSNR interval
both curves cover inside the reference's 0.1-0.5 bpp window, with piecewise-linear interpolation.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

import pc15jax as pc

KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"
RATES = (0.05, 0.1, 0.15, 0.25, 0.5)
CODECS = ("pc15", "jpeg", "webp", "jpeg2000", "avif", "heif", "jxl")
PLUGINS = {"heif": "pillow_heif", "jxl": "pillow_jxl"}
LADDER_SETTINGS = [(32, 4, lam) for lam in (4.0, 1.0)] + [(24, 2, lam) for lam in (1.0, 0.3)] \
    + [(16, 1, lam) for lam in (1.0, 0.3, 0.1)] + [(12, 1, lam) for lam in (0.3, 0.1, 0.03)] \
    + [(8, 1, lam) for lam in (0.1, 0.03)]
# Block sizes per region (the block_map tool, pc15jax's default layers): one lambda per point.
BLOCK_SETTINGS = [("blocks", lam) for lam in (3.0, 1.0, 0.5, 0.3, 0.15, 0.1, 0.05)]
PC15_SETTINGS = {"ladder": LADDER_SETTINGS, "blocks": BLOCK_SETTINGS, "all": LADDER_SETTINGS + BLOCK_SETTINGS}
SETTINGS = {
    "jpeg": [2, 5, 10, 15, 20, 30, 40, 50, 65, 80],
    "webp": [0, 5, 10, 20, 30, 45, 60, 75, 90],
    "jpeg2000": [0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.35, 0.5, 0.75, 1.0],
    "avif": [0, 5, 10, 20, 30, 40, 50, 60, 75],
    "heif": [1, 5, 10, 20, 30, 40, 50, 60, 75],
    "jxl": [1, 5, 10, 20, 30, 40, 50, 65, 80],
}
QUICK = {"pc15": [(24, 2, 1.0), (16, 1, 0.3), ("blocks", 0.3)], "jpeg": [5, 20], "webp": [10, 50], "jpeg2000": [0.1, 0.5],
         "avif": [10, 40], "heif": [10, 40], "jxl": [10, 40]}
BLOCK_TILE, BLOCK_OVERLAP = 16, 1  # PC15's tile grid at 0.1 bpp (pc15jax.ladder_geometry(0.1))


def available(codec: str) -> bool:
    """Whether a reference codec's Pillow plugin is installed (and registered)."""
    mod = PLUGINS.get(codec)
    if mod is None:
        return True
    try:
        m = __import__(mod)
    except ImportError:
        return False
    if codec == "heif":
        m.register_heif_opener()
    return True


def load_images(paths, gray: bool) -> list[tuple[str, np.ndarray]]:
    files = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files += sorted(q for q in p.iterdir() if q.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"))
        elif p.is_file():
            files.append(p)
        else:
            raise ValueError(f"no such image or folder: {p}")
    if not files:
        raise ValueError("no images found")
    out = []
    for f in files:
        with Image.open(f) as im:
            out.append((f.name, np.asarray(im.convert("L" if gray else "RGB"))))
    return out


def _pillow(img: np.ndarray, codec: str, setting) -> tuple[bytes, np.ndarray]:
    mode = "L" if img.ndim == 2 else "RGB"
    buf = io.BytesIO()
    im = Image.fromarray(img)
    if codec == "jpeg":
        im.save(buf, format="JPEG", quality=int(setting), optimize=True)
    elif codec == "webp":
        im.save(buf, format="WEBP", quality=int(setting), method=6)
    elif codec == "jpeg2000":
        raw_bits = 8 if mode == "L" else 24
        im.save(buf, format="JPEG2000", quality_mode="rates", quality_layers=[raw_bits / float(setting)], irreversible=True)
    elif codec == "avif":
        im.save(buf, format="AVIF", quality=int(setting), speed=4)
    elif codec == "heif":
        im.save(buf, format="HEIF", quality=int(setting))
    elif codec == "jxl":
        im.save(buf, format="JXL", quality=int(setting), effort=7)
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as d:
        return data, np.asarray(d.convert(mode))


def _metrics(img: np.ndarray, rec: np.ndarray) -> tuple[float, float]:
    x, r = img.astype(np.float32), rec.astype(np.float32)
    if x.ndim == 3:  # colour: PSNR over all samples, SSIM averaged over channels
        x, r = np.moveaxis(x, -1, 0), np.moveaxis(r, -1, 0)
        mse = float(np.mean((x - r) ** 2))
        return 10 * np.log10(255.0 ** 2 / mse) if mse > 0 else float("inf"), float(np.mean(np.asarray(pc.ssim(x, r, 255.0))))
    return float(pc.psnr(x, r, 255.0)), float(pc.ssim(x, r, 255.0))


def _seams(L: int, tile: int = BLOCK_TILE, overlap: int = BLOCK_OVERLAP) -> np.ndarray:
    """Seam pixels of a tile grid (default: PC15's 0.1-bpp one) along an axis of length ``L`` between
    two inside tiles (tiles that touch the image border on that axis are left out)."""
    return pc.tile_starts(L, tile, overlap)[2:-1]  # seam k lies at the start of tile k


# The block map's grid (its 17/1 layer; the 9/1 layer's seams include these, the 34/2 layer's are
# every other one): the seams a block-map stream has, where the 16/1 ones fall inside its tiles.
BLOCKS_SEAM_GRID = (17, 1)


def blockiness(rec: np.ndarray, grid: tuple[int, int] = (BLOCK_TILE, BLOCK_OVERLAP)) -> float:
    """Mean absolute step (8-bit levels) across the inside tile seams of ``rec`` (uint8, luma or RGB)
    on the seams of ``grid = (tile, overlap)``."""
    y = rec.astype(np.float64)
    if y.ndim == 3:
        y = y @ np.array([0.299, 0.587, 0.114])
    steps = []
    for arr in (y, y.T):
        b = _seams(arr.shape[1], *grid)
        b = b[(b >= 1) & (b + 1 < arr.shape[1])]
        r = _seams(arr.shape[0], *grid)
        rows = slice(r[0], r[-1] + 1) if len(r) else slice(None)  # the inside tiles' rows only
        for d in (0, 1):  # the steps on both sides of the seam pixel
            steps.append(np.abs(arr[rows, b + d] - arr[rows, b + d - 1]).ravel())
    s = np.concatenate(steps)
    return float(s.mean()) if s.size else float("nan")


def encode_point(img: np.ndarray, codec: str, setting, pc15_options=None) -> dict:
    """One image at one setting -> bytes, bpp, PSNR, SSIM, blockiness, seconds. ``pc15_options``:
    further ``CodecConfig`` fields for PC15 (e.g. ``{"adaptive_coding": False}``)."""
    t = time.perf_counter()
    if codec == "pc15":
        if setting[0] == "blocks":
            from pc15jax._src.blockmap import DEFAULT_LAYERS

            cfg = pc.CodecConfig(block_sizes=DEFAULT_LAYERS, lambda_rd=setting[1], **(pc15_options or {}))
        else:
            tile, overlap, lam = setting
            cfg = pc.CodecConfig(tile=tile, overlap=overlap, lambda_rd=lam, **(pc15_options or {}))
        enc = pc.encode(img, cfg)  # luma or YCbCr 4:2:0
        data = enc["bitstream"]
        rec = np.round((pc.decode(data) if img.ndim == 3 else pc.decode_y(data)) * 255.0).astype(np.uint8)
    else:
        data, rec = _pillow(img, codec, setting)
    secs = time.perf_counter() - t
    p, s = _metrics(img, rec)
    return {"bytes": len(data), "bpp": 8.0 * len(data) / (img.shape[0] * img.shape[1]), "psnr": p, "ssim": s,
            "blockiness": blockiness(rec), "blockiness16": blockiness(rec, BLOCKS_SEAM_GRID), "seconds": secs}


COLUMNS = ("bpp", "psnr", "ssim", "blockiness", "blockiness16")


def mean_curve(points: list[dict], codec: str, on: int = 1) -> np.ndarray:
    """Mean (bpp, psnr, ssim, blockiness) per setting, sorted by bpp, upper envelope in column ``on``
    (1 PSNR, 2 SSIM) -> ``[S, 4]``."""
    by = {}
    for p in points:
        if p["codec"] == codec:
            by.setdefault(json.dumps(p["setting"]), []).append(tuple(p.get(k, np.nan) for k in COLUMNS))
    if not by:
        return np.zeros((0, len(COLUMNS)))
    c = np.asarray(sorted(np.mean(v, axis=0).tolist() for v in by.values()))
    keep, best = [], -np.inf
    for row in c:  # a point that costs more bits for less quality is never chosen
        if row[on] > best:
            keep.append(row)
            best = row[on]
    return np.asarray(keep)


def interp_at(curve: np.ndarray, rate: float, col: int) -> float | None:
    if len(curve) < 2 or not curve[0, 0] <= rate <= curve[-1, 0]:
        return None
    return float(np.interp(np.log(rate), np.log(curve[:, 0]), curve[:, col]))


def bd_rate(test: np.ndarray, ref: np.ndarray, window=(0.1, 0.5), col: int = 1) -> float | None:
    """Bjontegaard delta rate (%) of ``test`` against ``ref`` over the quality range (column ``col``:
    1 PSNR, 2 SSIM) both cover, within the reference's ``window`` of rates. Negative: ``test`` needs
    fewer bits for the same quality."""
    if len(test) < 2 or len(ref) < 2:
        return None
    lo_q = interp_at(ref, max(window[0], ref[0, 0]), col)
    hi_q = interp_at(ref, min(window[1], ref[-1, 0]), col)
    if lo_q is None or hi_q is None:
        return None
    lo_q, hi_q = max(lo_q, test[0, col], ref[0, col]), min(hi_q, test[-1, col], ref[-1, col])
    if hi_q <= lo_q:
        return None
    q = np.linspace(lo_q, hi_q, 200)
    lt = np.interp(q, test[:, col], np.log(test[:, 0]))
    lr = np.interp(q, ref[:, col], np.log(ref[:, 0]))
    return float(100.0 * (np.exp(np.mean(lt - lr)) - 1.0))


def with_pc15_levers(points, codecs):
    """When PC15 ran both its ladder and its block-map settings, add each alone as a codec of its own
    (``pc15:ladder``, ``pc15:blocks``) -> (points, codecs)."""
    pc15 = [p for p in points if p["codec"] == "pc15"]
    kinds = {"blocks" if p["setting"][0] == "blocks" else "ladder" for p in pc15}
    if len(kinds) < 2:
        return points, codecs
    extra = [dict(p, codec="pc15:" + ("blocks" if p["setting"][0] == "blocks" else "ladder")) for p in pc15]
    at = list(codecs).index("pc15") + 1
    return points + extra, list(codecs[:at]) + ["pc15:ladder", "pc15:blocks"] + list(codecs[at:])


def table(points, codecs, original_blockiness: float | None = None) -> str:
    curves = {c: mean_curve(points, c) for c in codecs}
    ssim_curves = {c: mean_curve(points, c, on=2) for c in codecs}
    head = "| codec | " + " | ".join(f"{r} bpp" for r in RATES) + (" | lowest bpp | blockiness at 0.1 bpp "
                                                                     "| on the 16 px seams |")
    lines = [head, "|" + "---|" * (len(RATES) + 4)]
    for c in codecs:
        cur = curves[c]
        if not len(cur):
            lines.append(f"| {c} | no data |")
            continue
        cells = []
        for r in RATES:
            p, s = interp_at(cur, r, 1), interp_at(cur, r, 2)
            cells.append("-" if p is None else f"{p:.2f} ({s:.3f})")
        b, b16 = interp_at(cur, 0.1, 3), interp_at(cur, 0.1, 4)
        fmt3 = lambda v: "-" if v is None or not np.isfinite(v) else f"{v:.3f}"  # noqa: E731
        lines.append(f"| {c} | " + " | ".join(cells) + f" | {cur[0, 0]:.3f} | {fmt3(b)} | {fmt3(b16)} |")
    if original_blockiness is not None:
        lines.append(f"\nBlockiness of the originals on the same boundaries: {original_blockiness:.3f}")
    for me in (c for c in codecs if c.startswith("pc15")):
        lines.append("")
        for c in codecs:
            if not c.startswith("pc15") or (me == "pc15:blocks" and c == "pc15:ladder"):
                bd = bd_rate(curves[me], curves[c])
                bs = bd_rate(ssim_curves[me], ssim_curves[c], col=2)
                fmt = lambda v: "n/a (curves do not overlap)" if v is None else f"{v:+.1f} %"  # noqa: E731
                lines.append(f"BD-rate of {'PC15' if me == 'pc15' else me} against {c} (reference's 0.1-0.5 bpp window): PSNR {fmt(bd)}, "
                             f"SSIM {fmt(bs)}")
    return "\n".join(lines)


def plot(points, codecs, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
    for c in codecs:
        cur = mean_curve(points, c)
        if len(cur):
            ax[0].plot(cur[:, 0], cur[:, 1], "o-", label=c, lw=2 if c == "pc15" else 1)
            ax[1].plot(cur[:, 0], cur[:, 2], "o-", label=c, lw=2 if c == "pc15" else 1)
    for a, yl in zip(ax, ("mean PSNR (dB)", "mean SSIM")):
        a.set_xscale("log")
        a.set_xlabel("bits per pixel")
        a.set_ylabel(yl)
        a.grid(True, which="both", alpha=0.3)
        a.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.bench_rd", description=__doc__.split("\n")[0])
    ap.add_argument("--images", nargs="*", default=None, help="folders or files (default: ../shared/data/kodak)")
    ap.add_argument("--gray", action="store_true", help="grayscale (luma) comparison")
    ap.add_argument("--codecs", default=",".join(CODECS))
    ap.add_argument("--out", default="results")
    ap.add_argument("--quick", action="store_true", help="two settings per codec (smoke test)")
    ap.add_argument("--pc15", choices=sorted(PC15_SETTINGS), default="all",
                    help="PC15's settings: the tile-size ladder, block sizes per region (block_map), or both (default)")
    ap.add_argument("--frozen-tables", action="store_true",
                    help="PC15 without the adaptive_coding tool (the frozen rANS tables only)")
    ap.add_argument("--residual", action="store_true",
                    help="PC15 with the transform_residual tool (an 8x8 lapped-transform residual on top of the atoms)")
    ap.add_argument("--block-dct", action="store_true",
                    help="with --residual: the plain 8x8 block DCT instead of the lapped transform")
    ap.add_argument("--chroma-lambda", type=float, default=None,
                    help="PC15's chroma lambda over the luma's (CodecConfig.chroma_lambda; default its own)")
    args = ap.parse_args(argv)
    pc15_options = ({"adaptive_coding": False} if args.frozen_tables else {}) | (
        {"transform_residual": True} if args.residual else {}) | (
        {"residual_lapped": False} if args.block_dct else {}) | (
        {"chroma_lambda": args.chroma_lambda} if args.chroma_lambda is not None else {}) or None
    if args.block_dct and not args.residual:
        print("error: --block-dct is an option of --residual", file=sys.stderr)
        return 2
    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]
    bad = sorted(set(codecs) - set(CODECS))
    if bad:
        print(f"error: unknown codec(s) {bad}; choose from {list(CODECS)}", file=sys.stderr)
        return 2
    missing = [c for c in codecs if not available(c)]
    if missing:
        print(f"note: leaving out {missing}: their Pillow plugins ({', '.join(PLUGINS[c] for c in missing)}) are "
              "not installed (pip install -e '.[dev]')", file=sys.stderr)
        codecs = [c for c in codecs if c not in missing]
    try:
        images = load_images(args.images or ([KODAK] if KODAK.is_dir() else []), args.gray) if (
            args.images or KODAK.is_dir()) else _fallback(args.gray)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    settings = {c: (QUICK[c] if args.quick else (PC15_SETTINGS[args.pc15] if c == "pc15" else SETTINGS[c])) for c in codecs}
    points = []
    for name, img in tqdm(images, desc="images", unit="img", file=sys.stderr):
        for c in codecs:
            for s in settings[c]:
                points.append(dict(image=name, codec=c, setting=list(s) if isinstance(s, tuple) else s,
                                   **encode_point(img, c, s, pc15_options)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from shared_runtime import atomic_write_bytes

    mode = "grayscale" if args.gray else "colour"
    atomic_write_bytes(out / "rd_points.json", json.dumps({"mode": mode, "images": [n for n, _ in images],
                                                            "points": points}, indent=1).encode())
    tab = table(*with_pc15_levers(points, codecs), float(np.mean([blockiness(img) for _, img in images])))
    atomic_write_bytes(out / "rd_table.md", (f"Mean PSNR dB (SSIM), {mode}, {len(images)} images\n\n" + tab + "\n").encode())
    plot(*with_pc15_levers(points, codecs), out / "rd_curves.png", f"{mode}, {len(images)} images")
    print(tab)
    print(f"wrote {out / 'rd_points.json'}, {out / 'rd_table.md'}, {out / 'rd_curves.png'}")
    return 0


def _fallback(gray: bool):
    from skimage import data

    imgs = [("camera", data.camera()), ("astronaut", data.astronaut())]
    return [(n, np.asarray(Image.fromarray(i).convert("L" if gray else "RGB"))) for n, i in imgs]


if __name__ == "__main__":
    sys.exit(main())
