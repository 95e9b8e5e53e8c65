"""Command-line entry points run as users run them: help, bad input, and the speed benchmark."""

import json
import subprocess
import sys

import numpy as np
import pytest

from experiments import bench_rans, bench_speed
from pc15jax import __main__ as cli


def test_module_entry_point_help():
    out = subprocess.run([sys.executable, "-m", "pc15jax", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for cmd in ("demo", "encode", "decode", "info"):
        assert cmd in out.stdout


def test_bad_inputs_give_one_line_errors(tmp_path, capsys):
    assert cli.main([str(tmp_path / "missing.png"), "-o", str(tmp_path / "x")]) == 2
    (tmp_path / "junk.png").write_bytes(b"not an image")
    assert cli.main([str(tmp_path / "junk.png"), "-o", str(tmp_path / "x")]) == 2
    assert cli.main(["--tile", "8", "--overlap", "8", "-o", str(tmp_path / "x")]) == 2
    assert cli.main(["decode", str(tmp_path / "junk.png"), "-o", str(tmp_path / "y.png")]) == 2
    err = capsys.readouterr().err
    assert "input not found" in err and "cannot read" in err and "overlap must be smaller" in err and "magic" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y.png").exists()


def test_bench_speed_json(capsys):
    assert bench_speed.main(["--json", "--repeats", "1", "--tile", "16", "--overlap", "4"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ["search_s", "compile_s", "tiles", "candidates_per_tile", "evals_per_s", "matmul_fraction"]:
        assert key in r and r[key] > 0
    assert r["evals_per_s"] == pytest.approx(r["tiles"] * r["candidates_per_tile"] / r["search_s"])


def test_bench_rans_rows(capsys):
    assert bench_rans.main(["--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(rows) == 4 and all(r["overhead_vs_entropy_pct"] < 1.0 for r in rows)


def test_bd_rate_and_envelope():
    from experiments import bench_rd

    ref = np.array([[0.1, 25.0, 0.7], [0.2, 28.0, 0.8], [0.4, 31.0, 0.9], [0.8, 34.0, 0.95]])
    test = ref.copy()
    test[:, 0] *= 0.8  # same quality for 20 % fewer bits
    assert bench_rd.bd_rate(test, ref) == pytest.approx(-20.0, abs=1e-6)
    assert bench_rd.bd_rate(ref, ref) == pytest.approx(0.0, abs=1e-9)
    assert bench_rd.bd_rate(ref[:1], ref) is None
    far = ref.copy()
    far[:, 1] += 50  # no common PSNR range
    assert bench_rd.bd_rate(far, ref) is None
    pts = [{"codec": "x", "setting": s, "bpp": b, "psnr": p, "ssim": 0.5} for s, b, p in
           [(1, 0.1, 25.0), (2, 0.2, 24.0), (3, 0.3, 27.0)]]
    np.testing.assert_array_equal(bench_rd.mean_curve(pts, "x")[:, 0], [0.1, 0.3])  # dominated point dropped


def test_bench_rd_quick(tmp_path, capsys):
    from PIL import Image

    from experiments import bench_rd

    img = np.asarray(Image.fromarray((np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)))
    Image.fromarray(img).save(tmp_path / "a.png")
    assert bench_rd.main(["--images", str(tmp_path / "a.png"), "--gray", "--quick", "--codecs", "pc15,jpeg",
                          "--out", str(tmp_path / "out")]) == 0
    data = json.loads((tmp_path / "out" / "rd_points.json").read_text())
    assert data["mode"] == "grayscale" and len(data["points"]) == 5
    assert {"image", "codec", "setting", "bytes", "bpp", "psnr", "ssim", "blockiness", "blockiness16",
            "seconds"} <= set(data["points"][0])
    tab = (tmp_path / "out" / "rd_table.md").read_text()
    assert "BD-rate of PC15 against jpeg" in tab and "| pc15:blocks |" in tab and "| pc15:ladder |" in tab
    assert (tmp_path / "out" / "rd_curves.png").stat().st_size > 5000
    assert bench_rd.main(["--codecs", "nope"]) == 2


def test_sweep_luma_runs(tmp_path, capsys):
    from PIL import Image

    from experiments import sweep_luma

    Image.fromarray((np.random.default_rng(1).random((40, 48)) * 255).astype(np.uint8)).save(tmp_path / "g.png")
    assert sweep_luma.main([str(tmp_path / "g.png"), "--tile", "16", "--overlap", "4", "--lambdas", "1,0.1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all("bpp" in ln and "psnr" in ln for ln in lines)


# ---------------------------------------------------------------------------------------------
# Any image size, strict JSON, folders, alpha
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (1, 300), (5, 7, 3)])
def test_tiny_images_round_trip_and_have_metrics(tmp_path, shape):
    from PIL import Image

    img = np.random.default_rng(1).integers(0, 256, shape).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "in.png")
    assert cli.main(["demo", str(tmp_path / "in.png"), "-o", str(tmp_path / "d"), "--json"]) == 0  # checks decode == recon
    import pc15jax as pc

    enc = pc.encode(img, pc.CodecConfig())
    dec = pc.decode(enc["bitstream"]) if img.ndim == 3 else pc.decode_y(enc["bitstream"])
    assert dec.shape == img.shape and np.array_equal(dec, enc["recon"])


def test_small_plane_ssim_is_one_window_over_the_plane():
    import pc15jax as pc

    rng = np.random.default_rng(0)
    a, b = rng.random((2, 7, 5)).astype(np.float32)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ux, uy, vx, vy = a.mean(), b.mean(), a.var(), b.var()
    vxy = ((a - ux) * (b - uy)).mean()
    want = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
    assert float(pc.ssim(a, b)) == pytest.approx(want, rel=1e-5)
    assert float(pc.ssim(a[:1, :1], a[:1, :1])) == pytest.approx(1.0)


def test_json_is_strict_and_folders_and_alpha(tmp_path, capsys):
    from PIL import Image

    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(d / "black.png")
    rgba = np.random.default_rng(0).integers(0, 256, (24, 20, 4)).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
    (d / "notes.txt").write_text("not an image")
    assert cli.main(["encode", str(d), "-o", str(tmp_path / "out"), "--json"]) == 0
    cap = capsys.readouterr()
    recs = [json.loads(line) for line in cap.out.strip().splitlines()]
    assert "Infinity" not in cap.out and "NaN" not in cap.out
    by = {r["input"].split("/")[-1]: r for r in recs}
    assert sorted(by) == ["black.png", "rgba.png"] and by["black.png"]["psnr"] is None
    assert "rgba.png: its alpha channel is not coded" in cap.err
    assert (tmp_path / "out" / "black.pc15").exists() and (tmp_path / "out" / "rgba.pc15").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["encode", str(empty), "-o", str(tmp_path / "o2")]) == 2
    assert "no image files" in capsys.readouterr().err


def test_import_leaves_flax_and_scipy_for_later():
    # a fresh process pays for what it imports: the codec's start-up needs neither the models'
    # Flax nor scipy (the hooked search and the loop filter's fit import them on first use)
    code = "import sys, pc15jax; print(sorted(m for m in ('flax', 'optax', 'scipy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_frozen_tables_flag_leaves_the_adaptive_tool_out(tmp_path, capsys):
    from PIL import Image
    from skimage import color, data as skd

    img = (color.rgb2gray(skd.coffee()[:192, :192].transpose(1, 0, 2)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "c.png")
    tools = {}
    for flag in ([], ["--frozen-tables"]):
        out = tmp_path / f"c{len(flag)}.pc15"
        assert cli.main(["encode", str(tmp_path / "c.png"), "-o", str(out), "--gray", "--lambda", "0.1"] + flag) == 0
        assert cli.main(["info", str(out), "--json"]) == 0
        tools[bool(flag)] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["tools"]
    assert "adaptive_coding" in tools[False] and "adaptive_coding" not in tools[True]
    assert (tmp_path / "c0.pc15").stat().st_size < (tmp_path / "c1.pc15").stat().st_size


def test_residual_flag_adds_the_transform_residual_tool(tmp_path, capsys):
    from PIL import Image
    from skimage import data as skd

    Image.fromarray(skd.camera()[96:192, 160:288]).save(tmp_path / "c.png")  # textured: the atoms leave detail
    out = tmp_path / "c.pc15"
    assert cli.main(["encode", str(tmp_path / "c.png"), "-o", str(out), "--lambda", "0.1", "--residual"]) == 0
    assert cli.main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "transform_residual" in info["tools"] and info["residual_steps"][0] > 0


def test_chroma_lambda_flag_reaches_the_stream(tmp_path, capsys):
    from PIL import Image
    from skimage import data as skd

    Image.fromarray(skd.astronaut()[:96, :96]).save(tmp_path / "a.png")
    metas = []
    for flag in ([], ["--chroma-lambda", "0.5"]):
        out = tmp_path / f"a{len(flag)}.pc15"
        assert cli.main(["encode", str(tmp_path / "a.png"), "-o", str(out), "--lambda", "0.3"] + flag) == 0
        assert cli.main(["info", str(out), "--json"]) == 0
        metas.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["meta"]["chroma_lambda"])
    assert metas == [2.0, 0.5]
    assert cli.main(["encode", str(tmp_path / "a.png"), "-o", str(tmp_path / "b.pc15"), "--chroma-lambda", "-1"]) == 2
    assert "chroma_lambda" in capsys.readouterr().err
