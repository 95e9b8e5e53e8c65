"""The PC15 generator bank: stable ids, parameter specs with quantisation grids, pure render functions.

Data contract:
  * A generator renders a float32 ``[H, W]`` plane with values in ``[-1, 1]``.
  * Coordinates: ``u, v`` are centred and normalised by ``S = max(H, W)``, so
    ``u = (x + 0.5 - W / 2) / S`` lies in ``[-0.5, 0.5]`` on the long side; ``fx, fy``
    are ``(x + 0.5) / W`` and ``(y + 0.5) / H`` in ``(0, 1)``. ``y`` grows downwards.
    Frequencies are in cycles per ``S``.
  * Randomness comes only from an unsigned 32-bit seed through a counter-based integer
    hash of lattice coordinates (no global RNG): the same inputs give bit-identical output.

The generator id is what the bitstream stores. **The ``_BANK`` table is append-only**:
changing an id, a parameter order or a quantisation grid is a format change.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "ParamSpec",
    "Generator",
    "list_generators",
    "BANKS",
    "refined",
    "get_generator",
    "render",
    "render_batch",
    "hash_u32",
]

TWO_PI = 2.0 * math.pi


# ----------------------------------------------------------------------------------------------
# Specs
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One named generator parameter and its quantisation grid.

    Attributes:
      name: parameter name as users pass it in ``params``.
      lo, hi: the range. Non-periodic parameters must lie in ``[lo, hi]``; periodic ones
        (angles, phases) accept any finite value and their grid covers ``[lo, hi)``.
      levels: number of quantisation levels searched and coded. ``1`` means the parameter
        is not searched: the codec always uses ``default``.
      default: value used when the caller omits the parameter.
      periodic: whether the grid wraps (``hi`` is excluded, neighbours wrap around).
      integer: whether values are rounded to integers (e.g. cosine orders).
    """

    name: str
    lo: float
    hi: float
    levels: int = 1
    default: float = 0.0
    periodic: bool = False
    integer: bool = False

    def grid(self) -> np.ndarray:
        """Quantisation grid, float32 ``[levels]``."""
        if self.levels == 1:
            return np.asarray([self.default], np.float32)
        i = np.arange(self.levels, dtype=np.float64)
        den = self.levels if self.periodic else self.levels - 1
        g = self.lo + (self.hi - self.lo) * i / den
        if self.integer:
            g = np.round(g)
        return g.astype(np.float32)

    def validate(self, value: float) -> float:
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"parameter {self.name!r} must be a real number, got {value!r}") from None
        if not math.isfinite(v):
            raise ValueError(f"parameter {self.name!r} must be finite, got {v}")
        if not self.periodic and not (self.lo <= v <= self.hi):
            raise ValueError(f"parameter {self.name!r}={v} is outside its range [{self.lo}, {self.hi}]")
        return v


@dataclasses.dataclass(frozen=True)
class Generator:
    """A procedural generator of the bank.

    Attributes:
      id: stable integer id (stored in the bitstream).
      name: upper-case name (``"STRIPES"``).
      family: ``"pattern"``, ``"gradient"``, ``"noise"``, ``"photo"`` (edges, lines, cosines).
      params: the parameter specs, in the order the bitstream codes their indices.
      n_seeds: number of seed symbols searched for this generator (0: it ignores the seed).
      fn: ``fn(coords, p, seed) -> [H, W]`` with ``p`` a dict of float32 scalars.
    """

    id: int
    name: str
    family: str
    params: tuple[ParamSpec, ...]
    n_seeds: int
    fn: Callable = dataclasses.field(repr=False, compare=False)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    @property
    def seeded(self) -> bool:
        return self.n_seeds > 0

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """Levels of every parameter, then the number of seeds (if seeded)."""
        return tuple(p.levels for p in self.params) + ((self.n_seeds,) if self.seeded else ())

    @property
    def grid_size(self) -> int:
        return int(np.prod(self.grid_shape, dtype=np.int64))

    def defaults(self) -> dict[str, float]:
        return {p.name: p.default for p in self.params}

    def resolve(self, params: Mapping[str, float] | None) -> np.ndarray:
        """Validate ``params`` (missing names take defaults) -> float32 ``[P]`` in spec order."""
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.param_names))
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {unknown} for generator {self.name}; "
                f"known: {list(self.param_names)}"
            )
        out = []
        for spec in self.params:
            v = spec.validate(params[spec.name]) if spec.name in params else spec.default
            out.append(round(v) if spec.integer else v)
        return np.asarray(out, np.float32).reshape(len(self.params))


