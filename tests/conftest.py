"""Test configuration: strict dtype promotion, and real data from ../shared/data when present."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

# Catch silent float64/int promotion in library code (equinox's tests do the same).
jax.config.update("jax_numpy_dtype_promotion", "strict")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _executable_cache_off_between_tests():
    """The command lines run in-process turn on the executable cache (``shared_runtime.aot``); each
    test starts with it off, as library use has it, whatever ran before."""
    from shared_runtime import aot

    aot.enable_executable_cache(None)
    yield
    aot.enable_executable_cache(None)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; the test is skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not available")
    return SHARED_DATA


@pytest.fixture(scope="session")
def camera() -> np.ndarray:
    """scikit-image's camera photograph, float32 [512, 512] in [0, 1]."""
    from skimage import data

    return (data.camera().astype(np.float32) / 255.0)


@pytest.fixture(scope="session")
def astronaut_gray() -> np.ndarray:
    """scikit-image's astronaut as luma, float32 [512, 512] in [0, 1]."""
    from skimage import color, data

    return color.rgb2gray(data.astronaut()).astype(np.float32)


@pytest.fixture
def trace_once(monkeypatch):
    """``trace_once(module, name, **jit_kwargs)`` puts in place of a module's jitted function a
    copy that raises ``AssertionError`` when it is traced a second time (``chex.assert_max_traces``):
    every later call must reuse the one compiled program."""
    import chex

    def install(module, name: str, **jit_kwargs):
        fn = getattr(module, name).__wrapped__
        chex.clear_trace_counter()
        monkeypatch.setattr(module, name, jax.jit(chex.assert_max_traces(fn, n=1), **jit_kwargs))

    yield install
    chex.clear_trace_counter()
