"""The anchor tools our mosaics are measured against, run on the same frame files:
``reproject_and_coadd(match_background=True)`` (astropy's reproject) and Montage 6 through
``MontagePy`` (``mImgtbl -> mMakeHdr -> mProjExec -> mImgtbl -> mOverlaps -> mDiffFitExec ->
mBgModel -> mBgExec -> mImgtbl -> mAdd``, a plane per frame). Each returns ``(mosaic [H, W, C] float32, wcs,
seconds, peak MiB)``; frames without a celestial WCS are left out, as both tools need one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

import mosaic_jax as mj


class PeakRSS:
    """Peak resident memory above the starting level while the block runs (samples /proc, Linux;
    elsewhere the process's lifetime peak from getrusage). ``mb`` after the block."""

    def __enter__(self):
        self.base = self.peak = self._rss()
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()
        return self

    def _rss(self):
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
        except OSError:
            from mosaic_jax._src.pipeline import peak_rss_mb

            return peak_rss_mb()

    def _run(self):
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join()
        self.peak = max(self.peak, self._rss())
        self.mb = self.peak - self.base


def solved_infos(paths):
    """``FrameInfo`` of the frames that carry a celestial WCS in their header (the frames both
    anchors can use; unreadable and unsolved ones are left out)."""
    out = []
    for p in paths:
        try:
            out.append(mj.scan_frame(p))
        except Exception:  # no WCS, unreadable: both anchors skip it too
            continue
    return out


def solved_frames(paths):
    """``[(data [h, w, C], FrameInfo)]`` of :func:`solved_infos` (our loader: Bayer frames
    debayered the same way)."""
    return [(np.asarray(mj.load_frame(info)[0]), info) for info in solved_infos(paths)]


def run_reproject(paths, wcs=None, shape=None):
    """``reproject_and_coadd(match_background=True)``, one call per channel, onto ``wcs``/``shape``
    (default: reproject's ``find_optimal_celestial_wcs``)."""
    from reproject import reproject_interp
    from reproject.mosaicking import find_optimal_celestial_wcs, reproject_and_coadd

    t = time.perf_counter()
    with PeakRSS() as mem:
        fr = solved_frames(paths)
        if not fr:
            raise RuntimeError("reproject: no frame with a celestial WCS")
        if wcs is None:
            wcs, shape = find_optimal_celestial_wcs([(d.shape[:2], i.wcs) for d, i in fr], projection="TAN")
        out = []
        for c in range(fr[0][0].shape[-1]):
            arr, fp = reproject_and_coadd([(d[..., c], i.wcs) for d, i in fr], wcs, shape_out=tuple(shape),
                                          reproject_function=reproject_interp, match_background=True)
            out.append(np.where(fp > 0, arr, np.nan).astype(np.float32))
    return np.stack(out, -1), wcs, time.perf_counter() - t, mem.mb


def montage_available() -> bool:
    try:
        import MontagePy.main  # noqa: F401
    except ImportError:
        return False
    return True


def _cd_header(wcs: WCS) -> fits.Header:
    """The WCS as a header with a CD matrix (Montage reads CD or CDELT/CROTA2, not PC + CDELT)."""
    hdr = wcs.to_header()
    cd = wcs.wcs.cd if wcs.wcs.has_cd() else wcs.wcs.get_pc() * wcs.wcs.cdelt[:, None]
    for k in ("PC1_1", "PC1_2", "PC2_1", "PC2_2", "CDELT1", "CDELT2"):
        hdr.remove(k, ignore_missing=True)
    for i in range(2):
        for j in range(2):
            hdr[f"CD{i + 1}_{j + 1}"] = float(cd[i, j])
    return hdr


def _check(ret, what):
    if isinstance(ret, dict) and ret.get("status") not in ("0", 0):
        raise RuntimeError(f"Montage {what} failed: {ret}")


def run_montage(paths):
    """Montage 6 (MontagePy): project every frame with ``mProjExec``, fit a plane to every
    overlap difference (``mDiffFitExec``), solve the per-frame planes (``mBgModel``), subtract them
    (``mBgExec``) and co-add (``mAdd``), per channel (colour frames are split into planes first)."""
    import MontagePy.main as m

    t = time.perf_counter()
    with PeakRSS() as mem, tempfile.TemporaryDirectory(prefix="montage_") as tmp:
        fr = solved_frames(paths)
        if not fr:
            raise RuntimeError("Montage: no frame with a celestial WCS")
        C = fr[0][0].shape[-1]
        planes, wcs = [], None
        for c in range(C):
            root = Path(tmp) / f"c{c}"
            raw, proj, diff, corr = (root / s for s in ("raw", "proj", "diff", "corr"))
            for d in (raw, proj, diff, corr):
                d.mkdir(parents=True)
            for k, (data, info) in enumerate(fr):
                hdr = _cd_header(info.wcs)
                fits.PrimaryHDU(data[..., c].astype(np.float32), header=hdr).writeto(raw / f"f{k:04d}.fits")
            tbl, ptbl, hdrf = str(root / "raw.tbl"), str(root / "proj.tbl"), str(root / "out.hdr")
            _check(m.mImgtbl(str(raw), tbl), "mImgtbl")
            _check(m.mMakeHdr(tbl, hdrf), "mMakeHdr")
            _check(m.mProjExec(str(raw), tbl, hdrf, projdir=str(proj)), "mProjExec")
            _check(m.mImgtbl(str(proj), ptbl), "mImgtbl")
            dtbl, fitf, corrf = str(root / "diffs.tbl"), str(root / "fits.tbl"), str(root / "corr.tbl")
            _check(m.mOverlaps(ptbl, dtbl), "mOverlaps")
            _check(m.mDiffFitExec(str(proj), dtbl, hdrf, str(diff), fitf), "mDiffFitExec")
            _check(m.mBgModel(ptbl, fitf, corrf), "mBgModel")
            _check(m.mBgExec(str(proj), ptbl, corrf, str(corr)), "mBgExec")
            out, ctbl = str(root / "mosaic.fits"), str(root / "corr_images.tbl")
            # the tables hold absolute file names: list the corrected images in their own table
            _check(m.mImgtbl(str(corr), ctbl), "mImgtbl")
            _check(m.mAdd(str(corr), ctbl, hdrf, out), "mAdd")
            with fits.open(out) as h:
                planes.append(np.asarray(h[0].data, np.float32))
                wcs = WCS(h[0].header).celestial
        shutil.rmtree(tmp, ignore_errors=True)
    mos = np.stack(planes, -1)
    return np.where(np.isfinite(mos) & (mos != 0), mos, np.nan).astype(np.float32), wcs, time.perf_counter() - t, mem.mb
