"""mosaic_jax photometric core: tile scaling (unbiased under noise in both tiles), masks, reference
method, global solve, RGB equalisation. Synthetic skies with known gains/offsets and NaN holes."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

import mosaic_jax as mj


def _sky(H=160, W=160, seed=0, n_stars=40, C=1):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    base = 100 + 25 * np.exp(-((yy - H / 2) ** 2 + (xx - W / 3) ** 2) / (2 * (H / 4) ** 2)) + 0.05 * xx
    for _ in range(n_stars):
        y, x = rng.uniform(0, H), rng.uniform(0, W)
        base = base + 300 * rng.random() * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.6 ** 2))
    return np.stack([base * (1 + 0.1 * c) for c in range(C)], axis=-1)


def _pair(sky, gains, offsets, sigma, seed=1, holes=True):
    rng = np.random.default_rng(seed)
    ref = sky + rng.normal(0, sigma, sky.shape)
    tgt = (sky - np.asarray(offsets)) / np.asarray(gains) + rng.normal(0, sigma, sky.shape)
    if holes:
        tgt[20:35, 40:80] = np.nan
        ref[100:110, :] = np.nan
    return ref.astype(np.float32), tgt.astype(np.float32)


@pytest.mark.parametrize("C,gains,offsets", [(1, [1.3], [-15.0]), (3, [0.8, 1.1, 1.6], [5.0, -3.0, 20.0])])
def test_scaling_recovers_gain_and_offset(C, gains, offsets):
    sky = _sky(C=C)
    sigma = 2.0
    ref, tgt = _pair(sky, gains, offsets, sigma)
    g, o = mj.compute_tile_photometric_scaling(ref, tgt)
    assert g.dtype == jnp.float32 and o.dtype == jnp.float32 and g.shape == (C,)
    np.testing.assert_allclose(np.asarray(g), gains, rtol=0.005)
    assert np.all(np.abs(np.asarray(o) - offsets) < 0.1 * sigma)


@pytest.mark.parametrize("seed", range(4))
def test_unbiased_where_ordinary_least_squares_is_not(seed):
    sky = _sky(seed=seed, n_stars=20)
    sigma = 3.0  # realistic: noise is a few percent of the overlap's variance
    ref, tgt = _pair(sky, [1.2], [10.0], sigma, seed=seed + 10, holes=False)
    ols = np.polyfit(tgt.ravel(), ref.ravel(), 1)[0]
    g, _ = mj.compute_tile_photometric_scaling(ref, tgt)
    assert ols / 1.2 - 1 < -0.02, "the test field must make OLS visibly biased (errors in both variables)"
    assert abs(float(g[0]) / 1.2 - 1) < 0.005


def test_mask_restricts_the_fit_and_empty_mask_is_identity(caplog):
    sky = _sky()
    ref, tgt = _pair(sky, [1.5], [0.0], 1.0, holes=False)
    bad = tgt.copy()
    bad[:, 80:] = bad[:, 80:] * 3.0  # the right half disagrees
    mask = np.zeros(sky.shape[:2], bool)
    mask[:, :80] = True
    g, _ = mj.compute_tile_photometric_scaling(ref, bad, mask=mask)
    assert abs(float(g[0]) - 1.5) < 0.01
    with caplog.at_level(logging.INFO, logger="mosaic_jax"):
        g, o = mj.compute_tile_photometric_scaling(ref, tgt, mask=np.zeros_like(mask), tile_id=7)
    assert float(g[0]) == 1.0 and float(o[0]) == 0.0
    assert "[GRID] tile 7 channel 0: 0 valid overlap pixels" in caplog.text
    g, o = mj.compute_tile_photometric_scaling(np.full_like(ref, np.nan), tgt)
    assert np.all(np.isfinite(np.asarray(g))) and float(g[0]) == 1.0


def test_no_common_signal_gives_gain_one_and_median_offset(caplog):
    rng = np.random.default_rng(5)
    ref = (100 + rng.normal(0, 1, (80, 80, 1))).astype(np.float32)
    tgt = (90 + rng.normal(0, 1, (80, 80, 1))).astype(np.float32)
    with caplog.at_level(logging.INFO, logger="mosaic_jax"):
        g, o = mj.compute_tile_photometric_scaling(ref, tgt, tile_id="t")
    assert float(g[0]) == 1.0 and abs(float(o[0]) - 10.0) < 0.1
    assert "no common signal" in caplog.text


def test_gain_bounds_are_enforced():
    sky = _sky()
    ref, tgt = _pair(sky, [3.0], [0.0], 1.0, holes=False)
    g, _ = mj.compute_tile_photometric_scaling(ref, tgt)
    assert float(g[0]) == pytest.approx(2.0)
    g, _ = mj.compute_tile_photometric_scaling(ref, tgt, gain_bounds=(0.5, 4.0))
    assert float(g[0]) == pytest.approx(3.0, rel=0.005)
    with pytest.raises(ValueError):
        mj.compute_tile_photometric_scaling(ref, tgt, gain_bounds=(2.0, 1.0))


def test_jit_and_vmap_match_eager():
    sky = _sky(C=2)
    pairs = [_pair(sky, [1.2, 0.9], [3.0, -2.0], 1.5, seed=s) for s in range(3)]
    eager = [np.asarray(mj.compute_tile_photometric_scaling(r, t)[0]) for r, t in pairs]
    jitted = jax.jit(lambda r, t: mj.compute_tile_photometric_scaling(r, t)[0])
    for (r, t), e in zip(pairs, eager):
        np.testing.assert_allclose(np.asarray(jitted(r, t)), e, rtol=1e-5)
    R = jnp.stack([p[0] for p in pairs])
    T = jnp.stack([p[1] for p in pairs])
    batched = jax.vmap(lambda r, t: mj.compute_tile_photometric_scaling(r, t)[0])(R, T)
    np.testing.assert_allclose(np.asarray(batched), np.stack(eager), rtol=1e-5)


def test_apply_preserves_nans_input_and_dtype():
    tile = np.random.default_rng(0).random((30, 40, 3)).astype(np.float32)
    tile[5:9, 5:9, 1] = np.nan
    before = tile.copy()
    out = mj.apply_tile_photometric_scaling(tile, [2.0, 3.0, 0.5], [1.0, -1.0, 0.0])
    assert out.dtype == jnp.float32 and out.shape == tile.shape
    np.testing.assert_array_equal(tile, before)  # input untouched
    out = np.asarray(out)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(tile))
    np.testing.assert_allclose(out[..., 0], tile[..., 0] * 2 + 1, rtol=1e-6)
    mono = mj.apply_tile_photometric_scaling(tile[..., 0], [2.0], [0.0])
    assert mono.shape == (30, 40, 1)
    with pytest.raises(ValueError, match="entries"):
        mj.apply_tile_photometric_scaling(tile, [1.0], [0.0])


def test_overlap_mask(caplog):
    rng = np.random.default_rng(0)
    a = rng.random((40, 50, 3)).astype(np.float32)
    b = rng.random((40, 50, 3)).astype(np.float32)
    a[3, 4, 2] = np.nan
    ca = np.ones((40, 50)) * 3
    cb = np.ones((40, 50)) * 3
    ca[:, :10] = 0
    cb[30:, :] = 1
    m = np.asarray(mj.overlap_mask(ca, cb, a, b, min_coverage=2, erode=2))
    ref = np.isfinite(a).all(-1) & np.isfinite(b).all(-1) & (ca >= 2) & (cb >= 2)
    ref = ndimage.binary_erosion(ref, structure=np.ones((3, 3)), iterations=2, border_value=0)
    np.testing.assert_array_equal(m, ref)
    with caplog.at_level(logging.INFO, logger="mosaic_jax"):
        m2 = np.asarray(mj.overlap_mask(None, None, a, b, erode=0, tile_id=12))
    assert "[GRID] Coverage not available for tile 12, falling back to finite-pixel mask." in caplog.text
    np.testing.assert_array_equal(m2, np.isfinite(a).all(-1) & np.isfinite(b).all(-1))


def test_reference_selection_and_reference_method(caplog):
    sky = _sky(C=1)
    ref, tgt = _pair(sky, [1.4], [7.0], 1.0, holes=False)
    nan = np.full_like(ref, np.nan)
    flat = np.full_like(ref, 5.0)
    assert mj.select_reference_tile([nan, flat, ref, tgt]) == 2
    cov0 = np.zeros(ref.shape[:2])
    assert mj.select_reference_tile([ref, tgt], [cov0, np.ones(ref.shape[:2])]) == 1
    with caplog.at_level(logging.WARNING, logger="mosaic_jax"):
        gains, offsets, r = mj.reference_tile_scaling([nan, flat])
    assert r is None and np.all(gains == 1) and np.all(offsets == 0)
    assert "[GRID] Photometric scaling disabled: no valid reference tile found (all tiles invalid)" in caplog.text
    gains, offsets, r = mj.reference_tile_scaling([ref, tgt, nan])
    assert r == 0 and abs(gains[1, 0] - 1.4) < 0.01 and gains[2, 0] == 1 and offsets[2, 0] == 0


def _grid_truth(ny, nx, C, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.7, 1.4, (ny * nx, C))
    b = rng.uniform(-20, 20, (ny * nx, C))
    pairs = []
    for y in range(ny):
        for x in range(nx):
            k = y * nx + x
            if x + 1 < nx:
                pairs.append((k, k + 1))
            if y + 1 < ny:
                pairs.append((k, k + nx))
    pairs = np.asarray(pairs)
    i, j = pairs[:, 0], pairs[:, 1]
    return a, b, pairs, a[j] / a[i], (b[j] - b[i]) / a[i]


def test_global_solve_recovers_a_grid_with_an_outlier_pair():
    a, b, pairs, g, o = _grid_truth(4, 4, 3)
    rng = np.random.default_rng(1)
    g = g * (1 + rng.normal(0, 1e-3, g.shape))
    o = o + rng.normal(0, 0.02, o.shape)
    g[5] *= 1.5  # one bad overlap fit
    o[5] += 30
    sol = mj.solve_tile_photometry(16, pairs, g, o, pair_weights=np.full(len(pairs), 1000.0))
    G_true, O_true = a / a[0], (b - b[0]) / a[0]
    np.testing.assert_allclose(sol.gains, G_true, rtol=5e-3)
    np.testing.assert_allclose(sol.offsets, O_true, atol=0.2)
    assert sol.anchors == (0,) and np.all(sol.component == 0)
    assert np.all(sol.pair_weights[5] < 0.5), "the outlier pair is down-weighted"
    good = np.arange(len(pairs)) != 5
    assert np.abs(sol.residuals_after[good]).max() < np.abs(sol.residuals_before[good]).max()
    again = mj.solve_tile_photometry(16, pairs, g, o, pair_weights=np.full(len(pairs), 1000.0))
    np.testing.assert_array_equal(sol.gains, again.gains)  # deterministic


def test_global_solve_corrects_tiles_far_from_the_reference_and_anchors_groups(caplog):
    a, b, pairs, g, o = _grid_truth(1, 5, 1)  # a chain 0-1-2-3-4: tile 4 never touches tile 0
    sol = mj.solve_tile_photometry(5, pairs, g, o)
    np.testing.assert_allclose(sol.gains[:, 0], a[:, 0] / a[0, 0], rtol=1e-5)
    # two groups {0,1} and {2,3,4} when the middle link is cut
    keep = ~((pairs[:, 0] == 1) & (pairs[:, 1] == 2))
    with caplog.at_level(logging.WARNING, logger="mosaic_jax"):
        sol = mj.solve_tile_photometry(6, pairs[keep], g[keep], o[keep])
    assert sol.anchors == (0, 2) and list(sol.component) == [0, 0, 1, 1, 1, -1]
    assert "2 disconnected groups" in caplog.text
    np.testing.assert_allclose(sol.gains[2:5, 0], a[2:5, 0] / a[2, 0], rtol=1e-5)
    assert sol.gains[5, 0] == 1.0 and sol.offsets[5, 0] == 0.0


def test_equalize_rgb_medians(caplog):
    sky = _sky(H=120, W=120, C=1)[..., 0]
    rng = np.random.default_rng(0)
    rgb = np.stack([sky * 1.00, sky * 1.04, sky * 0.98], -1) + rng.normal(0, 0.5, sky.shape + (3,))
    rgb = rgb.astype(np.float32)
    rgb[:10, :10, 2] = np.nan
    out, gains = mj.equalize_rgb_medians(rgb, min_samples=1000)
    out = np.asarray(out)
    assert out.dtype == np.float32 and np.isnan(out[:10, :10, 2]).all()
    lum = rgb.mean(-1)
    sel = np.isfinite(rgb).all(-1) & (lum >= np.nanpercentile(lum, 5)) & (lum <= np.nanpercentile(lum, 85))
    meds = [np.median(out[..., c][sel]) for c in range(3)]
    assert max(meds) / min(meds) - 1 < 0.002
    assert gains[1] < 1 < gains[2]
    clipped, g2 = mj.equalize_rgb_medians(rgb * np.array([1, 1.2, 1], np.float32), min_samples=1000)
    assert g2.min() >= 0.95 and g2.max() <= 1.05
    mono, gm = mj.equalize_rgb_medians(rgb[..., :1])
    np.testing.assert_array_equal(np.asarray(mono), rgb[..., :1]) and np.testing.assert_array_equal(gm, [1.0])
    with caplog.at_level(logging.INFO, logger="mosaic_jax"):
        same, g3 = mj.equalize_rgb_medians(rgb[:20, :20])  # 400 pixels < min_samples
    np.testing.assert_array_equal(g3, 1.0)
    np.testing.assert_array_equal(np.asarray(same), rgb[:20, :20])
    assert "RGB equalisation skipped" in caplog.text


@pytest.mark.parametrize("n", [1, 2, 7, 300, 5000])
def test_masked_quantile_matches_numpy(n):
    """The bisection order statistics behind every robust centre/scale: exact quantiles (ties,
    NaNs, masked pixels, negative values, wide dynamic range), and the strided subsample."""
    from mosaic_jax._src.photometry import _masked_quantile

    f = jax.jit(_masked_quantile, static_argnames="max_samples")
    rng = np.random.default_rng(n)
    for trial in range(4):
        x = (rng.normal(size=n) * 10.0 ** rng.uniform(-20, 20)).astype(np.float32)
        if trial == 1:
            x = np.round(x / np.abs(x).max() * 3)  # heavy ties
        x[rng.random(n) < 0.2] = np.nan
        m = rng.random(n) < 0.8
        sel = x[m & ~np.isnan(x)]
        for q in (0.0, 0.05, 0.5, 0.85, 1.0):
            got = float(f(jnp.asarray(x), jnp.asarray(m), q, max_samples=1 << 14))
            if sel.size == 0:
                assert np.isnan(got)
            else:
                np.testing.assert_allclose(got, np.quantile(sel.astype(np.float64), q), rtol=2e-6)
    if n == 5000:  # subsample: every 2nd pixel when at most 2500 are asked for
        got = float(f(jnp.asarray(x), jnp.asarray(m), 0.5, max_samples=2500))
        xs, ms = x[::2], m[::2]
        np.testing.assert_allclose(got, np.median(xs[ms & ~np.isnan(xs)]), rtol=2e-6)