class Coords:
    """Pixel coordinate planes for an ``[H, W]`` render (see module docstring)."""

    def __init__(self, H: int, W: int):
        S = float(max(H, W))
        x = jnp.arange(W, dtype=jnp.float32) + 0.5
        y = jnp.arange(H, dtype=jnp.float32) + 0.5
        self.u = jnp.broadcast_to(((x - W / 2.0) / S)[None, :], (H, W))
        self.v = jnp.broadcast_to(((y - H / 2.0) / S)[:, None], (H, W))
        self.fx = jnp.broadcast_to((x / W)[None, :], (H, W))
        self.fy = jnp.broadcast_to((y / H)[:, None], (H, W))


# ----------------------------------------------------------------------------------------------
# Counter-based hashing and noise primitives (uint32 arithmetic, identical on every backend)
# ----------------------------------------------------------------------------------------------


def hash_u32(x: jax.Array) -> jax.Array:
    """Integer avalanche hash (``lowbias32``, C. Wellons): uint32 -> uint32."""
    x = jnp.asarray(x, jnp.uint32)
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _lattice_hash(ix: jax.Array, iy: jax.Array, seed: jax.Array, salt: int = 0) -> jax.Array:
    """Hash of integer lattice coordinates (int32 arrays) and a uint32 seed."""
    ux = lax.bitcast_convert_type(ix.astype(jnp.int32), jnp.uint32)
    uy = lax.bitcast_convert_type(iy.astype(jnp.int32), jnp.uint32)
    s = hash_u32(seed ^ jnp.uint32(salt * 0x9E3779B9 & 0xFFFFFFFF))
    return hash_u32(ux ^ hash_u32(uy ^ s))


def _u01(h: jax.Array) -> jax.Array:
    """uint32 hash -> float32 uniform in [0, 1) (24 mantissa bits)."""
    return (h >> 8).astype(jnp.float32) * jnp.float32(1.0 / 16777216.0)


def _smooth(t):
    return t * t * (3.0 - 2.0 * t)


def _quintic(t):
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def _value_noise(x, y, seed):
    ix, iy = jnp.floor(x), jnp.floor(y)
    fx, fy = x - ix, y - iy
    ix, iy = ix.astype(jnp.int32), iy.astype(jnp.int32)

    def val(dx, dy):
        return _u01(_lattice_hash(ix + dx, iy + dy, seed)) * 2.0 - 1.0

    sx, sy = _smooth(fx), _smooth(fy)
    top = val(0, 0) * (1 - sx) + val(1, 0) * sx
    bot = val(0, 1) * (1 - sx) + val(1, 1) * sx
    return top * (1 - sy) + bot * sy


def _perlin(x, y, seed):
    ix, iy = jnp.floor(x), jnp.floor(y)
    fx, fy = x - ix, y - iy
    ix, iy = ix.astype(jnp.int32), iy.astype(jnp.int32)

    def grad(dx, dy):
        a = _u01(_lattice_hash(ix + dx, iy + dy, seed, salt=1)) * TWO_PI
        return jnp.cos(a) * (fx - dx) + jnp.sin(a) * (fy - dy)

    sx, sy = _quintic(fx), _quintic(fy)
    top = grad(0, 0) * (1 - sx) + grad(1, 0) * sx
    bot = grad(0, 1) * (1 - sx) + grad(1, 1) * sx
    return (top * (1 - sy) + bot * sy) * math.sqrt(2.0)


_MAX_OCTAVES = 5


def _fbm(x, y, seed, octaves, persistence, ridged=False):
    """Fractal sum of Perlin octaves; ``octaves`` may be traced (masked, fixed unroll)."""
    total = jnp.zeros_like(x)
    norm = jnp.zeros((), jnp.float32)
    for o in range(_MAX_OCTAVES):
        amp = persistence**o
        n = _perlin(x * (2.0**o), y * (2.0**o), seed + jnp.uint32(o))
        if ridged:
            n = (1.0 - jnp.abs(n)) ** 2 * 2.0 - 1.0
        on = jnp.asarray(o, jnp.float32) < octaves
        total = total + jnp.where(on, amp * n, 0.0)
        norm = norm + jnp.where(on, amp, 0.0)
    return total / jnp.maximum(norm, 1e-6)


