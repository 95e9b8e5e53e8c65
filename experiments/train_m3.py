"""Train M3, the RD surrogate: candidate features -> ``log(J_exact / J_proxy)``.

The search's closed-form proxy cost is exact in MSE and bits but approximates ``1 - SSIM``; M3
learns the correction, so ranking candidates by ``log J_proxy + M3`` lets the encoder render and
score fewer of them with the full cost. Huber loss on the 8 best proxy candidates of every
labelled stage, plus a listwise cross-entropy on which of them is the exact best. Reports, within each example, Spearman's rank correlation with the exact cost
and how often the predicted best is the exact best, for M3 and for the proxy alone; early
stopping on M3's rank correlation.

Usage:
  python -m experiments.train_m3    # fresh checkout: labels scikit-image's photographs into artifacts/tiles
  python -m experiments.train_m3 --data artifacts/tiles --out pc15jax/ai/weights
"""

from __future__ import annotations

import sys

import jax.numpy as jnp
import numpy as np
import optax

from experiments._train_common import main_for

KIND = "m3"


def prepare(ds):
    a = ds.arrays
    y = a["cand_target"].astype(np.float32)
    ok = np.all(np.isfinite(y), axis=1)
    return {"x": a["cand_feats"].astype(np.float32), "y": np.nan_to_num(y)}, ok


def model_config(arrays) -> dict:
    return {"n_in": int(arrays["x"].shape[-1]), "hidden": 64, "depth": 2}


RANK_SCALE = 20.0  # logits of the listwise term: -(log J) * RANK_SCALE


def loss_fn(model, batch):
    """Listwise cross-entropy (the exact best of the 8 candidates as the label) plus a Huber fit."""
    pred = model(batch["x"])
    logjp = batch["x"][..., 0]
    best = jnp.argmin(logjp + batch["y"], axis=1)
    ce = optax.softmax_cross_entropy_with_integer_labels(-(logjp + pred) * RANK_SCALE, best)
    return jnp.mean(ce) + jnp.mean(optax.huber_loss(pred, batch["y"], delta=0.1))


def _spearman(a, b):
    ra = jnp.argsort(jnp.argsort(a, axis=1), axis=1).astype(jnp.float32)
    rb = jnp.argsort(jnp.argsort(b, axis=1), axis=1).astype(jnp.float32)
    ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
    return jnp.mean(jnp.sum(ra * rb, 1) / jnp.maximum(jnp.sqrt(jnp.sum(ra * ra, 1) * jnp.sum(rb * rb, 1)), 1e-9))


def eval_fn(model, arrays):
    pred = model(arrays["x"])
    logjp = arrays["x"][..., 0]  # candidate_features column 0: log J_proxy
    exact = logjp + arrays["y"]
    best = jnp.argmin(exact, axis=1)
    return {"spearman": _spearman(logjp + pred, exact), "spearman_proxy": _spearman(logjp, exact),
            "top1": jnp.mean(jnp.argmin(logjp + pred, axis=1) == best),
            "top1_proxy": jnp.mean(jnp.argmin(logjp, axis=1) == best),
            "mae": jnp.mean(jnp.abs(pred - arrays["y"]))}


def main(argv=None) -> int:
    return main_for(KIND, __doc__, prepare, model_config, loss_fn, eval_fn, monitor="spearman", maximise=True, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
