"""FITS input and output: finding frames, reading them lazily, debayering, atomic writes.

A frame is scanned once (header, WCS, a validity check) into a :class:`FrameInfo`; its pixels are
read again only when a grid tile needs them (:func:`load_frame`). Pixel arrays are float32
``[H, W, C]`` (mono ``[H, W, 1]``, Bayer raw frames debayered to ``C = 3``), NaN where a pixel has
no data; an optional ``ALPHA`` extension (0-255) becomes a ``[H, W]`` weight in ``[0, 1]``.
"""

from __future__ import annotations

import csv
import logging
import os
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from shared_runtime import aot, atomic_write

__all__ = [
    "MosaicInputError",
    "FrameInfo",
    "FITS_SUFFIXES",
    "BAYER_PATTERNS",
    "find_inputs",
    "scan_frame",
    "load_frame",
    "debayer_bilinear",
    "atomic_write",
]

log = logging.getLogger("mosaic_jax")

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")
BAYER_PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")
PLAN_PATH_COLUMNS = ("path", "file_path", "filepath", "file", "filename")


class MosaicInputError(ValueError):
    """An input that cannot be used at all (unreadable, not FITS, no usable frame): no output."""


class FrameSkipped(Exception):
    """A frame that is readable but unusable (no celestial WCS, all NaN, constant): skipped."""


@dataclass(frozen=True)
class FrameInfo:
    """What the grid needs to know about a frame, without its pixels.

    Attributes:
      path: the file. hdu: index of the image HDU. shape: ``(H, W)`` of the image plane.
      channels: 1 (mono) or 3 (RGB, or Bayer raw once debayered). bayer: the CFA pattern or None.
      wcs: the celestial WCS (2 pixel axes). weight: plan weight (default 1). exposure: seconds
      (``EXPTIME``/``EXPOSURE``; None when absent). alpha_hdu: index of an ``ALPHA`` extension.
      wcs_source: ``"header"`` (plate-solved), ``"registered"`` (matched by its stars to a solved
        frame, :mod:`.register`), ``"approximate"`` (from the header's pointing and optics, or
        registered to such a frame), or ``"none"`` (not yet registered; ``wcs`` is None).
    """

    path: str
    hdu: int
    shape: tuple[int, int]
    channels: int
    bayer: str | None
    wcs: WCS
    weight: float = 1.0
    exposure: float | None = None
    alpha_hdu: int | None = None
    wcs_source: str = "header"

    @property
    def name(self) -> str:
        return Path(self.path).name


def _is_fits_name(p: Path) -> bool:
    return p.name.lower().endswith(FITS_SUFFIXES)


def _read_plan(path: Path) -> list[tuple[Path, float, float | None]]:
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise MosaicInputError(f"{path}: cannot read the stack plan ({e})") from None
    if not rows:
        raise MosaicInputError(f"{path}: the stack plan lists no frames")
    cols = {c.strip().lower(): c for c in rows[0].keys() if c}
    pcol = next((cols[c] for c in PLAN_PATH_COLUMNS if c in cols), None)
    if pcol is None:
        raise MosaicInputError(f"{path}: the stack plan needs a path column (one of {PLAN_PATH_COLUMNS})")
    wcol = cols.get("weight")
    ecol = cols.get("exposure") or cols.get("exptime")
    out = []
    for k, r in enumerate(rows, start=2):
        p = Path(str(r[pcol]).strip())
        p = p if p.is_absolute() else path.parent / p
        try:
            w = float(r[wcol]) if wcol and str(r[wcol]).strip() else 1.0
            e = float(r[ecol]) if ecol and str(r[ecol]).strip() else None
        except ValueError:
            raise MosaicInputError(f"{path}, line {k}: weight/exposure must be numbers") from None
        if not (np.isfinite(w) and w >= 0) or (e is not None and not (np.isfinite(e) and e > 0)):
            raise MosaicInputError(f"{path}, line {k}: weight must be >= 0 and exposure > 0")
        out.append((p, w, e))
    return out


def find_inputs(inputs) -> list[tuple[Path, float, float | None]]:
    """Expand files, folders (their FITS files, sorted, not recursive) and ``stack_plan.csv`` files.

    Returns ``[(path, weight, exposure or None)]`` in a deterministic order, duplicates removed.
    Raises :class:`MosaicInputError` for a path that does not exist, or a folder without FITS files.
    """
    out: list[tuple[Path, float, float | None]] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and _is_fits_name(q))
            if not found:
                raise MosaicInputError(f"{p}: no FITS files ({', '.join(FITS_SUFFIXES)}) in this folder")
            out += [(q, 1.0, None) for q in found]
        elif p.is_file() and p.suffix.lower() == ".csv":
            out += _read_plan(p)
        elif p.is_file():
            out.append((p, 1.0, None))
        else:
            raise MosaicInputError(f"{p}: no such file or folder")
    seen, uniq = set(), []
    for p, w, e in out:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            uniq.append((p, w, e))
    return uniq


