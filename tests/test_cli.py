"""The README's main job (python -m pc15jax) and the speed benchmark, run as users run them."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from experiments import bench_speed
from pc15jax import __main__ as cli


def test_demo_default_input_writes_outputs(tmp_path, capsys):
    assert cli.main(["-o", str(tmp_path), "--json", "--tile", "16", "--overlap", "4"]) == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rep["input"] == "skimage.data.camera" and rep["shape"] == [512, 512]
    assert rep["tiles"] == 43 * 43 and rep["psnr"] > 20 and 0 < rep["est_bpp"] < 1
    recon = np.asarray(Image.open(tmp_path / "recon.png"))
    assert recon.shape == (512, 512) and recon.dtype == np.uint8
    assert (tmp_path / "compare.png").stat().st_size > 10_000
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary files left behind"


def test_demo_on_a_file_and_errors(tmp_path, capsys):
    img = (np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "in.png")
    assert cli.main(["demo", str(tmp_path / "in.png"), "-o", str(tmp_path / "out"), "--tile", "16", "--overlap", "4"]) == 0
    assert "12 tiles of 16px" in capsys.readouterr().out
    assert (tmp_path / "out" / "recon.png").exists()
    assert cli.main([str(tmp_path / "missing.png"), "-o", str(tmp_path / "x")]) == 2
    (tmp_path / "junk.png").write_bytes(b"not an image")
    assert cli.main([str(tmp_path / "junk.png"), "-o", str(tmp_path / "x")]) == 2
    assert cli.main(["--tile", "8", "--overlap", "8", "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "input not found" in err and "cannot read" in err and "overlap must be smaller" in err
    assert not (tmp_path / "x").exists()


def test_module_entry_point_help():
    out = subprocess.run([sys.executable, "-m", "pc15jax", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "demo" in out.stdout


def test_bench_speed_json(capsys):
    assert bench_speed.main(["--json", "--repeats", "1", "--tile", "16", "--overlap", "4"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ["search_s", "compile_s", "tiles", "candidates_per_tile", "evals_per_s", "matmul_fraction"]:
        assert key in r and r[key] > 0
    assert r["evals_per_s"] == pytest.approx(r["tiles"] * r["candidates_per_tile"] / r["search_s"])
