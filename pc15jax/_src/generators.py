"""The PC15 generators' pure render functions (the bank's ids, specs and grids: :mod:`.genspec`).

Data contract:
  * A generator renders a float32 ``[H, W]`` plane with values in ``[-1, 1]``.
  * Coordinates: ``u, v`` are centred and normalised by ``S = max(H, W)``, so
    ``u = (x + 0.5 - W / 2) / S`` lies in ``[-0.5, 0.5]`` on the long side; ``fx, fy``
    are ``(x + 0.5) / W`` and ``(y + 0.5) / H`` in ``(0, 1)``. ``y`` grows downwards.
    Frequencies are in cycles per ``S``.
  * Randomness comes only from an unsigned 32-bit seed through a counter-based integer
    hash of lattice coordinates (no global RNG): the same inputs give bit-identical output.

The generator id is what the bitstream stores; ``RENDER_FNS[id]`` renders it. Changing a render
function is a format change.
"""

from __future__ import annotations

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
    "MAX_PARAMS",
    "RENDER_FNS",
]

from shared_runtime import aot

from .genspec import (BANKS, MAX_PARAMS, Generator, ParamSpec, _BANK, get_generator,  # noqa: F401  (re-exported)
                      list_generators, refined)

TWO_PI = 2.0 * math.pi


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
# The render function of every generator id (the bank itself: :mod:`.genspec`)
# ----------------------------------------------------------------------------------------------

RENDER_FNS: tuple[Callable, ...] = (  # indexed by generator id
    _flat, _stripes, _waves, _rings, _spiral, _checker, _brick, _hexgrid, _diamond, _dots, _gabor,
    _linear_gradient, _radial_gradient, _value, _perlin_gen, _fbm_gen, _ridged, _worley, _marble,
    _wood, _starfield, _edge, _line, _corner, _cosine,
)
assert len(RENDER_FNS) == len(_BANK)



# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------


def render_one(gen: Generator, coords: Coords, pvec: jax.Array, seed: jax.Array) -> jax.Array:
    """Render one generator from a parameter vector ``pvec`` (float32 ``[P]``, spec order)."""
    p = {spec.name: pvec[i] for i, spec in enumerate(gen.params)}
    out = RENDER_FNS[gen.id](coords, p, jnp.asarray(seed, jnp.uint32))
    return jnp.clip(out.astype(jnp.float32), -1.0, 1.0)


@partial(aot.jit, static_argnames=("gen_id", "H", "W"))
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