def _cell_scan(x, y, seed, point_fn):
    """Visit the 3x3 lattice cells around each point; ``point_fn(d2, h) -> value``; max over cells."""
    ix, iy = jnp.floor(x).astype(jnp.int32), jnp.floor(y).astype(jnp.int32)
    best = None
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            cx, cy = ix + dx, iy + dy
            h1 = _lattice_hash(cx, cy, seed, salt=2)
            h2 = hash_u32(h1)
            h3 = hash_u32(h2)
            px = cx.astype(jnp.float32) + _u01(h1)
            py = cy.astype(jnp.float32) + _u01(h2)
            d2 = (x - px) ** 2 + (y - py) ** 2
            val = point_fn(d2, h3)
            best = val if best is None else jnp.maximum(best, val)
    return best


# ----------------------------------------------------------------------------------------------
# Generator functions: fn(c: Coords, p: dict[str, f32 scalar], seed: u32 scalar) -> [H, W]
# ----------------------------------------------------------------------------------------------


def _rot(c, angle_deg):
    t = jnp.deg2rad(angle_deg)
    ct, st = jnp.cos(t), jnp.sin(t)
    return c.u * ct + c.v * st, -c.u * st + c.v * ct


def _flat(c, p, seed):
    return jnp.full_like(c.u, p["level"])


def _stripes(c, p, seed):
    a, _ = _rot(c, p["angle_deg"])
    return p["contrast"] * jnp.cos(TWO_PI * (p["freq"] * a + p["phase"]))


def _waves(c, p, seed):
    a, b = _rot(c, p["angle_deg"])
    return jnp.sin(TWO_PI * p["freq"] * a + p["amplitude"] * jnp.sin(TWO_PI * p["wave_freq"] * b))


def _radius(c, p):
    return jnp.sqrt((c.u - p["cx"]) ** 2 + (c.v - p["cy"]) ** 2)


def _rings(c, p, seed):
    return jnp.cos(TWO_PI * (p["freq"] * _radius(c, p) + p["phase"]))


def _spiral(c, p, seed):
    theta = jnp.arctan2(c.v - p["cy"], c.u - p["cx"])
    return jnp.cos(p["arms"] * theta + TWO_PI * p["twist"] * _radius(c, p))


def _checker(c, p, seed):
    a, b = _rot(c, p["angle_deg"])
    k = 1.0 / p["softness"]
    s = jnp.sin(math.pi * p["freq"] * a) * jnp.sin(math.pi * p["freq"] * b)
    return jnp.tanh(k * s) / jnp.tanh(k)


def _brick(c, p, seed):
    a, b = _rot(c, p["angle_deg"])
    rows = (b + 0.5) * p["freq"]
    row = jnp.floor(rows)
    cols = (a + 0.5) * p["freq"] * 0.5 + 0.5 * jnp.mod(row, 2.0)
    dy = jnp.abs(rows - row - 0.5)  # 0 at the brick centre line, 0.5 at the mortar
    dx = jnp.abs(cols - jnp.floor(cols) - 0.5)
    edge = jnp.maximum(dy, dx)
    half = 0.5 - p["mortar"]
    return -jnp.tanh((edge - half) / 0.03)


def _hexgrid(c, p, seed):
    a, b = _rot(c, p["angle_deg"])
    k = TWO_PI * p["freq"]
    s = 0.0
    for t in (0.0, 2.0 * math.pi / 3.0, 4.0 * math.pi / 3.0):
        s = s + jnp.cos(k * (a * math.cos(t) + b * math.sin(t)))
    return (s + 1.5) / 2.25 - 1.0


def _diamond(c, p, seed):
    a, b = _rot(c, p["angle_deg"])
    f = p["freq"]
    da = jnp.abs(a * f - jnp.floor(a * f) - 0.5)
    db = jnp.abs(b * f - jnp.floor(b * f) - 0.5)
    return 2.0 * (da + db) - 1.0


def _dots(c, p, seed):
    a, b = _rot(c, p["angle_deg"])
    f = p["freq"]
    da = a * f - jnp.floor(a * f) - 0.5
    db = b * f - jnp.floor(b * f) - 0.5
    d = jnp.sqrt(da * da + db * db)
    return -jnp.tanh((d - p["radius"]) / 0.04)


