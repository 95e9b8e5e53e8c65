"""Train M2, the parameter init: (tile features, generator) -> the level of every grid axis.

One classification head per grid axis (the generator's parameters, then its seed), each masked
to that generator's levels; cross-entropy over the axes the generator searches. Reports the exact
match rate, the mean level error of the parameters, and the share of examples whose parameters
all lie within +-2 levels of the prediction (what the encoder's neighbourhood then reaches);
early stopping on that share.

Usage:
  python -m experiments.train_m2    # fresh checkout: labels scikit-image's photographs into artifacts/tiles
  python -m experiments.train_m2 --data artifacts/tiles --out pc15jax/ai/weights
"""

from __future__ import annotations

import sys

import jax.numpy as jnp
import numpy as np
import optax

import pc15jax as pc
from experiments._train_common import main_for
from pc15jax._src import hooks as H
from pc15jax._src.search import dictionary_for
from pc15jax.ai.features import N_GENERATORS

KIND = "m2"


def prepare(ds):
    a = ds.arrays
    c = ds.meta["config"]
    dic = dictionary_for(pc.CodecConfig(tile=c["tile"], overlap=c["overlap"]))
    _, levels, _, periodic = H.grid_arrays(dic)
    g = a["gen"].astype(np.int32)
    return {"x": a["feats"].astype(np.float32), "g": g, "y": a["axes"].astype(np.int32),
            "levels": levels[g], "periodic": periodic[g]}, g > 0


def model_config(arrays) -> dict:
    return {"n_in": int(arrays["x"].shape[1]), "n_gen": N_GENERATORS, "n_axes": H.N_AXES, "n_levels": H.N_LEVELS,
            "hidden": 256, "depth": 2}


def _masked_logits(model, arrays):
    logits = model(arrays["x"], arrays["g"])
    ok = jnp.arange(logits.shape[-1])[None, None, :] < arrays["levels"][:, :, None]
    return jnp.where(ok, logits, -1e9)


def loss_fn(model, batch):
    logits = _masked_logits(model, batch)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])  # [B, D]
    w = (batch["levels"] > 1).astype(jnp.float32)
    return jnp.sum(ce * w) / jnp.maximum(jnp.sum(w), 1.0)


def eval_fn(model, arrays):
    pred = jnp.argmax(_masked_logits(model, arrays), axis=-1)
    lv, y = arrays["levels"], arrays["y"]
    diff = jnp.abs(pred - y)
    diff = jnp.where(arrays["periodic"], jnp.minimum(diff, lv - diff), diff)
    searched = lv > 1
    params = searched.at[:, -1].set(False)  # every seed is visited by the neighbourhood
    n_par = jnp.maximum(jnp.sum(params), 1)
    return {"exact": jnp.mean(jnp.all((diff == 0) | ~searched, axis=1)),
            "within2": jnp.mean(jnp.all((diff <= 2) | ~params, axis=1)),
            "level_error": jnp.sum(jnp.where(params, diff, 0)) / n_par,
            "val_loss": loss_fn(model, arrays)}


def main(argv=None) -> int:
    return main_for(KIND, __doc__, prepare, model_config, loss_fn, eval_fn, monitor="within2", maximise=True, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
