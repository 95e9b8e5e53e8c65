"""Train M1, the generator selector: tile features -> probabilities over generator ids.

Cross-entropy against the exhaustive search's best generator at every pursuit stage; reports
top-1 / top-3 / top-5 accuracy on the validation images each epoch and on the whole validation
split at the end; early stopping on top-3 accuracy (the selector's default ``topk``).

Usage:
  python -m experiments.train_m1    # fresh checkout: labels scikit-image's photographs into artifacts/tiles
  python -m experiments.train_m1 --data artifacts/tiles --out pc15jax/ai/weights
"""

from __future__ import annotations

import sys

import jax.numpy as jnp
import numpy as np
import optax

from experiments._train_common import main_for
from pc15jax.ai.features import N_GENERATORS

KIND = "m1"
TOPK = (1, 3, 5)


def prepare(ds):
    a = ds.arrays
    keep = a["gen"] > 0
    return {"x": a["feats"].astype(np.float32), "y": a["gen"].astype(np.int32)}, keep


def model_config(arrays) -> dict:
    return {"n_in": int(arrays["x"].shape[1]), "n_gen": N_GENERATORS, "hidden": 192, "depth": 2}


def loss_fn(model, batch):
    logits = model(batch["x"])
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]))


def eval_fn(model, arrays):
    logits = model(arrays["x"])
    rank = jnp.sum(logits > jnp.take_along_axis(logits, arrays["y"][:, None], axis=1), axis=1)
    out = {f"top{k}": jnp.mean(rank < k) for k in TOPK}
    out["val_loss"] = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, arrays["y"]))
    return out


def main(argv=None) -> int:
    return main_for(KIND, __doc__, prepare, model_config, loss_fn, eval_fn, monitor="top3", maximise=True, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
