"""The global grid: one celestial WCS for the mosaic, square overlapping tiles cut from it, and the
frames assigned to each tile.

Every tile shares the global WCS (a tile is a pixel rectangle of the canvas), so tiles are pasted
into the canvas by offset, with no second reprojection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from .io import FrameInfo, MosaicInputError

__all__ = ["GridTile", "Grid", "make_grid", "frame_footprint", "tile_starts", "MAX_CANVAS_PIXELS"]

MAX_CANVAS_PIXELS = 1 << 30  # a canvas this large means frames spread over an unreasonable area of sky


@dataclass(frozen=True)
class GridTile:
    """A tile: canvas rows ``y0:y0+h``, columns ``x0:x0+w``, and the frames that touch it."""

    index: int
    y0: int
    x0: int
    h: int
    w: int
    frames: tuple[int, ...]

    def intersection(self, other: "GridTile") -> tuple[int, int, int, int] | None:
        """``(y0, x0, y1, x1)`` canvas rectangle shared with ``other``, or None."""
        y0, x0 = max(self.y0, other.y0), max(self.x0, other.x0)
        y1, x1 = min(self.y0 + self.h, other.y0 + other.h), min(self.x0 + self.w, other.x0 + other.w)
        return (y0, x0, y1, x1) if y1 > y0 and x1 > x0 else None


@dataclass(frozen=True)
class Grid:
    """The global canvas ``shape = (H, W)`` with its celestial ``wcs``, tile side and stride, and
    the tiles (those with at least one frame). ``footprints[f]`` is frame ``f``'s canvas bounding box
    ``(y0, x0, y1, x1)`` (exclusive ends)."""

    wcs: WCS
    shape: tuple[int, int]
    tile_size: int
    stride: int
    tiles: tuple[GridTile, ...]
    footprints: tuple[tuple[int, int, int, int], ...]

    def describe(self) -> dict:
        return {"canvas_shape": list(self.shape), "tile_size": self.tile_size, "stride": self.stride,
                "n_tiles": len(self.tiles), "pixel_scale_arcsec": float(proj_plane_pixel_scales(self.wcs).mean() * 3600),
                "tiles": [{"index": t.index, "y0": t.y0, "x0": t.x0, "h": t.h, "w": t.w, "frames": list(t.frames)}
                          for t in self.tiles]}


def tile_starts(length: int, size: int, stride: int) -> list[int]:
    """Starts ``min(i * stride, length - size)`` covering ``[0, length)``; never overshooting."""
    if size >= length:
        return [0]
    n = math.ceil((length - size) / stride) + 1
    return sorted({min(i * stride, length - size) for i in range(n)})


def outline(shape, wcs_in: WCS, wcs_out: WCS, samples: int = 33) -> np.ndarray:
    """Outline of an image of ``shape (H, W)`` with WCS ``wcs_in`` on the ``wcs_out`` grid:
    ``[4 * samples, 2]`` (x, y) pixel coordinates of points along its outer pixel edges (NaN where
    they do not map)."""
    H, W = shape
    t = np.linspace(0.0, 1.0, samples)
    xs = np.concatenate([-0.5 + t * W, np.full(samples, W - 0.5), W - 0.5 - t * W, np.full(samples, -0.5)])
    ys = np.concatenate([np.full(samples, -0.5), -0.5 + t * H, np.full(samples, H - 0.5), H - 0.5 - t * H])
    x, y = wcs_out.world_to_pixel_values(*wcs_in.pixel_to_world_values(xs, ys))
    return np.stack([x, y], axis=1)


def frame_footprint(info: FrameInfo, wcs_out: WCS, samples: int = 33) -> np.ndarray:
    """Outline of a frame on the output grid (:func:`outline`)."""
    return outline(info.shape, info.wcs, wcs_out, samples)


def _bbox(outline: np.ndarray, shape) -> tuple[int, int, int, int]:
    x, y = outline[:, 0], outline[:, 1]
    y0 = max(int(math.floor(np.nanmin(y) + 0.5)), 0)
    x0 = max(int(math.floor(np.nanmin(x) + 0.5)), 0)
    y1 = min(int(math.ceil(np.nanmax(y) + 0.5)), shape[0])
    x1 = min(int(math.ceil(np.nanmax(x) + 0.5)), shape[1])
    return y0, x0, y1, x1


def _farthest(frames) -> str:
    """Name of the frame whose centre lies farthest from the frames' mean direction."""
    vecs = []
    for f in frames:
        ra, dec = (float(v) for v in f.wcs.pixel_to_world_values((f.shape[1] - 1) / 2, (f.shape[0] - 1) / 2))
        ra, dec = math.radians(ra), math.radians(dec)
        vecs.append((math.cos(dec) * math.cos(ra), math.cos(dec) * math.sin(ra), math.sin(dec)))
    v = np.asarray(vecs)
    mean = v.mean(axis=0)
    return frames[int(np.argmin(v @ mean))].name


_SKY_SYSTEMS = {"RA--": ("RA---TAN", "DEC--TAN"), "GLON": ("GLON-TAN", "GLAT-TAN"), "ELON": ("ELON-TAN", "ELAT-TAN")}


def _sky_system(w: WCS) -> tuple | None:
    """``(lon ctype prefix, radesys, equinox)`` of a celestial WCS whose axes are (lon, lat), else None."""
    c = w.celestial
    if c.naxis != 2 or c.wcs.lng != 0 or c.wcs.lat != 1:
        return None
    lon = c.wcs.ctype[0][:4]
    if lon not in _SKY_SYSTEMS or any(u not in ("deg", "") for u in c.wcs.cunit):
        return None
    return lon, (c.wcs.radesys or "ICRS") if lon == "RA--" else "", c.wcs.equinox if np.isfinite(c.wcs.equinox) else None


