"""Run-time helpers shared by ``pc15jax`` and ``mosaic_jax`` (standard library only at import).

* :func:`atomic_write` / :func:`atomic_write_bytes`: files written through a temporary file in the
  target folder and renamed over it, so an output is never half-written and a failed write leaves
  the old file as it was.
* :func:`user_cache_dir`: a tool's cache folder (an environment variable, else under
  ``$XDG_CACHE_HOME``).
* :func:`enable_compilation_cache`: JAX's persistent compilation cache for a command-line tool, and
  the executable cache of :mod:`shared_runtime.aot` (``aot.jit``: programs a fresh process loads
  without tracing them).
* :func:`join_processes`: ``jax.distributed.initialize`` for ``--coordinator HOST:PORT
  --num-processes N --process-id I``, with checked arguments and one-line errors.
* :func:`exit_now`: end a command-line run without the interpreter's teardown.
"""

from __future__ import annotations

import atexit
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, NoReturn

__all__ = ["atomic_write", "atomic_write_bytes", "user_cache_dir", "enable_compilation_cache", "join_processes",
           "exit_now"]

FULL_EXIT_ENV = "SHARED_RUNTIME_FULL_EXIT"


def atomic_write(path, write: Callable[[str], object], *, durable: bool = True) -> None:
    """Write a file atomically: ``write(tmp_path)`` into a temporary file in the same folder, fsync,
    then rename over ``path``. On any error the temporary file is removed and ``path`` is untouched.
    The file gets the usual permissions (``0666`` less the umask), not the temporary file's ``0600``.
    ``durable=False`` skips the fsync (files that can be made again, such as simulated inputs: the
    rename still never shows a half-written file, but a power cut may lose it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data: bytes) -> None:
    """:func:`atomic_write` of ``data``."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def user_cache_dir(env_var: str, app: str, name: str) -> str:
    """``$env_var`` when set and not empty, else ``$XDG_CACHE_HOME/<app>/<name>``
    (``~/.cache/<app>/<name>``). Nothing is created."""
    return os.environ.get(env_var) or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), app, name)


def enable_compilation_cache(env_var: str, app: str) -> None:
    """Turn on JAX's persistent compilation cache in ``$env_var``, by default
    ``$XDG_CACHE_HOME/<app>/jax`` (``~/.cache/<app>/jax``), so later runs skip most compiling,
    and the executable cache of :mod:`shared_runtime.aot` in its ``aot`` folder, so they skip
    tracing and lowering too. A folder that cannot be created (read-only home) leaves them off."""
    import jax

    from . import aot

    cache = user_cache_dir(env_var, app, "jax")
    try:
        os.makedirs(cache, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    except OSError:
        return
    aot.enable_executable_cache(os.path.join(cache, "aot"))


def join_processes(coordinator: str | None, num_processes: int | None, process_id: int | None, *,
                   heartbeat_timeout_s: int = 30, what: str = "run") -> tuple[int, int]:
    """Join ``num_processes`` local or remote processes through ``jax.distributed.initialize``
    (CPU collectives via gloo) -> ``(process_id, num_processes)``; ``(0, 1)`` when no coordinator
    and at most one process are given.

    A process that stops answering for ``heartbeat_timeout_s`` makes the others stop with an error;
    processes that do not all join within twice that fail the same way.

    Raises:
      ValueError: incomplete or inconsistent arguments. RuntimeError: the processes did not all join.
    """
    if coordinator is None and num_processes in (None, 1):
        return 0, 1
    if coordinator is None or num_processes is None or process_id is None:
        raise ValueError(f"a multi-process {what} needs --coordinator HOST:PORT, --num-processes N and --process-id I")
    if not (isinstance(num_processes, int) and num_processes >= 1 and 0 <= process_id < num_processes):
        raise ValueError(f"process_id must lie in [0, {num_processes}), got {process_id}")
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"coordinator must be HOST:PORT, got {coordinator!r}")
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator, num_processes, process_id,
                                   heartbeat_timeout_seconds=int(heartbeat_timeout_s),
                                   initialization_timeout=max(10, 2 * int(heartbeat_timeout_s)))
    except Exception as e:  # e.g. a process that never joined (DEADLINE_EXCEEDED)
        raise RuntimeError(f"multi-host {what}: the {num_processes} processes did not all join at {coordinator} "
                           f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    return int(process_id), int(num_processes)


def exit_now(code: int) -> NoReturn:
    """End a command-line process with exit status ``code``, skipping the interpreter's teardown.

    A process that has run JAX spends 0.25-0.3 s after its last statement (2-core CPU) freeing its
    modules and the JAX runtime; a command's outputs are all written and closed by then (they are
    atomic writes). So the standard streams are flushed, the ``atexit`` handlers run (logging's,
    ``jax.distributed``'s shutdown), and the process ends with ``os._exit``. Under a profiler, a
    tracer or a debugger (``cProfile``, ``coverage``, ``pdb``: they write their results at the
    normal exit), or with ``SHARED_RUNTIME_FULL_EXIT=1`` in the environment, it exits normally
    (``sys.exit``).
    """
    if os.environ.get(FULL_EXIT_ENV, "") not in ("", "0") or sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)
    run = getattr(atexit, "_run_exitfuncs", None)
    if run is None:  # not CPython: the plain exit
        sys.exit(code)
    run()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can reach it
            pass
    os._exit(int(code or 0))
