"""The build's working storage: named float32/bool arrays in a folder, read back by window.

Reprojected frame windows and stacked tiles go to disk as they are made (``.npy`` files written
with plain file writes: the operating system's page cache keeps them fast, and they are never
part of the process's resident memory), and every reader copies just the box it needs out of a
memory map that it closes again. So the build's resident memory is one batch of work plus the
canvas, whatever the number of frames. A folder on a shared file system also carries the work
between the processes of a multi-host build.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["WorkDir"]


def _name(key) -> str:
    return "_".join(map(str, key)) if isinstance(key, tuple) else str(key)


class WorkDir:
    """Arrays ``(key, name) -> ndarray`` in a folder (``root``: default a new temporary folder,
    removed by :meth:`close`; a given folder is created, and only what this object wrote is removed).

    ``memory_bytes``: arrays are kept in memory instead, up to this many bytes in all (for small
    builds and :func:`mosaic_jax.reproject_and_coadd`; the build itself keeps 0)."""

    def __init__(self, root=None, memory_bytes: float = 0.0):
        self.own = root is None
        self.root = Path(tempfile.mkdtemp(prefix="mosaic_jax_work_") if root is None else root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.budget, self.used, self.mem = float(memory_bytes), 0, {}
        self.written: set[Path] = set()
        self.headers: dict = {}

    def path(self, key, name: str) -> Path:
        return self.root / f"{_name(key)}.{name}.npy"

    def put(self, key, **arrays) -> None:
        """Store ``arrays`` under ``key`` (replacing what was there)."""
        for name, a in arrays.items():
            a = np.asarray(a)
            a = a if a.flags.c_contiguous else a.copy()  # (ascontiguousarray would make 0-d arrays 1-d)
            k = (key, name)
            old = self.mem.pop(k, None)
            if old is not None:
                self.used -= old.nbytes
            if self.used + a.nbytes <= self.budget:
                self.mem[k] = a
                self.used += a.nbytes
                continue
            p = self.path(key, name)
            tmp = p.with_suffix(".tmp")
            with open(tmp, "wb") as fh:
                np.lib.format.write_array(fh, a, allow_pickle=False)
            os.replace(tmp, p)
            self.headers.pop(p, None)
            self.written.add(p)

    def create(self, key, name: str, shape, dtype=np.float32, fill=None) -> "RowWriter":
        """A disk array of ``shape`` filled by row blocks (:class:`RowWriter`)."""
        return RowWriter(self, key, name, tuple(int(s) for s in shape), np.dtype(dtype), fill)

    def has(self, key, name: str) -> bool:
        return (key, name) in self.mem or self.path(key, name).exists()

    def _header(self, p: Path):
        h = self.headers.get(p)
        if h is None:
            with open(p, "rb") as fh:
                major, _ = np.lib.format.read_magic(fh)
                read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(fh)
                h = self.headers[p] = (tuple(shape), np.dtype(dtype), fh.tell())
        return h

    def get(self, key, name: str, box=None, step: int = 1) -> np.ndarray:
        """A copy of the array, or of its box ``(y0, x0, y1, x1)`` relative to the array's origin
        (every ``step``-th pixel). Disk arrays are read with positioned reads of just the rows
        the box spans (no memory map: nothing stays resident)."""
        a = self.mem.get((key, name))
        if a is not None:
            if box is None:
                return np.array(a[::step, ::step] if step > 1 else a)
            y0, x0, y1, x1 = box
            return np.array(a[y0:y1:step, x0:x1:step])
        p = self.path(key, name)
        shape, dtype, offset = self._header(p)
        if not shape:
            return np.fromfile(p, dtype, count=1, offset=offset).reshape(())
        y0, x0, y1, x1 = (0, 0, shape[0], shape[1] if len(shape) > 1 else 1) if box is None else box
        y0, y1 = max(0, y0), min(shape[0], y1)
        row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        buf = np.empty((max(0, y1 - y0),) + tuple(shape[1:]), dtype)
        with open(p, "rb", buffering=0) as fh:
            fh.seek(offset + y0 * row)
            fh.readinto(memoryview(buf).cast("B"))
        if len(shape) == 1:
            return buf[::step]
        out = buf[::step, x0:x1:step]
        return out if out.base is None or out.size == buf.size else np.array(out)

    def shape(self, key, name: str) -> tuple:
        a = self.mem.get((key, name))
        return a.shape if a is not None else self._header(self.path(key, name))[0]

    def drop(self, key) -> None:
        for k in [k for k in self.mem if k[0] == key]:
            self.used -= self.mem.pop(k).nbytes
        for p in self.root.glob(f"{_name(key)}.*.npy"):
            self.headers.pop(p, None)
            p.unlink(missing_ok=True)
            self.written.discard(p)

    def close(self, everything: bool = False) -> None:
        """Remove what this object wrote (``everything``: every work array in the folder, also
        other processes' - after a failed multi-process build)."""
        self.mem.clear()
        if self.own:
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            for p in list(self.written) + (list(self.root.glob("*.npy")) + list(self.root.glob("*.tmp"))
                                           if everything else []):
                p.unlink(missing_ok=True)
            try:
                self.root.rmdir()  # only once every process sharing it has cleaned up
            except OSError:
                pass


class RowWriter:
    """Rows ``[r0, r1)`` of a disk array written as they are made (plain writes at an offset)."""

    def __init__(self, work: WorkDir, key, name: str, shape, dtype, fill):
        self.path = work.path(key, name)
        work.headers.pop(self.path, None)
        self.shape, self.dtype = shape, dtype
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        work.written.add(self.path)
        self.fh = open(self.path, "wb")
        np.lib.format.write_array_header_2_0(self.fh, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                       "fortran_order": False, "shape": shape})
        self.offset = self.fh.tell()
        if fill is not None:
            row = np.full((1,) + shape[1:], fill, dtype).tobytes()
            for _ in range(shape[0]):
                self.fh.write(row)
        else:
            self.fh.truncate(self.offset + self.row_bytes * shape[0])

    def write(self, r0: int, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, self.dtype)
        if rows.shape[1:] != self.shape[1:] or not 0 <= r0 <= r0 + rows.shape[0] <= self.shape[0]:
            raise ValueError(f"rows {rows.shape} at {r0} do not fit {self.shape}")
        self.fh.seek(self.offset + r0 * self.row_bytes)
        self.fh.write(memoryview(rows).cast("B"))

    def close(self) -> None:
        self.fh.close()