def optimal_tan_wcs(shapes_and_wcs) -> tuple[WCS, tuple[int, int]]:
    """Distortion-free TAN WCS and ``(ny, nx)`` canvas covering every ``(shape, wcs)`` frame.

    The same rule as ``reproject.mosaicking.find_optimal_celestial_wcs(..., projection="TAN")``:
    tangent point at the mean direction of the frames' reference pixels, north up, the finest
    input pixel scale, the canvas the bounding box of the frames' pixel-edge corners. Computed
    with ``astropy.wcs`` alone (importing reproject costs a fresh process about a second); frames
    in different celestial systems go to reproject's own function, which converts between them.
    """
    items = [(tuple(int(v) for v in shape[-2:]), w) for shape, w in shapes_and_wcs]
    systems = {_sky_system(w) for _, w in items}
    if len(systems) != 1 or None in systems:
        from reproject.mosaicking import find_optimal_celestial_wcs

        return find_optimal_celestial_wcs(items, projection="TAN")
    (lon, radesys, equinox), = systems
    corners, refs, scales = [], [], []
    for (ny, nx), w in items:
        c = w.celestial
        xc, yc = np.array([-0.5, nx - 0.5, nx - 0.5, -0.5]), np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
        corners.append(np.stack(c.all_pix2world(xc, yc, 0), axis=1))
        refs.append(c.all_pix2world(np.asarray([c.wcs.crpix]), 1)[0])
        scales.append(float(np.min(np.abs(proj_plane_pixel_scales(c)))))
    if not np.all(np.isfinite(np.concatenate(corners))):
        raise ValueError("a frame's corners do not map to the sky")
    lo, la = np.radians(np.asarray(refs)).T
    v = np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=1).mean(axis=0)
    crval = (math.degrees(math.atan2(v[1], v[0])) % 360.0, math.degrees(math.atan2(v[2], math.hypot(v[0], v[1]))))
    out = WCS(naxis=2)
    out.wcs.ctype = list(_SKY_SYSTEMS[lon])
    out.wcs.cunit = ["deg", "deg"]
    if radesys:
        out.wcs.radesys = radesys
    if equinox is not None:
        out.wcs.equinox = equinox
    out.wcs.crval = crval
    res = min(scales)
    out.wcs.cdelt = (-res, res)
    out.wcs.crpix = (1.0, 1.0)
    out.wcs.set()
    xp, yp = out.all_world2pix(np.concatenate(corners), 1).T
    out.wcs.crpix = ((1.0 - xp.min()) + 0.5, (1.0 - yp.min()) + 0.5)
    out.wcs.set()
    return out, (int(round(yp.max() - yp.min())), int(round(xp.max() - xp.min())))


def make_grid(frames: list[FrameInfo], *, tile_size_factor: float = 4.0, overlap: float = 0.4,
              min_tile: int = 64) -> Grid:
    """Global WCS + canvas (:func:`optimal_tan_wcs`: distortion-free TAN, the union of the frames'
    footprints at the finest input pixel scale), square tiles of side
    ``tile_size_factor x`` the median frame side (in canvas pixels, at least ``min_tile``, at most
    the canvas) overlapping by the fraction ``overlap``, and every frame assigned to each tile its
    footprint's bounding box intersects."""
    if not frames:
        raise MosaicInputError("no usable frames")
    if not (tile_size_factor > 0 and math.isfinite(tile_size_factor)):
        raise ValueError(f"tile_size_factor must be a positive number, got {tile_size_factor}")
    if not (0 <= overlap < 0.9):
        raise ValueError(f"overlap must lie in [0, 0.9), got {overlap}")
    try:
        wcs, shape = optimal_tan_wcs([(f.shape, f.wcs) for f in frames])
    except ValueError as e:  # reproject: "cannot convert float NaN to integer" for far-apart frames
        raise MosaicInputError(f"the frames do not fit on one TAN canvas ({e}); the farthest from the others is "
                               f"{_farthest(frames)} (frames from distant fields?): build them separately") from None
    shape = (int(shape[0]), int(shape[1]))
    if shape[0] * shape[1] > MAX_CANVAS_PIXELS:
        raise MosaicInputError(f"the frames span a canvas of {shape[0]} x {shape[1]} pixels: they do not form one "
                               f"mosaic (frames from distant fields?)")
    out_scale = float(proj_plane_pixel_scales(wcs).mean())
    sides = [math.sqrt(f.shape[0] * f.shape[1]) * float(proj_plane_pixel_scales(f.wcs).mean()) / out_scale
             for f in frames]
    S = int(round(tile_size_factor * float(np.median(sides))))
    S = max(min(S, max(shape)), min(min_tile, max(shape)))
    stride = max(1, int(round(S * (1.0 - overlap))))
    outlines = [frame_footprint(f, wcs) for f in frames]
    for f, o in zip(frames, outlines):
        if not np.all(np.isfinite(o)):
            raise MosaicInputError(f"{f.name}: its footprint does not map onto the common TAN canvas (it lies too far "
                                   f"from the other frames: frames from distant fields?); build them separately")
    boxes = tuple(_bbox(o, shape) for o in outlines)
    tiles = []
    for y in tile_starts(shape[0], S, stride):
        for x in tile_starts(shape[1], S, stride):
            h, w = min(S, shape[0]), min(S, shape[1])
            hits = tuple(k for k, (a, b, c, d) in enumerate(boxes) if a < y + h and c > y and b < x + w and d > x)
            if hits:
                tiles.append(GridTile(len(tiles), y, x, h, w, hits))
    if not tiles:
        raise MosaicInputError("no frame overlaps the grid")
    return Grid(wcs, shape, S, stride, tuple(tiles), boxes)
