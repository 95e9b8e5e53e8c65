"""mosaic_jax grid pipeline: FITS input, debayering, reprojection against reproject_interp, the grid,
the seam metric, and the end-to-end build on simulated skies (with truth) and on real frames."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from astropy.io import fits

import mosaic_jax as mj
from mosaic_jax.__main__ import main as cli
from mosaic_jax._src.quality import _robust_lstsq, lad_fits
from mosaic_jax.quality import block_medians, lad_fit, seam_metric
from mosaic_jax.simulate import mosaic_bayer, simulate_dataset, sky_wcs


@pytest.fixture(scope="module")
def sim_rgb(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim_rgb")
    truth = simulate_dataset(d, grid=(3, 3), frame_shape=(128, 160), rgb=True, seed=3, gradient=0.0)
    return d, truth


@pytest.fixture(scope="module")
def built(sim_rgb):
    d, _ = sim_rgb
    cfg = mj.MosaicConfig(tile_size_factor=1.5, quality=True)
    return mj.build_mosaic([d], cfg, progress=False)


# ---------------------------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["RGGB", "BGGR", "GRBG", "GBRG"])
def test_debayer_recovers_smooth_colour_and_keeps_samples(pattern):
    H, W = 32, 40
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    rgb = np.stack([10 + 0.5 * xx, 20 + 0.3 * yy, 30 + 0.2 * xx + 0.1 * yy], -1)  # linear planes
    raw = mosaic_bayer(rgb, pattern)
    out = np.asarray(mj.debayer_bilinear(raw, pattern))
    assert out.shape == (H, W, 3) and out.dtype == np.float32
    # bilinear interpolation is exact for linear planes away from the border
    np.testing.assert_allclose(out[2:-2, 2:-2], rgb[2:-2, 2:-2], rtol=1e-5)
    # each pixel keeps its own sample
    idx = {"R": 0, "G": 1, "B": 2}
    for k, (cy, cx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        c = idx[pattern[k]]
        np.testing.assert_array_equal(out[cy::2, cx::2, c], raw[cy::2, cx::2])


def test_debayer_rejects_bad_pattern():
    with pytest.raises(ValueError, match="pattern"):
        mj.debayer_bilinear(np.zeros((4, 4)), "RGBX")


def test_scan_skips_and_errors(tmp_path):
    w = sky_wcs(shape=(32, 32))
    good = np.random.default_rng(0).normal(100, 1, (32, 32)).astype(np.float32)
    fits.PrimaryHDU(good, header=w.to_header()).writeto(tmp_path / "ok.fits")
    fits.PrimaryHDU(good).writeto(tmp_path / "nowcs.fits")
    fits.PrimaryHDU(np.full((32, 32), np.nan, np.float32), header=w.to_header()).writeto(tmp_path / "nan.fits")
    fits.PrimaryHDU(np.full((32, 32), 5.0, np.float32), header=w.to_header()).writeto(tmp_path / "const.fits")
    assert mj.scan_frame(tmp_path / "ok.fits").channels == 1
    from mosaic_jax._src.io import FrameSkipped

    for name, why in (("nowcs", "celestial"), ("nan", "NaN"), ("const", "constant")):
        with pytest.raises(FrameSkipped, match=why):
            mj.scan_frame(tmp_path / f"{name}.fits")
    (tmp_path / "junk.fits").write_bytes(b"not a fits file at all")
    with pytest.raises(mj.MosaicInputError, match="junk.fits"):
        mj.scan_frame(tmp_path / "junk.fits")


def test_stack_plan_and_folders(tmp_path, sim_rgb):
    d, truth = sim_rgb
    plan = tmp_path / "stack_plan.csv"
    plan.write_text("path,weight,exposure\n" + "".join(f"{d / f['file']},{1 + k},10\n"
                                                         for k, f in enumerate(truth["frames"][:3])))
    got = mj.find_inputs([plan])
    assert [p.name for p, _, _ in got] == [f["file"] for f in truth["frames"][:3]]
    assert [w for _, w, _ in got] == [1.0, 2.0, 3.0] and all(e == 10.0 for _, _, e in got)
    assert len(mj.find_inputs([d])) == len(truth["frames"])  # the truth/ subfolder is not an input
    with pytest.raises(mj.MosaicInputError, match="no such"):
        mj.find_inputs([tmp_path / "missing"])
    (tmp_path / "bad.csv").write_text("name\nx.fits\n")
    with pytest.raises(mj.MosaicInputError, match="path column"):
        mj.find_inputs([tmp_path / "bad.csv"])


# ---------------------------------------------------------------------------------------------
# Reprojection and grid
# ---------------------------------------------------------------------------------------------


def test_jax_reprojection_matches_reproject_interp():
    from reproject import reproject_interp

    rng = np.random.default_rng(1)
    src_w = sky_wcs((150.0, 20.0), (120, 100), rotation_deg=7.0)
    img = np.cumsum(np.cumsum(rng.normal(0, 1, (120, 100, 2)), 0), 1).astype(np.float32) + 500  # smooth, positive
    out_w = sky_wcs((150.01, 20.005), (140, 150), rotation_deg=-3.0)
    ours = np.asarray(mj.reproject_frame(img, src_w, out_w, 10, 20, 90, 110))
    ref, _ = reproject_interp((np.moveaxis(img, -1, 0), src_w), out_w[10:100, 20:130], shape_out=(90, 110),
                              order="bilinear")
    ref = np.moveaxis(ref, 0, -1)
    both = np.isfinite(ours) & np.isfinite(ref)
    assert both.mean() > 0.3
    # the footprints agree except along the edge
    assert (np.isfinite(ours) != np.isfinite(ref)).mean() < 0.02
    np.testing.assert_allclose(ours[both], ref[both], rtol=1e-3)
    ours_r = np.asarray(mj.reproject_frame(img, src_w, out_w, 10, 20, 90, 110, backend="reproject"))
    np.testing.assert_allclose(ours_r, ref, rtol=1e-6)


def test_grid_covers_canvas_and_assigns_frames(sim_rgb):
    d, truth = sim_rgb
    frames = [mj.scan_frame(p) for p, _, _ in mj.find_inputs([d])]
    g = mj.make_grid(frames, tile_size_factor=1.5, overlap=0.4)
    H, W = g.shape
    cover = np.zeros((H, W), int)
    for t in g.tiles:
        assert t.h == min(g.tile_size, H) and t.w == min(g.tile_size, W)
        assert 0 <= t.y0 and t.y0 + t.h <= H and 0 <= t.x0 and t.x0 + t.w <= W
        cover[t.y0:t.y0 + t.h, t.x0:t.x0 + t.w] += 1
        assert t.frames
    assert cover.min() >= 1
    assert len(g.tiles) > 1
    with pytest.raises(ValueError, match="overlap"):
        mj.make_grid(frames, overlap=0.95)


def _tan_frame(crval, crpix, scale, angle_deg=0.0, system=("RA---TAN", "DEC--TAN")):
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = list(system)
    w.wcs.crval, w.wcs.crpix = crval, crpix
    t = np.radians(angle_deg)
    w.wcs.cd = scale * np.array([[-np.cos(t), np.sin(t)], [np.sin(t), np.cos(t)]])
    return w


@pytest.mark.parametrize("case", ["grid", "rotated", "pole", "galactic"])
def test_optimal_wcs_is_reprojects(case, sim_rgb):
    from reproject.mosaicking import find_optimal_celestial_wcs

    from mosaic_jax._src.grid import optimal_tan_wcs

    if case == "grid":
        items = [(f.shape, f.wcs) for f in (mj.scan_frame(p) for p, _, _ in mj.find_inputs([sim_rgb[0]]))]
    elif case == "rotated":  # mixed scales and orientations: the finest scale, north up
        items = [((120, 100), _tan_frame([210 + 0.05 * k, -60 + 0.03 * k], [50, 60], 1e-3 * (1 + 0.1 * k), a))
                 for k, a in enumerate((0, 17, 33, 95))]
    elif case == "pole":  # across RA = 0, next to the pole
        items = [((60, 60), _tan_frame([359.9 + 0.1 * k, 89.5 + 0.1 * k], [30, 30], 2e-3)) for k in range(3)]
    else:
        items = [((80, 90), _tan_frame([0.2 * k, 0.1 * k], [40, 45], 3e-3, 0, ("GLON-TAN", "GLAT-TAN")))
                 for k in range(3)]
    want, want_shape = find_optimal_celestial_wcs(items, projection="TAN")
    got, got_shape = optimal_tan_wcs(items)
    assert got_shape == tuple(int(v) for v in want_shape)
    hw, hg = want.to_header(), got.to_header()
    assert set(hw) == set(hg)
    for k in hw:
        if isinstance(hw[k], float):
            assert hg[k] == pytest.approx(hw[k], rel=1e-9, abs=1e-9), k
        else:
            assert hg[k] == hw[k], k


# ---------------------------------------------------------------------------------------------
# Seam metric
# ---------------------------------------------------------------------------------------------


def test_lad_fit_ignores_outlying_blocks():
    x = np.linspace(0, 10, 60)
    y = 2 * x + 1
    y[:8] += 50  # a seam
    a, b, r = lad_fit(x, y)
    assert abs(a - 2) < 1e-3 and abs(b - 1) < 1e-2


def test_lad_fit_equals_the_generic_irls():
    rng = np.random.default_rng(5)
    x = rng.normal(size=80)
    y = 0.7 * x - 3 + 0.2 * rng.standard_cauchy(80)
    a, b, r = lad_fit(x, y)
    z, rz = _robust_lstsq(np.stack([x, np.ones_like(x)], 1), y, lad=True)
    np.testing.assert_allclose([a, b], z, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(r, rz, atol=1e-9)


def test_lad_fits_rows_equal_their_own_fits():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(4, 40)), rng.normal(size=(4, 40))
    m = rng.random((4, 40)) < 0.7
    a, b, r = lad_fits(x, y, m)
    for i in range(4):
        ai, bi, ri = lad_fit(x[i][m[i]], y[i][m[i]])
        np.testing.assert_allclose([a[i], b[i]], [ai, bi], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(r[i][m[i]], ri, atol=1e-9)


@pytest.mark.parametrize("block", [1, 2, 5, 32])
def test_block_medians_equal_nanmedian(block):
    rng = np.random.default_rng(block)
    img = rng.normal(size=(101, 130, 3)).astype(np.float32)
    img[rng.random(img.shape) < 0.05] = np.nan
    img[:40, :50] = np.nan  # whole blocks empty
    img[60:, 70:, 1] = np.where(rng.random((41, 60)) < 0.5, np.nan, img[60:, 70:, 1])  # blocks under 90 % valid
    by, bx = 101 // block, 130 // block
    b = img[:by * block, :bx * block].reshape(by, block, bx, block, 3).transpose(0, 2, 4, 1, 3).reshape(by, bx, 3, -1)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = np.where(np.isfinite(b).mean(-1) >= 0.9, np.nanmedian(b, -1), np.nan)
    got = block_medians(img, block)
    assert got.shape == ref.shape and got.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got[np.isfinite(got)], ref[np.isfinite(ref)], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(block_medians(img[..., 0], block), got[..., 0])


def test_seam_metric_zero_for_scaled_frames_and_sees_a_step():
    rng = np.random.default_rng(2)
    w = sky_wcs(shape=(256, 256))
    yy, xx = np.mgrid[0:256, 0:256]
    sky = (100 + 40 * np.exp(-((yy - 100) ** 2 + (xx - 150) ** 2) / 3000.0)).astype(np.float32)
    frames = [(2.0 * sky[:, :160] + 5 + rng.normal(0, 0.5, (256, 160)).astype(np.float32), w[:, :160]),
              (0.5 * sky[:, 96:] - 3 + rng.normal(0, 0.5, (256, 160)).astype(np.float32), w[:, 96:])]
    clean = seam_metric(sky, w, frames)
    stepped = sky.copy()
    stepped[:, 64:] += 5.0  # inside frame 0 only
    bad = seam_metric(stepped, w, frames)
    assert clean.rms < 0.1 and clean.rms_sigma < 0.15  # the noise floor of 32x32 block medians
    assert bad.rms > 1.0 and bad.rms > 10 * clean.rms


# ---------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------


def test_build_simulated_rgb_is_seamless_and_on_one_scale(built, sim_rgb):
    d, truth = sim_rgb
    r = built
    H, W = r.grid.shape
    assert r.mosaic.shape == (H, W, 3) and r.mosaic.dtype == np.float32 and r.weight.shape == (H, W)
    assert np.isfinite(r.mosaic).mean() > 0.9
    rep = r.report
    assert len(rep["tiles"]) == len(r.grid.tiles) > 1
    assert rep["seam_metric"]["rms_sigma"] < 0.1
    summ = rep["pair_residual_summary"]
    assert summ["median_abs_diff_after_sigma"] <= summ["median_abs_diff_before_sigma"]
    # frame gains recovered against truth (the gauge frame's scale): g_est * g_true ~ const
    tg = {f["file"]: f["gain"] * np.asarray(f["cast"]) for f in truth["frames"]}
    prod = np.asarray([np.asarray(f["gains"]) * tg[f["file"]] for f in rep["frames"]])
    assert np.max(np.abs(prod / np.median(prod, axis=0) - 1)) < 0.02  # uncorrected: up to 25 %
    for t in rep["tiles"]:
        assert np.all(np.isfinite(t["gains"])) and np.all(np.isfinite(t["offsets"]))


def test_outputs_written_and_readable(built, tmp_path):
    paths = mj.write_outputs(built, tmp_path / "out")
    with fits.open(paths["fits"]) as h:
        assert h[0].data.shape == (3,) + built.grid.shape and h[0].data.dtype.kind == "f"
        assert h["WEIGHT"].data.shape == built.grid.shape
        assert h[0].header["CTYPE1"].startswith("RA---TAN")
    from PIL import Image

    im = Image.open(paths["preview"])
    assert im.mode == "RGB" and im.size == (built.grid.shape[1], built.grid.shape[0])
    rep = json.loads(paths["report"].read_text())
    assert {"inputs_used", "inputs_skipped", "grid", "tiles", "pairs", "timings_s", "peak_memory_mb",
            "seam_metric"} <= set(rep)
    assert not list((tmp_path / "out").glob(".*tmp"))  # no temporary files left behind
    mask = os.umask(0)
    os.umask(mask)
    for p in paths.values():  # the usual permissions, not the temporary file's 0600
        assert Path(p).stat().st_mode & 0o777 == 0o666 & ~mask, p


def test_reference_solve_and_two_pass_run(sim_rgb):
    d, _ = sim_rgb
    for cfg in (mj.MosaicConfig(tile_size_factor=1.5, solve="reference", quality=False),
                mj.MosaicConfig(tile_size_factor=1.5, two_pass=True, reject="kappa", quality=False)):
        r = mj.build_mosaic([d], cfg, progress=False)
        assert np.isfinite(r.mosaic).mean() > 0.9
        assert all(np.all(np.isfinite(t["gains"])) for t in r.report["tiles"])


def test_bayer_and_mono_frames(tmp_path):
    d = tmp_path / "bayer"
    simulate_dataset(d, grid=(1, 2), frame_shape=(64, 80), bayer=True, seed=5)
    r = mj.build_mosaic([d], mj.MosaicConfig(quality=False), progress=False)
    assert r.mosaic.shape[-1] == 3 and r.report["inputs_used"][0]["bayer"] == "GRBG"
    m = tmp_path / "mono"
    simulate_dataset(m, grid=(1, 2), frame_shape=(64, 80), seed=6)
    r = mj.build_mosaic([m], mj.MosaicConfig(quality=False), progress=False)
    assert r.mosaic.shape[-1] == 1
    with pytest.raises(mj.MosaicInputError, match="mix mono and colour"):
        mj.build_mosaic([d, m], progress=False)


def test_bad_inputs_give_clear_errors_and_no_output(tmp_path, capsys):
    w = sky_wcs(shape=(32, 32))
    fits.PrimaryHDU(np.random.default_rng(0).normal(0, 1, (32, 32)).astype(np.float32)).writeto(tmp_path / "a.fits")
    out = tmp_path / "out"
    assert cli(["build", str(tmp_path / "a.fits"), "-o", str(out), "-q"]) == 2
    assert "no usable frames" in capsys.readouterr().err and not out.exists()
    (tmp_path / "b.fits").write_text("hello")
    assert cli(["build", str(tmp_path / "b.fits"), "-o", str(out), "-q"]) == 2
    assert "b.fits" in capsys.readouterr().err and not out.exists()
    # a frame of a distant field cannot form one mosaic with the others
    far = tmp_path / "far"
    far.mkdir()
    for k, c in enumerate(((10.0, 0.0), (200.0, 40.0))):
        fits.PrimaryHDU(np.random.default_rng(k).normal(0, 1, (32, 32)).astype(np.float32),
                        header=sky_wcs(c, (32, 32), scale_deg=1 / 3600).to_header()).writeto(far / f"{k}.fits")
    assert cli(["build", str(far), "-o", str(out), "-q"]) == 2
    assert not out.exists()
    del w


def test_simulate_without_the_true_sky_writes_the_same_frames(tmp_path):
    a = simulate_dataset(tmp_path / "a", grid=(1, 2), frame_shape=(40, 48), rgb=True, seed=4)
    b = simulate_dataset(tmp_path / "b", grid=(1, 2), frame_shape=(40, 48), rgb=True, seed=4, true_sky=False)
    assert a == b and not (tmp_path / "b" / "truth").exists()
    for f in a["frames"]:
        assert (tmp_path / "a" / f["file"]).read_bytes() == (tmp_path / "b" / f["file"]).read_bytes()


def test_cli_simulate_build_report(tmp_path, capsys):
    assert cli(["simulate", "-o", str(tmp_path / "s"), "--grid", "1x2", "--frame-shape", "64x80", "--seed", "2"]) == 0
    assert (tmp_path / "s" / "truth.json").exists() and (tmp_path / "s" / "truth" / "sky.fits").exists()
    assert cli(["build", str(tmp_path / "s"), "-o", str(tmp_path / "o"), "-q", "--no-quality",
                "--backend", "reproject"]) == 0
    assert (tmp_path / "o" / "mosaic.fits").exists()
    capsys.readouterr()
    assert cli(["report", str(tmp_path / "o")]) == 0
    assert "frames used 2" in capsys.readouterr().out


def test_seestar_frames_skip_the_unsolved(shared_data):
    d = shared_data / "astro" / "seestar_ngc7023"
    infos, skipped = [], []
    from mosaic_jax._src.io import FrameSkipped

    for p, _, _ in mj.find_inputs([d]):
        try:
            infos.append(mj.scan_frame(p))
        except FrameSkipped as e:
            skipped.append(str(e))
    assert len(infos) == 4 and len(skipped) == 2 and all("celestial" in s for s in skipped)
    assert all(i.bayer == "GRBG" and i.channels == 3 for i in infos)
    data, alpha = mj.load_frame(infos[0])
    assert data.shape == (1920, 1080, 3) and data.dtype == jnp.float32 and alpha is None


def test_simulate_without_noise_keeps_pointings_and_sky(tmp_path):
    """noise=False makes the same random draws: same WCS and sky, the difference is the noise."""
    from astropy.io import fits

    from mosaic_jax.simulate import simulate_dataset

    a = simulate_dataset(tmp_path / "a", grid=(1, 2), frame_shape=(48, 64), seed=3, sigma=2.0)
    b = simulate_dataset(tmp_path / "b", grid=(1, 2), frame_shape=(48, 64), seed=3, sigma=2.0, noise=False)
    assert a["frames"] == b["frames"]
    for f in a["frames"]:
        with fits.open(tmp_path / "a" / f["file"]) as ha, fits.open(tmp_path / "b" / f["file"]) as hb:
            assert ha[0].header["CRVAL1"] == hb[0].header["CRVAL1"]
            d = np.asarray(ha[0].data, np.float64) - np.asarray(hb[0].data, np.float64)
    assert abs(d.mean()) < 0.2 and 1.8 < d.std() < 2.2
