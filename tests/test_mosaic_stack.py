"""mosaic_jax stacking, feathering and assembly against numpy / astropy / scipy references."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

import mosaic_jax as mj


def _frames(N=8, H=96, W=96, seed=0, sigma=1.0, partial=True):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    sky = 50 + 30 * np.exp(-((yy - H / 2) ** 2 + (xx - W / 2.5) ** 2) / (2 * (H / 4) ** 2))
    for _ in range(25):
        y, x = rng.uniform(0, H), rng.uniform(0, W)
        sky = sky + 150 * rng.random() * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.5 ** 2))
    frames, truth = [], []
    for k in range(N):
        g, o = (1.0, 0.0) if k == 0 else (rng.uniform(0.8, 1.25), rng.uniform(-10, 10))
        f = (sky - o) / g + rng.normal(0, sigma, sky.shape)
        if partial and k:
            y0, x0 = rng.integers(0, H // 3, 2)
            m = np.zeros((H, W), bool)
            m[y0:y0 + 2 * H // 3, x0:x0 + 2 * W // 3] = True
            f[~m] = np.nan
        frames.append(f)
        truth.append((g, o))
    return np.stack(frames).astype(np.float32)[..., None], sky, truth


def test_plain_weighted_mean_matches_numpy():
    f, _, _ = _frames(N=5, partial=True)
    w = np.array([1.0, 2.0, 0.5, 1.0, 3.0], np.float32)
    st, cov = mj.stack_frames(f, w, normalize="none", reject="none")
    fin = np.isfinite(f[..., 0])
    ww = np.where(fin, w[:, None, None], 0.0)
    ref = np.nansum(np.where(fin, f[..., 0], 0) * ww, 0) / ww.sum(0)
    assert st.dtype == jnp.float32 and cov.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(st)[..., 0], ref, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(cov), fin.sum(0))


@pytest.mark.parametrize("N", [7, 30, 40])  # sorting network (<= 32 frames) and jnp.sort paths
def test_kappa_matches_astropy_sigma_clip(N):
    from astropy.stats import sigma_clip

    rng = np.random.default_rng(3)
    v = rng.normal(10, 1, (N, 20, 24, 1)).astype(np.float32)
    v[rng.random(v.shape) < 0.05] = 60.0  # outliers
    v[rng.random(v.shape) < 0.1] = np.nan  # frames missing here and there, not a prefix
    v[:, 0, 0] = np.nan  # no frame at all
    st, cov = mj.stack_frames(v, np.ones(N), normalize="none", reject="kappa", kappa=(2.5, 2.0), n_iter=5)
    clipped = sigma_clip(v, sigma_lower=2.5, sigma_upper=2.0, maxiters=5, cenfunc="median", stdfunc="std", axis=0)
    np.testing.assert_allclose(np.asarray(st), clipped.mean(axis=0).filled(np.nan), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(cov), (~clipped.mask).sum(0)[..., 0], atol=0)


@pytest.mark.parametrize("D", [1, 2, 5, 33])
def test_sorted_stack_quantiles_match_numpy(D):
    from mosaic_jax._src.stack import _quantile_sorted, _sort0

    rng = np.random.default_rng(D)
    v = rng.normal(0, 1, (D, 17, 9)).astype(np.float32)
    v[rng.random(v.shape) < 0.3] = np.nan
    v[0, 0, 0] = np.inf  # non-finite values count as missing, wherever they sort
    v[:, 1, 1] = np.nan
    s = _sort0(jnp.asarray(v))
    fin = np.isfinite(v)
    n = jnp.asarray(fin.sum(0))
    w = np.where(fin, v, np.nan)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        for q in (0.0, 0.05, 0.5, 0.95, 1.0):
            got = np.asarray(_quantile_sorted(s, jnp.zeros_like(n), n, jnp.float32(q)))
            np.testing.assert_allclose(got, np.nanquantile(w, q, axis=0), rtol=1e-6, atol=1e-6)


def _winsorized_reference(v, klo, khi, lims, n_iter):
    """numpy transcription of the winsorized clip: quantile winsorisation, Huber refinement."""
    with np.errstate(all="ignore"):
        import warnings

        warnings.simplefilter("ignore", RuntimeWarning)
        fin = np.isfinite(v)
        n = np.maximum(fin.sum(0), 1)

        def std(x):
            m = np.where(fin, x, 0).sum(0) / n
            return np.sqrt(np.where(fin, (x - m) ** 2, 0).sum(0) / n)

        w = np.clip(v, np.nanquantile(v, lims[0], axis=0), np.nanquantile(v, 1 - lims[1], axis=0))
        c, s = np.nanmedian(v, axis=0), std(w)
        for _ in range(n_iter):
            w = np.clip(v, c - 1.5 * s, c + 1.5 * s)
            c, s = np.where(fin, w, 0).sum(0) / n, 1.134 * std(w)
        keep = fin & (v >= c - klo * s) & (v <= c + khi * s)
        return np.where(keep, v, 0).sum(0) / keep.sum(0), keep.sum(0)


@pytest.mark.parametrize("N", [4, 9, 40])
def test_winsorized_matches_numpy_reference(N):
    rng = np.random.default_rng(N)
    v = rng.normal(10, 1, (N, 16, 20, 2)).astype(np.float32)
    v[rng.random(v.shape) < 0.05] = 40.0
    v[rng.random(v.shape[:3]) < 0.2] = np.nan
    st, cov = mj.stack_frames(v, np.ones(N), normalize="none", reject="winsorized", kappa=(3.0, 2.5))
    ref, kept = _winsorized_reference(v.astype(np.float64), 3.0, 2.5, (0.05, 0.05), 5)
    np.testing.assert_allclose(np.asarray(st), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(cov), kept.mean(-1), atol=1e-6)


def test_winsorized_rejects_cosmic_rays_with_few_frames():
    f, _, _ = _frames(N=8, partial=False)
    clean, _ = mj.stack_frames(f, np.ones(8), normalize="none", reject="winsorized")
    hit = f.copy()
    hit[3, 40:42, 40:42] = 1e4
    st, cov = mj.stack_frames(hit, np.ones(8), normalize="none", reject="winsorized")
    assert abs(float(st[40, 40, 0]) - float(clean[40, 40, 0])) < 3.0
    assert float(cov[40, 40]) == 7.0
    plain, _ = mj.stack_frames(hit, np.ones(8), normalize="none", reject="none")
    assert float(plain[40, 40, 0]) > 1000


@pytest.mark.parametrize("normalize", ["overlap", "linear_fit"])
def test_normalisation_brings_partly_overlapping_frames_to_the_reference(normalize):
    f, sky, truth = _frames(N=6, seed=1)
    st, _ = mj.stack_frames(f, np.ones(6), normalize=normalize, reject="winsorized")
    st = np.asarray(st)[..., 0]
    ok = np.isfinite(st)
    # frame 0 covers everything and is the gauge: the stack lives in its units (gain 1, offset 0)
    resid = st[ok] - sky[ok]
    assert abs(np.median(resid)) < 0.2 and np.std(resid) < 1.0
    none, _ = mj.stack_frames(f, np.ones(6), normalize="none", reject="winsorized")
    assert np.std(np.asarray(none)[..., 0][ok] - sky[ok]) > 2 * np.std(resid)


def test_nan_pixels_chunks_weight_maps_and_errors():
    f, _, _ = _frames(N=4, H=50, W=40)
    f[:, :5, :5] = np.nan
    a, ca = mj.stack_frames(f, normalize="median", chunk_rows=7)
    b, cb = mj.stack_frames(f, normalize="median", chunk_rows=64)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
    assert np.isnan(np.asarray(a)[:5, :5]).all() and np.all(np.asarray(ca)[:5, :5] == 0)
    wmap = np.ones((4, 50, 40), np.float32)
    wmap[1:] = 0.0
    only0, _ = mj.stack_frames(f, wmap, normalize="none", reject="none")
    np.testing.assert_allclose(np.asarray(only0)[..., 0][5:, 5:], f[0, 5:, 5:, 0], rtol=1e-6)
    with pytest.raises(ValueError, match="normalize"):
        mj.stack_frames(f, normalize="mean")
    with pytest.raises(ValueError, match="weights"):
        mj.stack_frames(f, np.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        mj.stack_frames(f, -np.ones(4))


def test_frame_weights_follow_inverse_noise_variance():
    rng = np.random.default_rng(0)
    base = np.full((3, 64, 64, 1), 10.0)
    noise = np.array([1.0, 2.0, 4.0])[:, None, None, None]
    f = (base + rng.normal(0, 1, base.shape) * noise).astype(np.float32)
    w = mj.frame_weights(f)
    np.testing.assert_allclose(w / w[0], [1, 1 / 4, 1 / 16], rtol=0.1)


def test_feather_weights_against_euclidean_distance():
    cov = np.zeros((80, 100), np.float32)
    cov[10:70, 5:90] = 3.0
    w = np.asarray(mj.feather_weights(cov, width=12.0, use_coverage=False))
    edt = ndimage.distance_transform_edt(np.pad(cov > 0, 1))[1:-1, 1:-1]
    assert w.dtype == np.float32 and np.all(w[cov == 0] == 0)
    assert np.all(w[edt >= 12 * 1.09] == 1.0)  # chamfer is within 9 % of Euclidean
    t = np.clip((edt - 0.5) / 12, 0, 1)
    assert np.all(np.abs(w - t * t * (3 - 2 * t))[cov > 0] < 0.2)
    wc = np.asarray(mj.feather_weights(cov, width=12.0))
    np.testing.assert_allclose(wc, 3 * w)


def test_assemble_matches_numpy_and_marks_uncovered_nan():
    rng = np.random.default_rng(0)
    tiles = [rng.random((20, 30, 2)).astype(np.float32), rng.random((25, 20, 2)).astype(np.float32)]
    tiles[0][3, 3, 1] = np.nan
    weights = [rng.random((20, 30)).astype(np.float32) + 0.1, rng.random((25, 20)).astype(np.float32) + 0.1]
    w_copy = [w.copy() for w in weights]
    offs = [(0, 0), (10, 25)]
    mos, wt = mj.assemble(tiles, weights, offs, (40, 50))
    num = np.zeros((40, 50, 2))
    den = np.zeros((40, 50, 2))
    for t, w, (y, x) in zip(tiles, weights, offs):
        ok = np.isfinite(t)
        num[y:y + t.shape[0], x:x + t.shape[1]] += np.where(ok, t, 0) * w[..., None] * ok
        den[y:y + t.shape[0], x:x + t.shape[1]] += w[..., None] * ok
    ref = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
    np.testing.assert_allclose(np.asarray(mos), ref, rtol=1e-6)
    assert np.isnan(np.asarray(mos)[39, 0]).all() and float(wt[39, 0]) == 0
    for w, c in zip(weights, w_copy):
        np.testing.assert_array_equal(w, c)
    with pytest.raises(ValueError, match="does not fit"):
        mj.assemble(tiles, weights, [(0, 0), (30, 40)], (40, 50))


def test_wide_feather_multiscale_distance_against_euclidean():
    """Widths beyond 64 px take the coarse-grid distance away from the edge: still a smoothstep of
    the Euclidean distance, exact near the edge, zero outside, 1 deep inside."""
    yy, xx = np.mgrid[0:400, 0:500]
    cov = ((yy - 200) ** 2 / 180 ** 2 + (xx - 260) ** 2 / 230 ** 2 < 1).astype(np.float32)
    cov[150:170, 100:300] = 0  # a hole
    width = 150.0
    w = np.asarray(mj.feather_weights(cov, width=width, use_coverage=False))
    edt = ndimage.distance_transform_edt(np.pad(cov > 0, 1))[1:-1, 1:-1]
    assert np.all(w[cov == 0] == 0) and np.all(w[cov > 0] > 0)
    k = np.ceil(width / 64)
    d_est = np.empty_like(edt)  # invert the smoothstep on the ramp to compare distances
    ramp = (w > 0) & (w < 1)
    t = np.linspace(0, 1, 4001)
    d_est[ramp] = np.interp(w[ramp], t * t * (3 - 2 * t), t) * width
    err = np.abs(d_est[ramp] - edt[ramp])
    assert np.all(err <= 0.09 * edt[ramp] + 1.5 * k)
    near = ramp & (edt < k)  # full-resolution chamfer there
    assert np.all(np.abs(d_est[near] - edt[near]) <= 0.09 * edt[near] + 1.0)
    assert np.all(w[edt >= width * 1.09 + 2 * k] == 1.0)
