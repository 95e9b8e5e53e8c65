"""Pillow images -> the planes PC15 codes (shared by the command line and the Pillow plugin)."""

from __future__ import annotations

import numpy as np

_GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "F", "P")


def has_alpha(im) -> bool:
    """Whether ``im`` carries transparency, which PC15 does not code."""
    return "A" in im.getbands() or "a" in im.getbands() or (im.mode == "P" and "transparency" in im.info)


def coding_mode(im, gray: bool = False) -> str:
    """``"L"`` for grayscale sources (or ``gray``), else ``"RGB"``: a palette image is grey when
    its colours are."""
    if gray:
        return "L"
    if im.mode not in _GRAY_MODES:
        return "RGB"
    if im.mode != "P":
        return "L"
    rgb = np.asarray(im.convert("RGB"))
    return "L" if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]) else "RGB"
