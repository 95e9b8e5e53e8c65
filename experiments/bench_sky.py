"""Per-frame skies on real images with a known truth: our mosaic against reproject and Montage.

Cut sets are made from the shared 2MASS J, H and K images: each cut into a grid of 320-px frames
(3x3 and 4x2), each frame given its own gain (``1 +- 0.2``), offset (``+-40``), plane (``+-12``
ADU at the frame's edges) and quadratic (``+-6``) in its own pixel coordinates; the "no gain"
variant keeps every gain at 1; the "seeing" variant adds to the gains each frame's own blur
(Gaussian sigma 0.3-1 px) and its own noise (the image's pixel sigma), as frames of different
nights have. Every tool mosaics the same FITS files; each mosaic is scored
with :func:`mosaic_jax.quality.truth_error` against the uncut image (ADU and pixel sigma) and
:func:`mosaic_jax.quality.seam_steps` (noise units). The six Seestar NGC 7023 frames (no truth)
get ``seam_steps`` and wall time: ours on all of them, the anchors on those with a WCS.

Usage:
  python -m experiments.bench_sky [--bands j,h,k] [--layouts 3x3,4x2] [--sky poly2] [--tools ours,reproject,montage]
                                  [--no-seestar] [--json] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

import mosaic_jax as mj
from experiments import anchors
from mosaic_jax._src.io import atomic_write
from mosaic_jax._src.register import register_frames
from mosaic_jax.quality import seam_steps, truth_error

ASTRO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "astro"
FRAME = 320


def cut_set(image, wcs, out_dir, layout, *, gains: bool, seed: int, frame: int = FRAME, seeing: bool = False):
    """Cut ``image`` into ``layout = (rows, cols)`` overlapping ``frame``-px frames with injected
    gains, offsets, planes and quadratics; returns the paths. ``seeing``: each frame also gets its
    own Gaussian blur (sigma 0.3-1 px) and its own noise (the image's pixel sigma), as real frames
    taken at different times do."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    sig = float(np.asarray(mj.noise_sigma(image, np.isfinite(image))))
    H, W = image.shape
    ny, nx = layout
    stride = lambda L, n: 0 if n == 1 else min((L - frame) / (n - 1), frame * 0.75)
    ys = np.round(np.arange(ny) * stride(H, ny)).astype(int)
    xs = np.round(np.arange(nx) * stride(W, nx)).astype(int)
    yy, xx = np.mgrid[0:frame, 0:frame]
    u, v = (xx - (frame - 1) / 2) / (frame / 2), (yy - (frame - 1) / 2) / (frame / 2)
    paths = []
    for y in ys:
        for x in xs:
            g = rng.uniform(0.8, 1.2) if gains else 1.0
            a, b = rng.uniform(-12, 12, 2)
            c, d, e = rng.uniform(-6, 6, 3)
            sky = rng.uniform(-40, 40) + a * u + b * v + c * u * u + d * u * v + e * v * v
            cut = image[y:y + frame, x:x + frame]
            if seeing:
                cut = gaussian_filter(cut, rng.uniform(0.3, 1.0)) + rng.normal(0, sig, cut.shape)
            data = (cut * g + sky).astype(np.float32)
            p = Path(out_dir) / f"cut_{len(paths):03d}.fits"
            fits.PrimaryHDU(data, header=wcs[y:y + frame, x:x + frame].to_header()).writeto(p)
            paths.append(p)
    return paths


def run_tool(name, paths, cfg):
    if name == "ours":
        t = time.perf_counter()
        with anchors.PeakRSS() as mem:
            res = mj.build_mosaic(paths, cfg, progress=False)
        return res.mosaic, res.wcs, time.perf_counter() - t, mem.mb, res.report
    fn = {"reproject": anchors.run_reproject, "montage": anchors.run_montage}[name]
    mos, wcs, s, mb = fn(paths)
    return mos, wcs, s, mb, None


def frames_of(paths):
    """``(shape, wcs)`` of the frames with a header WCS: the edges ``seam_steps`` measures."""
    return [(info.shape, info.wcs) for info in anchors.solved_infos(paths)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bands", default="j,h,k")
    ap.add_argument("--layouts", default="3x3,4x2")
    ap.add_argument("--sky", default=None, help="our sky model (default: MosaicConfig's)")
    ap.add_argument("--tools", default="ours,reproject,montage")
    ap.add_argument("--no-seestar", action="store_true")
    ap.add_argument("--json", action="store_true", help="one JSON line per row")
    ap.add_argument("--out", default=None, help="folder for results.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    tools = [t for t in args.tools.split(",") if t]
    if "montage" in tools and not anchors.montage_available():
        print("MontagePy is not installed: Montage left out", file=sys.stderr)
        tools.remove("montage")
    cfg = mj.MosaicConfig(quality=False) if args.sky is None else mj.MosaicConfig(sky=args.sky, quality=False)
    rows = []
    if not (ASTRO / "gc_2mass").is_dir():
        print(f"no data in {ASTRO}: nothing to do", file=sys.stderr)
        return 0
    for bi, band in enumerate(b for b in args.bands.split(",") if b):
        with fits.open(ASTRO / "gc_2mass" / f"gc_2mass_{band}.fits") as h:
            img, wcs = np.asarray(h[0].data, np.float32), WCS(h[0].header).celestial
        for li, lay in enumerate(args.layouts.split(",")):
            layout = tuple(int(v) for v in lay.split("x"))
            for variant in ("gains", "none", "seeing"):
                gains = variant != "none"
                with tempfile.TemporaryDirectory() as tmp:
                    paths = cut_set(img, wcs, tmp, layout, gains=gains, seed=100 * bi + 10 * li + int(gains),
                                    seeing=variant == "seeing")
                    fr = frames_of(paths)
                    for tool in tools:
                        mos, mw, s, mb, _ = run_tool(tool, paths, cfg)
                        te = truth_error(mos, mw, img, wcs)
                        ss = seam_steps(mos, mw, fr)
                        rows.append(dict(set=f"2MASS {band.upper()} {lay}", gains=gains, variant=variant, tool=tool,
                                         wall_s=round(s, 2),
                                         peak_mib=round(mb, 1), truth_adu=te.rms, truth_sigma=te.rms_sigma,
                                         seam_sigma=ss.rms_sigma))
                        _emit(rows[-1], args.json)
    see = ASTRO / "seestar_ngc7023"
    if not args.no_seestar and see.is_dir():
        paths = sorted(see.glob("*.fit"))
        for tool in tools:
            mos, mw, s, mb, rep = run_tool(tool, paths, cfg)
            used = len(rep["inputs_used"]) if rep else len(anchors.solved_infos(paths))
            ss = seam_steps(mos, mw, frames_of(paths))  # the edges of the solved frames, for every tool
            row = dict(set="Seestar NGC 7023", gains=None, tool=tool, frames=used, wall_s=round(s, 2),
                       peak_mib=round(mb, 1), truth_adu=None, truth_sigma=None, seam_sigma=ss.rms_sigma)
            if rep:  # ours: also over the edges of every frame it used, registered ones included
                reg, _ = register_frames([mj.scan_frame(p, allow_unsolved=True) for p in paths])
                row["seam_sigma_all_frames"] = seam_steps(mos, mw, [(f.shape, f.wcs) for f in reg]).rms_sigma
            rows.append(row)
            _emit(rows[-1], args.json)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "results.json", lambda tmp: Path(tmp).write_text(json.dumps(rows, indent=1)))
    if not args.json:
        _table(rows)
    return 0


def _emit(row, as_json):
    if as_json:
        print(json.dumps(row), flush=True)
    else:
        print(f"  {row['set']:<18} {row.get('variant', ''):<7} {row['tool']:<9} {row['wall_s']:7.2f} s  "
              + ("" if row["truth_adu"] is None else f"truth {row['truth_adu']:.4f} ADU ({row['truth_sigma']:.4f} sigma)  ")
              + f"seams {row['seam_sigma']:.3f} sigma"
              + (f" ({row['seam_sigma_all_frames']:.3f} over all its frames' edges)" if "seam_sigma_all_frames" in row
                 else ""), file=sys.stderr, flush=True)


def _table(rows):
    print("| set | variant | tool | frames | wall s | peak MiB | truth_error ADU | truth_error sigma | seam_steps sigma |")
    print("|---|---|---|---|---|---|---|---|---|")
    f = lambda v, p=4: "—" if v is None else f"{v:.{p}f}"
    for r in rows:
        v = {"gains": "gains ±20 %", "none": "no gains", "seeing": "gains, seeing, noise"}.get(r.get("variant"), "")
        print(f"| {r['set']} | {v} | {r['tool']} | "
              f"{r.get('frames', '')} | {r['wall_s']:.2f} | {r['peak_mib']:.0f} | {f(r['truth_adu'])} | "
              f"{f(r['truth_sigma'])} | {f(r['seam_sigma'], 3)} |")


if __name__ == "__main__":
    sys.exit(main())