def _image_hdu(hdul) -> int:
    for i, h in enumerate(hdul):
        if isinstance(h, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)) and h.header.get("NAXIS", 0) >= 2 \
                and (h.name or "").upper() != "ALPHA":
            n = h.header["NAXIS"]
            if n == 2 or (n == 3 and h.header.get("NAXIS3") in (1, 3)):
                return i
    raise FrameSkipped("no 2-D image (or 3-plane colour cube) in the file")


def _bayer(header) -> str | None:
    for key in ("BAYERPAT", "CFAIMAGE"):
        v = header.get(key)
        if isinstance(v, str) and v.strip():
            pat = v.strip().upper()
            if pat not in BAYER_PATTERNS:
                raise FrameSkipped(f"unsupported Bayer pattern {key}={v!r} (supported: {BAYER_PATTERNS})")
            return pat
    return None


def _celestial_wcs(header) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            w = WCS(header, naxis=2)
        except Exception as e:  # astropy raises many kinds for broken WCS keywords
            raise FrameSkipped(f"unreadable WCS ({type(e).__name__}: {e})") from None
    if not w.has_celestial or w.celestial.naxis != 2 or not w.celestial.is_celestial:
        raise FrameSkipped("no celestial WCS (not plate-solved)")
    c = w.celestial
    try:
        sky = c.pixel_to_world_values(np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    except Exception as e:
        raise FrameSkipped(f"WCS cannot be evaluated ({e})") from None
    if not np.all(np.isfinite(sky)):
        raise FrameSkipped("WCS gives no finite sky coordinates")
    return c


def _open(path):
    try:
        return fits.open(path, memmap=False, lazy_load_hdus=False)
    except FileNotFoundError:
        raise MosaicInputError(f"{path}: no such file") from None
    except Exception as e:
        raise MosaicInputError(f"{path}: not a readable FITS file ({type(e).__name__}: {e})") from None


def _check_size(path, hdul, i: int) -> None:
    """A header that claims more data than the file holds is refused before anything is read
    (astropy would first allocate what the header claims)."""
    hdu = hdul[i]
    if isinstance(hdu, fits.CompImageHDU) or str(path).lower().endswith(".gz"):
        return
    need = int(hdu.size)  # bytes of data the header claims
    try:
        start = int(hdul.fileinfo(i)["datLoc"])
        have = os.path.getsize(path) - start
    except (KeyError, TypeError, OSError):
        return
    if need > have:
        dims = " x ".join(str(hdu.header.get(f"NAXIS{k}")) for k in range(1, int(hdu.header.get("NAXIS", 0)) + 1))
        raise FrameSkipped(f"truncated or corrupt: the header claims {dims} pixels ({need / 2 ** 20:.1f} MiB of "
                           f"data) but the file holds {max(have, 0) / 2 ** 20:.1f} MiB after it")


def scan_frame(path, weight: float = 1.0, exposure: float | None = None, *, allow_unsolved: bool = False) -> FrameInfo:
    """Read a frame's header and check its pixels once.

    With ``allow_unsolved``, a frame without a celestial WCS is returned with ``wcs=None`` and
    ``wcs_source="none"`` (for :func:`mosaic_jax.register_frames`) instead of being skipped.

    Raises:
      MosaicInputError: the file is unreadable or not FITS.
      FrameSkipped: it is FITS but unusable (no celestial WCS, all NaN, constant).
    """
    with _open(path) as hdul:
        i = _image_hdu(hdul)
        h = hdul[i].header
        shape = (int(h["NAXIS2"]), int(h["NAXIS1"]))
        cube = h["NAXIS"] == 3
        bayer = None if cube else _bayer(h)
        channels = int(h.get("NAXIS3", 1)) if cube else (3 if bayer else 1)
        source = "header"
        try:
            wcs = _celestial_wcs(h)
        except FrameSkipped:
            if not allow_unsolved:
                raise
            wcs, source = None, "none"
        _check_size(path, hdul, i)
        try:
            data = hdul[i].data
        except Exception as e:
            raise MosaicInputError(f"{path}: cannot read the image data ({e})") from None
        if data is None:
            raise FrameSkipped("empty image HDU")
        fin = np.isfinite(data)
        if not fin.any():
            raise FrameSkipped("all pixels are NaN")
        v = data[fin]
        if float(v.min()) == float(v.max()):
            raise FrameSkipped(f"constant frame (every pixel = {float(v.min()):g})")
        if exposure is None:
            for key in ("EXPTIME", "EXPOSURE"):
                e = h.get(key)
                if isinstance(e, (int, float)) and np.isfinite(e) and e > 0:
                    exposure = float(e)
                    break
        alpha = next((k for k, x in enumerate(hdul) if (x.name or "").upper() == "ALPHA"), None)
    return FrameInfo(str(path), i, shape, channels, bayer, wcs, float(weight), exposure, alpha, source)


@partial(aot.jit, static_argnames=("pattern",))
def _debayer(raw, pattern: str):
    """Bilinear demosaic: each colour plane is its masked samples filtered by the bilinear kernel,
    normalised by the filtered mask (exact for the standard 2x2 CFAs, and NaN-aware)."""
    H, W = raw.shape
    yy = jnp.arange(H)[:, None] % 2
    xx = jnp.arange(W)[None, :] % 2
    cell = {(0, 0): pattern[0], (0, 1): pattern[1], (1, 0): pattern[2], (1, 1): pattern[3]}
    ok = jnp.isfinite(raw)
    vals = jnp.where(ok, raw, 0.0)
    box = ((1.0, 2.0, 1.0), (2.0, 4.0, 2.0), (1.0, 2.0, 1.0))  # R and B: 2 or 4 nearest samples
    cross = ((0.0, 1.0, 0.0), (1.0, 4.0, 1.0), (0.0, 1.0, 0.0))  # G: its 4 nearest samples

    def filt(x, k):
        p = jnp.pad(x, 1)
        return sum(k[dy][dx] * p[dy:dy + H, dx:dx + W] for dy in range(3) for dx in range(3) if k[dy][dx])

    planes = []
    for colour in "RGB":
        m = jnp.zeros((H, W), bool)
        for (cy, cx), c in cell.items():
            if c == colour:
                m = m | ((yy == cy) & (xx == cx))
        m = m & ok
        k = cross if colour == "G" else box
        num, den = filt(jnp.where(m, vals, 0.0), k), filt(m.astype(jnp.float32), k)
        planes.append(jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), jnp.nan))
    return jnp.stack(planes, axis=-1)


