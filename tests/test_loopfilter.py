"""The loop filter: classes, the filter against numpy, the fit, its signalling, and the coding tools
field of the v15 header (old streams decode; the tool switched off codes exactly as before)."""

import json
import struct
import zlib
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import pc15jax as pc
from pc15jax._src import loopfilter as lf
from pc15jax.bitstream import container as C

FIXTURES = Path(__file__).parent / "fixtures"


def test_pixel_classes_follow_the_seams():
    # tile 8, overlap 1, length 22: tiles start at 0, 7, 14; seams (overlap centres) at 7 and 14
    cls = lf.pixel_classes(22, 5, 8, 1, 3)
    dist = np.min(np.abs(np.arange(22)[:, None] - np.array([7, 14])[None, :]), axis=1)
    want = np.where(dist < 1, 0, np.where(dist < 2.5, 1, 2))
    np.testing.assert_array_equal(cls[:, 0], want)  # 5 columns: one tile, no seam along x
    assert cls.dtype == np.int32 and cls.shape == (22, 5)
    # overlap 2: the seam centre lies between two pixels, both at distance 0.5
    c2 = lf.pixel_classes(30, 30, 16, 2, 3)  # starts 0, 14: overlap pixels 14 and 15
    assert list(c2[12:18, 0]) == [2, 1, 0, 0, 1, 2] and c2[0, 14] == c2[0, 15] == 0  # 2.5 px: inside
    assert (lf.pixel_classes(9, 9, 8, 1, 1) == 0).all()
    with pytest.raises(ValueError):
        lf.pixel_classes(9, 9, 8, 1, 2)


def _numpy_filter(y, cls, taps):
    y = y.astype(np.float64)
    H, W = y.shape
    p = np.pad(y, 3, mode="edge")
    out = y.copy()
    for k, (dy, dx) in enumerate(lf.OFFSETS):
        d = p[3 + dy:3 + dy + H, 3 + dx:3 + dx + W] + p[3 - dy:3 - dy + H, 3 - dx:3 - dx + W] - 2 * y
        out += taps[cls, k] * lf.STEP * d
    return np.clip(out, 0, 1)


def test_filter_matches_numpy_and_keeps_flat_planes():
    rng = np.random.default_rng(0)
    y = rng.random((37, 29)).astype(np.float32)
    cls = lf.pixel_classes(37, 29, 12, 1, 3)
    taps = rng.integers(-20, 21, (3, 12)).astype(np.int32)
    got = np.asarray(lf.apply_loop_filter(jnp.asarray(y), jnp.asarray(cls), jnp.asarray(taps)))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, _numpy_filter(y, cls, taps), atol=2e-6)
    flat = jnp.full((20, 20), 0.4, jnp.float32)
    np.testing.assert_array_equal(np.asarray(lf.apply_loop_filter(flat, jnp.zeros((20, 20), jnp.int32),
                                                                  jnp.asarray(taps[:1]))), np.asarray(flat))
    np.testing.assert_array_equal(np.asarray(lf.filter_plane(jnp.asarray(y), lf.NO_FILTER, 12, 1)), y)


def test_fit_recovers_a_known_filter():
    rng = np.random.default_rng(1)
    from scipy.ndimage import gaussian_filter

    y = np.clip(gaussian_filter(rng.random((96, 96)), 2.0) * 2 - 0.5, 0, 1)  # smooth, inside [0, 1] mostly
    y = 0.25 + 0.5 * (y - y.min()) / (y.max() - y.min())
    true = np.zeros((1, 12), np.int32)
    true[0, :4] = [-9, 5, -3, 7]
    x = _numpy_filter(y, np.zeros((96, 96), np.int32), true)
    taps = lf.fit_loop_filter(x, y, 16, 1, lam=1e-6, alpha=0.7)
    assert taps.shape[0] in (1, 3)
    assert np.abs(taps - true[0]).max() <= 1, taps
    # nothing to gain -> no filter at all
    assert lf.fit_loop_filter(y, y, 16, 1, lam=1.0, alpha=0.7).shape == (0, 12)


def test_pack_unpack_and_malformed_parameters():
    t = [np.arange(36, dtype=np.int32).reshape(3, 12) - 18, np.zeros((0, 12), np.int32), np.ones((1, 12), np.int32)]
    b = lf.pack_filters(t)
    assert len(b) == 3 + 36 + 12
    for a, c in zip(t, lf.unpack_filters(b, 3)):
        np.testing.assert_array_equal(a, c)
    for bad, match in ((b[:-1], "truncated"), (b + b"\0", "unexpected bytes"), (b"\x02" + b"\0" * 24, "classes"),
                       (b"", "truncated")):
        with pytest.raises(pc.BitstreamError, match=match):
            lf.unpack_filters(bad, 3)
    with pytest.raises(ValueError):
        lf.pack_filters([np.zeros((2, 12))])


