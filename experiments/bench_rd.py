"""Rate-distortion benchmark: PC15 against JPEG, WebP, JPEG 2000 and AVIF (Pillow) on the same images.

Usage:
  python -m experiments.bench_rd [--images DIR_OR_FILES ...] [--gray] [--codecs pc15,jpeg,webp,jpeg2000,avif]
                                 [--out results/] [--quick]

Writes ``rd_points.json`` (every image/codec/setting: bytes, bpp, PSNR, SSIM, seconds),
``rd_table.md`` (mean PSNR/SSIM at 0.05, 0.1, 0.15, 0.25, 0.5 bpp and the lowest mean bpp reached,
plus the BD-rate of PC15 against each reference) and ``rd_curves.png``.

Conventions (``../shared/data/README.md``): grayscale is Pillow ``convert('L')``; PSNR uses peak 255
on the uint8-rounded reconstruction, per image, then the mean across images at each setting; SSIM
is Wang et al. (``pc15jax.ssim``, skimage-compatible); bpp counts every byte of the file. Mean
curves are interpolated in log(bpp). PC15's points come from its rate ladder (tile size by rate)
and several lambdas; its curve is the upper envelope of the mean points, as a rate-controlled
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
CODECS = ("pc15", "jpeg", "webp", "jpeg2000", "avif")
PC15_SETTINGS = [(32, 4, lam) for lam in (4.0, 1.0)] + [(24, 2, lam) for lam in (1.0, 0.3)] \
    + [(16, 1, lam) for lam in (1.0, 0.3, 0.1)] + [(12, 1, lam) for lam in (0.3, 0.1, 0.03)] \
    + [(8, 1, lam) for lam in (0.1, 0.03)]
SETTINGS = {
    "jpeg": [2, 5, 10, 15, 20, 30, 40, 50, 65, 80],
    "webp": [0, 5, 10, 20, 30, 45, 60, 75, 90],
    "jpeg2000": [0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.35, 0.5, 0.75, 1.0],
    "avif": [0, 5, 10, 20, 30, 40, 50, 60, 75],
}
QUICK = {"pc15": [(24, 2, 1.0), (16, 1, 0.3)], "jpeg": [5, 20], "webp": [10, 50], "jpeg2000": [0.1, 0.5],
         "avif": [10, 40]}


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


def encode_point(img: np.ndarray, codec: str, setting) -> dict:
    t = time.perf_counter()
    if codec == "pc15":
        tile, overlap, lam = setting
        enc = pc.encode(img, pc.CodecConfig(tile=tile, overlap=overlap, lambda_rd=lam))  # luma or YCbCr 4:2:0
        data = enc["bitstream"]
        rec = np.round((pc.decode(data) if img.ndim == 3 else pc.decode_y(data)) * 255.0).astype(np.uint8)
    else:
        data, rec = _pillow(img, codec, setting)
    secs = time.perf_counter() - t
    p, s = _metrics(img, rec)
    return {"bytes": len(data), "bpp": 8.0 * len(data) / (img.shape[0] * img.shape[1]), "psnr": p, "ssim": s,
            "seconds": secs}


def mean_curve(points: list[dict], codec: str) -> np.ndarray:
    """Mean (bpp, psnr, ssim) per setting, sorted by bpp, upper envelope in PSNR -> ``[S, 3]``."""
    by = {}
    for p in points:
        if p["codec"] == codec:
            by.setdefault(json.dumps(p["setting"]), []).append((p["bpp"], p["psnr"], p["ssim"]))
    if not by:
        return np.zeros((0, 3))
    c = np.asarray(sorted(np.mean(v, axis=0).tolist() for v in by.values()))
    keep, best = [], -np.inf
    for row in c:  # a point that costs more bits for less quality is never chosen
        if row[1] > best:
            keep.append(row)
            best = row[1]
    return np.asarray(keep)


def interp_at(curve: np.ndarray, rate: float, col: int) -> float | None:
    if len(curve) < 2 or not curve[0, 0] <= rate <= curve[-1, 0]:
        return None
    return float(np.interp(np.log(rate), np.log(curve[:, 0]), curve[:, col]))


def bd_rate(test: np.ndarray, ref: np.ndarray, window=(0.1, 0.5)) -> float | None:
    """Bjontegaard delta rate (%) of ``test`` against ``ref`` over the PSNR range both cover, within the
    reference's ``window`` of rates. Negative: ``test`` needs fewer bits for the same PSNR."""
    if len(test) < 2 or len(ref) < 2:
        return None
    lo_q = interp_at(ref, max(window[0], ref[0, 0]), 1)
    hi_q = interp_at(ref, min(window[1], ref[-1, 0]), 1)
    if lo_q is None or hi_q is None:
        return None
    lo_q, hi_q = max(lo_q, test[0, 1], ref[0, 1]), min(hi_q, test[-1, 1], ref[-1, 1])
    if hi_q <= lo_q:
        return None
    q = np.linspace(lo_q, hi_q, 200)
    lt = np.interp(q, test[:, 1], np.log(test[:, 0]))
    lr = np.interp(q, ref[:, 1], np.log(ref[:, 0]))
    return float(100.0 * (np.exp(np.mean(lt - lr)) - 1.0))


