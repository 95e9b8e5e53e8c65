"""Per-frame sky models and gains (pair statistics + global solve), the quality measures against a
known truth, registration of frames without a WCS, and the reproject-compatible entry point."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

import mosaic_jax as mj
from mosaic_jax._src.sky import _spd_solve, frame_norm, n_terms, poly_basis
from mosaic_jax.quality import seam_steps, truth_error
from mosaic_jax.simulate import sky_wcs

FRAME = 96


def star_field(shape, seed=0, n=400, sigma=1.0):
    """A sky with stars, a smooth nebula and noise: float32 ``[H, W]``."""
    rng = np.random.default_rng(seed)
    H, W = shape
    yy, xx = np.mgrid[0:H, 0:W]
    img = 100.0 + 30.0 * np.exp(-(((yy - H * 0.4) / (H * 0.3)) ** 2 + ((xx - W * 0.6) / (W * 0.25)) ** 2))
    for y, x, f in zip(rng.uniform(0, H, n), rng.uniform(0, W, n), rng.lognormal(3.5, 1.0, n)):
        img += f * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.3 ** 2))
    return (img + rng.normal(0, sigma, shape)).astype(np.float32)


def cut(img, wcs, out, layout=(3, 3), *, gains=True, degree=2, seed=1, frame=FRAME, overlap=0.3):
    """Frames of ``img`` with injected gains and polynomial skies (frame coordinates)."""
    rng = np.random.default_rng(seed)
    H, W = img.shape
    ys = np.round(np.linspace(0, H - frame, layout[0])).astype(int)
    xs = np.round(np.linspace(0, W - frame, layout[1])).astype(int)
    yy, xx = np.mgrid[0:frame, 0:frame]
    u, v = (xx - (frame - 1) / 2) / (frame / 2), (yy - (frame - 1) / 2) / (frame / 2)
    paths, truth = [], []
    for y in ys:
        for x in xs:
            g = rng.uniform(0.8, 1.2) if gains else 1.0
            c = rng.uniform(-10, 10, n_terms(degree))
            sky = poly_basis(u, v, degree) @ c
            p = out / f"f{len(paths):02d}.fits"
            fits.PrimaryHDU((img[y:y + frame, x:x + frame] * g + sky).astype(np.float32),
                            header=wcs[y:y + frame, x:x + frame].to_header()).writeto(p)
            paths.append(p)
            truth.append((g, c))
    return paths, truth


@pytest.fixture(scope="module")
def field():
    shape = (230, 230)
    return star_field(shape), sky_wcs(shape=shape, scale_deg=2.0 / 3600)


def test_poly_basis_prefix_and_norm():
    u, v = np.array([0.5, -1.0]), np.array([2.0, 0.25])
    B2, B1 = poly_basis(u, v, 2), poly_basis(u, v, 1)
    assert B2.shape == (2, 6) and np.array_equal(B2[:, :3], B1)  # lower degree = prefix
    np.testing.assert_allclose(B2[:, 3:], np.stack([u * u, u * v, v * v], 1))
    cy, cx, hy, hx = frame_norm((10, 20, 30, 60))
    assert (cy, cx, hy, hx) == (19.5, 39.5, 10.0, 20.0)  # pixels 10..29 -> [-1, 1)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_spd_solve_matches_numpy_and_needs_no_lapack(degree):
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(degree)
    X = poly_basis(rng.uniform(-1, 1, 400), rng.uniform(-1, 1, 400), degree)
    A = X.T @ (X * rng.uniform(0.1, 1, 400)[:, None])
    Y = rng.normal(size=(len(A), 2))
    f = jax.jit(_spd_solve)
    got = np.asarray(f(jnp.asarray(A, jnp.float32), jnp.asarray(Y, jnp.float32)))
    np.testing.assert_allclose(got, np.linalg.solve(A, Y), rtol=1e-4, atol=1e-4 * np.abs(np.linalg.solve(A, Y)).max())
    assert "lapack" not in f.lower(jnp.asarray(A, jnp.float32), jnp.asarray(Y, jnp.float32)).as_text()


def test_dense_and_sparse_solves_agree(tmp_path, field, monkeypatch):
    from mosaic_jax._src import sky as sky_mod

    img, wcs = field
    paths, _ = cut(img, wcs, tmp_path, gains=True, degree=2, seed=3)
    cfg = mj.MosaicConfig(sky="poly2", quality=False)
    dense = mj.build_mosaic(paths, cfg, progress=False).report["frames"]
    monkeypatch.setattr(sky_mod, "DENSE_UNKNOWNS", 0)
    sparse = mj.build_mosaic(paths, cfg, progress=False).report["frames"]
    for a, b in zip(dense, sparse):
        np.testing.assert_allclose(a["gains"], b["gains"], rtol=1e-9)
        np.testing.assert_allclose(a["sky_coeffs"], b["sky_coeffs"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("sky,gains", [("poly2", True), ("plane", False)])
def test_injected_gains_and_skies_are_recovered(tmp_path, field, sky, gains):
    img, wcs = field
    deg = mj.SKY_MODELS[sky]
    paths, _ = cut(img, wcs, tmp_path, gains=gains, degree=deg)
    res = mj.build_mosaic(paths, mj.MosaicConfig(sky=sky, fit_gains=gains, quality=False), progress=False)
    err = truth_error(res.mosaic, res.wcs, img, wcs)
    base = mj.build_mosaic(paths, mj.MosaicConfig(sky="offset", quality=False), progress=False)
    err0 = truth_error(base.mosaic, base.wcs, img, wcs)
    assert err.rms_sigma < 0.05, err
    assert err.rms < 0.1 * err0.rms, (err, err0)  # an offset model cannot remove the skies
    assert res.report["sky"]["model"] == sky and not res.report["sky"]["fallbacks"]


def test_gains_recovered_relative_to_the_reference(tmp_path, field):
    img, wcs = field
    paths, truth = cut(img, wcs, tmp_path, gains=True, degree=1, seed=5)
    res = mj.build_mosaic(paths, mj.MosaicConfig(sky="plane", quality=False), progress=False)
    ref = res.report["sky"]["reference_frames"][0]
    got = np.array([f["gains"][0] for f in res.report["frames"]])
    true = np.array([g for g, _ in truth])
    assert got[ref] == 1.0  # the gauge: the reference frame keeps its units
    # corrected = got * frame = got * g * truth: every product equals the reference's g
    np.testing.assert_allclose(got * true, true[ref], rtol=2e-3)


def test_zero_mean_gauge_and_reference_gauge():
    # three frames in a row, exact pair statistics from a synthetic canvas: frame k's sky adds
    # a known plane; the mean gauge leaves corrections whose best canvas plane is zero
    rng = np.random.default_rng(0)
    H, W = 40, 120
    sig = rng.normal(0, 5, (H, W)).astype(np.float32)
    boxes = [(0, 0, 40, 50), (0, 35, 40, 85), (0, 70, 40, 120)]
    coef = np.array([[0.0, 2.0, -1.0], [3.0, -1.0, 0.5], [-2.0, 0.5, 1.0]])
    norms = np.stack([frame_norm(b) for b in boxes])
    frames = []
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    for k, b in enumerate(boxes):
        f = np.full((H, W), np.nan, np.float32)
        sl = (slice(b[0], b[2]), slice(b[1], b[3]))
        u, v = (xx - norms[k, 1]) / norms[k, 3], (yy - norms[k, 0]) / norms[k, 2]
        f[sl] = (sig + poly_basis(u, v, 1) @ coef[k])[sl]
        frames.append(f)
    pairs = [(0, 1), (1, 2)]
    K = 1 << 12
    A = np.full((2, K, 1), np.nan, np.float32)
    B = np.full((2, K, 1), np.nan, np.float32)
    M = np.zeros((2, K), bool)
    YX = np.zeros((2, K, 2), np.float32)
    npair = []
    for p, (i, j) in enumerate(pairs):
        m = np.isfinite(frames[i]) & np.isfinite(frames[j])
        y, x = np.nonzero(m)
        A[p, :len(y), 0], B[p, :len(y), 0], M[p, :len(y)] = frames[i][m], frames[j][m], True
        YX[p, :len(y)] = np.stack([y, x], 1)
        npair.append(frame_norm((y.min(), x.min(), y.max() + 1, x.max() + 1)))
    f32 = lambda a: np.asarray(a, np.float32)
    st = mj.pair_statistics(A, B, M, YX, f32(norms[[0, 1]]), f32(norms[[1, 2]]), f32(npair), np.ones((2, 1), np.float32),
                            np.ones((2, 1), np.float32), np.asarray(False), (np.float32(0.5), np.float32(2.0)),
                            degree=1)
    st = type(st)(*(np.asarray(x) for x in st))
    for gauge in ("reference", "mean"):
        sol = mj.solve_frame_sky(3, pairs, st, degree=1, noise=np.ones((3, 1)), fit_gains=False, gauge=0,
                                 sky_gauge=gauge, norms=norms)
        assert sol.anchors == (0,) and np.all(sol.gains == 1.0)
        # corrected skies agree: P_k - sky_k is one global plane for every frame
        resid = []
        for k in range(3):
            c = sol.coeffs[k, 0]
            cy, cx, hy, hx = norms[k]
            y0, x0, y1, x1 = boxes[k]
            yy_, xx_ = np.mgrid[y0:y1, x0:x1]
            u, v = (xx_ - cx) / hx, (yy_ - cy) / hy
            resid.append((poly_basis(u, v, 1) @ (coef[k] - c)).ravel())
        flat = np.concatenate(resid)
        if gauge == "reference":
            np.testing.assert_allclose(sol.coeffs[0, 0], 0.0, atol=1e-6)  # the reference's sky is untouched
        else:
            # what is left in the mosaic is the frames' mean sky: corrections average to zero
            corr = np.concatenate([(poly_basis((np.mgrid[b[0]:b[2], b[1]:b[3]][1] - n[1]) / n[3],
                                               (np.mgrid[b[0]:b[2], b[1]:b[3]][0] - n[0]) / n[2], 1)
                                    @ sol.coeffs[k, 0]).ravel() for k, (b, n) in enumerate(zip(boxes, norms))])
            assert abs(corr.mean()) < 0.05
        # the residual sky of all frames is one plane (the gauge): fit it and check the rest is ~0
        ys = np.concatenate([np.mgrid[b[0]:b[2], b[1]:b[3]][0].ravel() for b in boxes]).astype(float)
        xs = np.concatenate([np.mgrid[b[0]:b[2], b[1]:b[3]][1].ravel() for b in boxes]).astype(float)
        G = np.stack([np.ones_like(xs), xs, ys], 1)
        z, *_ = np.linalg.lstsq(G, flat, rcond=None)
        assert np.abs(flat - G @ z).max() < 0.05


def test_pure_sky_overlap_keeps_gain_one_and_logs(tmp_path, caplog):
    # two frames of pure noise: no common signal, the gain cannot be identified
    w = sky_wcs(shape=(64, 120), scale_deg=2.0 / 3600)
    rng = np.random.default_rng(3)
    for k, (x0, off) in enumerate(((0, 0.0), (50, 7.0))):
        d = (rng.normal(100, 2, (64, 70)) * (1.3 if k else 1.0) + off).astype(np.float32)
        fits.PrimaryHDU(d, header=w[:, x0:x0 + 70].to_header()).writeto(tmp_path / f"n{k}.fits")
    with caplog.at_level(logging.WARNING, logger="mosaic_jax"):
        res = mj.build_mosaic([tmp_path], mj.MosaicConfig(sky="offset", quality=False), progress=False)
    assert all(f["gains"] == [1.0] for f in res.report["frames"])
    assert any("pure sky" in s for s in res.report["sky"]["fallbacks"])
    assert any("[SKY]" in r.message for r in caplog.records)
    m = res.mosaic[..., 0]
    left, right = np.nanmedian(m[:, 5:40]), np.nanmedian(m[:, 85:115])
    assert abs(left - right) < 1.5  # the offsets still match: 100 vs 137 before


def test_degree_falls_back_where_overlaps_cannot_support_it(tmp_path, field):
    img, wcs = field
    # two frames side by side overlapping by a 4-pixel strip: a cubic cannot be fixed across it
    paths, _ = cut(img, wcs, tmp_path, layout=(1, 2), gains=False, degree=0, frame=117)
    res = mj.build_mosaic(paths, mj.MosaicConfig(sky="poly3", quality=False, erode=0), progress=False)
    degs = [f["sky_degree"] for f in res.report["frames"]]
    assert max(degs) < 3 and any("support sky degree" in s for s in res.report["sky"]["fallbacks"])
    assert np.isfinite(res.mosaic).mean() > 0.9


def test_truth_error_is_zero_up_to_gain_and_quadratic(field):
    img, wcs = field
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]] / 100.0
    m = 1.1 * img + 5 + 3 * xx - 2 * yy + 1.5 * xx * yy
    e = truth_error(m, wcs, img, wcs, block=16)
    assert e.rms_sigma < 1e-3 and abs(e.gain[0] - 1.1) < 1e-4
    step = m.copy()
    step[:, 100:] += 4.0  # a seam the gauge cannot absorb
    assert truth_error(step, wcs, img, wcs, block=16).rms > 0.5  # partly absorbed by the gauge, never hidden


def test_seam_steps_measure_a_step_at_a_frame_edge(field):
    img, wcs = field
    frame = ((100, 100), wcs[60:160, 60:160])
    clean = seam_steps(img, wcs, [frame], segment=50)
    bad = img.copy()
    bad[60:160, 60:160] += 5.0  # the frame's footprint sits 5 sigma above the rest
    got = seam_steps(bad, wcs, [frame], segment=50)
    assert clean.segments == got.segments >= 8
    assert clean.rms_sigma < 1.5 and 3.5 < got.rms_sigma < 6.5  # stars and the nebula set the floor


def test_register_shifted_rotated_copy(tmp_path):
    from skimage.transform import SimilarityTransform, warp

    img = star_field((200, 220), seed=7, n=150)
    wcs = sky_wcs(shape=(200, 220), scale_deg=2.0 / 3600)
    fits.PrimaryHDU(img, header=wcs.to_header()).writeto(tmp_path / "ref.fits")
    T = SimilarityTransform(rotation=np.deg2rad(3.0), translation=(6.5, -4.0))  # copy pixel -> ref pixel
    copy = warp(img, T, output_shape=img.shape, order=3, mode="edge").astype(np.float32)
    fits.PrimaryHDU(copy).writeto(tmp_path / "copy.fits")
    infos = [mj.scan_frame(tmp_path / n, allow_unsolved=True) for n in ("ref.fits", "copy.fits")]
    assert infos[1].wcs is None and infos[1].wcs_source == "none"
    frames, skipped = mj.register_frames(infos)
    assert not skipped and frames[1].wcs_source == "registered"
    pts = np.array([[30.0, 40.0], [150.0, 100.0], [100.0, 180.0]])  # (x, y) in the copy
    want = wcs.pixel_to_world(*T(pts).T)
    got = frames[1].wcs.pixel_to_world(pts[:, 0], pts[:, 1])
    assert np.all(want.separation(got).arcsec < 0.5 * 2.0)  # within half a pixel


def test_unregistrable_frame_is_skipped_with_its_reason(tmp_path):
    img = star_field((120, 120), seed=1, n=60)
    fits.PrimaryHDU(img, header=sky_wcs(shape=(120, 120)).to_header()).writeto(tmp_path / "ref.fits")
    fits.PrimaryHDU(np.random.default_rng(2).normal(0, 1, (120, 120)).astype(np.float32)).writeto(tmp_path / "x.fits")
    res = mj.build_mosaic([tmp_path], mj.MosaicConfig(quality=False), progress=False)
    assert [s["path"].endswith("x.fits") and "registration failed" in s["reason"]
            for s in res.report["inputs_skipped"]] == [True]


def test_header_wcs_from_pointing_and_optics():
    h = fits.Header({"OBJCTRA": "21 01 36.9", "OBJCTDEC": "+68 10 10", "FOCALLEN": 250, "XPIXSZ": 2.9})
    w = mj.header_wcs(h, (1920, 1080))
    assert abs(w.wcs.crval[0] - 15 * (21 + 1 / 60 + 36.9 / 3600)) < 1e-9
    assert abs(w.wcs.cdelt[1] * 3600 - 2.9e-3 / 250 * 206264.806) < 1e-6
    assert mj.header_wcs(fits.Header({"RA": 10.0}), (10, 10)) is None


def test_no_solved_frame_gives_an_approximate_wcs(tmp_path):
    img = star_field((150, 150), seed=4, n=100)
    hdr = {"RA": 150.0, "DEC": 20.0, "FOCALLEN": 250.0, "XPIXSZ": 2.9}
    fits.PrimaryHDU(img[:, :120], header=fits.Header(hdr)).writeto(tmp_path / "a.fits")
    fits.PrimaryHDU(img[:, 30:], header=fits.Header(hdr)).writeto(tmp_path / "b.fits")
    res = mj.build_mosaic([tmp_path], mj.MosaicConfig(quality=False), progress=False)
    assert res.report["calibration"] == "approximate"
    assert sorted(u["wcs"] for u in res.report["inputs_used"]) == ["approximate", "approximate"]
    mj.write_outputs(res, tmp_path / "out")
    assert fits.getheader(tmp_path / "out" / "mosaic.fits")["WCSAPPRX"] is True
    assert res.mosaic.shape[1] >= 145  # the two halves side by side, not stacked


def test_seestar_unsolved_frames_are_registered(shared_data):
    d = shared_data / "astro" / "seestar_ngc7023"
    infos = [mj.scan_frame(p, allow_unsolved=True) for p, _, _ in mj.find_inputs([d])]
    frames, skipped = mj.register_frames(infos)
    assert len(frames) == 6 and not skipped
    reg = [f for f in frames if f.wcs_source == "registered"]
    assert len(reg) == 2
    from astropy.wcs.utils import proj_plane_pixel_scales

    s_ref = proj_plane_pixel_scales(frames[0].wcs).mean()
    for f in reg:
        assert abs(proj_plane_pixel_scales(f.wcs).mean() / s_ref - 1) < 0.01
    a, b = (f.wcs.pixel_to_world(540, 960) for f in reg)  # 21 s apart: nearly the same pointing
    assert a.separation(b).arcsec < 30


def test_reproject_and_coadd_matches_reproject(tmp_path, field):
    from reproject import reproject_interp
    from reproject.mosaicking import find_optimal_celestial_wcs
    from reproject.mosaicking import reproject_and_coadd as ref_coadd

    img, wcs = field
    paths, _ = cut(img, wcs, tmp_path, layout=(2, 2), gains=False, degree=0, frame=140)
    hdus = [fits.open(p)[0] for p in paths]
    wout, shape = find_optimal_celestial_wcs(hdus)
    a_ref, f_ref = ref_coadd(hdus, wout, shape_out=shape, reproject_function=reproject_interp)
    for inputs in (paths, hdus, [(h.data, WCS(h.header)) for h in hdus]):
        a, f = mj.reproject_and_coadd(inputs, wout, shape_out=shape)
        assert a.shape == tuple(shape) and a.dtype == np.float32
        both = (f_ref > 0) & (f > 0)
        assert both.sum() > 0.98 * (f_ref > 0).sum()
        np.testing.assert_allclose(a[both], a_ref[both], atol=1e-3 * float(np.ptp(img)))
        np.testing.assert_allclose(f[both], f_ref[both])
    with pytest.raises(ValueError, match="shape_out"):
        mj.reproject_and_coadd(paths, wout)


def test_reproject_and_coadd_background_matching_removes_skies(tmp_path, field):
    img, wcs = field
    paths, _ = cut(img, wcs, tmp_path, layout=(2, 2), gains=False, degree=1, seed=9, frame=140)
    from reproject.mosaicking import find_optimal_celestial_wcs

    wout, shape = find_optimal_celestial_wcs([fits.open(p)[0] for p in paths])
    plain, _ = mj.reproject_and_coadd(paths, wout, shape_out=shape)
    matched, _ = mj.reproject_and_coadd(paths, wout, shape_out=shape, match_background=True, sky="plane")
    assert truth_error(matched, wout, img, wcs).rms < 0.1 * truth_error(plain, wout, img, wcs).rms


def test_frame_without_pixels_last_does_not_crash(tmp_path, field):
    img, wcs = field
    paths, _ = cut(img, wcs, tmp_path, layout=(1, 2), gains=False, degree=0)
    bad = tmp_path / "zz_alpha0.fits"
    data = fits.getdata(paths[0])
    fits.HDUList([fits.PrimaryHDU(data, header=fits.getheader(paths[0])),
                  fits.ImageHDU(np.zeros(data.shape, np.uint8), name="ALPHA")]).writeto(bad)
    res = mj.build_mosaic([*paths, bad], mj.MosaicConfig(quality=False), progress=False)
    assert np.isfinite(res.mosaic).any() and len(res.report["frames"]) == 2


def test_distant_field_error_names_the_file(tmp_path):
    for k, c in enumerate(((10.0, 0.0), (190.0, 0.0))):
        fits.PrimaryHDU(np.random.default_rng(k).normal(0, 1, (32, 32)).astype(np.float32),
                        header=sky_wcs(c, (32, 32)).to_header()).writeto(tmp_path / f"field{k}.fits")
    with pytest.raises(mj.MosaicInputError, match="field"):
        mj.build_mosaic([tmp_path], mj.MosaicConfig(quality=False), progress=False)


def test_solve_stays_exact_far_from_the_reference():
    # exact pair statistics of a 12 x 12 grid of frames (skies only): the solve must reproduce every
    # pair's sky difference however many overlaps separate a frame from the reference
    from mosaic_jax._src.sky import PairStats

    rng = np.random.default_rng(0)
    R, F, stride, deg = 12, 100, 70, 2
    M = n_terms(deg)
    boxes = [(r * stride, c * stride, r * stride + F, c * stride + F) for r in range(R) for c in range(R)]
    norms = np.stack([frame_norm(b) for b in boxes])
    coef = rng.normal(0, 5, (len(boxes), M))
    pairs, grams, W = [], [], []
    for i, a in enumerate(boxes):
        for j in range(i + 1, len(boxes)):
            b = boxes[j]
            y0, x0, y1, x1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
            if y1 <= y0 or x1 <= x0:
                continue
            yy, xx = np.mgrid[y0:y1:3, x0:x1:3]
            y, x = yy.ravel().astype(float), xx.ravel().astype(float)
            Bi = poly_basis((x - norms[i, 1]) / norms[i, 3], (y - norms[i, 0]) / norms[i, 2], deg)
            Bj = poly_basis((x - norms[j, 1]) / norms[j, 3], (y - norms[j, 0]) / norms[j, 2], deg)
            Z = np.concatenate([(Bi @ coef[i] - Bj @ coef[j])[:, None], rng.normal(0, 1, (len(x), 1)), Bi, Bj], 1)
            pairs.append((i, j))
            grams.append((Z.T @ Z)[None])
            W.append(len(x))
    P = len(pairs)
    st = PairStats(np.ones((P, 1)), np.zeros((P, 1), bool), np.zeros((P, 1)), np.asarray(W, float)[:, None],
                   np.zeros((P, 1, 2)), np.stack(grams), np.ones((P, 1)))
    sol = mj.solve_frame_sky(len(boxes), pairs, st, degree=deg, noise=np.ones((len(boxes), 1)), fit_gains=False,
                             gauge=0, sky_gauge="reference", norms=norms)
    assert sol.pair_rms_after.max() < 1e-3 * np.abs(coef).max()
    np.testing.assert_allclose(sol.coeffs[0, 0], 0.0, atol=1e-4)  # the reference keeps its sky


def test_reproject_and_coadd_input_weights_match_reproject(tmp_path, field):
    from reproject import reproject_interp
    from reproject.mosaicking import find_optimal_celestial_wcs
    from reproject.mosaicking import reproject_and_coadd as ref_coadd

    img, wcs = field
    paths, _ = cut(img, wcs, tmp_path, layout=(1, 2), gains=False, degree=0, frame=140)
    hdus = [fits.open(p)[0] for p in paths]
    wts = [np.full(h.data.shape, 1.0 + k, np.float32) for k, h in enumerate(hdus)]
    wout, shape = find_optimal_celestial_wcs(hdus)
    a_ref, f_ref = ref_coadd(hdus, wout, shape_out=shape, input_weights=wts, reproject_function=reproject_interp)
    a, f = mj.reproject_and_coadd(hdus, wout, shape_out=shape, input_weights=wts)
    both = (f_ref > 0.5) & (f > 0.5)
    np.testing.assert_allclose(a[both], a_ref[both], atol=1e-3 * float(np.ptp(img)))