def _restamp(stream: bytes, head: bytes) -> bytes:
    """A stream whose header (up to its CRC) is replaced by ``head``, with a fresh CRC."""
    from tests.test_codec import _crc_pos

    return head + struct.pack("<I", zlib.crc32(head)) + stream[_crc_pos(stream) + 4:]


@pytest.mark.parametrize("name", ["v15_gray_t16", "v15_rgb_t12"])
def test_streams_written_before_coding_tools_decode(name):
    data = (FIXTURES / f"{name}.pc15").read_bytes()
    meta = json.loads((FIXTURES / "v15_streams.json").read_text())[f"{name}.pc15"]
    want = np.load(FIXTURES / f"{name}_recon.npy")
    got = pc.decode_y(data) if want.ndim == 2 else pc.decode(data)
    assert list(got.shape) == meta["shape"] and len(data) == meta["bytes"]
    np.testing.assert_allclose(got, want, atol=1e-6)
    info = pc.stream_info(data)
    assert info["tools"] == [] and set(info["loop_filter_classes"]) == {0}


def test_tool_switched_off_codes_exactly_as_without_it():
    from skimage import data as skd

    data = (FIXTURES / "v15_gray_t16.pc15").read_bytes()
    img = skd.camera()[96:160, 200:280]
    off = dict(loop_filter=False, adaptive_coding=False)
    enc = pc.encode(img, pc.CodecConfig(tile=16, overlap=1, lambda_rd=0.3, **off))
    assert enc["bitstream"] == data  # the stream the encoder wrote before the tools field existed
    rgb = skd.astronaut()[40:88, 120:184]
    enc = pc.encode(rgb, pc.CodecConfig(tile=12, overlap=1, lambda_rd=0.1, **off))
    assert enc["bitstream"] == (FIXTURES / "v15_rgb_t12.pc15").read_bytes()


@pytest.mark.parametrize("colour", [False, True])
def test_loop_filter_decodes_to_the_reconstruction_and_pays(camera, colour):
    from skimage import data as skd

    img = skd.astronaut()[100:228, 140:268] if colour else (camera[64:192, 128:256] * 255).astype(np.uint8)
    cfg = pc.CodecConfig(tile=12, overlap=1, lambda_rd=0.1, adaptive_coding=False)
    on, off = pc.encode(img, cfg), pc.encode(img, cfg.replace(loop_filter=False))
    dec = pc.decode(on["bitstream"]) if colour else pc.decode_y(on["bitstream"])
    np.testing.assert_array_equal(dec, on["recon"])
    assert on["stats"]["tools"] == ["loop_filter"] and on["stats"]["loop_filter_classes"][0] in (1, 3)
    assert pc.stream_info(on["bitstream"])["tools"] == ["loop_filter"]
    # the same atoms: the stream differs only by the header's tools block
    assert len(on["bitstream"]) - len(off["bitstream"]) == 4 + sum(1 + 12 * c for c in on["stats"]["loop_filter_classes"])
    x = img.astype(np.float32) / 255
    err = lambda r: float(np.mean((np.round(r * 255) / 255 - x) ** 2))  # noqa: E731
    assert err(on["recon"]) < err(off["recon"])


def test_unknown_tools_and_empty_tools_blocks_are_refused(camera):
    img = (camera[64:128, 128:192] * 255).astype(np.uint8)
    base = pc.encode_y(img, pc.CodecConfig(tile=12, overlap=1, lambda_rd=0.1))["bitstream"]
    assert base[5] & 0x80
    from tests.test_codec import _crc_pos, _tools_pos

    tpos = _tools_pos(base)
    head = bytearray(base[:_crc_pos(base)])
    head[tpos:tpos + 2] = struct.pack("<H", 1 | 1 << len(C.TOOLS))  # a tool this decoder does not know
    with pytest.raises(pc.BitstreamError, match="does not know"):
        pc.decode_y(_restamp(base, bytes(head)))
    head[tpos:tpos + 2] = struct.pack("<H", 0)
    with pytest.raises(pc.BitstreamError, match="names no tool"):
        pc.decode_y(_restamp(base, bytes(head)))


def test_header_validates_tools():
    with pytest.raises(ValueError, match="tools"):
        C.StreamHeader(H=8, W=8, tile=8, overlap=0, tools=1 << len(C.TOOLS))
    with pytest.raises(ValueError, match="tool data"):
        C.StreamHeader(H=8, W=8, tile=8, overlap=0, tool_data=b"x")
    assert C.StreamHeader(H=8, W=8, tile=8, overlap=0, tools=1, tool_data=b"\0").tool_names == ("loop_filter",)


@pytest.mark.parametrize("size", [1, 2, 7, 16, 40])
def test_box_mean_is_scipys_uniform_filter(size):
    from scipy.ndimage import uniform_filter

    from pc15jax._src.loopfilter import box_mean

    x = np.random.default_rng(size).random((23, 31))
    np.testing.assert_allclose(box_mean(x, size), uniform_filter(x, size, mode="nearest"), rtol=0, atol=1e-12)
