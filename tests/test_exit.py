"""shared_runtime.exit_now: the CLIs' exit without the interpreter's teardown."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_SCRIPT = """
import atexit, sys
from shared_runtime import exit_now
atexit.register(lambda: print("atexit ran", flush=True))
print("buffered", end="")
sys.stderr.write("err")
exit_now(3)
print("not reached")
"""


@pytest.mark.parametrize("full", ["", "1"])
def test_exit_now_flushes_runs_atexit_and_keeps_the_status(full):
    env = dict(os.environ, SHARED_RUNTIME_FULL_EXIT=full)
    run = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 3
    assert run.stdout == "bufferedatexit ran\n"  # the pending output first, then the handlers'
    assert run.stderr == "err"


def test_exit_now_exits_normally_under_a_profiler(tmp_path):
    prof, script = tmp_path / "out.prof", tmp_path / "script.py"
    script.write_text(_SCRIPT)
    run = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(prof), str(script)], capture_output=True,
                         text=True, env=dict(os.environ, SHARED_RUNTIME_FULL_EXIT=""), timeout=120)
    assert "buffered" in run.stdout  # (cProfile itself decides the exit status it reports)
    assert prof.stat().st_size > 0  # it wrote its results: the exit was a normal one
