"""encode_y/decode_y, the v15 container and its CLI: exactness, determinism, malformed input."""

import hashlib
import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

import pc15jax as pc
from pc15jax import __main__ as cli
from pc15jax.bitstream import container as C

CFG = pc.CodecConfig(tile=16, overlap=4)


@pytest.fixture(scope="module")
def small(camera):
    img = (camera[100:164, 200:280] * 255).astype(np.uint8)  # 64x80
    return img, pc.encode_y(img, CFG)


def test_round_trip_is_exact_and_bpp_counts_every_byte(small):
    img, enc = small
    dec = pc.decode_y(enc["bitstream"])
    assert dec.dtype == np.float32 and dec.shape == img.shape
    np.testing.assert_array_equal(dec, enc["recon"])
    assert enc["bpp"] == 8 * len(enc["bitstream"]) / img.size
    assert 0 <= dec.min() and dec.max() <= 1
    assert float(pc.psnr(img / np.float32(255), dec)) > 20
    st_ = enc["stats"]
    assert st_["tiles"] == 5 * 7
    assert sum(st_["generators"].values()) == st_["atoms"] + st_["generators"].get("FLAT", 0)
    assert st_["search_s"] > 0 and st_["encode_s"] >= st_["search_s"]


def test_float_and_uint8_inputs_agree(small):
    img, enc = small
    enc_f = pc.encode_y(img.astype(np.float32) / np.float32(255), CFG)
    assert enc_f["bitstream"] == enc["bitstream"]


@pytest.mark.parametrize("shape", [(1, 1), (5, 40), (17, 3), (33, 16)])
def test_any_size(shape):
    img = (np.random.default_rng(0).random(shape) * 255).astype(np.uint8)
    enc = pc.encode_y(img, CFG)
    np.testing.assert_array_equal(pc.decode_y(enc["bitstream"]), enc["recon"])
    assert enc["recon"].shape == shape


def test_records_round_trip(small):
    _, enc = small
    h, recs = pc.read_bitstream(enc["bitstream"])
    assert (h.H, h.W, h.tile, h.overlap, h.table_id, h.version) == (64, 80, 16, 4, "pc15-v2", 15)
    assert "time" not in json.dumps(h.meta)
    assert [r.tile_id for r in recs] == list(range(len(recs)))
    assert pc.write_bitstream(h, recs) == enc["bitstream"]
    r = next(r for r in recs if r.gen_id)
    assert pc.TileRec.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    assert r.rec_flags == 1 and r.gain_q != 0
    multi = [r for r in recs if r.payload_fmt == 1]
    assert multi and all(len(r.payload) % 8 == 0 for r in multi), "tiles with several atoms carry them in the payload"


def test_write_bitstream_is_atomic(small, tmp_path, monkeypatch):
    _, enc = small
    h, recs = pc.read_bitstream(enc["bitstream"])
    target = tmp_path / "x.pc15"
    pc.write_bitstream(h, recs, target)
    assert target.read_bytes() == enc["bitstream"]
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask, "usual permissions, not the temporary file's 0600"

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        pc.write_bitstream(h, recs[:1] + recs[1:], target)
    assert target.read_bytes() == enc["bitstream"], "the old file survives a failed write"
    assert [p.name for p in tmp_path.iterdir()] == ["x.pc15"], "no temporary file left behind"


_SCRIPT = ("import hashlib, numpy as np, pc15jax as pc; from skimage import data; "
           "e = pc.encode_y(data.camera()[100:164, 200:280], pc.CodecConfig(tile=16, overlap=4)); "
           "print(hashlib.sha256(e['bitstream']).hexdigest())")