def _gabor(c, p, seed):
    a, _ = _rot(c, p["angle_deg"])
    r2 = (c.u - p["cx"]) ** 2 + (c.v - p["cy"]) ** 2
    env = jnp.exp(-r2 / (2.0 * p["sigma"] ** 2))
    return env * jnp.cos(TWO_PI * (p["freq"] * a + p["phase"]))


def _linear_gradient(c, p, seed):
    a, _ = _rot(c, p["angle_deg"])
    return a / math.sqrt(0.5)


def _radial_gradient(c, p, seed):
    return 1.0 - 2.0 * jnp.clip(_radius(c, p) / p["radius"], 0.0, 1.0)


def _noise_xy(c, scale):
    return (c.u + 0.5) * scale, (c.v + 0.5) * scale


def _value(c, p, seed):
    x, y = _noise_xy(c, p["scale"])
    return _value_noise(x, y, seed)


def _perlin_gen(c, p, seed):
    x, y = _noise_xy(c, p["scale"])
    return _perlin(x, y, seed)


def _fbm_gen(c, p, seed):
    x, y = _noise_xy(c, p["scale"])
    return 1.4 * _fbm(x, y, seed, p["octaves"], p["persistence"])


def _ridged(c, p, seed):
    x, y = _noise_xy(c, p["scale"])
    return _fbm(x, y, seed, p["octaves"], 0.5, ridged=True)


def _worley(c, p, seed):
    x, y = _noise_xy(c, p["density"])
    neg_d = _cell_scan(x, y, seed, lambda d2, h: -jnp.sqrt(d2))
    return 1.0 - 2.0 * jnp.clip(-neg_d, 0.0, 1.0)


def _marble(c, p, seed):
    a, _ = _rot(c, p["angle_deg"])
    x, y = _noise_xy(c, 4.0)
    turb = _fbm(x, y, seed, 4.0, 0.5)
    return jnp.sin(TWO_PI * p["freq"] * a + p["turbulence"] * turb * math.pi)


def _wood(c, p, seed):
    x, y = _noise_xy(c, 4.0)
    r = _radius(c, p) + p["turbulence"] * _perlin(x, y, seed)
    return jnp.sin(TWO_PI * p["freq"] * r)


def _starfield(c, p, seed):
    d = p["density"]
    x, y = _noise_xy(c, d)
    sig2 = (p["size"] * d) ** 2

    def star(d2, h):
        present = _u01(h) < 0.6
        bright = 0.3 + 0.7 * _u01(hash_u32(h))
        return jnp.where(present, bright * jnp.exp(-d2 / (2.0 * sig2)), 0.0)

    return 2.0 * _cell_scan(x, y, seed, star) - 1.0


def _edge(c, p, seed):
    a, _ = _rot(c, p["angle_deg"])
    return jnp.tanh((a - p["offset"]) / p["softness"])


def _line(c, p, seed):
    a, _ = _rot(c, p["angle_deg"])
    return 2.0 * jnp.exp(-(((a - p["offset"]) / p["width"]) ** 2)) - 1.0


def _corner(c, p, seed):
    t = jnp.deg2rad(p["angle_deg"])
    h = jnp.deg2rad(p["opening_deg"]) * 0.5
    du, dv = c.u - p["cx"], c.v - p["cy"]
    e1 = du * jnp.sin(t + h) - dv * jnp.cos(t + h)
    e2 = -du * jnp.sin(t - h) + dv * jnp.cos(t - h)
    s = p["softness"]
    return jnp.minimum(jnp.tanh(e1 / s), jnp.tanh(e2 / s))


def _cosine(c, p, seed):
    return jnp.cos(math.pi * p["kx"] * c.fx) * jnp.cos(math.pi * p["ky"] * c.fy)


# ----------------------------------------------------------------------------------------------
# The bank (append-only: the id is the bitstream symbol)
# ----------------------------------------------------------------------------------------------

P = ParamSpec
_ANG180 = dict(lo=0.0, hi=180.0, periodic=True)
_CENTRE = dict(lo=-0.5, hi=0.5)