def table(points, codecs) -> str:
    curves = {c: mean_curve(points, c) for c in codecs}
    head = "| codec | " + " | ".join(f"{r} bpp" for r in RATES) + " | lowest bpp |"
    lines = [head, "|" + "---|" * (len(RATES) + 2)]
    for c in codecs:
        cur = curves[c]
        cells = []
        for r in RATES:
            p, s = interp_at(cur, r, 1), interp_at(cur, r, 2)
            cells.append("-" if p is None else f"{p:.2f} ({s:.3f})")
        lines.append(f"| {c} | " + " | ".join(cells) + f" | {cur[0, 0]:.3f} |" if len(cur) else f"| {c} | no data |")
    if "pc15" in codecs:
        lines.append("")
        for c in codecs:
            if c != "pc15":
                bd = bd_rate(curves["pc15"], curves[c])
                lines.append(f"BD-rate of PC15 against {c} (PSNR, reference's 0.1-0.5 bpp window): "
                             + ("n/a (curves do not overlap)" if bd is None else f"{bd:+.1f} %"))
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
    args = ap.parse_args(argv)
    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]
    bad = sorted(set(codecs) - set(CODECS))
    if bad:
        print(f"error: unknown codec(s) {bad}; choose from {list(CODECS)}", file=sys.stderr)
        return 2
    try:
        images = load_images(args.images or ([KODAK] if KODAK.is_dir() else []), args.gray) if (
            args.images or KODAK.is_dir()) else _fallback(args.gray)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    settings = {c: (QUICK[c] if args.quick else (PC15_SETTINGS if c == "pc15" else SETTINGS[c])) for c in codecs}
    points = []
    for name, img in tqdm(images, desc="images", unit="img", file=sys.stderr):
        for c in codecs:
            for s in settings[c]:
                points.append(dict(image=name, codec=c, setting=list(s) if isinstance(s, tuple) else s,
                                   **encode_point(img, c, s)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from shared_runtime import atomic_write_bytes

    mode = "grayscale" if args.gray else "colour"
    atomic_write_bytes(out / "rd_points.json", json.dumps({"mode": mode, "images": [n for n, _ in images],
                                                            "points": points}, indent=1).encode())
    tab = table(points, codecs)
    atomic_write_bytes(out / "rd_table.md", (f"Mean PSNR dB (SSIM), {mode}, {len(images)} images\n\n" + tab + "\n").encode())
    plot(points, codecs, out / "rd_curves.png", f"{mode}, {len(images)} images")
    print(tab)
    print(f"wrote {out / 'rd_points.json'}, {out / 'rd_table.md'}, {out / 'rd_curves.png'}")
    return 0


def _fallback(gray: bool):
    from skimage import data

    imgs = [("camera", data.camera()), ("astronaut", data.astronaut())]
    return [(n, np.asarray(Image.fromarray(i).convert("L" if gray else "RGB"))) for n, i in imgs]


if __name__ == "__main__":
    sys.exit(main())
