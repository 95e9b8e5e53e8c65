"""Many images over every local device: one image per device at a time, the same bytes as one device.

The pursuit keeps per-image host logic between its stages, so images (not tiles) are what the
devices share: image ``i`` runs on ``devices[i % D]`` under ``jax.default_device``, one worker
thread per device. Every device runs the same compiled programs on the same inputs, so a stream
does not depend on the device it was coded on (tested on 4 forced CPU devices).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Sequence

import jax

__all__ = ["map_over_devices", "pick_devices"]


def pick_devices(n: int | None = None) -> list:
    """The first ``n`` local devices (``None``: all). Raises ValueError for ``n`` < 1."""
    devs = jax.local_devices()
    if n is None:
        return devs
    if n < 1:
        raise ValueError(f"--devices must be >= 1, got {n}")
    return devs[:n]


def map_over_devices(fn: Callable, items: Sequence, devices: Sequence | None = None) -> Iterator:
    """``fn(item)`` for every item, item ``i`` on ``devices[i % D]`` -> the results in input order
    (a generator: each is yielded as soon as it and those before it are done)."""
    devices = list(devices) if devices is not None else jax.local_devices()
    if len(devices) <= 1 or len(items) <= 1:
        for x in items:
            yield fn(x)
        return

    def run(i):
        with jax.default_device(devices[i % len(devices)]):
            return fn(items[i])

    with ThreadPoolExecutor(max_workers=len(devices), thread_name_prefix="pc15jax-device") as ex:
        futures = [ex.submit(run, i) for i in range(len(items))]
        for f in futures:
            yield f.result()
