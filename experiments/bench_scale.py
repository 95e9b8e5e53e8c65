"""How the pipeline scales with the number of frames, against ``reproject_and_coadd``.

Usage:
  python -m experiments.bench_scale [--sizes 25,100,400] [--full] [--data DIR] [--out results/scale]
                                    [--reference-max 400]

For each N it simulates N mono frames of 540 x 960 pixels on a square-ish grid of pointings
(``mosaic_jax.simulate``, kept in ``--data`` for later runs), then runs
``python -m experiments.bench_mosaic DIR --json --no-seams`` in a fresh process (so each
figure starts cold: first call with the persistent compilation cache, then the steady state),
with ``reproject_and_coadd(match_background=True)`` on the same frames up to ``--reference-max``
frames and where its estimated memory fits. ``--full`` adds N = 800. Prints time per frame and
peak memory per N, writes ``scale.json`` and plots ``scale.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

FRAME = (540, 960)
GRIDS = {25: (5, 5), 100: (10, 10), 400: (20, 20), 800: (20, 40)}


def _grid(n: int) -> tuple[int, int]:
    if n in GRIDS:
        return GRIDS[n]
    r = int(math.sqrt(n))
    return r, -(-n // r)


def _dataset(root: Path, n: int) -> Path:
    from mosaic_jax.simulate import simulate_dataset

    gy, gx = _grid(n)
    d = root / f"mono_{gy}x{gx}_{FRAME[0]}x{FRAME[1]}"
    if (d / "truth.json").exists() and len(list(d.glob("frame_*.fits"))) == gy * gx:
        return d
    t = time.perf_counter()
    simulate_dataset(d, grid=(gy, gx), frame_shape=FRAME, rgb=False, seed=0)
    print(f"simulated {gy * gx} frames in {time.perf_counter() - t:.0f} s -> {d}", file=sys.stderr)
    return d


def _reference_fits(n: int) -> bool:
    """reproject keeps every reprojected frame and a float64 canvas: ~ N frame windows x 12 B
    plus the canvas x 24 B; run it only where that stays under half the machine's memory."""
    gy, gx = _grid(n)
    canvas = (gy * FRAME[0] * 0.75) * (gx * FRAME[1] * 0.75)
    need = n * FRAME[0] * FRAME[1] * 12 + canvas * 24
    try:
        phys = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return True
    return need < 0.5 * phys


def run(n: int, data: Path, reference: bool) -> dict:
    cmd = [sys.executable, "-m", "experiments.bench_mosaic", str(data), "--json", "--no-seams"]
    if not reference:
        cmd.append("--no-reference")
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if out.returncode != 0:
        raise RuntimeError(f"N={n}: bench_mosaic failed:\n{out.stderr[-3000:]}")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["n"] = n
    return _per_frame(row)


def _per_frame(row: dict) -> dict:
    for k in ("ours_first_s", "ours_steady_s", "reference_s"):
        if k in row:
            row[k[:-2] + "_s_per_frame"] = row[k] / row["frames"]
    return row


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["n"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].plot(n, [r["ours_first_s_per_frame"] for r in rows], "o-", label="mosaic_jax first call")
    ax[0].plot(n, [r["ours_steady_s_per_frame"] for r in rows], "o--", label="mosaic_jax steady")
    rr = [r for r in rows if "reference_s" in r]
    if rr:
        ax[0].plot([r["n"] for r in rr], [r["reference_s_per_frame"] for r in rr], "s-", label="reproject_and_coadd")
    ax[0].set(xscale="log", xlabel="frames", ylabel="seconds per frame", title="time per frame")
    ax[1].plot(n, [r["ours_peak_mib"] for r in rows], "o-", label="mosaic_jax")
    if rr:
        ax[1].plot([r["n"] for r in rr], [r["reference_peak_mib"] for r in rr], "s-", label="reproject_and_coadd")
    ax[1].plot(n, [r["canvas"][0] * r["canvas"][1] * 2 * 4 / 2 ** 20 for r in rows], "k:",
               label="the canvas itself (mosaic + weight)")
    ax[1].set(xscale="log", yscale="log", xlabel="frames", ylabel="peak memory above start (MiB)",
              title="peak memory")
    for a in ax:
        a.grid(alpha=0.3)
        a.set_xticks(n, [str(v) for v in n], minor=False)
        a.set_xticks([], minor=True)
        a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="25,100,400", help="frame counts (default 25,100,400)")
    ap.add_argument("--full", action="store_true", help="add N = 800")
    ap.add_argument("--data", default=os.environ.get("MOSAIC_JAX_SCALE_DATA", "/tmp/mosaic_jax_scale"),
                    help="where the simulated frames are kept")
    ap.add_argument("--out", default="results/scale")
    ap.add_argument("--reference-max", type=int, default=400, help="largest N reproject is run on")
    ap.add_argument("--replot", action="store_true", help="summarise and plot OUT/scale.json again, run nothing")
    args = ap.parse_args(argv)
    sizes = [int(v) for v in args.sizes.split(",") if v] + ([800] if args.full else [])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [_per_frame(r) for r in json.loads((out / "scale.json").read_text())] if args.replot else []
    for n in ([] if args.replot else sizes):
        data = _dataset(Path(args.data), n)
        ref = n <= args.reference_max and _reference_fits(n)
        r = run(n, data, ref)
        rows.append(r)
        print(f"N={n:4d}: canvas {r['canvas']}, ours first {r['ours_first_s']:.1f} s "
              f"({r['ours_first_s_per_frame'] * 1e3:.0f} ms/frame), steady {r['ours_steady_s']:.1f} s, "
              f"peak {r['ours_peak_mib']:.0f} MiB"
              + (f"; reproject {r['reference_s']:.1f} s ({r['reference_s_per_frame'] * 1e3:.0f} ms/frame), "
                 f"peak {r['reference_peak_mib']:.0f} MiB; time ratio {r['time_ratio']:.2f}, memory ratio "
                 f"{r['memory_ratio']:.2f}" if "reference_s" in r else "; reproject not run"), flush=True)
        (out / "scale.json").write_text(json.dumps(rows, indent=1))
    by_n = {r["n"]: r for r in rows}
    for a, b in ((100, 400), (400, 800)):
        if a in by_n and b in by_n:
            for k in ("first", "steady"):
                ra, rb = by_n[a][f"ours_{k}_s_per_frame"], by_n[b][f"ours_{k}_s_per_frame"]
                print(f"time per frame ({k}) from N={a} to N={b}: {100 * (rb / ra - 1):+.0f} %")
    plot(rows, out / "scale.png")
    print(f"wrote {out / 'scale.json'} and {out / 'scale.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