def debayer_bilinear(raw, pattern: str) -> jax.Array:
    """Bilinear demosaic of a Bayer raw frame ``[H, W]`` -> float32 ``[H, W, 3]`` (R, G, B), on device.

    ``pattern`` is one of ``RGGB, BGGR, GRBG, GBRG``, read on the array as stored (row 0 first). At
    each pixel its own colour is kept; the others are the mean of the nearest samples of that colour
    (2 or 4 neighbours). NaN samples are left out of the means.
    """
    pat = str(pattern).upper()
    if pat not in BAYER_PATTERNS:
        raise ValueError(f"pattern must be one of {BAYER_PATTERNS}, got {pattern!r}")
    r = aot.device_array(raw, jnp.float32)
    if r.ndim != 2:
        raise ValueError(f"raw must be [H, W], got shape {r.shape}")
    return _debayer(r, pat)


def load_frame(info: FrameInfo) -> tuple[jax.Array, jax.Array | None]:
    """Pixels of a scanned frame -> ``(data [H, W, C] float32, alpha weight [H, W] or None)``.

    Bayer frames are debayered on device; colour cubes ``(3, H, W)`` become ``[H, W, 3]``. Pixels
    whose ``ALPHA`` is 0 read as NaN (no data); other alpha values are weights ``alpha / 255``.
    """
    with _open(info.path) as hdul:
        data = np.asarray(hdul[info.hdu].data, np.float32)
        alpha = None
        if info.alpha_hdu is not None:
            a = np.asarray(hdul[info.alpha_hdu].data, np.float32)
            if a.shape != info.shape:
                log.warning("[GRID] %s: ALPHA extension of shape %s does not match the image %s; ignored",
                            info.name, a.shape, info.shape)
            else:
                alpha = np.clip(np.where(np.isfinite(a), a, 0.0) / 255.0, 0.0, 1.0).astype(np.float32)
    if data.ndim == 3:
        x = aot.device_array(np.moveaxis(data, 0, -1))
    elif info.bayer:
        x = debayer_bilinear(data, info.bayer)
    else:
        x = aot.device_array(data)[..., None]
    if alpha is not None:
        x = jnp.where(aot.device_array(alpha)[..., None] > 0, x, jnp.nan)
        return x, aot.device_array(alpha)
    return x, None
