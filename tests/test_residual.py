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


def test_the_lapped_prefilter_is_orthogonal_and_crosses_the_block_boundaries():
    rng = np.random.default_rng(2)
    np.testing.assert_allclose(R.LAP @ R.LAP.T, np.eye(8), atol=1e-12)
    x = rng.normal(size=(24, 40))
    y = R.lap(x)
    np.testing.assert_allclose(R.lap(y, inverse=True), x, atol=1e-12)
    assert np.sum(y * y) == pytest.approx(np.sum(x * x), rel=1e-12)
    # a pixel changes only within 4 of an interior boundary along some axis: the corners stay
    changed = np.abs(y - x) > 1e-12
    outer_rows, outer_cols = np.r_[0:4, 20:24], np.r_[0:4, 36:40]
    assert not changed[np.ix_(outer_rows, outer_cols)].any() and changed[4:20].all()
    # along each axis it is the 1-D filter of the 8 samples that straddle a boundary
    line = rng.normal(size=16)
    ref = line.copy()
    ref[4:12] = R.LAP @ line[4:12]
    np.testing.assert_allclose(R.lap(line[None, :].repeat(8, 0))[0], ref, atol=1e-12)


def test_the_lapped_transform_has_the_lots_coding_gain():
    """AR(1), rho 0.95: the LOT's 9.22 dB against the 8x8 DCT's 8.83 dB (Malvar; Tran et al. 2003)."""
    L, rho = 96, 0.95
    Rxx = rho ** np.abs(np.arange(L)[:, None] - np.arange(L)[None, :])

    def gain(lapped):
        pre = np.eye(L)
        if lapped:  # the pre-filter along the rows of an 8-row plane (no boundary along its columns)
            pre = np.stack([R.lap(np.tile(np.eye(L)[i], (8, 1)))[0] for i in range(L)], axis=1)
        T = np.kron(np.eye(L // 8), R.DCT) @ pre  # then the DCT of every block
        var = np.diag(T @ Rxx @ T.T)[40:48]  # a block away from the edges
        return 10 * np.log10(1.0 / np.exp(np.mean(np.log(var))))

    assert gain(False) == pytest.approx(8.83, abs=0.01)
    assert gain(True) == pytest.approx(9.22, abs=0.01)


@pytest.mark.parametrize("lapped", [False, True])
@pytest.mark.parametrize("delta", [0.01, 0.05])
def test_inverse_of_the_quantised_transform_is_within_the_step(delta, lapped):
    rng = np.random.default_rng(1)
    x = rng.normal(0, 0.1, (37, 45))
    y = R.inverse(R.quantise(R.forward(x, lapped), delta), delta, x.shape, lapped)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.sqrt(np.mean((y - x) ** 2)) < delta * 0.45  # dead zone: a little over delta / sqrt(12)
    assert np.array_equal(R.quantise(R.forward(np.zeros((8, 8))), delta), np.zeros((1, 1, 64), np.int64))


def test_quantiser_offset():
    """Dead zone 0 rounds to the nearest level; a wider dead zone only moves levels toward zero,
    by at most one, and keeps their signs."""
    rng = np.random.default_rng(4)
    c = rng.laplace(0, 0.1, (5, 6, 64))
    delta = 0.037
    near = R.quantise(c, delta, deadzone=0.0)
    assert np.array_equal(near, np.round(c / delta).astype(np.int64))
    for dz in (0.1, R.DEADZONE):
        q = R.quantise(c, delta, deadzone=dz)
        assert np.all(np.abs(q) <= np.abs(near)) and np.all(np.abs(near) - np.abs(q) <= 1)
        assert np.all((q == 0) | (np.sign(q) == np.sign(c)))
    assert np.array_equal(R.quantise(c, delta), R.quantise(c, delta, deadzone=R.DEADZONE))


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
    assert R.unpack_steps(b"xy" + R.pack_steps([5, 0, 7]), 3) == ([5, 0, 7], False, b"xy")
    assert R.unpack_steps(b"xy" + R.pack_steps([5, 0, 7], lapped=True), 3) == ([5, 0, 7], True, b"xy")
    assert R.pack_steps([5], lapped=True)[0] == 3 | R.LAPPED
    with pytest.raises(pc.BitstreamError):
        R.unpack_steps(R.pack_steps([0, 0]), 2)  # the tool with no plane that uses it
    for head in (b"\x04", bytes([4 | R.LAPPED])):  # 16x16 blocks: not this decoder's
        with pytest.raises(pc.BitstreamError):
            R.unpack_steps(head + R.pack_steps([5])[1:], 1)
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


def test_block_dct_residual_streams_keep_decoding_and_the_lap_switches_off():
    """A stream of the block-DCT residual (written before the lapped transform and RDOQ existed)
    decodes to what its encoder made, and with both switched off the encoder writes it again byte
    for byte."""
    from pathlib import Path

    from skimage import data

    fixtures = Path(__file__).parent / "fixtures"
    old = (fixtures / "v15_gray_residual_dct.pc15").read_bytes()
    np.testing.assert_array_equal(pc.decode_y(old), np.load(fixtures / "v15_gray_residual_dct_recon.npy"))
    assert pc.stream_info(old)["residual_lapped"] is False
    img = data.camera()[96:192, 160:288]
    cfg = pc.CodecConfig(tile=16, overlap=1, lambda_rd=0.02, transform_residual=True,
                         residual_base_lambda=0.3)  # the default when the fixture was written
    assert pc.encode_y(img, cfg.replace(residual_lapped=False, residual_rdoq=False))["bitstream"] == old
    lapped = pc.encode_y(img, cfg)
    assert lapped["bitstream"] != old and pc.stream_info(lapped["bitstream"])["residual_lapped"] is True
    assert np.array_equal(pc.decode_y(lapped["bitstream"]), lapped["recon"])


def _cost(c, q, step, lam, bits):
    """Squared error plus lam times the bits of q's symbols (one block: no neighbours' context)."""
    s, t = R.residual_symbols(q)
    return float(np.sum((np.abs(c) - np.abs(q) * step) ** 2) + lam * sum(bits[k][v] for k, v in zip(t, s)))


def test_rdoq_only_lowers_levels_and_never_raises_the_cost():
    from pc15jax._src.residual_rd import RDOQ_DEADZONE, rdoq, table_bits

    rng = np.random.default_rng(5)
    step = 0.02
    for trial in range(40):
        c = rng.laplace(0, step * rng.uniform(0.3, 4.0), (1, 1, 64)) * np.exp(-np.arange(64) / 20)[None, None]
        q = R.quantise(c, step, RDOQ_DEADZONE if trial % 4 < 2 else R.DEADZONE)  # the codec's start, and 0.32
        bits = table_bits(q, adaptive=bool(trial % 2))
        lam = float(rng.uniform(0, 2e-4))
        out = rdoq(c, q, step, np.full((1, 1), lam), bits)
        assert np.all(np.abs(out) <= np.abs(q)) and np.all((out == 0) | (np.sign(out) == np.sign(q)))
        assert _cost(c, out, step, lam, bits) <= _cost(c, q, step, lam, bits) + 1e-12
    c = rng.normal(0, 0.05, (3, 4, 64))
    q = R.quantise(c, step)
    bits = table_bits(q, adaptive=True)
    assert np.array_equal(rdoq(c, q, step, np.zeros((3, 4)), bits), q)  # lambda 0: the dead zone's levels
    assert not rdoq(c, q, step, np.full((3, 4), 1e3), bits).any()  # a huge lambda empties every block


def test_rdoq_switches_off_and_keeps_decode_equal_to_recon(gray):
    on = pc.encode_y(gray, pc.CodecConfig(lambda_rd=0.1, transform_residual=True))
    off = pc.encode_y(gray, pc.CodecConfig(lambda_rd=0.1, transform_residual=True, residual_rdoq=False))
    assert on["bitstream"] != off["bitstream"] and len(on["bitstream"]) < len(off["bitstream"])
    for e in (on, off):
        assert np.array_equal(pc.decode_y(e["bitstream"]), e["recon"])


def test_config_validates_the_residual_fields():
    for bad in (dict(transform_residual=1), dict(residual_step=0.0), dict(residual_base_lambda=-1.0),
                dict(residual_lapped="yes"), dict(residual_rdoq=None)):
        with pytest.raises(ValueError):
            pc.CodecConfig(**bad)
    c = pc.CodecConfig(lambda_rd=0.2, transform_residual=True)
    assert c.search_lambda == 0.6 and pc.CodecConfig(lambda_rd=0.2).search_lambda == 0.2
    assert c.replace(lambda_rd=1.5).search_lambda == 1.5


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
