"""Block sizes per region (the ``block_map`` coding tool): geometry, coding and decode == recon."""

import struct
import zlib

import numpy as np
import pytest

import pc15jax as pc
from pc15jax._src import blockmap
from pc15jax._src.decoder import LayeredPlane, _parse, symbol_model
from pc15jax.bitstream import container as C
from pc15jax.bitstream.models import dc_delta

LAYERS = ((36, 4), (17, 1), (9, 1))


@pytest.fixture(scope="module")
def photo(camera):
    return (camera[60:190, 150:290] * 255).astype(np.uint8)  # 130x140: regions cut by the border


@pytest.fixture(scope="module")
def coded(photo):
    return pc.encode_y(photo, pc.CodecConfig(block_sizes=LAYERS, lambda_rd=0.1))


def test_decode_equals_recon_and_the_map_is_in_the_header(photo, coded):
    assert pc.stream_info(coded["bitstream"])["tools"] == ["loop_filter", "block_map"]
    assert np.array_equal(pc.decode_y(coded["bitstream"]), coded["recon"])
    h, planes, _ = _parse(coded["bitstream"])
    p = planes[0]
    assert isinstance(p, LayeredPlane) and p.block_map.shape == (3, 3) and p.geoms == LAYERS
    assert (h.tile, h.overlap) == (9, 1)  # the finest layer's geometry
    psnr = 10 * np.log10(1.0 / np.mean((coded["recon"] - photo / 255.0) ** 2))
    assert psnr > 24.0


@pytest.mark.parametrize("loop_filter", [True, False])
def test_colour_and_filter_off_round_trip(loop_filter):
    from skimage import data

    img = data.astronaut()[100:170, 180:275]
    enc = pc.encode(img, pc.CodecConfig(block_sizes=((36, 4), (17, 1)), block_region=32, lambda_rd=0.3,
                                        loop_filter=loop_filter))
    assert np.array_equal(pc.decode(enc["bitstream"]), enc["recon"])
    assert ("loop_filter" in pc.stream_info(enc["bitstream"])["tools"]) == (
        enc["stats"]["loop_filter_classes"] != [0, 0, 0])
    assert len(enc["stats"]["regions_per_layer"]) == 3


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (1, 300), (70, 9)])
def test_any_size(shape):
    x = np.random.default_rng(sum(shape)).random(shape).astype(np.float32)
    enc = pc.encode_y(x, pc.CodecConfig(block_sizes=((17, 1), (9, 1)), block_region=16))
    assert np.array_equal(pc.decode_y(enc["bitstream"]), enc["recon"])


def test_off_codes_as_before(photo):
    a = pc.encode_y(photo, pc.CodecConfig(tile=16, overlap=1))
    b = pc.encode_y(photo, pc.CodecConfig(tile=16, overlap=1, block_sizes=None, block_region=32))
    assert a["bitstream"] == b["bitstream"] and "block_map" not in pc.stream_info(a["bitstream"])["tools"]


def test_flat_regions_take_the_large_tiles_and_texture_the_small():
    rng = np.random.default_rng(0)
    x = np.full((128, 192), 0.4, np.float32)
    yy, xx = np.mgrid[:128, :64]
    x[:, 128:] = 0.5 + 0.3 * np.sin(xx / 1.7) * np.cos(yy / 2.3) + 0.05 * rng.standard_normal((128, 64))
    enc = pc.encode_y(np.clip(x, 0, 1), pc.CodecConfig(block_sizes=LAYERS, lambda_rd=0.03))
    m = _parse(enc["bitstream"])[1][0].block_map
    assert (m[:, 0] == 0).all()  # flat, and so are its tiles' overlaps: one 36 px tile per 32 px costs the least
    assert (m[:, 2] != 0).any()


def test_every_pixel_is_covered_and_the_blend_is_a_partition_of_unity():
    rng = np.random.default_rng(3)
    for shape, region in (((130, 140), 64), ((45, 200), 32), ((9, 9), 16), ((64, 64), 32)):
        gy, gx = blockmap.region_grid(shape, region)
        bmap = rng.integers(0, 3, (gy, gx))
        specs = blockmap.layer_specs(LAYERS, shape)
        used = [blockmap.used_tiles(bmap, i, s, shape, region) for i, s in enumerate(specs)]
        ones = [np.ones((s.count, s.size, s.size), np.float32) for s in specs]
        out = blockmap.blend_layers(ones, specs, used, shape)
        np.testing.assert_allclose(out, 1.0, rtol=0, atol=2e-7)
        for i, s in enumerate(specs):  # a layer with no region codes no tile
            if not (bmap == i).any():
                assert not used[i].any()


