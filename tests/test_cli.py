"""Command-line entry points run as users run them: help, bad input, and the speed benchmark."""

import json
import subprocess
import sys

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
