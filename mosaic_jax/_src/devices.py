"""Where the build runs: every local device, and optionally several processes (hosts).

* Batches of same-shape work (frame-pair crops, tile bands) are sharded along their leading axis
  over this process's devices with a ``NamedSharding`` (:func:`shard_batch`): one program, every
  device, no backend-specific path. Each item is computed on its own, so a mosaic does not depend
  on the number of devices.
* Several processes (:func:`initialize`, ``jax.distributed`` with gloo CPU collectives) split the
  frames, pairs and tiles between them (:meth:`Cluster.share`). They exchange work through the
  work folder, which must be on a file system they all see, and meet at barriers; the solves are
  repeated by every process on the same inputs (they are small and deterministic) and process 0
  writes the outputs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["Cluster", "initialize", "local_mesh", "shard_batch", "pad_batch"]

log = logging.getLogger("mosaic_jax")


def local_mesh() -> Mesh:
    """A one-axis mesh (``"batch"``) over this process's devices."""
    return Mesh(np.asarray(jax.local_devices()), ("batch",))


def pad_batch(n: int, mesh: Mesh, multiple: int = 1) -> int:
    """The batch size ``>= n`` that fills every device equally (and is a multiple of ``multiple``)."""
    d = mesh.devices.size * multiple
    return max(d, -(-n // d) * d)


def shard_batch(mesh: Mesh, *arrays):
    """Put host arrays on the mesh, split along axis 0 (its length must divide evenly)."""
    sh = NamedSharding(mesh, PartitionSpec("batch"))
    out = tuple(jax.device_put(a, sh) for a in arrays)
    return out if len(out) > 1 else out[0]


@dataclass(frozen=True)
class Cluster:
    """This process's place among ``count`` processes (``index`` 0 writes the outputs)."""

    index: int = 0
    count: int = 1

    @property
    def leader(self) -> bool:
        return self.index == 0

    def share(self, items):
        """This process's items: every ``count``-th one, from its ``index``."""
        items = list(items)
        return items[self.index::self.count]

    def barrier(self, name: str) -> None:
        """Wait for every process (a no-op for one). A process that died makes this raise."""
        if self.count == 1:
            return
        from jax.experimental import multihost_utils

        try:
            multihost_utils.sync_global_devices(f"mosaic_jax:{name}")
        except Exception as e:  # the coordination service reports the lost process
            raise RuntimeError(f"multi-host build: a process failed or left before '{name}' ({e}); "
                               f"stopping without output") from None

    def describe(self) -> dict:
        devs = jax.devices()
        return {"processes": self.count, "process_index": self.index, "devices": len(devs),
                "local_devices": len(jax.local_devices()), "platform": devs[0].platform}


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               *, heartbeat_timeout_s: int | None = None) -> Cluster:
    """Join a multi-process build (``jax.distributed.initialize``; CPU collectives via gloo).

    With no arguments: one process. ``coordinator`` is ``HOST:PORT`` of process 0; every process
    gives the same ``num_processes`` and its own ``process_id``. A process that stops answering
    for ``heartbeat_timeout_s`` (default ``$MOSAIC_JAX_PROCESS_TIMEOUT_S`` or 30 s) makes the
    others stop with an error; processes that do not all join within twice that fail the same way.
    """
    from shared_runtime import join_processes

    if heartbeat_timeout_s is None:
        heartbeat_timeout_s = int(os.environ.get("MOSAIC_JAX_PROCESS_TIMEOUT_S", "30"))
    process_id, num_processes = join_processes(coordinator, num_processes, process_id,
                                               heartbeat_timeout_s=heartbeat_timeout_s, what="build")
    if num_processes == 1:
        return Cluster()
    log.info("[GRID] process %d of %d, %d local device(s) of %d", process_id, num_processes,
             len(jax.local_devices()), len(jax.devices()))
    return Cluster(int(process_id), int(num_processes))

