"""Command line: ``python -m mosaic_jax build|simulate|report``.

``build`` with no INPUT simulates a small colour sky (3 x 3 pointings) and builds its mosaic: the
README's main job. Errors print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

DEMO = dict(grid=(4, 4), frame_shape=(160, 200), rgb=True, seed=0)
DEMO_TILE_SIZE_FACTOR = 1.5  # the demo's few frames would fit in one tile of the default 4.0


def _pair(lo: int, hi: int):
    def parse(s: str) -> tuple[int, int]:
        try:
            a, b = s.lower().split("x")
            r, c = int(a), int(b)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected ROWSxCOLS such as 3x3, got {s!r}") from None
        if not (lo <= r <= hi and lo <= c <= hi):
            raise argparse.ArgumentTypeError(f"both numbers must lie in {lo}..{hi}, got {s!r}")
        return r, c

    return parse


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mosaic_jax", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build a mosaic from FITS frames, folders or stack_plan.csv files")
    b.add_argument("inputs", nargs="*", help="FITS files, folders, stack_plan.csv (none: a simulated demo sky)")
    b.add_argument("-o", "--out", default="mosaic_out", help="output folder (default: mosaic_out)")
    b.add_argument("--tile-size-factor", type=float, default=None, help="tile side / median frame side (4.0)")
    b.add_argument("--overlap", type=float, default=None, help="tile overlap fraction (0.4)")
    b.add_argument("--reject", choices=("winsorized", "kappa", "none"), default="winsorized")
    b.add_argument("--sky", choices=("auto", "offset", "plane", "poly2", "poly3"), default="auto",
                   help="per-frame sky model (auto: the degree up to 2 the overlaps support)")
    b.add_argument("--no-gains", action="store_true", help="fit the frames' skies only, not their gains")
    b.add_argument("--solve", choices=("global", "reference"), default="global")
    b.add_argument("--two-pass", action="store_true", help="refit tiles to the first mosaic, assemble again")
    b.add_argument("--backend", choices=("jax", "reproject"), default="jax")
    b.add_argument("--no-quality", action="store_true", help="skip the seam metric in report.json")
    b.add_argument("--memory-limit", type=float, default=None, metavar="MIB",
                   help="memory budget in MiB (default: a quarter of this machine's memory)")
    b.add_argument("--work-dir", default=None,
                   help="folder for the build's frames and tiles (default: a temporary folder; several "
                        "processes need one they all see)")
    m = b.add_argument_group("several processes (hosts)")
    m.add_argument("--coordinator", default=None, metavar="HOST:PORT", help="address of process 0")
    m.add_argument("--num-processes", type=int, default=None, metavar="N")
    m.add_argument("--process-id", type=int, default=None, metavar="I")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    s = sub.add_parser("simulate", help="write simulated plate-solved frames with known truth")
    s.add_argument("-o", "--out", required=True, help="output folder")
    s.add_argument("--grid", type=_pair(1, 50), default=(3, 3), help="pointings, rows x columns (3x3)")
    s.add_argument("--frame-shape", type=_pair(16, 8192), default=(200, 240), help="frame height x width (200x240)")
    s.add_argument("--rgb", action="store_true", help="colour frames")
    s.add_argument("--bayer", action="store_true", help="raw GRBG Bayer frames (colour)")
    s.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("report", help="summarise a build's report.json")
    r.add_argument("path", help="an output folder or its report.json")
    return p


def _summary(rep: dict) -> str:
    g = rep.get("grid", {})
    lines = [f"frames used {len(rep.get('inputs_used', []))}, skipped {len(rep.get('inputs_skipped', []))}"]
    for s in rep.get("inputs_skipped", []):
        lines.append(f"  skipped {Path(s['path']).name}: {s['reason']}")
    lines.append(f"canvas {g.get('canvas_shape')} px, {g.get('n_tiles')} tiles of {g.get('tile_size')} px "
                 f"(stride {g.get('stride')}), {rep.get('channels')} channel(s)")
    sk = rep.get("sky", {})
    if sk:
        lines.append(f"frame skies: {sk.get('model')} (degree {sk.get('degree')}), gains {'on' if sk.get('fit_gains') else 'off'}"
                     + (f", overlap rms {sk['frame_pair_rms_before']:.4g} -> {sk['frame_pair_rms_after']:.4g}"
                        if "frame_pair_rms_before" in sk else ""))
        for f in sk.get("fallbacks", []):
            lines.append(f"  fallback: {f}")
    if rep.get("calibration") == "approximate":
        lines.append("WCS approximate: no frame was plate-solved (pointing and optics from the header)")
    pr = rep.get("pair_residual_summary", {})
    if pr.get("pairs"):
        lines.append(f"tile overlaps: {pr['pairs']} pairs, median |difference| {pr['median_abs_diff_before_sigma']:.3g}"
                     f" -> {pr['median_abs_diff_after_sigma']:.3g} sigma (max {pr['max_abs_diff_before_sigma']:.3g}"
                     f" -> {pr['max_abs_diff_after_sigma']:.3g})")
    sm = rep.get("seam_metric")
    if sm:
        lines.append(f"seam metric {sm['rms']:.4g} (= {sm['rms_sigma']:.3g} sky sigma)")
    t = rep.get("timings_s", {})
    lines.append("timings " + ", ".join(f"{k} {v:.2f} s" for k, v in t.items()) + f"; total {sum(t.values()):.2f} s")
    lines.append(f"peak memory {rep.get('peak_memory_mb')} MiB")
    for k, v in rep.get("outputs", {}).items():
        lines.append(f"{k}: {v}")
    return "\n".join(lines)


def _enable_compilation_cache() -> None:
    """JAX's persistent compilation cache (``MOSAIC_JAX_CACHE_DIR``), so later runs skip most compiling."""
    from shared_runtime import enable_compilation_cache

    enable_compilation_cache("MOSAIC_JAX_CACHE_DIR", "mosaic_jax")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "build":
        _enable_compilation_cache()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from mosaic_jax._src.io import MosaicInputError

    try:
        if args.cmd == "simulate":
            from mosaic_jax.simulate import simulate_dataset

            truth = simulate_dataset(args.out, grid=args.grid, frame_shape=args.frame_shape, rgb=args.rgb,
                                     bayer=args.bayer, seed=args.seed)
            print(f"wrote {len(truth['frames'])} frames, truth.json and truth/sky.fits to {args.out}")
            return 0
        if args.cmd == "report":
            p = Path(args.path)
            p = p / "report.json" if p.is_dir() else p
            try:
                rep = json.loads(p.read_text())
            except (OSError, ValueError) as e:
                raise MosaicInputError(f"{p}: not a readable report.json ({e})") from None
            print(_summary(rep))
            return 0
        import mosaic_jax as mj

        kw = {k: v for k, v in (("tile_size_factor", args.tile_size_factor), ("overlap", args.overlap)) if v is not None}
        cluster = mj.initialize(args.coordinator, args.num_processes, args.process_id)
        work_dir = args.work_dir
        if cluster.count > 1 and work_dir is None:
            work_dir = str(Path(args.out) / ".mosaic_jax_work")  # on the output's file system
        cfg = mj.MosaicConfig(reject=args.reject, solve=args.solve, two_pass=args.two_pass, backend=args.backend,
                              quality=not args.no_quality, sky=args.sky, fit_gains=not args.no_gains,
                              memory_limit_mb=args.memory_limit, work_dir=work_dir, **kw)
        inputs = args.inputs
        if not inputs and cluster.count > 1:
            raise ValueError("the demo runs in one process: give INPUT frames to a multi-process build")
        with tempfile.TemporaryDirectory(prefix="mosaic_jax_demo_") as tmp:
            if not inputs:
                from mosaic_jax.simulate import simulate_dataset

                simulate_dataset(tmp, **DEMO, true_sky=False)  # the demo's truth is not looked at
                if args.tile_size_factor is None:
                    cfg = dataclasses.replace(cfg, tile_size_factor=DEMO_TILE_SIZE_FACTOR)
                print(f"no input: building the demo mosaic of a simulated colour sky "
                      f"({DEMO['grid'][0]}x{DEMO['grid'][1]} frames, tile size factor {cfg.tile_size_factor})",
                      file=sys.stderr)
                inputs = [tmp]
            res = mj.build_mosaic(inputs, cfg, progress=not args.quiet and cluster.leader, cluster=cluster)
            if not cluster.leader:
                return 0
            mj.write_outputs(res, args.out)
        print(_summary(res.report))
        return 0
    except (MosaicInputError, ValueError, OSError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        if "cluster" in locals() and cluster.count > 1:  # leave now: jax.distributed's shutdown would
            sys.stderr.flush()                             # wait for the lost process, then abort
            os._exit(2)
        return 2


if __name__ == "__main__":
    from shared_runtime import exit_now

    exit_now(main())
