"""The host decoder: NumPy reconstruction against the JAX reference, and a decode without JAX."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pc15jax as pc
from pc15jax._src import color, decoder
from pc15jax._src.search.symbols import render_symbols
from pc15jax._src.tiling import blend


@pytest.mark.parametrize("window,params", [("hann", None), ("tukey", {"alpha": 0.5}), ("kaiser", {"beta": 3.0})])
@pytest.mark.parametrize("shape,tile,overlap", [((37, 50), 12, 3), ((5, 9), 8, 1), ((64, 64), 16, 1)])
def test_host_blend_matches_the_jax_blend(shape, tile, overlap, window, params):
    spec = pc.tile_image(shape, pc.TileGridCfg(tile, overlap))
    tiles = np.random.default_rng(0).random((spec.count, tile, tile)).astype(np.float32)
    want = np.asarray(blend(tiles, spec, window=window, window_params=params))
    got = decoder.blend_tiles(tiles, spec, window, params)
    assert got.dtype == np.float32 and got.shape == shape
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    flat = decoder.blend_tiles(np.full_like(tiles, 0.25), spec, window, params)
    np.testing.assert_allclose(flat, 0.25, atol=1e-6)  # a partition of unity


def test_host_render_matches_the_jax_render():
    rng = np.random.default_rng(1)
    A, n, N, K = 40, 64, 30, 5
    atoms = rng.standard_normal((A, n)).astype(np.float32)
    sw = (1.0 + rng.random(n)).astype(np.float32)
    atom = rng.integers(0, A, (N, K))
    coef = rng.integers(-40, 40, (N, K)) * (rng.random((N, K)) < 0.7)
    dc = rng.integers(0, 129, N)
    want = np.asarray(render_symbols(jnp.asarray(atom, jnp.int32), jnp.asarray(coef, jnp.int32), jnp.asarray(dc, jnp.int32),
                                     jnp.asarray(atoms), jnp.asarray(sw), jnp.float32(1 / 32), jnp.float32(1 / 128)))
    got = decoder.render_tiles(atoms, atom, coef, dc, sw, 1 / 32, 1 / 128)
    assert got.shape == (N, 8, 8) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("h,w", [(1, 1), (1, 5), (6, 4), (17, 23)])
def test_host_chroma_upsampling_matches_jax_image_resize(h, w):
    p = np.random.default_rng(2).random((h, w)).astype(np.float32)
    want = np.asarray(jax.image.resize(p, (2 * h, 2 * w), method="linear"))
    np.testing.assert_allclose(color.upsample_420(p, 2 * h, 2 * w), want, rtol=0, atol=3e-7)
    assert color.upsample_420(p, 2 * h - 1, 2 * w).shape == (2 * h - 1, 2 * w)


def test_host_colour_inverse_matches_float64():
    ycc = np.random.default_rng(3).random((9, 7, 3)).astype(np.float32)
    want = np.clip((ycc.astype(np.float64) - [0, 0.5, 0.5]) @ np.linalg.inv(color._FWD.astype(np.float64)).T, 0, 1)
    np.testing.assert_allclose(color.ycbcr_to_rgb(ycc), want, rtol=0, atol=2e-6)


_DECODE_WITHOUT_JAX = """
import runpy, sys
sys.argv = ["pc15jax"] + sys.argv[1:]
try:
    runpy.run_module("pc15jax", run_name="__main__")
except SystemExit as e:
    code = e.code
print("JAX_IMPORTED" if "jax" in sys.modules else "NO_JAX", code)
"""


def test_cli_decodes_and_describes_without_importing_jax(tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), PC15_DICT_CACHE="", PC15_CACHE_DIR="")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    stream = tmp_path / "x.pc15"
    recon = tmp_path / "recon.png"
    enc = subprocess.run([sys.executable, "-m", "pc15jax", "encode", "-o", str(stream), "--tile", "16", "--lambda",
                          "0.5", "--recon", str(recon)], capture_output=True, text=True, env=env, timeout=600)
    assert enc.returncode == 0, enc.stderr
    assert list((tmp_path / "cache" / "pc15jax" / "dictionaries").glob("dict_16_1_*.npz"))  # the encoder left the atoms
    out = tmp_path / "x.png"
    for args in (["decode", str(stream), "-o", str(out)], ["info", str(stream), "--json"]):
        # a normal exit (SystemExit), so that the script can look at its modules afterwards
        run = subprocess.run([sys.executable, "-c", _DECODE_WITHOUT_JAX, *args], capture_output=True, text=True,
                             env=dict(env, SHARED_RUNTIME_FULL_EXIT="1"), timeout=600)
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip().splitlines()[-1] == "NO_JAX 0", run.stdout + run.stderr
        if args[0] == "info":
            assert json.loads(run.stdout.strip().splitlines()[0])["tile"] == 16
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(recon)))  # decode == the encoder's recon