def test_deterministic_across_processes(small):
    _, enc = small
    procs = [subprocess.Popen([sys.executable, "-c", _SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]  # side by side: two fresh processes at once
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    assert outs[0][0] == outs[1][0] == hashlib.sha256(enc["bitstream"]).hexdigest() + "\n"


def _with_crc(head: bytes) -> bytes:
    return head + struct.pack("<I", zlib.crc32(head))


def _header_bytes(**over):
    f = dict(magic=b"PC15", ver=15, layout=0, H=64, W=80, tile=16, overlap=4, window=0, wp=float("nan"), seed=1,
             gs=1 / 32, ds=1 / 128, g=0.25, p=1.5, tid=b"pc15-v1")
    f.update(over)
    head = C._FIXED.pack(f["magic"], f["ver"], f["layout"], f["H"], f["W"], f["tile"], f["overlap"], f["window"],
                         f["wp"], f["seed"], f["gs"], f["ds"], f["g"], f["p"])
    return _with_crc(head + bytes([len(f["tid"])]) + f["tid"] + struct.pack("<H", 0))


def _body(words_a=b"", words_b=b"", n_a=0, n_b=0):
    body = struct.pack("<IIII", n_a, len(words_a) // 2, n_b, len(words_b) // 2) + words_a + words_b
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize("data,match", [
    (b"", "magic"), (b"JPEG....", "magic"), (b"PC15", "truncated"), (b"PC15\x0e" + b"\0" * 60, "version"),
    (_header_bytes(H=1 << 20) + _body(), "exceeds the maximum"),
    (_header_bytes(H=60000, W=60000) + _body(), "exceeds the maximum"),
    (_header_bytes(tile=4) + _body(), "tile size"),
    (_header_bytes(overlap=16) + _body(), "overlap"),
    (_header_bytes(window=7) + _body(), "window code"),
    (_header_bytes(ds=-1.0) + _body(), "dc_step"),
    (_header_bytes(tid=b"nope") + _body(n_a=42), "unknown rANS table"),
    (_header_bytes(tid=b"../../etc") + _body(n_a=42), "invalid table id"),
    (_header_bytes() + _body(n_a=10), "fewer symbols"),
    (_header_bytes() + _body(n_a=10**9), "structure symbols"),
    (_header_bytes() + struct.pack("<IIII", 42, 10**9, 0, 0), "truncated body"),
    (_header_bytes() + _body(words_a=b"\1\0\1\0", n_a=35 * 17), "cannot hold"),
    (_header_bytes(tile=8, overlap=7, H=16384, W=16384) + _body(), "tile samples"),
    (_header_bytes(tile=4096, overlap=0) + _body(), "tile size"),
])
def test_malformed_headers(data, match):
    with pytest.raises(pc.BitstreamError, match=match):
        pc.decode_y(data)


def test_trailing_bytes_and_crc(small):
    _, enc = small
    b = enc["bitstream"]
    with pytest.raises(pc.BitstreamError, match="trailing"):
        pc.decode_y(b + b"\0")
    with pytest.raises(pc.BitstreamError, match="CRC"):
        pc.decode_y(b[:10] + bytes([b[10] ^ 1]) + b[11:])
    with pytest.raises(pc.BitstreamError, match="payload CRC"):
        pc.decode_y(b[:-6] + bytes([b[-6] ^ 0x10]) + b[-5:])
    with pytest.raises(pc.BitstreamError, match="cannot read"):
        pc.decode_y("/nonexistent/x.pc15")
    with pytest.raises(pc.BitstreamError, match="expected bytes"):
        pc.decode_y(12345)


@pytest.fixture(scope="module")
def adaptive_stream():
    """A stream that uses the adaptive_coding tool (coffee, transposed: see the tool's test)."""
    from skimage import color, data as skd

    img = (color.rgb2gray(skd.coffee()[:192, :192].transpose(1, 0, 2)) * 255).astype(np.uint8)
    enc = pc.encode_y(img, pc.CodecConfig(tile=16, overlap=1, lambda_rd=0.1))
    assert "adaptive_coding" in enc["stats"]["tools"]
    return enc["bitstream"]


@pytest.fixture(scope="module")
def residual_stream(camera):
    """A stream that uses the transform_residual tool (with adaptive coding)."""
    img = (camera[100:164, 200:280] * 255).astype(np.uint8)
    enc = pc.encode_y(img, pc.CodecConfig(tile=16, overlap=1, lambda_rd=0.1, transform_residual=True))
    assert "transform_residual" in enc["stats"]["tools"]
    return enc["bitstream"]


@pytest.mark.parametrize("which", ["small", "adaptive_stream", "residual_stream"])
def test_fuzz_only_bitstream_errors(which, request):
    base = request.getfixturevalue(which)
    base = base[1]["bitstream"] if which == "small" else base
    rng = np.random.default_rng(1234)
    outcomes = {"error": 0, "decoded": 0}
    for i in range(2400):
        b = bytearray(base)
        kind = i % 7
        if kind == 0:  # bit flips
            for _ in range(rng.integers(1, 4)):
                j = rng.integers(0, len(b))
                b[j] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:  # truncation
            b = b[: rng.integers(0, len(b))]
        elif kind == 2:  # random bytes after a valid magic
            b = bytearray(b"PC15") + bytearray(rng.integers(0, 256, rng.integers(0, 200), dtype=np.uint8).tobytes())
        elif kind == 3:  # insertion
            j = rng.integers(0, len(b))
            b = b[:j] + bytes(rng.integers(0, 256, rng.integers(1, 5), dtype=np.uint8).tobytes()) + b[j:]
        elif kind == 4:  # corrupt body, then fix its CRC: the rANS layer must catch it
            body_start = _body_start(base)
            j = rng.integers(body_start + 16, len(b) - 4) if len(b) - 4 > body_start + 16 else body_start
            b[j] ^= 1 << int(rng.integers(0, 8))
            b[-4:] = struct.pack("<I", zlib.crc32(bytes(b[body_start:-4])))
        elif kind == 6:  # corrupt the header's tools block (the loop filter's taps), then fix its CRC
            assert base[5] & 0x80, "the fuzzed stream uses a coding tool"
            crc = _crc_pos(base)
            j = int(rng.integers(crc - 20, crc))
            b[j] ^= 1 << int(rng.integers(0, 8))
            b[crc:crc + 4] = struct.pack("<I", zlib.crc32(bytes(b[:crc])))
        else:  # random header fields with a valid CRC
            h = _header_bytes(H=int(rng.integers(0, 70000)), W=int(rng.integers(0, 300)), tile=int(rng.integers(0, 70)),
                              overlap=int(rng.integers(0, 40)), window=int(rng.integers(0, 4)))
            b = bytearray(h + bytes(b[_body_start(base):]))
        try:
            out = pc.decode_y(bytes(b))
            assert out.dtype == np.float32 and np.all(np.isfinite(out))
            outcomes["decoded"] += 1
        except pc.BitstreamError:
            outcomes["error"] += 1
    assert outcomes["error"] > 2000


def _body_start(stream: bytes) -> int:
    return _crc_pos(stream) + 4


def _tools_pos(stream: bytes) -> int:
    """Where the header's meta ends (and its tools block starts, when there is one)."""
    pos = C._FIXED.size
    pos += 1 + stream[pos]
    (n_meta,) = struct.unpack_from("<H", stream, pos)
    return pos + 2 + n_meta


def _crc_pos(stream: bytes) -> int:
    """Where the header's CRC sits (after the meta, and the tools block when there is one)."""
    pos = _tools_pos(stream)
    if stream[5] & 0x80:
        pos += 4 + struct.unpack_from("<H", stream, pos + 2)[0]
    return pos


def test_models_dir_override(small, tmp_path, monkeypatch):
    img, _ = small
    (tmp_path / "rans").mkdir()
    (tmp_path / "rans" / "custom-1.json").write_text(json.dumps({"id": "custom-1"}))  # uniform tables
    monkeypatch.setenv("PC15_MODELS_DIR", str(tmp_path))
    enc = pc.encode_y(img, CFG.replace(table_id="custom-1"))
    assert pc.read_bitstream(enc["bitstream"])[0].table_id == "custom-1"
    np.testing.assert_array_equal(pc.decode_y(enc["bitstream"]), enc["recon"])
    monkeypatch.delenv("PC15_MODELS_DIR")
    pc._src.codec.symbol_model.cache_clear()
    with pytest.raises(pc.BitstreamError, match="unknown rANS table id"):
        pc.decode_y(enc["bitstream"])
    pc._src.codec.symbol_model.cache_clear()


def test_frozen_tables_beat_uniform(small, tmp_path, monkeypatch):
    img, enc = small
    (tmp_path / "rans").mkdir()
    (tmp_path / "rans" / "uniform.json").write_text(json.dumps({"id": "uniform"}))
    monkeypatch.setenv("PC15_MODELS_DIR", str(tmp_path))
    frozen = CFG.replace(adaptive_coding=False)  # the tables alone (adaptive coding learns even uniform ones)
    uni = pc.encode_y(img, frozen.replace(table_id="uniform"))
    assert len(pc.encode_y(img, frozen)["bitstream"]) < len(uni["bitstream"])


@pytest.mark.parametrize("colour", [False, True])
def test_adaptive_coding_codes_the_same_symbols_in_fewer_bytes(colour):
    """The adaptive_coding tool changes the entropy coding only: the same symbols (so the same
    reconstruction), fewer bytes where the statistics differ from the frozen tables' (coffee,
    transposed: the tables were fitted on skimage's photographs upright), decode == recon."""
    from skimage import color, data as skd

    from pc15jax._src import codec

    img = skd.coffee()[:256, :256].transpose(1, 0, 2)
    img = img if colour else (color.rgb2gray(img) * 255).astype(np.uint8)
    cfg = pc.CodecConfig(tile=16, overlap=1, lambda_rd=0.1)
    on, off = pc.encode(img, cfg), pc.encode(img, cfg.replace(adaptive_coding=False))
    assert "adaptive_coding" in on["stats"]["tools"] and "adaptive_coding" not in off["stats"]["tools"]
    np.testing.assert_array_equal(on["recon"], off["recon"])
    for a, b in zip(codec._parse(on["bitstream"])[1], codec._parse(off["bitstream"])[1]):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    assert len(on["bitstream"]) < 0.99 * len(off["bitstream"])
    np.testing.assert_array_equal(pc.decode(on["bitstream"]) if colour else pc.decode_y(on["bitstream"]), on["recon"])
    info = pc.stream_info(on["bitstream"])  # the adapted tables' bits: the payload, besides flushes and headers
    assert 0.8 * 8 * len(on["bitstream"]) < sum(info["bits_by_class"].values()) < 8 * len(on["bitstream"])


def test_adaptive_coding_is_left_out_where_it_does_not_pay(small):
    """A short stream the frozen tables fit (camera: in their corpus) is written without the tool,
    byte for byte the stream of ``adaptive_coding=False``."""
    img, enc = small
    assert "adaptive_coding" not in enc["stats"]["tools"]
    assert enc["bitstream"] == pc.encode_y(img, CFG.replace(adaptive_coding=False))["bitstream"]


# ---------------------------------------------------------------------------------------------- CLI

def test_cli_encode_decode_info(tmp_path, capsys):
    src = tmp_path / "a.png"
    Image.fromarray((np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)).save(src)
    out = tmp_path / "a.pc15"
    assert cli.main(["encode", str(src), "-o", str(out), "--tile", "16", "--overlap", "4", "--json",
                     "--recon", str(tmp_path / "r.png")]) == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for k in ("bytes", "bpp", "psnr", "ssim", "encode_s", "search_s"):
        assert k in rec
    assert rec["bytes"] == out.stat().st_size
    assert cli.main(["decode", str(out), "-o", str(tmp_path / "d.png")]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "d.png")), np.asarray(Image.open(tmp_path / "r.png")))
    assert cli.main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["layout"] == "YCbCr420" and rec["layout"] == "YCbCr420"  # colour input is coded in colour
    assert info["tiles"] == 3 * 5 + 2 * (2 * 2) and info["bytes"] == rec["bytes"]
    assert sum(info["generators"].values()) == info["atoms"] + info["generators"].get("FLAT", 0)
    assert set(info["bits_by_class"]) >= {"count", "dc"}
    assert cli.main(["info", str(src)]) == 2
    assert "wrong magic" in capsys.readouterr().err


def test_cli_many_inputs_and_default_demo(tmp_path, capsys):
    paths = []
    for i in range(3):
        p = tmp_path / f"im{i}.png"
        Image.fromarray((np.random.default_rng(i).random((24, 30)) * 255).astype(np.uint8)).save(p)
        paths.append(str(p))
    assert cli.main(["encode", *paths, "-o", str(tmp_path / "out"), "--tile", "16", "--overlap", "4"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["im0.pc15", "im1.pc15", "im2.pc15"]
    assert cli.main(["encode", *paths, "-o", str(tmp_path / "x.pc15")]) == 2
    capsys.readouterr()
    assert cli.main(["-o", str(tmp_path / "demo"), "--json", "--tile", "16", "--overlap", "4"]) == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rep["input"] == "skimage.data.camera" and rep["bytes"] == (tmp_path / "demo" / "image.pc15").stat().st_size
    assert {p.name for p in (tmp_path / "demo").iterdir()} == {"image.pc15", "recon.png", "compare.png"}


def test_folder_over_devices_and_processes_gives_the_one_device_bytes(tmp_path):
    import socket
    from pathlib import Path

    src = tmp_path / "in"
    src.mkdir()
    for i in range(5):  # one grey shape: one set of programs to compile in each process
        a = (np.random.default_rng(i).random((24, 32)) * 255).astype(np.uint8)
        Image.fromarray(a).save(src / f"im{i}.png")
    root = Path(__file__).resolve().parents[1]

    def run(out, *extra, devices=1, wait=True):
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
        p = subprocess.Popen([sys.executable, "-m", "pc15jax", "encode", str(src), "-o", str(tmp_path / out),
                              "--tile", "16", "--overlap", "1", "--json", *extra], cwd=root, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return p.communicate(timeout=600) + (p.returncode,) if wait else p

    *_, rc = run("one")  # first: it fills the compilation cache the others read
    assert rc == 0
    out, err, rc = run("four", devices=4)
    assert rc == 0, err
    assert len(out.strip().splitlines()) == 5
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [run("two", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i),
                 wait=False) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    one = sorted((tmp_path / "one").iterdir())
    assert [f.name for f in one] == [f"im{i}.pc15" for i in range(5)]
    for other in ("four", "two"):
        for f in one:
            assert (tmp_path / other / f.name).read_bytes() == f.read_bytes(), (other, f.name)


def test_join_processes_checks_its_arguments():
    from shared_runtime import join_processes

    assert join_processes(None, None, None) == (0, 1) and join_processes(None, 1, None) == (0, 1)
    with pytest.raises(ValueError, match="--coordinator"):
        join_processes(None, 2, 0)
    with pytest.raises(ValueError, match="HOST:PORT"):
        join_processes("nowhere", 2, 0)
    with pytest.raises(ValueError, match="process_id"):
        join_processes("127.0.0.1:1", 2, 2)


@settings(max_examples=40, deadline=None)
@given(H=st.integers(1, 90), W=st.integers(1, 90), seed=st.integers(0, 2**31), data=st.data())
def test_container_round_trip_property(H, W, seed, data):
    rng = np.random.default_rng(seed)
    h = pc.StreamHeader(H=H, W=W, tile=16, overlap=data.draw(st.integers(0, 15)), seed=int(rng.integers(0, 2**32)),
                        window=data.draw(st.sampled_from(["hann", "tukey", "kaiser"])),
                        meta={"note": data.draw(st.text(max_size=20))})
    ny, nx = C.grid_shape(H, W, h.tile, h.overlap)
    recs = []
    for t in range(ny * nx):
        dc = int(rng.integers(0, 129))
        g = pc.get_generator(int(rng.integers(0, len(pc.list_generators()))))
        if g.id == 0:
            recs.append(pc.TileRec(t, 0, 0, 0, offset_q=dc))
            continue
        grid = int(np.prod([p.levels for p in g.params if p.levels > 1]))
        recs.append(pc.TileRec(t, g.id, int(rng.integers(0, grid)), int(rng.integers(0, max(g.n_seeds, 1))),
                               rec_flags=1, gain_q=int(rng.integers(-1023, 1024)), offset_q=dc))
    data_ = pc.write_bitstream(h, recs)
    h2, recs2 = pc.read_bitstream(data_)
    assert h2 == h and recs2 == recs


def test_window_parameter_float32_round_trip():
    # a Kaiser beta float32 cannot hold: the encoder must blend with what the decoder reads back
    import pc15jax as pc
    from skimage import data

    img = data.camera()[:64, :80]
    cfg = pc.CodecConfig(window="kaiser", window_params={"beta": 7.77777777777})
    enc = pc.encode_y(img, cfg)
    assert np.array_equal(pc.decode_y(enc["bitstream"]), enc["recon"])
    assert dict(cfg.window_params)["beta"] == float(np.float32(7.77777777777))


def test_build_dictionary_is_the_codecs_dictionary():
    import pc15jax as pc
    from pc15jax._src.dictionary import get_dictionary

    assert pc.build_dictionary(16, 1, 0.1, 1.5, 1234) is get_dictionary(16, 1, 0.1, 1.5, 1234)


def test_dictionary_disk_cache_round_trip_and_corruption(tmp_path):
    import pc15jax._src.dictcache as DC
    import pc15jax._src.dictionary as D

    old = DC.cache_folder()
    try:
        D.set_dictionary_cache(tmp_path)
        D._cached_dictionary.cache_clear()
        built = D.build_dictionary(8, 1, 0.1, 1.5, 7)
        files = list(tmp_path.glob("dict_8_1_*.npz"))
        assert len(files) == 1
        D._cached_dictionary.cache_clear()
        loaded = D.build_dictionary(8, 1, 0.1, 1.5, 7)
        assert loaded is not built
        for k in DC.FIELDS:
            assert np.array_equal(np.asarray(getattr(loaded, k)), np.asarray(getattr(built, k))), k
        files[0].write_bytes(files[0].read_bytes()[:1000])  # truncated: rebuilt, not trusted
        D._cached_dictionary.cache_clear()
        again = D.build_dictionary(8, 1, 0.1, 1.5, 7)
        assert np.array_equal(np.asarray(again.atoms), np.asarray(built.atoms))
        assert DC.load_arrays(files[0], 8) is not None  # rewritten whole
    finally:
        D.set_dictionary_cache(old)
        D._cached_dictionary.cache_clear()
