"""Training loop shared by ``experiments.train_m1/m2/m3`` (Flax NNX + Optax).

One jitted train step (gradient and AdamW update together, model and optimiser state donated),
a warmup + cosine learning-rate schedule, fixed-size shuffled batches (the last partial batch is
dropped, so one program is compiled), the epoch's loss read from the device once per epoch,
validation metrics per epoch on a progress bar, early stopping on a validation metric (the best
weights are restored at the end).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Callable

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

__all__ = ["TrainConfig", "fit", "load_dataset", "Dataset", "split_arrays", "add_train_args"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (every field is a CLI flag of the train scripts)."""

    epochs: int = 40
    batch_size: int = 512
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    patience: int = 6
    seed: int = 0

    def __post_init__(self):
        for f in ("epochs", "batch_size", "patience"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f} must be >= 1")
        if not self.lr > 0 or self.weight_decay < 0 or self.warmup_epochs < 0:
            raise ValueError("lr must be > 0, weight_decay and warmup_epochs >= 0")


def add_train_args(ap, defaults: TrainConfig = TrainConfig()):
    for f in dataclasses.fields(TrainConfig):
        ap.add_argument("--" + f.name.replace("_", "-"), type=type(getattr(defaults, f.name)),
                        default=getattr(defaults, f.name))


@dataclasses.dataclass(frozen=True)
class Dataset:
    arrays: dict
    meta: dict
    path: Path


def load_dataset(path) -> Dataset:
    """``DATASET/tiles.npz`` + ``DATASET/meta.json`` from ``experiments.make_tiles``; exits with a
    clear message when they are missing."""
    path = Path(path)
    try:
        meta = json.loads((path / "meta.json").read_text())
        with np.load(path / "tiles.npz") as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise SystemExit(f"cannot read the tile dataset in {path} ({e}); make it with "
                         f"python -m experiments.make_tiles --out {path}") from None
    if not (arrays["split"] == 0).any() or not (arrays["split"] == 1).any():
        raise SystemExit(f"{path}: the dataset needs both training and validation images")
    return Dataset(arrays, meta, path)


def split_arrays(arrays: dict, mask: np.ndarray) -> tuple[dict, dict]:
    """(train, val) dicts of the examples selected by ``mask``, split by the stored image split."""
    tr = mask & (arrays["split"] == 0)
    va = mask & (arrays["split"] == 1)
    return {k: v[tr] for k, v in arrays.items()}, {k: v[va] for k, v in arrays.items()}


def fit(model: nnx.Module, loss_fn: Callable, eval_fn: Callable, train: dict, val: dict, cfg: TrainConfig, *,
        monitor: str, maximise: bool = True, desc: str = "train") -> dict:
    """Train ``model`` in place; returns the log (per-epoch metrics, best epoch, seconds).

    Args:
      loss_fn: ``(model, batch) -> scalar loss`` (batch: dict of device arrays).
      eval_fn: ``(model, arrays) -> dict of scalar metrics`` on the whole validation split.
      train, val: dicts of numpy arrays with a common leading axis.
      monitor: the validation metric early stopping follows (``maximise`` or minimise it).
    """
    n = len(next(iter(train.values())))
    bs = min(cfg.batch_size, n)
    steps_per_epoch = max(n // bs, 1)
    total = steps_per_epoch * cfg.epochs
    warmup = min(steps_per_epoch * cfg.warmup_epochs, total - 1)  # a one-epoch run still decays
    sched = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, warmup, total, end_value=cfg.lr * 0.02)
    opt = nnx.Optimizer(model, optax.adamw(sched, weight_decay=cfg.weight_decay), wrt=nnx.Param)

    @nnx.jit(donate_argnums=(0, 1))
    def step(model, opt, batch):
        loss, grads = nnx.value_and_grad(loss_fn)(model, batch)
        opt.update(model, grads)
        return loss

    evaluate = nnx.jit(eval_fn)
    dev_train = jax.device_put(train)  # one transfer; batches are gathered on device
    dev_val = jax.device_put(val)
    rng = np.random.default_rng(cfg.seed)
    best, best_state, since, log = None, None, 0, []
    t0 = time.perf_counter()
    bar = tqdm(range(cfg.epochs), desc=desc, unit="epoch", file=sys.stderr)
    for epoch in bar:
        perm = jnp.asarray(rng.permutation(n)[: steps_per_epoch * bs].reshape(steps_per_epoch, bs))
        total_loss = jnp.zeros(())
        for s in range(steps_per_epoch):
            total_loss = total_loss + step(model, opt, jax.tree.map(lambda a, i=perm[s]: a[i], dev_train))
        metrics = {k: float(v) for k, v in evaluate(model, dev_val).items()}
        metrics["train_loss"] = float(total_loss) / steps_per_epoch
        metrics["epoch"] = epoch + 1
        log.append(metrics)
        bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items() if k != "epoch"})
        score = metrics[monitor]
        if best is None or (score > best if maximise else score < best):
            best, since = score, 0
            best_state = jax.tree.map(jnp.copy, nnx.state(model))
        else:
            since += 1
            if since >= cfg.patience:
                break
    bar.close()
    nnx.update(model, best_state)
    best_epoch = max(range(len(log)), key=lambda i: log[i][monitor] if maximise else -log[i][monitor])
    return {"epochs": log, "best_epoch": best_epoch + 1, "best": log[best_epoch],
            "seconds": round(time.perf_counter() - t0, 1), "examples": {"train": n, "val": len(next(iter(val.values())))},
            "train_config": dataclasses.asdict(cfg)}

