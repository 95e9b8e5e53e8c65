"""PSNR/SSIM against scikit-image references; batching, jit and edge cases."""

import jax
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim

import pc15jax as pc
from pc15jax._src import metrics as M


def _sk_ssim(a, b, data_range):
    return sk_ssim(a.astype(np.float64), b.astype(np.float64), gaussian_weights=True, sigma=1.5,
                   use_sample_covariance=False, data_range=data_range)


def _distortions(x):
    from scipy import ndimage

    rng = np.random.default_rng(0)
    yield np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1).astype(np.float32)
    yield ndimage.gaussian_filter(x, 2.0).astype(np.float32)
    yield np.clip(x * 0.8 + 0.1, 0, 1).astype(np.float32)
    yield (np.round(x * 8) / 8).astype(np.float32)


@pytest.mark.parametrize("which", ["camera", "astronaut_gray"])
def test_ssim_psnr_match_skimage(which, request):
    x = request.getfixturevalue(which)
    for y in _distortions(x):
        assert abs(float(pc.ssim(x, y)) - _sk_ssim(x, y, 1.0)) < 1e-4
        assert abs(float(pc.psnr(x, y)) - sk_psnr(x.astype(np.float64), y.astype(np.float64), data_range=1.0)) < 1e-4


def test_ssim_on_255_scale_and_small_planes(camera):
    x = camera[:64, :80] * 255
    y = np.clip(x + np.random.default_rng(1).normal(0, 8, x.shape), 0, 255).astype(np.float32)
    assert abs(float(pc.ssim(x, y, max_val=255.0)) - _sk_ssim(x, y, 255.0)) < 1e-4
    xs, ys = x[:11, :13] / 255, y[:11, :13] / 255  # the smallest allowed plane
    assert abs(float(pc.ssim(xs, ys)) - _sk_ssim(xs, ys, 1.0)) < 1e-4


def test_kodak_reference(shared_data):
    from PIL import Image

    x = np.asarray(Image.open(shared_data / "kodak" / "kodim03.png").convert("L")).astype(np.float32)
    y = np.clip(x + np.random.default_rng(2).normal(0, 6, x.shape), 0, 255).astype(np.float32)
    assert abs(float(pc.ssim(x, y, 255.0)) - _sk_ssim(x, y, 255.0)) < 1e-4
    assert abs(float(pc.psnr(x, y, 255.0)) - sk_psnr(x, y, data_range=255)) < 1e-4


def test_batch_axes_give_one_value_per_plane(camera):
    x = np.stack([camera[:40, :40], camera[100:140, 100:140], camera[200:240, :40]])
    y = np.clip(x + 0.03, 0, 1)
    s, p = np.asarray(pc.ssim(x, y)), np.asarray(pc.psnr(x, y))
    assert s.shape == (3,) and p.shape == (3,)
    for i in range(3):
        assert s[i] == pytest.approx(float(pc.ssim(x[i], y[i])), abs=1e-6)
        assert p[i] == pytest.approx(float(pc.psnr(x[i], y[i])), abs=1e-4)


def test_identical_and_jit(camera):
    x = camera[:64, :64]
    assert float(pc.ssim(x, x)) == pytest.approx(1.0, abs=1e-6)
    assert float(pc.psnr(x, x)) == np.inf
    y = np.clip(x + 0.1, 0, 1)
    assert float(jax.jit(pc.ssim)(x, y)) == pytest.approx(float(pc.ssim(x, y)), abs=1e-6)


def test_matrix_filter_equals_tap_filter():
    x = np.random.default_rng(4).random((2, 37, 64)).astype(np.float32)
    k = M.gaussian_kernel()
    via_matrix = np.asarray(M._gauss2(x, k))
    via_taps = np.asarray(M._filter_1d(M._filter_1d(x, k, -2), k, -1))
    np.testing.assert_allclose(via_matrix, via_taps, atol=1e-6)


def test_metric_errors():
    with pytest.raises(ValueError, match="same shape"):
        pc.ssim(np.zeros((16, 16)), np.zeros((16, 17)))
    assert float(pc.ssim(np.zeros((8, 16)), np.zeros((8, 16)))) == pytest.approx(1.0)  # one window: defined
    with pytest.raises(ValueError, match="max_val"):
        pc.psnr(np.zeros((4, 4)), np.ones((4, 4)), max_val=0)
