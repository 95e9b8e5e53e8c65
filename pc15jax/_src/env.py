"""Where datasets, weights and artifacts live (:class:`PathsConfig`), and what runs (:func:`env_summary`)."""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

__all__ = ["PathsConfig", "env_summary"]


@dataclasses.dataclass(frozen=True)
class PathsConfig:
    """Parametric paths of the learned-hooks workflow (nothing is created until asked).

    Attributes:
      base: project folder the others hang from.
      dataset_images: folder of training images (e.g. ``../shared/data/kodak``).
      artifacts_subdir: under ``base``: tile datasets, trained weights, benchmark outputs.
      cache_subdir: under ``base``: caches (JAX compilation cache).
      labels_dir: where labelled tile datasets go (default: ``artifacts/tiles``).

    Examples:
      >>> import pc15jax as pc
      >>> p = pc.PathsConfig(base="/tmp/pc15", dataset_images="/data/kodak")
      >>> str(p.weights)
      '/tmp/pc15/artifacts/weights'
    """

    base: Path | str = "."
    dataset_images: Path | str | None = None
    artifacts_subdir: str = "artifacts"
    cache_subdir: str = ".cache"
    labels_dir: Path | str | None = None

    def __post_init__(self):
        object.__setattr__(self, "base", Path(self.base).expanduser())
        for f in ("dataset_images", "labels_dir"):
            v = getattr(self, f)
            if v is not None:
                object.__setattr__(self, f, Path(v).expanduser())
        for f in ("artifacts_subdir", "cache_subdir"):
            v = getattr(self, f)
            if not isinstance(v, str) or not v or Path(v).is_absolute() or ".." in Path(v).parts:
                raise ValueError(f"{f} must be a relative folder name inside base, got {v!r}")

    @property
    def artifacts(self) -> Path:
        return self.base / self.artifacts_subdir

    @property
    def cache(self) -> Path:
        return self.base / self.cache_subdir

    @property
    def labels(self) -> Path:
        return self.labels_dir if self.labels_dir is not None else self.artifacts / "tiles"

    @property
    def weights(self) -> Path:
        return self.artifacts / "weights"

    def ensure(self) -> "PathsConfig":
        """Create the artifacts, cache and labels folders; returns self."""
        for p in (self.artifacts, self.cache, self.labels, self.weights):
            p.mkdir(parents=True, exist_ok=True)
        return self


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def env_summary() -> dict:
    """Versions (Python, JAX, jaxlib, Flax, Optax, NumPy, pc15jax), platform, backend and devices.

    Examples:
      >>> import pc15jax as pc
      >>> sorted(pc.env_summary())[:3]
      ['backend', 'cpu_count', 'devices']
    """
    import jax

    devs = jax.devices()
    return {
        "python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "packages": {p: _version(p) for p in ("pc15jax", "jax", "jaxlib", "flax", "optax", "numpy")},
        "backend": jax.default_backend(), "devices": [f"{d.platform}:{d.id} {d.device_kind}" for d in devs],
        "device_count": len(devs),
    }