_BANK: tuple[Generator, ...] = (
    Generator(0, "FLAT", "gradient", (P("level", -1.0, 1.0, 1, 0.0),), 0, _flat),
    Generator(1, "STRIPES", "pattern", (
        P("freq", 0.5, 8.0, 8, 4.0),
        P("angle_deg", levels=16, default=0.0, **_ANG180),
        P("phase", 0.0, 0.5, 4, 0.0, periodic=True),
        P("contrast", 0.0, 1.0, 1, 1.0),
    ), 0, _stripes),
    Generator(2, "WAVES", "pattern", (
        P("freq", 1.0, 6.0, 6, 3.0),
        P("angle_deg", levels=8, default=0.0, **_ANG180),
        P("amplitude", 0.5, 2.0, 3, 1.0),
        P("wave_freq", 0.5, 4.0, 1, 1.0),
    ), 0, _waves),
    Generator(3, "RINGS", "pattern", (
        P("freq", 1.0, 6.0, 6, 3.0),
        P("cx", levels=5, default=0.0, **_CENTRE),
        P("cy", levels=5, default=0.0, **_CENTRE),
        P("phase", 0.0, 0.5, 2, 0.0, periodic=True),
    ), 0, _rings),
    Generator(4, "SPIRAL", "pattern", (
        P("arms", 1.0, 4.0, 4, 2.0, integer=True),
        P("twist", -6.0, 6.0, 5, 3.0),
        P("cx", -0.25, 0.25, 3, 0.0),
        P("cy", -0.25, 0.25, 3, 0.0),
    ), 0, _spiral),
    Generator(5, "CHECKER", "pattern", (
        P("freq", 1.0, 6.0, 6, 2.0),
        P("angle_deg", 0.0, 90.0, 6, 0.0, periodic=True),
        P("softness", 0.05, 1.0, 1, 0.3),
    ), 0, _checker),
    Generator(6, "BRICK", "pattern", (
        P("freq", 1.0, 4.0, 4, 2.0),
        P("angle_deg", 0.0, 180.0, 2, 0.0, periodic=True),
        P("mortar", 0.05, 0.2, 2, 0.1),
    ), 0, _brick),
    Generator(7, "HEXGRID", "pattern", (
        P("freq", 1.0, 6.0, 6, 2.0),
        P("angle_deg", 0.0, 60.0, 2, 0.0, periodic=True),
    ), 0, _hexgrid),
    Generator(8, "DIAMOND", "pattern", (
        P("freq", 1.0, 6.0, 6, 2.0),
        P("angle_deg", 0.0, 90.0, 2, 0.0, periodic=True),
    ), 0, _diamond),
    Generator(9, "DOTS", "pattern", (
        P("freq", 1.0, 6.0, 6, 3.0),
        P("angle_deg", 0.0, 90.0, 2, 0.0, periodic=True),
        P("radius", 0.15, 0.4, 3, 0.25),
    ), 0, _dots),
    Generator(10, "GABOR", "pattern", (
        P("freq", 1.0, 8.0, 8, 3.0),
        P("angle_deg", levels=8, default=0.0, **_ANG180),
        P("sigma", 0.1, 0.3, 3, 0.2),
        P("phase", 0.0, 0.5, 2, 0.0, periodic=True),
        P("cx", -0.5, 0.5, 1, 0.0),
        P("cy", -0.5, 0.5, 1, 0.0),
    ), 0, _gabor),
    Generator(11, "LINEAR_GRADIENT", "gradient", (
        P("angle_deg", levels=16, default=0.0, **_ANG180),
    ), 0, _linear_gradient),
    Generator(12, "RADIAL_GRADIENT", "gradient", (
        P("cx", levels=5, default=0.0, **_CENTRE),
        P("cy", levels=5, default=0.0, **_CENTRE),
        P("radius", 0.25, 1.5, 1, 0.75),
    ), 0, _radial_gradient),
    Generator(13, "VALUE_NOISE", "noise", (P("scale", 2.0, 8.0, 4, 4.0),), 8, _value),
    Generator(14, "PERLIN", "noise", (P("scale", 2.0, 8.0, 4, 4.0),), 8, _perlin_gen),
    Generator(15, "FBM", "noise", (
        P("scale", 2.0, 6.0, 3, 4.0),
        P("octaves", 2.0, 4.0, 3, 3.0, integer=True),
        P("persistence", 0.3, 0.8, 1, 0.5),
    ), 8, _fbm_gen),
    Generator(16, "RIDGED", "noise", (
        P("scale", 2.0, 6.0, 3, 4.0),
        P("octaves", 1.0, 5.0, 1, 3.0, integer=True),
    ), 8, _ridged),
    Generator(17, "WORLEY", "noise", (P("density", 2.0, 8.0, 4, 4.0),), 8, _worley),
    Generator(18, "MARBLE", "noise", (
        P("freq", 1.0, 4.0, 4, 2.0),
        P("angle_deg", levels=4, default=0.0, **_ANG180),
        P("turbulence", 0.5, 2.0, 2, 1.0),
    ), 4, _marble),
    Generator(19, "WOOD", "noise", (
        P("freq", 2.0, 8.0, 4, 4.0),
        P("turbulence", 0.05, 0.2, 2, 0.1),
        P("cx", -2.0, 2.0, 1, -0.8),
        P("cy", -2.0, 2.0, 1, -0.3),
    ), 4, _wood),
    Generator(20, "STARFIELD", "noise", (
        P("density", 3.0, 9.0, 3, 6.0),
        P("size", 0.01, 0.05, 2, 0.02),
    ), 8, _starfield),
    Generator(21, "EDGE", "photo", (
        P("angle_deg", levels=24, default=0.0, **_ANG180),
        P("offset", -0.45, 0.45, 13, 0.0),
        P("softness", 0.01, 0.06, 3, 0.02),
    ), 0, _edge),
    Generator(22, "LINE", "photo", (
        P("angle_deg", levels=16, default=0.0, **_ANG180),
        P("offset", -0.45, 0.45, 13, 0.0),
        P("width", 0.02, 0.08, 3, 0.04),
    ), 0, _line),
    Generator(23, "CORNER", "photo", (
        P("cx", -0.3, 0.3, 4, 0.0),
        P("cy", -0.3, 0.3, 4, 0.0),
        P("angle_deg", 0.0, 360.0, 8, 45.0, periodic=True),
        P("opening_deg", 60.0, 120.0, 3, 90.0),
        P("softness", 0.005, 0.1, 1, 0.02),
    ), 0, _corner),
    Generator(24, "COSINE", "photo", (
        P("kx", 0.0, 11.0, 12, 1.0, integer=True),
        P("ky", 0.0, 11.0, 12, 0.0, integer=True),
    ), 0, _cosine),
)
del P

