"""Run-time helpers shared by ``pc15jax`` and ``mosaic_jax`` (standard library only at import).

* :func:`atomic_write` / :func:`atomic_write_bytes`: files written through a temporary file in the
  target folder and renamed over it, so an output is never half-written and a failed write leaves
  the old file as it was.
* :func:`enable_compilation_cache`: JAX's persistent compilation cache for a command-line tool.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write", "atomic_write_bytes", "enable_compilation_cache"]


def atomic_write(path, write: Callable[[str], object]) -> None:
    """Write a file atomically: ``write(tmp_path)`` into a temporary file in the same folder, fsync,
    then rename over ``path``. On any error the temporary file is removed and ``path`` is untouched.
    The file gets the usual permissions (``0666`` less the umask), not the temporary file's ``0600``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
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


def enable_compilation_cache(env_var: str, app: str) -> None:
    """Turn on JAX's persistent compilation cache in ``$env_var``, by default
    ``$XDG_CACHE_HOME/<app>/jax`` (``~/.cache/<app>/jax``), so later runs skip most compiling.
    A folder that cannot be created (read-only home) leaves the cache off."""
    import jax

    cache = os.environ.get(env_var) or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), app, "jax")
    try:
        os.makedirs(cache, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    except OSError:
        pass
