"""The learned hooks' models (Flax NNX) and their checkpoints.

* **M1** :class:`GeneratorSelector`: tile features ``[N, F]`` -> logits over generator ids ``[N, G]``.
* **M2** :class:`ParamInit`: (tile features ``[N, F]``, generator id ``[N]``) -> logits over the
  levels of every grid axis ``[N, D, L]`` (``D = MAX_PARAMS + 1``: the parameters, then the seed).
* **M3** :class:`RdSurrogate`: candidate features ``[N, C]`` -> predicted ``log(J_exact / J_proxy)``.

Every model normalises its input with frozen statistics (``norm_mean``/``norm_std``, measured on
the training split and saved with the weights) and is small (well under a million parameters).

Checkpoints are two files side by side: ``NAME.npz`` (weights and normalisation, flat
``path -> array``) and ``NAME.json`` (kind, model config, version, training metrics, software
versions and the npz's sha256). :func:`load_checkpoint` checks the hash before building the model.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from shared_runtime import atomic_write_bytes

__all__ = ["GeneratorSelector", "ParamInit", "RdSurrogate", "MODEL_KINDS", "build_model", "save_checkpoint",
           "load_checkpoint", "CheckpointError", "WEIGHTS_DIR", "FORMAT_VERSION"]

WEIGHTS_DIR = Path(__file__).with_name("weights")
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt or of the wrong kind."""


class _Normalised(nnx.Module):
    def __init__(self, n_in: int):
        self.norm_mean = nnx.Variable(jnp.zeros((n_in,), jnp.float32))
        self.norm_std = nnx.Variable(jnp.ones((n_in,), jnp.float32))

    def set_normalisation(self, mean, std):
        self.norm_mean.set_value(jnp.asarray(mean, jnp.float32))
        self.norm_std.set_value(jnp.maximum(jnp.asarray(std, jnp.float32), 1e-6))

    def normalise(self, x):
        return (x - self.norm_mean[...]) / self.norm_std[...]


class _Mlp(nnx.Module):
    def __init__(self, n_in: int, hidden: int, n_out: int, depth: int, rngs: nnx.Rngs):
        sizes = [n_in] + [hidden] * depth
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.out = nnx.Linear(sizes[-1], n_out, rngs=rngs)

    def __call__(self, x):
        for layer in self.layers:
            x = jax.nn.gelu(layer(x))
        return self.out(x)


class GeneratorSelector(_Normalised):
    """M1: ``[N, n_in]`` raw tile features -> ``[N, n_gen]`` logits."""

    def __init__(self, n_in: int, n_gen: int, hidden: int = 192, depth: int = 2, *, rngs: nnx.Rngs):
        super().__init__(n_in)
        self.mlp = _Mlp(n_in, hidden, n_gen, depth, rngs)

    def __call__(self, feats):
        return self.mlp(self.normalise(feats))


class ParamInit(_Normalised):
    """M2: (``[N, n_in]`` raw features, ``[N]`` generator ids) -> ``[N, n_axes, n_levels]`` logits."""

    def __init__(self, n_in: int, n_gen: int, n_axes: int, n_levels: int, hidden: int = 256, depth: int = 2, *,
                 rngs: nnx.Rngs):
        super().__init__(n_in)
        self.n_gen, self.n_axes, self.n_levels = n_gen, n_axes, n_levels
        self.mlp = _Mlp(n_in + n_gen, hidden, n_axes * n_levels, depth, rngs)

    def __call__(self, feats, gen):
        x = jnp.concatenate([self.normalise(feats), jax.nn.one_hot(gen, self.n_gen, dtype=feats.dtype)], axis=-1)
        return self.mlp(x).reshape(x.shape[:-1] + (self.n_axes, self.n_levels))


class RdSurrogate(_Normalised):
    """M3: ``[..., n_in]`` raw candidate features -> ``[...]`` predicted ``log(J_exact / J_proxy)``."""

    def __init__(self, n_in: int, hidden: int = 64, depth: int = 2, *, rngs: nnx.Rngs):
        super().__init__(n_in)
        self.mlp = _Mlp(n_in, hidden, 1, depth, rngs)

    def __call__(self, feats):
        return self.mlp(self.normalise(feats))[..., 0]


MODEL_KINDS = {"m1": GeneratorSelector, "m2": ParamInit, "m3": RdSurrogate}


def build_model(kind: str, config: dict, seed: int = 0) -> nnx.Module:
    """A fresh model of ``kind`` (``"m1"``, ``"m2"``, ``"m3"``) from its config dict."""
    if kind not in MODEL_KINDS:
        raise CheckpointError(f"unknown model kind {kind!r}; expected one of {sorted(MODEL_KINDS)}")
    return MODEL_KINDS[kind](**config, rngs=nnx.Rngs(seed))


def _flat_state(model) -> dict[str, np.ndarray]:
    flat = nnx.to_flat_state(nnx.state(model))
    return {"/".join(str(k) for k in path): np.asarray(v.get_value()) for path, v in flat}


def n_params(model) -> int:
    return int(sum(np.asarray(v.get_value()).size for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param))))


def save_checkpoint(path, model, *, kind: str, config: dict, meta: dict) -> dict:
    """Write ``path.npz`` and ``path.json`` atomically (the npz first: its hash goes in the json).

    Returns the json record (with ``sha256`` and ``n_params``).
    """
    path = Path(path)
    buf = io.BytesIO()
    np.savez(buf, **_flat_state(model))
    data = buf.getvalue()
    record = {"format": FORMAT_VERSION, "kind": kind, "name": path.name, "config": config,
              "n_params": n_params(model), "sha256": hashlib.sha256(data).hexdigest(), **meta}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path.with_suffix(".npz"), data)
    atomic_write_bytes(path.with_suffix(".json"), (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())
    return record


def _resolve(name_or_path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".npz", ".json"):
        p = p.with_suffix("")
    if not p.parent.parts or str(p.parent) == ".":
        if not p.with_suffix(".json").exists():
            p = WEIGHTS_DIR / p.name
    return p


def load_checkpoint(name_or_path, kind: str | None = None):
    """Load a checkpoint -> ``(model, record)``.

    Args:
      name_or_path: a shipped name (``"m1"``, ``"m2"``, ``"m3"``) or a path (with or without
        ``.npz``/``.json``).
      kind: when given, the checkpoint must be of this kind.

    Raises:
      CheckpointError: missing files, a hash mismatch, a wrong kind or arrays that do not fit.
    """
    p = _resolve(name_or_path)
    try:
        record = json.loads(p.with_suffix(".json").read_text())
        data = p.with_suffix(".npz").read_bytes()
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {p}: {e}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{p}.json is not a format-{FORMAT_VERSION} checkpoint record")
    if hashlib.sha256(data).hexdigest() != record.get("sha256"):
        raise CheckpointError(f"{p}.npz does not match the sha256 in {p.name}.json (corrupt or replaced)")
    if kind is not None and record.get("kind") != kind:
        raise CheckpointError(f"{p} holds a {record.get('kind')!r} model, expected {kind!r}")
    model = build_model(record["kind"], record["config"])
    try:
        arrays = dict(np.load(io.BytesIO(data)))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot parse {p}.npz: {e}") from None
    flat = nnx.to_flat_state(nnx.state(model))
    for path, var in flat:
        key = "/".join(str(k) for k in path)
        if key not in arrays or arrays[key].shape != np.shape(var.get_value()):
            raise CheckpointError(f"{p}.npz lacks {key} or has the wrong shape for it")
        var.set_value(jnp.asarray(arrays[key]))
    nnx.update(model, nnx.from_flat_state(flat))
    return model, record