_BY_NAME = {g.name: g for g in _BANK}
MAX_PARAMS = max(len(g.params) for g in _BANK)
assert [g.id for g in _BANK] == list(range(len(_BANK))), "generator ids must be 0..G-1 in order"


def refined(gen: Generator, seed_factor: int = 4) -> Generator:
    """``gen`` with every searched non-integer grid about twice as fine (periodic ``2L`` levels,
    others ``2L - 1``: standard level ``i`` is fine level ``2 i``) and ``seed_factor`` times the
    seeds (the standard seed symbols keep their seeds)."""
    params = []
    for p in gen.params:
        if p.levels > 1 and not p.integer:
            p = dataclasses.replace(p, levels=2 * p.levels if p.periodic else 2 * p.levels - 1)
        params.append(p)
    return dataclasses.replace(gen, params=tuple(params), n_seeds=gen.n_seeds * seed_factor)


BANKS = ("standard", "large")  # "large": every generator refined (8.07x the atoms at 16x16)
_BANKS = {"standard": _BANK, "large": tuple(refined(g) for g in _BANK)}


def list_generators(bank: str = "standard") -> tuple[Generator, ...]:
    """All generators of ``bank`` (``"standard"`` or ``"large"``), ordered by their stable id. The
    banks share ids, names, parameters and renders; only their grids and seed counts differ."""
    try:
        return _BANKS[bank]
    except (KeyError, TypeError):
        raise ValueError(f"unknown dictionary {bank!r}; expected one of {BANKS}") from None


def get_generator(name_or_id: str | int, bank: str = "standard") -> Generator:
    """Look a generator of ``bank`` up by (case-insensitive) name or integer id; ``ValueError`` if unknown."""
    gens = list_generators(bank)
    if isinstance(name_or_id, (int, np.integer)) and not isinstance(name_or_id, bool):
        if 0 <= int(name_or_id) < len(gens):
            return gens[int(name_or_id)]
        raise ValueError(f"unknown generator id {name_or_id}; valid ids are 0..{len(gens) - 1}")
    if isinstance(name_or_id, str) and name_or_id.upper() in _BY_NAME:
        return gens[_BY_NAME[name_or_id.upper()].id]
    raise ValueError(f"unknown generator {name_or_id!r}; known: {sorted(_BY_NAME)}")


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------


