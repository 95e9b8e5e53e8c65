"""The executable cache (``shared_runtime.aot``): programs kept on disk give what ``jax.jit`` gives."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shared_runtime import aot

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def folder(tmp_path):
    aot.enable_executable_cache(tmp_path / "aot")
    yield tmp_path / "aot"
    aot.enable_executable_cache(None)


def _poly(x, n: int):
    return jnp.cumsum(x ** n) / (1.0 + jnp.arange(x.shape[0], dtype=x.dtype))


def test_off_by_default_is_plain_jit(tmp_path):
    assert aot.executable_cache_folder() is None
    f = aot.jit(_poly, static_argnames="n")
    x = jnp.linspace(0, 1, 9)
    np.testing.assert_array_equal(f(x, n=3), jax.jit(_poly, static_argnames="n")(x, n=3))
    assert f.__wrapped__ is _poly and f.lower(x, n=3) is not None  # the jitted function's API


def test_written_once_loaded_after_and_keyed_by_shape_and_statics(folder):
    x = jnp.linspace(0, 1, 9)
    want = jax.jit(_poly, static_argnames="n")(x, n=3)
    before = aot.cache_stats()
    np.testing.assert_array_equal(aot.jit(_poly, static_argnames="n")(x, n=3), want)
    assert len(list(folder.iterdir())) == 1
    again = aot.jit(_poly, static_argnames="n")  # as a fresh process would: nothing in memory
    np.testing.assert_array_equal(again(x, n=3), want)
    np.testing.assert_array_equal(again(x, 3), want)  # the static argument given by position
    assert aot.cache_stats()["loaded"] >= before["loaded"] + 1
    again(x, n=2)
    again(jnp.linspace(0, 1, 5), n=3)
    again(np.linspace(0, 1, 9), n=3)  # float64 host data: canonicalised like jax.jit's, same program
    assert len(list(folder.iterdir())) == 3


def test_calls_while_tracing_are_inlined_and_a_bad_file_is_rebuilt(folder):
    f = aot.jit(_poly, static_argnames="n")
    x = jnp.linspace(0, 1, 7)
    outer = jax.jit(lambda v: f(v, n=2) * 2.0)
    np.testing.assert_allclose(outer(x), 2.0 * _poly(x, 2), rtol=1e-6)
    assert not folder.exists() or not list(folder.iterdir())  # the inner call was traced, not cached
    f(x, n=2)
    (path,) = folder.iterdir()
    path.write_bytes(b"not an executable")
    np.testing.assert_array_equal(aot.jit(_poly, static_argnames="n")(x, n=2), jax.jit(_poly, static_argnames="n")(x, n=2))
    assert path.read_bytes() != b"not an executable"


def test_closures_over_values_are_never_cached(folder):
    scale = 3.0
    f = aot.jit(lambda v: v * scale)
    np.testing.assert_array_equal(f(jnp.ones(3)), 3.0 * np.ones(3))
    assert not folder.exists() or not list(folder.iterdir())


def test_device_array_is_jnp_asarray():
    for a, dt in ((np.linspace(0, 1, 5), None), (np.arange(4), None), (np.array([True, False]), None),
                  (np.arange(6.0).reshape(2, 3), np.float32), ([1, 2], np.int32), (2.5, np.float32)):
        got, want = aot.device_array(a, dt), jnp.asarray(a, dt)
        assert got.dtype == want.dtype and got.shape == want.shape and got.weak_type == want.weak_type
        np.testing.assert_array_equal(got, want)
    assert aot.device_array(1.5).weak_type  # a Python scalar stays weakly typed, as in jnp.asarray
    y = jnp.ones(3, jnp.int32)
    assert aot.device_array(y, np.float32).dtype == jnp.float32


SCRIPT = textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp, numpy as np
    from shared_runtime import aot, enable_compilation_cache
    from functools import partial

    @partial(aot.jit, static_argnames=("k",))
    def solve(a, b, k):  # a LAPACK custom call: its kernels must be registered before a loaded program runs
        return jnp.linalg.solve(a + k * jnp.eye(a.shape[0]), b), jnp.sort(b)

    enable_compilation_cache("AOT_TEST_CACHE", "aot-test")
    a = jnp.asarray(np.random.default_rng(0).random((6, 6)), jnp.float32)
    x, s = solve(a, jnp.arange(6.0), k=2)
    print(repr(np.asarray(x).tobytes().hex()), aot.cache_stats()["loaded"], aot.cache_stats()["compiled"])
""")


def test_a_fresh_process_loads_what_another_wrote(tmp_path):
    """The persistent compilation cache warm first (an executable it returns cannot be serialised
    again), then a process that writes the executable, then one that loads and runs it."""
    script = tmp_path / "prog.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, AOT_TEST_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    runs = []
    for aot_on in ("0", "1", "1"):
        r = subprocess.run([sys.executable, str(script)], env=dict(env, SHARED_RUNTIME_AOT=aot_on),
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        runs.append(r.stdout.split())
    assert runs[0][0] == runs[1][0] == runs[2][0]  # the same bits in all three processes
    assert runs[0][1:] == ["0", "0"] and runs[1][1:] == ["0", "1"] and runs[2][1:] == ["1", "0"]
