"""The PC15 generator bank as data: stable ids, parameter specs and their quantisation grids.

This module imports no JAX: the stream's host side (parsing, symbol models, the dictionary cache
key) reads the bank from here. The render functions live in :mod:`pc15jax._src.generators`,
which re-exports everything below.

The generator id is what the bitstream stores. **The ``_BANK`` table is append-only**:
changing an id, a parameter order or a quantisation grid is a format change.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import numpy as np

__all__ = ["ParamSpec", "Generator", "list_generators", "BANKS", "MAX_PARAMS", "refined", "get_generator"]

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

    Its render function is ``pc15jax._src.generators.RENDER_FNS[id]``.
    """

    id: int
    name: str
    family: str
    params: tuple[ParamSpec, ...]
    n_seeds: int

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


# ----------------------------------------------------------------------------------------------
# The bank (append-only: the id is the bitstream symbol)
# ----------------------------------------------------------------------------------------------

P = ParamSpec
_ANG180 = dict(lo=0.0, hi=180.0, periodic=True)
_CENTRE = dict(lo=-0.5, hi=0.5)

_BANK: tuple[Generator, ...] = (
    Generator(0, "FLAT", "gradient", (P("level", -1.0, 1.0, 1, 0.0),), 0),
    Generator(1, "STRIPES", "pattern", (
        P("freq", 0.5, 8.0, 8, 4.0),
        P("angle_deg", levels=16, default=0.0, **_ANG180),
        P("phase", 0.0, 0.5, 4, 0.0, periodic=True),
        P("contrast", 0.0, 1.0, 1, 1.0),
    ), 0),
    Generator(2, "WAVES", "pattern", (
        P("freq", 1.0, 6.0, 6, 3.0),
        P("angle_deg", levels=8, default=0.0, **_ANG180),
        P("amplitude", 0.5, 2.0, 3, 1.0),
        P("wave_freq", 0.5, 4.0, 1, 1.0),
    ), 0),
    Generator(3, "RINGS", "pattern", (
        P("freq", 1.0, 6.0, 6, 3.0),
        P("cx", levels=5, default=0.0, **_CENTRE),
        P("cy", levels=5, default=0.0, **_CENTRE),
        P("phase", 0.0, 0.5, 2, 0.0, periodic=True),
    ), 0),
    Generator(4, "SPIRAL", "pattern", (
        P("arms", 1.0, 4.0, 4, 2.0, integer=True),
        P("twist", -6.0, 6.0, 5, 3.0),
        P("cx", -0.25, 0.25, 3, 0.0),
        P("cy", -0.25, 0.25, 3, 0.0),
    ), 0),
    Generator(5, "CHECKER", "pattern", (
        P("freq", 1.0, 6.0, 6, 2.0),
        P("angle_deg", 0.0, 90.0, 6, 0.0, periodic=True),
        P("softness", 0.05, 1.0, 1, 0.3),
    ), 0),
    Generator(6, "BRICK", "pattern", (
        P("freq", 1.0, 4.0, 4, 2.0),
        P("angle_deg", 0.0, 180.0, 2, 0.0, periodic=True),
        P("mortar", 0.05, 0.2, 2, 0.1),
    ), 0),
    Generator(7, "HEXGRID", "pattern", (
        P("freq", 1.0, 6.0, 6, 2.0),
        P("angle_deg", 0.0, 60.0, 2, 0.0, periodic=True),
    ), 0),
    Generator(8, "DIAMOND", "pattern", (
        P("freq", 1.0, 6.0, 6, 2.0),
        P("angle_deg", 0.0, 90.0, 2, 0.0, periodic=True),
    ), 0),
    Generator(9, "DOTS", "pattern", (
        P("freq", 1.0, 6.0, 6, 3.0),
        P("angle_deg", 0.0, 90.0, 2, 0.0, periodic=True),
        P("radius", 0.15, 0.4, 3, 0.25),
    ), 0),
    Generator(10, "GABOR", "pattern", (
        P("freq", 1.0, 8.0, 8, 3.0),
        P("angle_deg", levels=8, default=0.0, **_ANG180),
        P("sigma", 0.1, 0.3, 3, 0.2),
        P("phase", 0.0, 0.5, 2, 0.0, periodic=True),
        P("cx", -0.5, 0.5, 1, 0.0),
        P("cy", -0.5, 0.5, 1, 0.0),
    ), 0),
    Generator(11, "LINEAR_GRADIENT", "gradient", (
        P("angle_deg", levels=16, default=0.0, **_ANG180),
    ), 0),
    Generator(12, "RADIAL_GRADIENT", "gradient", (
        P("cx", levels=5, default=0.0, **_CENTRE),
        P("cy", levels=5, default=0.0, **_CENTRE),
        P("radius", 0.25, 1.5, 1, 0.75),
    ), 0),
    Generator(13, "VALUE_NOISE", "noise", (P("scale", 2.0, 8.0, 4, 4.0),), 8),
    Generator(14, "PERLIN", "noise", (P("scale", 2.0, 8.0, 4, 4.0),), 8),
    Generator(15, "FBM", "noise", (
        P("scale", 2.0, 6.0, 3, 4.0),
        P("octaves", 2.0, 4.0, 3, 3.0, integer=True),
        P("persistence", 0.3, 0.8, 1, 0.5),
    ), 8),
    Generator(16, "RIDGED", "noise", (
        P("scale", 2.0, 6.0, 3, 4.0),
        P("octaves", 1.0, 5.0, 1, 3.0, integer=True),
    ), 8),
    Generator(17, "WORLEY", "noise", (P("density", 2.0, 8.0, 4, 4.0),), 8),
    Generator(18, "MARBLE", "noise", (
        P("freq", 1.0, 4.0, 4, 2.0),
        P("angle_deg", levels=4, default=0.0, **_ANG180),
        P("turbulence", 0.5, 2.0, 2, 1.0),
    ), 4),
    Generator(19, "WOOD", "noise", (
        P("freq", 2.0, 8.0, 4, 4.0),
        P("turbulence", 0.05, 0.2, 2, 0.1),
        P("cx", -2.0, 2.0, 1, -0.8),
        P("cy", -2.0, 2.0, 1, -0.3),
    ), 4),
    Generator(20, "STARFIELD", "noise", (
        P("density", 3.0, 9.0, 3, 6.0),
        P("size", 0.01, 0.05, 2, 0.02),
    ), 8),
    Generator(21, "EDGE", "photo", (
        P("angle_deg", levels=24, default=0.0, **_ANG180),
        P("offset", -0.45, 0.45, 13, 0.0),
        P("softness", 0.01, 0.06, 3, 0.02),
    ), 0),
    Generator(22, "LINE", "photo", (
        P("angle_deg", levels=16, default=0.0, **_ANG180),
        P("offset", -0.45, 0.45, 13, 0.0),
        P("width", 0.02, 0.08, 3, 0.04),
    ), 0),
    Generator(23, "CORNER", "photo", (
        P("cx", -0.3, 0.3, 4, 0.0),
        P("cy", -0.3, 0.3, 4, 0.0),
        P("angle_deg", 0.0, 360.0, 8, 45.0, periodic=True),
        P("opening_deg", 60.0, 120.0, 3, 90.0),
        P("softness", 0.005, 0.1, 1, 0.02),
    ), 0),
    Generator(24, "COSINE", "photo", (
        P("kx", 0.0, 11.0, 12, 1.0, integer=True),
        P("ky", 0.0, 11.0, 12, 0.0, integer=True),
    ), 0),
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