def test_used_tiles_are_the_cores_that_meet_a_mapped_region():
    spec = blockmap.layer_specs(((17, 1),), (100, 70))[0]  # stride 16; last tiles shifted to the border
    bmap = np.array([[0, 1], [1, 0]])  # region 64: rows 0-63 / 64-99, columns 0-63 / 64-69
    u = blockmap.used_tiles(bmap, 1, spec, (100, 70), 64).reshape(spec.ny, spec.nx)
    for iy, y0 in enumerate(spec.ys):
        for ix, x0 in enumerate(spec.xs):
            y1 = 100 if iy == spec.ny - 1 else y0 + 16
            x1 = 70 if ix == spec.nx - 1 else x0 + 16
            want = any(bmap[min(y // 64, 1), min(x // 64, 1)] == 1 for y in range(y0, y1) for x in range(x0, x1))
            assert u[iy, ix] == want, (iy, ix)


def test_seam_classes_follow_each_regions_layer():
    from pc15jax._src.loopfilter import pixel_classes

    shape = (100, 150)  # region 32: a 4 x 5 map, the last row and column cut by the border
    bmap = np.random.default_rng(5).integers(0, 3, (4, 5))
    got = blockmap.seam_classes(shape, LAYERS, bmap, 32)
    per = [pixel_classes(*shape, t, o, 3) for t, o in LAYERS]
    for y in range(shape[0]):
        for x in range(shape[1]):
            assert got[y, x] == per[bmap[y // 32, x // 32]][y, x], (y, x)
    uniform = blockmap.seam_classes(shape, LAYERS, np.ones((4, 5), int), 32)
    assert np.array_equal(uniform, per[1]) and got.dtype == np.int32



@pytest.mark.parametrize("predictor", ["med", "left"])
def test_implied_dc_needs_no_symbol(predictor):
    rng = np.random.default_rng(5)
    dc = rng.integers(0, 129, 6 * 7)
    used = rng.random(42) < 0.5
    out = blockmap.implied_dc(dc, used, 6, 7, predictor)
    assert np.array_equal(out[used], dc[used])
    assert not dc_delta(out, 6, 7, predictor)[~used].any()


def test_layered_symbols_round_trip_through_the_coder():
    model = symbol_model("pc15-v2")
    rng = np.random.default_rng(7)
    grids, syms = [(3, 4), (2, 5)], []
    for ny, nx in grids:
        N = ny * nx
        used = rng.random(N) < 0.6
        count = np.where(used, rng.integers(0, 3, N), 0)
        K = 2
        gen = np.where(np.arange(K)[None] < count[:, None], rng.integers(1, 5, (N, K)), 0)
        params = np.zeros((N, K, 6), np.int64)
        seed = np.zeros((N, K), np.int64)
        coef = np.where(np.arange(K)[None] < count[:, None], rng.integers(-3, 4, (N, K)), 0)
        dc = blockmap.implied_dc(rng.integers(40, 90, N), used, ny, nx, model.dc_predictor)
        syms.append((count, gen, params, seed, coef, dc, used))
    from pc15jax.bitstream import rans_decode, rans_encode

    parts = [model.split(*s[:6], ny, nx, used=s[6]) for s, (ny, nx) in zip(syms, grids)]
    n = [int(s[6].sum()) for s in syms]
    a = np.concatenate([p[0][:k] for p, k in zip(parts, n)] + [p[0][k:] for p, k in zip(parts, n)])
    atid = np.concatenate([p[1][:k] for p, k in zip(parts, n)] + [p[1][k:] for p, k in zip(parts, n)])
    data = rans_encode(a, model.tables, atid, lanes=model.a_lanes)
    dec = model.decode_a_layers(data, len(a), [(ny, nx, s[6]) for s, (ny, nx) in zip(syms, grids)])
    for (count, gens_flat), s, p, (ny, nx) in zip(dec, syms, parts, grids):
        assert np.array_equal(count, s[0])
        btid = model.b_table_ids(count, gens_flat, n_dc=int(s[6].sum()))
        assert np.array_equal(btid, p[3])
        b = rans_decode(rans_encode(p[2], model.tables, p[3]), model.tables, len(p[2]), btid)
        gen, params, seed, coef, dc = model.join(count, gens_flat, b, ny, nx, 6, used=s[6])
        assert np.array_equal(dc, s[5]) and np.array_equal(coef[:, :2], s[4])
    with pytest.raises(ValueError, match="unused tile"):
        s = syms[0]
        model.split(s[0] + ~s[6], *s[1:6], 3, 4, used=s[6])


def test_map_bytes_round_trip_and_validation():
    maps = [np.array([[0, 2, 1], [1, 1, 0]]), np.array([[2]])]
    data = blockmap.pack_block_map(LAYERS, 64, maps)
    layers, region, back = blockmap.unpack_block_map(data, [(100, 150), (40, 40)])
    assert layers == LAYERS and region == 64 and all(np.array_equal(a, b) for a, b in zip(maps, back))
    for bad in (data[:-1], data + b"\0", data[:2]):
        with pytest.raises(pc.BitstreamError):
            blockmap.unpack_block_map(bad, [(100, 150), (40, 40)])
    with pytest.raises(ValueError, match="multiple of every layer's stride"):
        pc.CodecConfig(block_sizes=((36, 4), (16, 1)))
    with pytest.raises(ValueError, match="2 to 3 layers"):
        pc.CodecConfig(block_sizes=((17, 1),))
    with pytest.raises(ValueError, match="pairs"):
        pc.CodecConfig(block_sizes="36/4")


def test_read_bitstream_says_it_reads_single_grid_streams(coded):
    with pytest.raises(pc.BitstreamError, match="block_map"):
        pc.read_bitstream(coded["bitstream"])


def test_fuzz_only_bitstream_errors(coded):
    base = coded["bitstream"]
    rng = np.random.default_rng(99)
    errors = 0
    for i in range(600):
        b = bytearray(base)
        if i % 3 == 0:  # the tools block (filter taps and the block map), CRC fixed
            crc = _crc_pos(base)
            j = int(rng.integers(crc - 30, crc))
            b[j] ^= 1 << int(rng.integers(0, 8))
            b[crc:crc + 4] = struct.pack("<I", zlib.crc32(bytes(b[:crc])))
        elif i % 3 == 1:  # the body, CRC fixed
            s = _body_start(base)
            j = int(rng.integers(s + 16, len(b) - 4))
            b[j] ^= 1 << int(rng.integers(0, 8))
            b[-4:] = struct.pack("<I", zlib.crc32(bytes(b[s:-4])))
        else:
            b = b[: rng.integers(0, len(b))]
        try:
            out = pc.decode_y(bytes(b))
            assert out.dtype == np.float32 and np.isfinite(out).all()
        except pc.BitstreamError:
            errors += 1
    assert errors > 300


def _crc_pos(stream: bytes) -> int:
    """Where the header's CRC sits (after the meta and the tools block)."""
    pos = C._FIXED.size
    pos += 1 + stream[pos]
    (n_meta,) = struct.unpack_from("<H", stream, pos)
    pos += 2 + n_meta
    return pos + 4 + struct.unpack_from("<H", stream, pos + 2)[0]


def _body_start(stream: bytes) -> int:
    return _crc_pos(stream) + 4


def test_cli_blocks(tmp_path, capsys):
    import json

    from PIL import Image

    from pc15jax import __main__ as cli

    src = tmp_path / "a.png"
    Image.fromarray((np.random.default_rng(1).random((70, 90)) * 255).astype(np.uint8)).save(src)
    out = tmp_path / "a.pc15"
    assert cli.main(["encode", str(src), "-o", str(out), "--blocks", "--gray", "--recon", str(tmp_path / "r.png")]) == 0
    assert cli.main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "block_map" in info["tools"] and info["planes"][0]["block_sizes"] == [list(g) for g in
                                                                                 blockmap.DEFAULT_LAYERS]
    assert sum(info["planes"][0]["regions_per_layer"]) == 2 * 2
    assert sum(info["generators"].values()) == info["atoms"] + info["generators"].get("FLAT", 0)
    assert cli.main(["decode", str(out), "-o", str(tmp_path / "d.png")]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "d.png")), np.asarray(Image.open(tmp_path / "r.png")))
    assert cli.main(["encode", str(src), "-o", str(tmp_path / "b.pc15"), "--blocks", "--tile", "16"]) == 2
    assert "leave out --tile" in capsys.readouterr().err and not (tmp_path / "b.pc15").exists()


def test_tile_bits_sum_to_the_coded_symbols_bits(coded):
    _, planes, _ = _parse(coded["bitstream"])
    model = symbol_model("pc15-v2")
    specs = blockmap.layer_specs(planes[0].geoms, (130, 140))
    for sym, spec in zip(planes[0].layers, specs):
        a, atid, b, btid = model.split(*sym, spec.ny, spec.nx)
        want = sum(float(model.tables[int(t)].bits()[v]) for v, t in zip(np.concatenate([a, b]), np.concatenate([atid, btid])))
        per = blockmap.tile_bits(model, sym, spec.ny, spec.nx)
        assert per.shape == (spec.count,) and per.sum() == pytest.approx(want, rel=1e-9)
        cost = lambda v, t: float(model.tables[int(t)].bits()[v])  # noqa: E731
        N, c0 = spec.count, int(sym.count[0])
        n_vals0 = sum(len(model.layout[int(g)].searched) + (model.layout[int(g)].n_seeds > 1) + 1 for g in sym.gen[0, :c0])
        first = cost(a[0], atid[0]) + sum(cost(a[N + k], atid[N + k]) for k in range(c0)) + sum(
            cost(b[k], btid[k]) for k in range(n_vals0)) + cost(b[len(b) - N], btid[len(b) - N])
        assert per[0] == pytest.approx(first, rel=1e-9)  # tile 0: its count, generators, values and DC
