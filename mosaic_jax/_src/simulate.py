"""Simulated skies with known truth, written as plate-solved FITS frames.

The sky is an analytic function on a reference tangent plane (stars with a Gaussian PSF, extended
nebulosity, a flat background), so every frame is sampled exactly at its own pixel positions: no
resampling error enters the truth. Each frame then gets its own gain, offset, linear gradient,
colour cast (RGB) and noise:

    frame_c = gain * cast_c * sky_c + offset_c + gradient + N(0, sigma)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from .io import atomic_write

__all__ = ["sky_wcs", "simulate_sky", "simulate_dataset", "cut_frames", "mosaic_bayer"]

PIXEL_SCALE_DEG = 2.0 / 3600.0


def sky_wcs(center=(150.0, 20.0), shape=(512, 512), scale_deg=PIXEL_SCALE_DEG, rotation_deg=0.0,
            crpix=None) -> WCS:
    """A TAN WCS of ``shape = (H, W)`` centred on ``center = (ra, dec)`` degrees, rotated."""
    w = WCS(naxis=2)
    H, W = shape
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = list(center)
    w.wcs.crpix = [(W + 1) / 2, (H + 1) / 2] if crpix is None else list(crpix)
    th = math.radians(rotation_deg)
    w.wcs.cd = np.array([[-math.cos(th), math.sin(th)], [math.sin(th), math.cos(th)]]) * scale_deg
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.radesys = "ICRS"
    w.pixel_shape = (W, H)
    return w


def _sky_model(rng, extent, channels: int, n_stars: int, n_blobs: int):
    """Random sky parameters on the reference plane (pixel units); ``extent = (H, W)``."""
    H, W = extent
    stars = {"x": rng.uniform(-20, W + 20, n_stars), "y": rng.uniform(-20, H + 20, n_stars),
             "flux": 2000.0 * rng.pareto(1.5, n_stars).clip(0.02, 40), "sigma": 1.6,
             "colour": rng.uniform(0.7, 1.3, (n_stars, channels))}
    blobs = {"x": rng.uniform(0, W, n_blobs), "y": rng.uniform(0, H, n_blobs),
             "amp": rng.uniform(15, 60, n_blobs), "r": rng.uniform(0.08, 0.25, n_blobs) * min(H, W),
             "colour": np.tile([1.2, 0.8, 0.9][:channels], (n_blobs, 1)) if channels == 3 else np.ones((n_blobs, 1))}
    return {"stars": stars, "blobs": blobs, "background": 100.0}


def _eval_sky(model, u, v, star_xy, channels: int) -> np.ndarray:
    """Sky at reference-plane positions ``(u = x, v = y)`` of an image's pixels, with the stars at
    that image's pixel positions ``star_xy [n, 2]`` (the PSF is isotropic, and every image has
    the reference pixel scale) -> ``[H, W, C]`` float64."""
    out = np.full(u.shape + (channels,), model["background"], np.float64)
    b = model["blobs"]
    for k in range(len(b["x"])):
        g = b["amp"][k] * np.exp(-((u - b["x"][k]) ** 2 + (v - b["y"][k]) ** 2) / (2 * b["r"][k] ** 2))
        out += g[..., None] * b["colour"][k]
    s = model["stars"]
    H, W = u.shape
    r = int(math.ceil(6 * s["sigma"]))
    x, y = star_xy[:, 0], star_xy[:, 1]
    keep = np.isfinite(x) & np.isfinite(y) & (x > -r) & (x < W + r) & (y > -r) & (y < H + r)
    x, y, flux, col = x[keep], y[keep], s["flux"][keep], s["colour"][keep]
    oy, ox = np.mgrid[-r:r + 1, -r:r + 1]
    py = np.round(y).astype(int)[:, None, None] + oy  # [n, k, k] pixel rows of every stamp
    px = np.round(x).astype(int)[:, None, None] + ox
    val = flux[:, None, None] / (2 * math.pi * s["sigma"] ** 2) * np.exp(
        -((px - x[:, None, None]) ** 2 + (py - y[:, None, None]) ** 2) / (2 * s["sigma"] ** 2))
    ok = (py >= 0) & (py < H) & (px >= 0) & (px < W)
    for c in range(channels):
        np.add.at(out[..., c], (py[ok], px[ok]), (val * col[:, c][:, None, None])[ok])
    return out
SKY_ROWS = 512  # the sky is evaluated in blocks of this many rows (bounded temporaries)


def simulate_sky(model, ref_wcs: WCS, wcs: WCS, shape, channels: int) -> np.ndarray:
    """The true sky sampled at the pixels of ``wcs`` (shape ``(H, W)``) -> float64 ``[H, W, C]``.

    Only the stars near the image's footprint on the reference plane are transformed (a mosaic
    of N frames costs O(N), not O(N^2)), and large images are evaluated in blocks of rows."""
    H, W = shape
    out = np.empty((H, W, channels), np.float64)
    st = model["stars"]
    r = 6 * st["sigma"] + 2
    for y0 in range(0, H, SKY_ROWS):
        h = min(SKY_ROWS, H - y0)
        X, Y = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(y0, y0 + h, dtype=np.float64))
        u, v = ref_wcs.world_to_pixel_values(*wcs.pixel_to_world_values(X.ravel(), Y.ravel()))
        u, v = u.reshape(h, W), v.reshape(h, W)
        near = (st["x"] > u.min() - r) & (st["x"] < u.max() + r) & (st["y"] > v.min() - r) & (st["y"] < v.max() + r)
        sub = dict(model, stars={k: (val[near] if np.ndim(val) else val) for k, val in st.items()})
        sx, sy = wcs.world_to_pixel_values(*ref_wcs.pixel_to_world_values(st["x"][near], st["y"][near]))
        out[y0:y0 + h] = _eval_sky(sub, u, v, np.stack([sx, sy - y0], 1), channels)
    return out


def mosaic_bayer(rgb: np.ndarray, pattern: str = "GRBG") -> np.ndarray:
    """An RGB ``[H, W, 3]`` image sampled through a Bayer CFA -> raw ``[H, W]``."""
    idx = {"R": 0, "G": 1, "B": 2}
    raw = np.empty(rgb.shape[:2], rgb.dtype)
    for k, (cy, cx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        raw[cy::2, cx::2] = rgb[cy::2, cx::2, idx[pattern[k]]]
    return raw


def _write_frame(path: Path, data: np.ndarray, wcs: WCS, extra: dict) -> None:
    hdr = wcs.to_header()
    for k, v in extra.items():
        hdr[k] = v
    arr = np.moveaxis(data, -1, 0) if data.ndim == 3 else data
    atomic_write(path, lambda tmp: fits.PrimaryHDU(arr.astype(np.float32), header=hdr).writeto(tmp, overwrite=True),
                 durable=False)  # simulated: made again at will, so not worth a flush to disk per frame


def simulate_dataset(out_dir, *, grid=(3, 3), frame_shape=(192, 256), frame_overlap: float = 0.3,
                     rgb: bool = False, bayer: bool = False, seed: int = 0, sigma: float = 2.0,
                     gain_range=(0.8, 1.25), offset_range=(-15.0, 15.0), gradient: float = 0.5,
                     cast: float = 0.04, n_stars: int | None = None, noise: bool = True,
                     true_sky: bool = True) -> dict:
    """Write a grid of overlapping plate-solved frames of one simulated sky, with known truth.

    Args:
      out_dir: folder for ``frame_NNN.fits`` and ``truth.json``; the noiseless true sky goes to
        ``truth/sky.fits`` (a subfolder, so the folder itself holds only the frames).
      grid: ``(rows, cols)`` of pointings. frame_shape: ``(H, W)`` of a frame. frame_overlap: overlap
        fraction of neighbouring frames. rgb / bayer: colour frames (Bayer: raw GRBG mosaics with a
        ``BAYERPAT`` keyword). sigma: noise per pixel (sky units). gain_range, offset_range: uniform
        ranges of the per-frame gain and offset (frame 0 is the identity). gradient: peak-to-peak
        amplitude of each frame's linear gradient, in units of ``sigma``. cast: colour-cast range
        (per-channel gain factors in ``1 +- cast``). noise: ``False`` leaves the noise out (the same
        random draws are made, so a seed gives the same pointings and sky either way).
        true_sky: ``False`` skips evaluating and writing ``truth/sky.fits`` (the frames and
        ``truth.json`` are the same).

    Returns:
      The truth dictionary (also written to ``truth.json``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    C = 3 if (rgb or bayer) else 1
    ny, nx = (int(v) for v in grid)
    if ny < 1 or nx < 1:
        raise ValueError(f"grid must be positive, got {grid}")
    fh, fw = frame_shape
    step_y, step_x = fh * (1 - frame_overlap), fw * (1 - frame_overlap)
    ext = (int(math.ceil(fh + step_y * (ny - 1))) + 40, int(math.ceil(fw + step_x * (nx - 1))) + 40)
    ref = sky_wcs(shape=ext)
    n_stars = int(n_stars if n_stars is not None else 0.004 * ext[0] * ext[1])
    model = _sky_model(rng, ext, C, n_stars, n_blobs=4)
    frames = []
    for r in range(ny):
        for c in range(nx):
            k = len(frames)
            cy = 20 + fh / 2 + r * step_y + rng.uniform(-4, 4)
            cx = 20 + fw / 2 + c * step_x + rng.uniform(-4, 4)
            ra, dec = ref.pixel_to_world_values(cx - 0.5, cy - 0.5)
            w = sky_wcs((float(ra), float(dec)), frame_shape, rotation_deg=float(rng.uniform(-2, 2)))
            sky = simulate_sky(model, ref, w, frame_shape, C)
            g = 1.0 if k == 0 else float(rng.uniform(*gain_range))
            o = 0.0 if k == 0 else float(rng.uniform(*offset_range))
            casts = np.ones(C) if (k == 0 or C == 1) else rng.uniform(1 - cast, 1 + cast, C)
            gy, gx = rng.normal(size=2)
            norm = max(abs(gy) * fh + abs(gx) * fw, 1e-9)
            gy, gx = gy * gradient * sigma / norm, gx * gradient * sigma / norm
            yy, xx = np.mgrid[0:fh, 0:fw]
            ramp = gy * (yy - fh / 2) + gx * (xx - fw / 2)
            data = g * casts * sky + o + ramp[..., None] + rng.normal(0, sigma, sky.shape) * float(noise)
            name = f"frame_{k:03d}.fits"
            extra = {"EXPTIME": 10.0, "OBJECT": "SIMULATED"}
            if bayer:
                data = mosaic_bayer(data, "GRBG")
                extra["BAYERPAT"] = "GRBG"
            elif C == 1:
                data = data[..., 0]
            _write_frame(out / name, data, w, extra)
            frames.append({"file": name, "gain": g, "cast": casts.tolist(), "offset": o,
                           "gradient_per_px": [float(gy), float(gx)], "center_radec": [float(ra), float(dec)]})
    if true_sky:
        _write_frame(out / "truth" / "sky.fits", simulate_sky(model, ref, ref, ext, C), ref, {"OBJECT": "TRUE SKY"})
    truth = {"grid": [ny, nx], "frame_shape": list(frame_shape), "channels": C, "bayer": bool(bayer),
             "sigma": sigma, "background": model["background"], "seed": seed, "frames": frames,
             "model": "frame_c = gain * cast_c * sky_c + offset + gradient + N(0, sigma)"}
    atomic_write(out / "truth.json", lambda tmp: Path(tmp).write_text(json.dumps(truth, indent=1)))
    return truth


def cut_frames(image: np.ndarray, wcs: WCS, out_dir, *, grid=(3, 3), overlap: float = 0.35, gains=None,
               offsets=None, names=None) -> list[Path]:
    """Cut an image ``[H, W, C]`` (or ``[H, W]``) with its WCS into a grid of overlapping frames,
    each with its own gain and offset (``gains``, ``offsets``: ``[n_frames]`` or ``[n_frames, C]``),
    written as FITS with the sliced WCS. Returns the paths."""
    img = image[..., None] if image.ndim == 2 else image
    H, W, C = img.shape
    ny, nx = grid
    fh = int(H / (ny - (ny - 1) * overlap))
    fw = int(W / (nx - (nx - 1) * overlap))
    ys = np.linspace(0, H - fh, ny).round().astype(int)
    xs = np.linspace(0, W - fw, nx).round().astype(int)
    out = Path(out_dir)
    paths = []
    k = 0
    for y in ys:
        for x in xs:
            g = np.ones(C) if gains is None else np.broadcast_to(np.asarray(gains)[k], (C,))
            o = np.zeros(C) if offsets is None else np.broadcast_to(np.asarray(offsets)[k], (C,))
            data = img[y:y + fh, x:x + fw] * g + o
            p = out / (f"cut_{k:03d}.fits" if names is None else names[k])
            _write_frame(p, data if C > 1 else data[..., 0], wcs[y:y + fh, x:x + fw], {})
            paths.append(p)
            k += 1
    return paths
