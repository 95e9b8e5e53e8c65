"""Tile starts, extraction, windows, blending (partition of unity), seam penalty mask."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import pc15jax as pc
from pc15jax._src.tiling import WINDOWS


@settings(max_examples=300, deadline=None)
@given(L=st.integers(1, 3000), size=st.integers(1, 300), data=st.data())
def test_tile_starts_properties(L, size, data):
    overlap = data.draw(st.integers(0, size - 1))
    s = pc.tile_starts(L, size, overlap)
    assert s[0] == 0
    if L <= size:
        assert list(s) == [0]
        return
    stride = size - overlap
    d = np.diff(s)
    assert np.all(d > 0), "starts must be strictly increasing"
    assert s[-1] == L - size, "the last tile ends exactly at the border"
    assert np.all(s <= L - size)
    assert np.all(d[:-1] == stride) and d[-1] <= stride, "no gaps: consecutive tiles overlap by >= overlap"


def test_spec_fields():
    spec = pc.tile_image(np.zeros((512, 768)), pc.TileGridCfg(size=256, overlap=24))
    assert (spec.H, spec.W, spec.size, spec.overlap) == (512, 768, 256, 24)
    assert spec.ys == (0, 232, 256) and spec.xs == (0, 232, 464, 512)
    assert (spec.ny, spec.nx, spec.count) == (3, 4, 12)
    assert spec.starts.shape == (12, 2) and tuple(spec.starts[5]) == (232, 232)


@pytest.mark.parametrize("bad", [dict(size=0), dict(size=8, overlap=8), dict(size=8, overlap=-1),
                                 dict(size=8.0, overlap=2), dict(size=True, overlap=0)])
def test_grid_validation(bad):
    with pytest.raises(ValueError):
        pc.TileGridCfg(**bad)


SHAPES = [(100, 77), (32, 32), (5, 40), (1, 1), (64, 200)]


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("shape", SHAPES)
def test_blend_constant_is_exact_everywhere(window, shape):
    spec = pc.tile_image(shape, pc.TileGridCfg(16, 5))
    tiles = np.full((spec.count, 16, 16), 0.37, np.float32)
    out = np.asarray(pc.blend(tiles, spec, shape[0], shape[1], window=window))
    assert out.shape == shape
    np.testing.assert_allclose(out, 0.37, atol=1e-6)  # borders included


@pytest.mark.parametrize("window", WINDOWS)
def test_extract_then_blend_is_identity(window):
    img = np.random.default_rng(1).random((70, 53)).astype(np.float32)
    spec = pc.tile_image(img, pc.TileGridCfg(16, 6))
    tiles = pc.extract_tiles(img, spec)
    np.testing.assert_array_equal(np.asarray(tiles[0]), img[:16, :16])
    np.testing.assert_allclose(np.asarray(pc.blend(tiles, spec, window=window)), img, atol=1e-6)


def _blend_reference(tiles, spec, window, window_params=None):
    """Plain numpy scatter-add of windowed tiles."""
    wy, wx = pc._src.tiling.tile_windows(spec, window, window_params)
    num = np.zeros((spec.Hp, spec.Wp))
    den = np.zeros((spec.Hp, spec.Wp))
    T = spec.size
    for i, y in enumerate(spec.ys):
        for j, x in enumerate(spec.xs):
            w = np.outer(wy[i], wx[j])
            num[y:y + T, x:x + T] += w * tiles[i * spec.nx + j]
            den[y:y + T, x:x + T] += w
    return (num / den)[: spec.H, : spec.W]


@pytest.mark.parametrize("window,params", [("hann", None), ("tukey", {"alpha": 0.3}), ("kaiser", {"beta": 8.0})])
def test_blend_matches_numpy_reference(window, params):
    spec = pc.tile_image((61, 90), pc.TileGridCfg(20, 7))
    tiles = np.random.default_rng(2).random((spec.count, 20, 20)).astype(np.float32)
    out = np.asarray(pc.blend(tiles, spec, window=window, window_params=params))
    np.testing.assert_allclose(out, _blend_reference(tiles, spec, window, params), atol=1e-5)


def test_windows_taper_only_towards_neighbours():
    spec = pc.tile_image((16, 40), pc.TileGridCfg(16, 4))
    wy, wx = pc._src.tiling.tile_windows(spec, "hann")
    np.testing.assert_array_equal(wy, 1.0)  # a single tile row: no taper vertically
    assert wx[0, 0] == 1.0 and wx[0, -1] < 0.5  # first tile: full weight at the image border
    assert wx[-1, -1] == 1.0 and wx[-1, 0] < 0.5
    assert np.all(wx > 0)


def test_window_param_validation():
    spec = pc.tile_image((40, 40), pc.TileGridCfg(16, 4))
    tiles = np.zeros((spec.count, 16, 16), np.float32)
    with pytest.raises(ValueError, match="window"):
        pc.blend(tiles, spec, window="gauss")
    with pytest.raises(ValueError, match="alpha"):
        pc.blend(tiles, spec, window="tukey", window_params={"alpha": 2.0})
    with pytest.raises(ValueError, match="unknown window_params"):
        pc.blend(tiles, spec, window="hann", window_params={"beta": 2.0})
    with pytest.raises(ValueError, match="shape"):
        pc.blend(tiles[:-1], spec)


def test_blend_jit_no_recompile_and_deterministic(trace_once):
    from pc15jax._src import tiling

    trace_once(tiling, "_blend", static_argnames=("spec", "window", "window_params"))
    spec = pc.tile_image((50, 50), pc.TileGridCfg(16, 4))
    rng = np.random.default_rng(3)
    a = rng.random((spec.count, 16, 16)).astype(np.float32)
    b = rng.random((spec.count, 16, 16)).astype(np.float32)
    pc.blend(a, spec)
    out1 = np.asarray(pc.blend(b, spec))
    np.testing.assert_array_equal(out1, np.asarray(pc.blend(b, spec)))


def test_seam_penalty_mask():
    m = pc.seam_penalty_mask(32, 8, power=1.5)
    assert m.shape == (32, 32) and m.dtype == np.float32
    assert np.all(m[8:24, 8:24] == 0.0)
    assert m[0, 16] == pytest.approx(1.0) and m[16, 31] == pytest.approx(1.0)
    row = m[16, :16]
    assert np.all(np.diff(row) <= 0), "rises monotonically towards the edge"
    np.testing.assert_array_equal(pc.seam_penalty_mask(16, 0), 0.0)
    with pytest.raises(ValueError):
        pc.seam_penalty_mask(16, 4, power=0.0)
