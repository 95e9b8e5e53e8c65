"""Colour (YCbCr 4:2:0) coding and rate control."""

import json

import numpy as np
import pytest
from PIL import Image

import pc15jax as pc
from pc15jax import __main__ as cli
from pc15jax._src import color

CFG = pc.CodecConfig(tile=16, overlap=4)


def test_ycbcr_matches_jfif_and_round_trips():
    rgb = (np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8)
    ycc = np.asarray(color.rgb_to_ycbcr(rgb.astype(np.float32) / 255)) * 255
    ref = np.asarray(Image.fromarray(rgb).convert("YCbCr")).astype(np.float32)  # JFIF, full range
    assert np.abs(ycc - ref).max() <= 1.0
    back = np.asarray(color.ycbcr_to_rgb(color.rgb_to_ycbcr(rgb.astype(np.float32) / 255)))
    np.testing.assert_allclose(back, rgb / 255.0, atol=1e-5)


@pytest.mark.parametrize("H,W", [(7, 9), (8, 8), (1, 1)])
def test_420_shapes_and_constants(H, W):
    p = np.full((H, W), 0.3, np.float32)
    s = np.asarray(color.subsample_420(p))
    assert s.shape == ((H + 1) // 2, (W + 1) // 2)
    up = np.asarray(color.upsample_420(s, H, W))
    assert up.shape == (H, W)
    np.testing.assert_allclose(up, 0.3, atol=1e-6)


def test_colour_round_trip_is_exact(astronaut_gray):
    from skimage import data

    rgb = data.astronaut()[100:163, 150:221]  # odd size 63x71
    enc = pc.encode(rgb, CFG)
    dec = pc.decode(enc["bitstream"])
    assert dec.shape == (63, 71, 3) and dec.dtype == np.float32
    np.testing.assert_array_equal(dec, enc["recon"])
    assert enc["stats"]["layout"] == "YCbCr420" and enc["bpp"] == 8 * len(enc["bitstream"]) / (63 * 71)
    mse = np.mean((rgb / 255.0 - dec) ** 2)
    assert 10 * np.log10(1 / mse) > 20
    y = pc.decode_y(enc["bitstream"])  # the luma plane
    assert y.shape == (63, 71)
    ref_y = np.asarray(color.rgb_to_ycbcr(rgb.astype(np.float32) / 255))[..., 0]
    assert np.mean((y - ref_y) ** 2) < mse * 3
    with pytest.raises(pc.BitstreamError, match="three planes"):
        pc.read_bitstream(enc["bitstream"])
    info = pc.stream_info(enc["bitstream"])
    assert [p["plane"] for p in info["planes"]] == ["Y", "Cb", "Cr"] and info["planes"][1]["shape"] == [32, 36]


def test_gray_image_through_encode_and_decode_gives_equal_channels(camera):
    enc = pc.encode((camera[:40, :40] * 255).astype(np.uint8), CFG)
    assert enc["stats"]["layout"] == "Y"
    rgb = pc.decode(enc["bitstream"])
    assert rgb.shape == (40, 40, 3) and np.array_equal(rgb[..., 0], rgb[..., 2])


def test_chroma_lambda_spends_fewer_bits_on_chroma():
    from skimage import data

    rgb = data.astronaut()[:96, :96]
    cheap = pc.encode(rgb, CFG.replace(chroma_lambda=20.0))
    rich = pc.encode(rgb, CFG.replace(chroma_lambda=0.2))
    assert len(cheap["bitstream"]) < len(rich["bitstream"])


def test_rate_control_lands_within_three_percent(camera):
    img = (camera[:128, :192] * 255).astype(np.uint8)
    lo = pc.encode_y(img, pc.CodecConfig(tile=32, overlap=8, lambda_rd=1e3))["bpp"]
    hi = pc.encode_y(img, pc.CodecConfig(tile=32, overlap=8, lambda_rd=1e-3))["bpp"]
    target = float(np.sqrt(lo * hi))
    enc = pc.encode_y(img, pc.CodecConfig(tile=32, overlap=8, target_bpp=target))
    assert abs(enc["bpp"] / target - 1) <= 0.03
    assert enc["stats"]["target_bpp"] == target and abs(enc["stats"]["rate_error"]) <= 0.03
    np.testing.assert_array_equal(pc.decode_y(enc["bitstream"]), enc["recon"])
    far = pc.encode_y(img, pc.CodecConfig(tile=32, overlap=8, target_bpp=50.0))  # unreachable: closest
    assert far["bpp"] == pytest.approx(hi, rel=1e-6) and far["stats"]["rate_error"] < -0.5


def test_ladder_and_cli_target(tmp_path, capsys):
    assert pc.ladder_geometry(0.03) == (32, 4) and pc.ladder_geometry(0.07) == (24, 2)
    assert pc.ladder_geometry(0.15) == (16, 1) and pc.ladder_geometry(0.3) == (12, 1)
    assert pc.ladder_geometry(0.8) == (8, 1)
    src = tmp_path / "c.png"
    from skimage import data

    Image.fromarray(data.astronaut()[:64, :96]).save(src)
    assert cli.main(["encode", str(src), "-o", str(tmp_path / "c.pc15"), "--target-bpp", "0.3", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rec["layout"] == "YCbCr420" and rec["target_bpp"] == 0.3
    assert cli.main(["info", str(tmp_path / "c.pc15"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["tile"] == 12
    assert cli.main(["encode", str(src), "-o", str(tmp_path / "g.pc15"), "--gray", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["layout"] == "Y"
    assert cli.main(["decode", str(tmp_path / "c.pc15"), "-o", str(tmp_path / "c_out.png")]) == 0
    assert Image.open(tmp_path / "c_out.png").mode == "RGB"
