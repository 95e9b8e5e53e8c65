"""mosaic_jax at scale: the work folder, bounded batches, every local device, several processes,
and input that must fail before anything is allocated."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

import mosaic_jax as mj
from mosaic_jax._src.workdir import WorkDir
from mosaic_jax.quality import seam_metric
from mosaic_jax.simulate import simulate_dataset, sky_wcs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sim_mono(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim_mono")
    simulate_dataset(d, grid=(3, 4), frame_shape=(120, 150), rgb=False, seed=5)
    return d


def test_workdir_boxes_rows_and_scalars(tmp_path):
    w = WorkDir(tmp_path / "work")
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 40, 3)).astype(np.float32)
    m = rng.random((50, 40)) > 0.5
    w.put(("f", 1), d=a, m=m, s=np.asarray(3.5))
    assert np.array_equal(w.get(("f", 1), "d", (3, 5, 20, 30)), a[3:20, 5:30])
    assert np.array_equal(w.get(("f", 1), "m", (3, 5, 20, 30), step=3), m[3:20:3, 5:30:3])
    assert np.array_equal(w.get(("f", 1), "d"), a) and float(w.get(("f", 1), "s")) == 3.5
    r = w.create(("t", 0), "d", (10, 4, 2))
    r.write(6, np.ones((3, 4, 2)))
    r.close()
    got = w.get(("t", 0), "d")
    assert got.shape == (10, 4, 2) and got[6:9].min() == 1 and got[:6].max() == 0 and got[9:].max() == 0
    with pytest.raises(ValueError):
        w.create(("t", 1), "d", (4, 4)).write(3, np.ones((2, 4)))  # rows beyond the array
    w.put(("f", 1), d=a[:10])  # replaced, and read back at its new shape
    assert w.get(("f", 1), "d").shape == (10, 40, 3)
    w.close()
    assert not (tmp_path / "work").exists()  # what it wrote is gone, and the folder with it


def test_build_memory_limit_and_batches_do_not_change_the_mosaic(sim_mono):
    a = mj.build_mosaic([sim_mono], mj.MosaicConfig(tile_size_factor=1.5, quality=False), progress=False)
    b = mj.build_mosaic([sim_mono], mj.MosaicConfig(tile_size_factor=1.5, quality=False, memory_limit_mb=256),
                        progress=False)
    assert a.report["execution"]["batch_mb"] >= b.report["execution"]["batch_mb"]
    ok = np.isfinite(a.mosaic)
    assert np.array_equal(ok, np.isfinite(b.mosaic)) and ok.mean() > 0.9
    np.testing.assert_allclose(b.mosaic[ok], a.mosaic[ok], rtol=0, atol=1e-4 * np.ptp(a.mosaic[ok]))
    assert a.report["devices"] >= 1 and a.report["processes"] == 1
    with pytest.raises(ValueError, match="memory_limit_mb"):
        mj.MosaicConfig(memory_limit_mb=10)


def test_build_seam_metric_matches_the_reprojecting_one(sim_mono):
    """The build's seam metric comes from its own windows; the standalone one reprojects every
    frame again. They measure the same thing."""
    r = mj.build_mosaic([sim_mono], mj.MosaicConfig(tile_size_factor=1.5, quality=True), progress=False)
    frames = [(mj.load_frame(f)[0], f.wcs) for f in (mj.scan_frame(p) for p, _, _ in mj.find_inputs([sim_mono]))]
    ref = seam_metric(r.mosaic, r.wcs, frames, boxes=r.grid.footprints)
    got = r.report["seam_metric"]
    assert np.isfinite(got["rms"]) and got["rms"] == pytest.approx(ref.rms, rel=0.25)


def _run_build(args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "mosaic_jax", "build", *args, "-q", "--no-quality"],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=env)


def _mosaic(out: Path) -> np.ndarray:
    with fits.open(out / "mosaic.fits") as h:
        return np.asarray(h[0].data, np.float32)


def _same(a, b):
    ok = np.isfinite(a)
    assert np.array_equal(ok, np.isfinite(b)) and ok.mean() > 0.9
    np.testing.assert_allclose(b[ok], a[ok], rtol=0, atol=1e-4 * np.ptp(a[ok]))


@pytest.fixture(scope="module")
def one_device(sim_mono, tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    r = _run_build([str(sim_mono), "-o", str(out), "--tile-size-factor", "1.5"])
    assert r.returncode == 0, r.stderr
    return out


def test_four_local_devices_give_the_one_device_mosaic(sim_mono, one_device, tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    r = _run_build([str(sim_mono), "-o", str(tmp_path), "--tile-size-factor", "1.5"], env=env)
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["devices"] == 4 and rep["execution"]["local_devices"] == 4
    _same(_mosaic(one_device), _mosaic(tmp_path))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_give_the_one_process_mosaic(sim_mono, one_device, tmp_path):
    port = _free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen([sys.executable, "-m", "mosaic_jax", "build", str(sim_mono), "-o", str(tmp_path),
                               "--tile-size-factor", "1.5", "-q", "--no-quality", "--coordinator", f"127.0.0.1:{port}",
                               "--num-processes", "2", "--process-id", str(i)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["processes"] == 2
    _same(_mosaic(one_device), _mosaic(tmp_path))
    assert not (tmp_path / ".mosaic_jax_work").exists()  # the shared work folder is cleaned up


def test_a_lost_process_stops_the_others_without_output(sim_mono, tmp_path):
    """Process 1 never joins: process 0 stops with an error and leaves no output."""
    port = _free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu", MOSAIC_JAX_PROCESS_TIMEOUT_S="3")
    p0 = subprocess.run([sys.executable, "-m", "mosaic_jax", "build", str(sim_mono), "-o", str(tmp_path),
                         "--tile-size-factor", "1.5", "-q", "--no-quality", "--coordinator", f"127.0.0.1:{port}",
                         "--num-processes", "2", "--process-id", "0"], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)
    assert p0.returncode != 0
    assert not (tmp_path / "mosaic.fits").exists() and not (tmp_path / "report.json").exists()


def test_header_claiming_more_data_than_the_file_fails_before_allocating(tmp_path):
    h = fits.Header()
    h["SIMPLE"], h["BITPIX"], h["NAXIS"], h["NAXIS1"], h["NAXIS2"] = True, -32, 2, 100000, 100000
    h.extend(sky_wcs(shape=(100000, 100000)).to_header())
    p = tmp_path / "liar.fits"
    p.write_bytes(h.tostring().encode() + b"\0" * 2880 * 4)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(mj.MosaicInputError, match="header claims 100000 x 100000"):
        mj.build_mosaic([p], progress=False)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB: nothing near 37 GiB


def test_a_full_disk_during_the_write_leaves_no_file(sim_mono, tmp_path, monkeypatch):
    """The FITS stream fails half way (ENOSPC): no mosaic.fits, no temporary file, nothing that
    looks finished."""
    import errno

    r = mj.build_mosaic([sim_mono], mj.MosaicConfig(tile_size_factor=1.5, quality=False), progress=False)
    calls = {"n": 0}
    real = fits.StreamingHDU.write

    def full(self, data):
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(fits.StreamingHDU, "write", full)
    monkeypatch.setattr("mosaic_jax._src.output.ROW_BLOCK_BYTES", 4096)  # several blocks: fail in the middle
    out = tmp_path / "out"
    with pytest.raises(OSError, match="No space"):
        mj.write_outputs(r, out)
    assert calls["n"] == 2 and list(out.iterdir()) == []
