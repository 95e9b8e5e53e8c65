"""The Pillow plugin: ``import pc15jax.pillow`` makes ``Image.open`` / ``Image.save`` speak PC15."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

import pc15jax as pc
import pc15jax.pillow  # noqa: F401  (registers the format)


def _u8(img):
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


@pytest.mark.parametrize("colour", [False, True])
def test_save_open_round_trip_is_the_decoder(tmp_path, colour):
    from skimage import data

    src = Image.fromarray(data.astronaut()[:48, :80] if colour else data.camera()[:48, :80])
    path = tmp_path / "x.pc15"
    src.save(path, lambda_rd=0.3)
    with Image.open(path) as im:
        assert im.format == "PC15" and im.mode == ("RGB" if colour else "L") and im.size == (80, 48)
        got = np.asarray(im)
    assert np.array_equal(got, _u8(pc.decode_native(path.read_bytes())))
    # the stream is the library's own: same bytes as encode() with the same config
    arr = np.asarray(src)
    enc = (pc.encode if colour else pc.encode_y)(arr, pc.CodecConfig(lambda_rd=0.3))
    assert path.read_bytes() == enc["bitstream"]


def test_save_options_are_codec_config_fields(tmp_path):
    from skimage import data

    src = Image.fromarray(data.camera()[:48, :80])  # one shape for the whole module: few programs
    src.save(tmp_path / "a.pc15", target_bpp=0.3)  # the rate ladder's geometry, as the CLI
    assert pc.stream_info(tmp_path / "a.pc15")["tile"] == pc.ladder_geometry(0.3)[0] != pc.CodecConfig().tile
    src.save(tmp_path / "b.pc15", lambda_rd=0.3, loop_filter=False, adaptive_coding=False)
    info = pc.stream_info(tmp_path / "b.pc15")
    assert info["tools"] == [] and info["meta"]["lambda"] == 0.3
    with pytest.raises(ValueError, match="unknown save option"):
        src.save(tmp_path / "c.pc15", lambda_rdd=1.0)
    assert not (tmp_path / "c.pc15").exists()  # no half-written file


def test_alpha_warns_and_corrupt_streams_raise(tmp_path):
    from skimage import data

    rgba = Image.fromarray(data.astronaut()[:48, :80]).convert("RGBA")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        rgba.save(tmp_path / "a.pc15")
    assert any("alpha" in str(x.message) for x in w)
    with Image.open(tmp_path / "a.pc15") as im:
        assert im.mode == "RGB"
    (tmp_path / "bad.pc15").write_bytes((tmp_path / "a.pc15").read_bytes()[:60])
    with Image.open(tmp_path / "bad.pc15") as im, pytest.raises(OSError, match="PC15"):
        im.load()
    (tmp_path / "png.pc15").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(Exception):  # not ours: Pillow's own "cannot identify" (or a PNG error)
        Image.open(tmp_path / "png.pc15").load()
