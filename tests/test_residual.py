"""The transform_residual coding tool: transform, symbols, stream, codec."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.fft import dctn

import pc15jax as pc
from pc15jax.bitstream import residual as R
from pc15jax.bitstream.rans import rans_encode


def test_forward_is_the_blockwise_orthonormal_dct_in_zigzag_order():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(21, 30))
    c = R.forward(x)
    assert c.shape == (3, 4, 64)
    pad = np.zeros((24, 32))
    pad[:21, :30] = x
    for by, bx in ((0, 0), (2, 3), (1, 2)):
        ref = dctn(pad[8 * by:8 * by + 8, 8 * bx:8 * bx + 8], norm="ortho").reshape(-1)
        np.testing.assert_allclose(c[by, bx], ref[R.ZIGZAG], atol=1e-12)
    assert sorted(R.ZIGZAG.tolist()) == list(range(64))
    assert R.BAND[0] == 0 and np.all(np.diff(R.BAND) >= 0)


@pytest.mark.parametrize("delta", [0.01, 0.05])
def test_inverse_of_the_quantised_transform_is_within_the_step(delta):
    rng = np.random.default_rng(1)
    x = rng.normal(0, 0.1, (37, 45))
    y = R.inverse(R.quantise(R.forward(x), delta), delta, x.shape)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.sqrt(np.mean((y - x) ** 2)) < delta * 0.45  # dead zone: a little over delta / sqrt(12)
    assert np.array_equal(R.quantise(R.forward(np.zeros((8, 8))), delta), np.zeros((1, 1, 64), np.int64))


@pytest.mark.parametrize("scale", [0.3, 3.0, 40.0, 3000.0])
@pytest.mark.parametrize("adaptive", [False, True])
def test_levels_round_trip_through_the_stream(scale, adaptive):
    rng = np.random.default_rng(int(scale))
    H, W = 29, 43
    by, bx = R.block_grid((H, W))
    q = np.round(rng.laplace(0, scale, (by, bx, 64)) * (rng.random((by, bx, 64)) < 0.3)).astype(np.int64)
    q[0, 0] = 0  # an empty block
    q[1, 1, 63] = -R.MAX_LEVEL  # the last position, escaped, at the largest level
    q = np.clip(q, -R.MAX_LEVEL, R.MAX_LEVEL)
    s, t = R.residual_symbols(q)
    data = rans_encode(s, R.residual_tables(), t, lanes=1, adaptive=adaptive)
    assert np.array_equal(R.decode_residual(data, len(s), (H, W), adaptive), q)
    with pytest.raises(pc.BitstreamError):
        R.decode_residual(data, len(s) + 1, (H, W), adaptive)


def test_steps_pack_and_check():
    assert R.unpack_steps(b"xy" + R.pack_steps([5, 0, 7]), 3) == ([5, 0, 7], b"xy")
    with pytest.raises(pc.BitstreamError):
        R.unpack_steps(R.pack_steps([0, 0]), 2)  # the tool with no plane that uses it
    with pytest.raises(pc.BitstreamError):
        R.unpack_steps(b"\x04" + R.pack_steps([5])[1:], 1)  # 16x16 blocks: not this decoder's
    with pytest.raises(pc.BitstreamError):
        R.unpack_steps(b"\x03", 1)


@pytest.fixture(scope="module")
def gray():
    from skimage import data

    return data.camera()[96:192, 160:288]


@pytest.mark.parametrize("blocks", [False, True])
def test_decode_equals_the_encoders_reconstruction(gray, blocks):
    kw = dict(block_sizes=((34, 2), (17, 1), (9, 1))) if blocks else {}
    enc = pc.encode_y(gray, pc.CodecConfig(lambda_rd=0.1, transform_residual=True, **kw))
    assert "transform_residual" in enc["stats"]["tools"] and enc["stats"]["residual_steps"][0] > 0
    assert np.array_equal(pc.decode_y(enc["bitstream"]), enc["recon"])
    info = pc.stream_info(enc["bitstream"])
    assert info["residual_steps"] == enc["stats"]["residual_steps"]
    assert info["bits_by_class"]["residual"] == pytest.approx(enc["stats"]["bits_by_class"]["residual"], abs=0.2)
    plain = pc.encode_y(gray, pc.CodecConfig(lambda_rd=0.1, residual_base_lambda=0.1, **kw))
    err = lambda e: np.mean((e["recon"] - gray / 255.0) ** 2)  # noqa: E731
    assert err(enc) < err(plain)  # the residual adds detail the atoms left out


def test_colour_decode_equals_reconstruction():
    from skimage import data

    img = data.astronaut()[:96, :112]
    enc = pc.encode(img, pc.CodecConfig(lambda_rd=0.1, transform_residual=True))
    assert len(enc["stats"]["residual_steps"]) == 3 and enc["stats"]["residual_steps"][0] > 0
    assert np.array_equal(pc.decode(enc["bitstream"]), enc["recon"])


def test_a_residual_of_zeros_leaves_the_tool_out_and_codes_as_without_it(gray):
    off = pc.encode_y(gray, pc.CodecConfig(lambda_rd=0.3))
    on = pc.encode_y(gray, pc.CodecConfig(lambda_rd=0.3, transform_residual=True, residual_step=1e3,
                                          residual_base_lambda=0.0))
    assert "transform_residual" not in on["stats"]["tools"]
    assert on["bitstream"] == off["bitstream"] and np.array_equal(on["recon"], off["recon"])


def test_config_validates_the_residual_fields():
    for bad in (dict(transform_residual=1), dict(residual_step=0.0), dict(residual_base_lambda=-1.0)):
        with pytest.raises(ValueError):
            pc.CodecConfig(**bad)
    c = pc.CodecConfig(lambda_rd=0.2, transform_residual=True)
    assert c.search_lambda == 0.3 and pc.CodecConfig(lambda_rd=0.2).search_lambda == 0.2


def test_block_bits_add_up_to_the_stream_cost():
    rng = np.random.default_rng(3)
    q = np.round(rng.laplace(0, 2, (3, 5, 64)) * (rng.random((3, 5, 64)) < 0.2)).astype(np.int64)
    for adaptive in (False, True):
        b = R.block_bits(q, adaptive)
        assert b.shape == (3, 5) and np.all(b > 0)
        assert b.sum() == pytest.approx(R.residual_bits(q, adaptive))


def test_the_rd_decision_keeps_blocks_only_where_they_pay(gray):
    from pc15jax._src.residual_rd import prune_residual

    x = gray.astype(np.float64) / 255.0
    base = np.clip(x + np.random.default_rng(0).normal(0, 0.05, x.shape), 0, 1).astype(np.float32)
    step = 0.05
    q = R.quantise(R.forward(x - base), step)
    alpha = pc.CodecConfig().alpha_mix
    assert not prune_residual(x, base, q, step, 1e6, alpha).any()  # bits priced out of reach: nothing kept
    assert np.array_equal(prune_residual(x, base, q, step, 0.0, alpha), q)  # free bits: every block that helps
    mid = prune_residual(x, base, q, step, 0.05, alpha)
    kept = mid.any(-1)
    assert 0 < kept.sum() < q.any(-1).sum()
    assert np.array_equal(mid[kept], q[kept])  # a block is kept whole or dropped whole


def test_the_filter_after_the_residual_is_signalled_and_switches_off_with_the_loop_filter(gray):
    from pc15jax._src.decoder import _parse_full

    cfg = pc.CodecConfig(lambda_rd=0.1, transform_residual=True)
    on = pc.encode_y(gray, cfg)
    taps = _parse_full(on["bitstream"])[3][0][2]
    assert taps.shape[0] in (1, 3)  # on this crop the 8 px block grid pays for a filter
    off = pc.encode_y(gray, cfg.replace(loop_filter=False))
    assert _parse_full(off["bitstream"])[3][0][2].shape[0] == 0
    assert np.array_equal(pc.decode_y(off["bitstream"]), off["recon"])