def render_one(gen: Generator, coords: Coords, pvec: jax.Array, seed: jax.Array) -> jax.Array:
    """Render one generator from a parameter vector ``pvec`` (float32 ``[P]``, spec order)."""
    p = {spec.name: pvec[i] for i, spec in enumerate(gen.params)}
    out = gen.fn(coords, p, jnp.asarray(seed, jnp.uint32))
    return jnp.clip(out.astype(jnp.float32), -1.0, 1.0)


@partial(jax.jit, static_argnames=("gen_id", "H", "W"))
def _render_batch(pvecs: jax.Array, seeds: jax.Array, *, gen_id: int, H: int, W: int) -> jax.Array:
    gen = _BANK[gen_id]
    coords = Coords(H, W)
    return jax.vmap(lambda pv, s: render_one(gen, coords, pv, s))(pvecs, seeds)


def _check_size(H, W):
    for n, v in (("H", H), ("W", W)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{n} must be a positive integer, got {v!r}")


def _seed_u32(seed) -> np.uint32:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    return np.uint32(seed)


def render(name: str | int, H: int = 256, W: int = 256, params: Mapping[str, float] | None = None,
           *, seed: int = 0) -> jax.Array:
    """Render one generator.

    Args:
      name: generator name (``"STRIPES"``) or stable id.
      H, W: output size in pixels.
      params: parameter values by name; missing ones take the generator's defaults.
      seed: unsigned 32-bit seed (used by the noise family only).

    Returns:
      float32 ``[H, W]`` with values in ``[-1, 1]``.

    Raises:
      ValueError: unknown generator or parameter name, out-of-range value, bad size or seed.

    Examples:
      >>> import pc15jax as pc
      >>> img = pc.render("STRIPES", 64, 64, {"freq": 6.0, "angle_deg": 15.0, "phase": 0.25})
      >>> img.shape, str(img.dtype)
      ((64, 64), 'float32')
    """
    gen = get_generator(name)
    _check_size(H, W)
    pvec = gen.resolve(params)
    return _render_batch(jnp.asarray(pvec[None]), jnp.asarray([_seed_u32(seed)]),
                         gen_id=gen.id, H=int(H), W=int(W))[0]


def render_batch(name: str | int, H: int, W: int, params: Mapping[str, np.ndarray],
                 seeds: np.ndarray | None = None) -> jax.Array:
    """Render many candidates of one generator at once (a ``vmap``, not a loop).

    Args:
      name: generator name or id.
      H, W: output size.
      params: parameter name -> array ``[B]`` of values (missing names take defaults).
      seeds: uint32 ``[B]`` (defaults to zeros).

    Returns:
      float32 ``[B, H, W]`` in ``[-1, 1]``.
    """
    gen = get_generator(name)
    _check_size(H, W)
    params = dict(params)
    unknown = sorted(set(params) - set(gen.param_names))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for generator {gen.name}")
    sizes = {np.asarray(v).reshape(-1).shape[0] for v in params.values()}
    if seeds is not None:
        sizes.add(np.asarray(seeds).reshape(-1).shape[0])
    if len(sizes) > 1:
        raise ValueError(f"all parameter arrays and seeds must have the same length, got {sorted(sizes)}")
    B = sizes.pop() if sizes else 1
    cols = []
    for spec in gen.params:
        if spec.name in params:
            vals = np.asarray(params[spec.name], np.float64).reshape(-1)
            if not np.all(np.isfinite(vals)):
                raise ValueError(f"parameter {spec.name!r} must be finite")
            if not spec.periodic and (vals.min() < spec.lo or vals.max() > spec.hi):
                raise ValueError(f"parameter {spec.name!r} has values outside [{spec.lo}, {spec.hi}]")
            if spec.integer:
                vals = np.round(vals)
            cols.append(vals.astype(np.float32))
        else:
            cols.append(np.full((B,), spec.default, np.float32))
    pvecs = np.stack(cols, axis=1).reshape(B, len(gen.params))
    seeds = np.zeros((B,), np.uint32) if seeds is None else np.asarray(seeds).astype(np.uint32).reshape(B)
    return _render_batch(jnp.asarray(pvecs), jnp.asarray(seeds), gen_id=gen.id, H=int(H), W=int(W))
