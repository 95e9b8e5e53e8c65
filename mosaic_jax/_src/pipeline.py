"""The grid-mode pipeline, end to end: a short composition of the stages (``ARCHITECTURE.md``).

scan frames -> global WCS + grid -> frames: reproject each once onto its canvas window (to the
work folder) -> frame pairs: sufficient statistics -> frame gains and skies (one solve) -> tiles:
stacked in batches of row bands, RGB medians equalised -> tile pairs: robust fits -> tile solve
-> canvas: feathered assembly band by band -> (two-pass renormalisation) -> report.

Memory: the canvas (mosaic and weight) is the only thing that grows with the sky covered;
frames and tiles live in the work folder (:mod:`.workdir`) and every batch is sized to what
``MosaicConfig.memory_limit_mb`` leaves beside the canvas. Every batch runs over all local
devices (:mod:`.devices`); with several processes each one takes its share of frames, pairs
and tiles.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
import warnings
from dataclasses import asdict

import jax
import numpy as np

from .canvas import assemble_canvas, frame_seam_metric
from .config import FRAME_NORMALIZE, SOLVES, MosaicConfig, MosaicResult, batch_bytes, default_memory_limit_mb
from .devices import Cluster
from .frames import normalise_frames, reproject_frames, scan_inputs
from .grid import make_grid
from .io import MosaicInputError
from .output import stretch_preview, write_outputs
from .photometry import compute_tile_photometric_scaling, overlap_mask
from .sky import SKY_MODELS, degree_of
from .tiles import pair_differences, read_tile, solve_tiles, stack_tiles, tile_pair_fits
from .workdir import WorkDir

__all__ = ["MosaicConfig", "MosaicResult", "build_mosaic", "write_outputs", "stretch_preview", "SOLVES",
           "FRAME_NORMALIZE"]

log = logging.getLogger("mosaic_jax")


class _Timer:
    def __init__(self):
        self.t: dict[str, float] = {}

    def add(self, name, dt):
        self.t[name] = self.t.get(name, 0.0) + dt


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (``getrusage``)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024.0 if sys.platform != "darwin" else r / 2 ** 20


RELEASE_MIN_BYTES = 256 * 2 ** 20  # below this a build's temporaries are too small to be worth a collection


def _release(data_bytes: float) -> None:
    """Hand freed memory back to the system between stages (glibc keeps freed heap pages
    resident otherwise: a stage's temporaries would add to the next stage's peak). A build whose
    frames and canvas hold less than :data:`RELEASE_MIN_BYTES` skips it (a full collection costs
    0.15 s, more than the small demo's stages)."""
    import ctypes
    import gc

    if data_bytes < RELEASE_MIN_BYTES:
        return
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _limit_arenas(n: int = 2) -> None:
    """At most ``n`` glibc malloc arenas: the runtime's worker threads otherwise each keep an
    arena of freed buffers (64 MiB each, resident), which adds to every stage's peak."""
    import ctypes

    try:
        ctypes.CDLL(None).mallopt(-8, int(n))  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def _frame_weights(noise, fgain):
    with warnings.catch_warnings():  # frames with no pixel on the grid have no noise: NaN, weight 0
        warnings.simplefilter("ignore", RuntimeWarning)
        sig = np.nanmean(noise * fgain, axis=1)  # noise after normalisation
    good = np.isfinite(sig) & (sig > 0)
    fweight = np.where(good, 1.0 / np.where(good, sig, 1.0) ** 2, 0.0)
    return (fweight / fweight[good].mean()).astype(np.float32) if good.any() else np.ones(len(noise), np.float32)


def _two_pass(grid, work, ids, mosaic, weight, gains, offsets, cfg):
    """Refit every tile to the first mosaic (gains and offsets updated in place)."""
    for i in ids:
        t = grid.tiles[i]
        x = read_tile(work, i, "d") * gains[i] + offsets[i]
        ref_crop = mosaic[t.y0:t.y0 + t.h, t.x0:t.x0 + t.w]
        m = overlap_mask(weight[t.y0:t.y0 + t.h, t.x0:t.x0 + t.w], read_tile(work, i, "c"), ref_crop, x,
                         min_coverage=cfg.min_coverage, erode=cfg.erode, tile_id=i)
        g2, o2 = compute_tile_photometric_scaling(ref_crop, x, mask=m, gain_bounds=cfg.gain_bounds, tile_id=i)
        g2, o2 = np.asarray(g2), np.asarray(o2)
        gains[i], offsets[i] = gains[i] * g2, offsets[i] * g2 + o2


def build_mosaic(inputs, cfg: MosaicConfig = MosaicConfig(), *, progress: bool = True,
                 cluster: Cluster | None = None) -> MosaicResult:
    """Build a grid-mode mosaic from FITS frames, folders or ``stack_plan.csv`` files.

    Args:
      inputs: FITS files, folders, ``stack_plan.csv`` files.
      cfg: :class:`MosaicConfig`. progress: tqdm bars on long stages.
      cluster: this process's place in a multi-process build (:func:`mosaic_jax.initialize`);
        default one process. Every process gets the same result; only process 0 should write it.

    Returns:
      :class:`MosaicResult`. Raises :class:`MosaicInputError` (nothing written) when no frame is
      usable or the frames do not form one mosaic.
    """
    cluster = cluster or Cluster()
    _limit_arenas()
    timer = _Timer()
    report: dict = {"inputs_used": [], "inputs_skipped": [], "config": asdict(cfg)}
    t0 = time.perf_counter()
    frames = scan_inputs(inputs, report)
    timer.add("scan", time.perf_counter() - t0)
    C = frames[0].channels
    t0 = time.perf_counter()
    grid = make_grid(frames, tile_size_factor=cfg.tile_size_factor, overlap=cfg.overlap)
    timer.add("grid", time.perf_counter() - t0)
    H, W = grid.shape
    canvas_bytes = H * W * (C + 1) * 4.0
    data_bytes = canvas_bytes + 4.0 * (C + 1) * sum(f.shape[0] * f.shape[1] for f in frames)
    budget = batch_bytes(cfg, canvas_bytes, len(jax.local_devices()))
    log.info("[GRID] canvas %s, %d tiles of %d px (stride %d), %d frames; batches of %.0f MiB", grid.shape,
             len(grid.tiles), grid.tile_size, grid.stride, len(frames), budget / 2 ** 20)
    if cluster.count > 1 and cfg.work_dir is None:
        raise ValueError("a multi-process build needs a work folder every process sees (MosaicConfig.work_dir)")
    work = WorkDir(cfg.work_dir)
    try:
        # ---- frames: reproject once, then one gain + sky per frame ------------------------------
        windows, noise = reproject_frames(frames, grid, cfg, work, timer, cluster, progress)
        _release(data_bytes)
        if not windows:
            raise MosaicInputError("no frame has data on the grid")
        t0 = time.perf_counter()
        sky, n_frame_pairs = normalise_frames(grid.footprints, windows, work, cfg, C, noise, batch_bytes=budget,
                                              cluster=cluster)
        fgain = np.ones((len(frames), C), np.float32) if sky is None else sky.gains
        fweight = _frame_weights(noise, fgain)
        timer.add("frame_normalisation", time.perf_counter() - t0)
        report["frames"] = [{"index": k, "file": frames[k].name, "gains": np.asarray(fgain[k]).tolist(),
                             "sky_degree": None if sky is None else int(sky.degrees[k]),
                             "sky_coeffs": None if sky is None else np.asarray(sky.coeffs[k]).tolist(),
                             "weight": float(fweight[k])} for k in sorted(windows)]
        report["frame_pairs"] = n_frame_pairs
        report["sky"] = _sky_report(cfg, sky)
        # ---- tiles: stack, then one gain + offset per tile -------------------------------------
        t0 = time.perf_counter()
        width = cfg.feather_width or max(8.0, (grid.tile_size - grid.stride) / 2.0)
        ids = stack_tiles(grid, windows, work, fweight, cfg, C, batch_bytes=budget, width=width, cluster=cluster,
                          timer=timer, progress=progress)
        timer.add("stack", time.perf_counter() - t0)
        if not ids:
            raise MosaicInputError("no frame has data on the grid")
        t0 = time.perf_counter()
        pairs, pg, po, cnt, samples, sig = tile_pair_fits(grid, work, ids, cfg, C, batch_bytes=budget,
                                                          cluster=cluster)
        gains, offsets, ref = solve_tiles(grid, work, ids, pairs, pg, po, cnt, cfg, C)
        before, after = pair_differences(pairs, samples, gains, offsets)
        timer.add("photometry", time.perf_counter() - t0)
        _release(data_bytes)
        # ---- canvas ------------------------------------------------------------------------------
        t0 = time.perf_counter()
        mosaic, weight = assemble_canvas(grid, work, ids, gains, offsets, C, batch_bytes=budget)
        if cfg.two_pass:
            _two_pass(grid, work, ids, mosaic, weight, gains, offsets, cfg)
            mosaic, weight = assemble_canvas(grid, work, ids, gains, offsets, C, batch_bytes=budget)
        timer.add("assemble", time.perf_counter() - t0)
        tiles_rep = {i: {"frames": work.get(("tm", i), "frames").tolist(),
                         "rgb_gains": work.get(("tm", i), "rgb_gains").tolist(),
                         "coverage_mean": float(work.get(("tm", i), "cov_mean")),
                         "valid_fraction": float(work.get(("tm", i), "valid"))} for i in ids}
        if cfg.quality:
            t0 = time.perf_counter()
            meta = {k: (work.get(("fm", k), "qblocks"), work.get(("fm", k), "raw_noise")) for k in windows
                    if work.has(("fm", k), "qblocks")}
            sm = frame_seam_metric(mosaic, windows, work, meta)
            timer.add("quality", time.perf_counter() - t0)
            report["seam_metric"] = {"rms": sm.rms, "rms_sigma": sm.rms_sigma, "per_frame": sm.per_frame}
        cluster.barrier("done")
    except BaseException:
        work.close(everything=cluster.count > 1 and cluster.leader)  # a failed build leaves no work behind
        raise
    work.close()
    report["grid"] = grid.describe()
    report["channels"] = C
    report["reference_tile"] = ref
    report["tiles"] = [dict(index=i, gains=np.asarray(gains[i]).tolist(), offsets=np.asarray(offsets[i]).tolist(),
                            **tiles_rep[i]) for i in ids]
    report["pairs"] = [{"tiles": [int(i), int(j)], "pixels": int(c), "fit_gain": g.tolist(), "fit_offset": o.tolist(),
                        "median_diff_before": b.tolist(), "median_diff_after": a.tolist(), "noise_sigma": s.tolist()}
                       for (i, j), c, g, o, b, a, s in zip(pairs, cnt, pg, po, before, after, sig)]
    report["pair_residual_summary"] = _residual_summary(before, after, sig)
    report["execution"] = dict(cluster.describe(), memory_limit_mb=round(cfg.memory_limit_mb or
                                                                         default_memory_limit_mb(), 1),
                               batch_mb=round(budget / 2 ** 20, 1))
    report["devices"], report["processes"] = len(jax.devices()), cluster.count
    report["timings_s"] = {k: round(v, 4) for k, v in timer.t.items()}
    report["peak_memory_mb"] = round(peak_rss_mb(), 1)
    return MosaicResult(mosaic, weight, grid.wcs, grid, report)


def _sky_report(cfg, sky) -> dict:
    deg = SKY_MODELS[cfg.sky] if sky is None else degree_of(sky.coeffs.shape[-1])
    rep = {"model": cfg.sky, "degree": deg, "fit_gains": bool(cfg.fit_gains),
           "coordinates": "frame footprint: u = (x - cx) / hx, v = (y - cy) / hy on the canvas; c = g f - P(u, v)"}
    if sky is None:
        return rep
    rep["reference_frames"] = list(sky.anchors)
    rep["fallbacks"] = list(sky.notes)
    if len(sky.pair_rms_before):
        rep["frame_pair_rms_before"] = float(np.median(sky.pair_rms_before))
        rep["frame_pair_rms_after"] = float(np.median(sky.pair_rms_after))
    return rep


def _residual_summary(before, after, sig) -> dict:
    if not len(before):
        return {"pairs": 0}
    s = np.maximum(sig, 1e-30)
    return {"pairs": int(len(before)),
            "median_abs_diff_before_sigma": float(np.median(np.abs(before) / s)),
            "median_abs_diff_after_sigma": float(np.median(np.abs(after) / s)),
            "max_abs_diff_before_sigma": float(np.max(np.abs(before) / s)),
            "max_abs_diff_after_sigma": float(np.max(np.abs(after) / s))}
