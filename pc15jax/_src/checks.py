"""Argument checks shared by the configuration objects: clear ``ValueError`` messages."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["finite", "integer"]


def finite(name: str, v, lo=None, hi=None, lo_open: bool = False) -> float:
    """``v`` as a finite float in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``), else ``ValueError`` naming ``name``."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {v}")
    if hi is not None and v > hi:
        raise ValueError(f"{name} must be <= {hi}, got {v}")
    return v


def integer(name: str, v, lo: int, hi: int | None = None) -> int:
    """``v`` as an int in ``[lo, hi]`` (bools refused), else ``ValueError`` naming ``name``."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo or (hi is not None and v > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be an integer {rng}, got {v!r}")
    return int(v)
