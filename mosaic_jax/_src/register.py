"""Frames without a celestial WCS: registered by their stars to a frame that has one.

Each unsolved frame is matched to a solved frame with ``astroalign`` (triangle asterisms of the
detected stars, a similarity transform fitted robustly); the matched pixel grid is carried through
the solved frame's WCS, and a TAN WCS is fitted to it (``astropy.wcs.utils.fit_wcs_from_points``).
Where no frame of the set is solved, one reference frame gets an approximate TAN WCS from its
header (pointing ``RA``/``DEC`` or ``OBJCTRA``/``OBJCTDEC``, ``FOCALLEN`` mm and ``XPIXSZ`` um,
north up), and the others are registered to it; such frames are marked ``"approximate"``. A frame
that cannot be registered is returned with the reason, to be skipped.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from .io import FrameInfo, load_frame

__all__ = ["register_frames", "header_wcs"]

log = logging.getLogger("mosaic_jax")

MAX_RMS_PX = 1.5  # a registration whose fitted TAN WCS misses the matched grid by more is refused


def _angle(v) -> float | None:
    """Degrees from a number or a sexagesimal string (``"21 01 36.9"``); None if neither."""
    if isinstance(v, (int, float)) and math.isfinite(v):
        return float(v)
    if isinstance(v, str):
        parts = v.replace(":", " ").split()
        try:
            nums = [float(p) for p in parts]
        except ValueError:
            return None
        if not nums:
            return None
        sign = -1.0 if parts[0].startswith("-") else 1.0
        return sign * (abs(nums[0]) + sum(n / 60 ** (k + 1) for k, n in enumerate(nums[1:])))
    return None


def header_wcs(header, shape) -> WCS | None:
    """An approximate TAN WCS from a header's pointing and optics (north up, east left), or None
    when the header lacks them. ``OBJCTRA`` is in hours, ``RA`` in degrees."""
    ra = _angle(header.get("RA"))
    dec = _angle(header.get("DEC"))
    if ra is None or dec is None:
        ra_h, dec = _angle(header.get("OBJCTRA")), _angle(header.get("OBJCTDEC"))
        ra = None if ra_h is None else 15.0 * ra_h
    focal, pix = header.get("FOCALLEN"), header.get("XPIXSZ")
    if ra is None or dec is None or not isinstance(focal, (int, float)) or not isinstance(pix, (int, float)) \
            or focal <= 0 or pix <= 0:
        return None
    scale = float(pix) * 1e-3 / float(focal) * 180.0 / math.pi  # degrees per pixel
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(shape[1] + 1) / 2.0, (shape[0] + 1) / 2.0]
    w.wcs.cdelt = [-scale, scale]
    return w


def _luminance(info: FrameInfo) -> np.ndarray:
    d = np.asarray(load_frame(info)[0], np.float32).mean(axis=-1)
    fin = np.isfinite(d)
    return np.where(fin, d, np.median(d[fin]) if fin.any() else 0.0)


def _register_one(src: np.ndarray, ref: np.ndarray, ref_wcs: WCS, shape):
    """TAN WCS of ``src`` from a star match to ``ref`` -> ``(wcs, rms_px, n_matches)``."""
    import astroalign
    from astropy.wcs.utils import fit_wcs_from_points

    T, (s_pts, r_pts) = astroalign.find_transform(src, ref, max_control_points=50)
    H, W = shape
    gy, gx = np.meshgrid(np.linspace(0, H - 1, 9), np.linspace(0, W - 1, 9), indexing="ij")
    xy = np.stack([gx.ravel(), gy.ravel()], 1)
    rxy = T(xy)
    world = ref_wcs.pixel_to_world(rxy[:, 0], rxy[:, 1])
    w = fit_wcs_from_points((xy[:, 0], xy[:, 1]), world, projection="TAN")
    w.pixel_shape = (W, H)
    back = np.stack(w.world_to_pixel(world), 1)
    rms = float(np.sqrt(np.mean(np.sum((back - xy) ** 2, 1))))
    return w, rms, len(s_pts)


def register_frames(infos: list[FrameInfo]) -> tuple[list[FrameInfo], list[tuple[FrameInfo, str]]]:
    """Give every frame without a WCS one (see the module docstring).

    Returns:
      ``(frames, skipped)``: the frames with a WCS (solved ones unchanged, in input order), and
      ``(frame, reason)`` for those that could not be registered.
    """
    solved = [f for f in infos if f.wcs is not None]
    unsolved = [f for f in infos if f.wcs is None]
    if not unsolved:
        return list(infos), []
    skipped: list[tuple[FrameInfo, str]] = []
    done: dict[str, FrameInfo] = {}
    if not solved:
        for f in unsolved:
            w = header_wcs(fits.getheader(f.path, f.hdu), f.shape)
            if w is not None:
                ref = dataclasses.replace(f, wcs=w, wcs_source="approximate")
                solved, done[f.path] = [ref], ref
                log.warning("[GRID] no frame is plate-solved: %s gets an approximate WCS from its header "
                            "(pointing, FOCALLEN, XPIXSZ); the mosaic is approximately calibrated", f.name)
                break
        else:
            return [], [(f, "no celestial WCS, and no frame of the set is plate-solved or has pointing, "
                            "FOCALLEN and XPIXSZ in its header") for f in unsolved]
    refs = []  # luminance of the solved frames, loaded when first needed
    for f in unsolved:
        if f.path in done:
            continue
        try:
            src = _luminance(f)
        except Exception as e:  # unreadable pixels: skip with the reason
            skipped.append((f, f"cannot read its pixels for registration ({e})"))
            continue
        why = "no solved frame shares enough stars with it"
        for k, r in enumerate(solved):
            if k >= len(refs):
                refs.append(_luminance(r))
            try:
                w, rms, n = _register_one(src, refs[k], r.wcs, f.shape)
            except Exception as e:  # astroalign raises MaxIterError / ValueError on too few stars
                why = f"star matching failed ({type(e).__name__}: {e})"
                continue
            if not (rms <= MAX_RMS_PX):
                why = f"registration to {r.name} fits its TAN WCS only to {rms:.2f} px"
                continue
            src_kind = "approximate" if r.wcs_source == "approximate" else "registered"
            done[f.path] = dataclasses.replace(f, wcs=w, wcs_source=src_kind)
            log.info("[GRID] %s registered to %s: %d stars, TAN fit %.3f px", f.name, r.name, n, rms)
            break
        else:
            log.warning("[GRID] %s has no WCS and could not be registered: %s; skipped", f.name, why)
            skipped.append((f, f"no celestial WCS, and registration failed: {why}"))
    frames = [f if f.wcs is not None else done[f.path] for f in infos if f.wcs is not None or f.path in done]
    return frames, skipped
