"""The training loop of the search hooks and the train scripts' fresh-checkout path."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest


def _toy_m1(n=512, seed=0):
    from pc15jax.ai.features import N_FEATURES, N_GENERATORS

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    y = (np.argmax(x[:, :4], axis=1) + 1).astype(np.int32)  # a rule the model can learn
    return {"x": x, "y": y}, N_GENERATORS


def test_training_lowers_the_loss_with_finite_gradients():
    import flax.nnx as nnx

    from experiments import train_m1
    from pc15jax.ai.models import build_model
    from pc15jax.ai.train import TrainConfig, fit

    data, n_gen = _toy_m1()
    train = {k: v[:384] for k, v in data.items()}
    val = {k: v[384:] for k, v in data.items()}
    model = build_model("m1", {"n_in": data["x"].shape[1], "n_gen": n_gen, "hidden": 32, "depth": 1})
    model.set_normalisation(train["x"].mean(0), train["x"].std(0))
    batch = jax.tree.map(jnp.asarray, train)
    before = float(train_m1.loss_fn(model, batch))
    loss, grads = nnx.value_and_grad(train_m1.loss_fn)(model, batch)
    leaves = jax.tree.leaves(grads)
    assert leaves and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert any(float(jnp.abs(g).max()) > 0 for g in leaves)  # the loss reaches the weights
    with jax.numpy_dtype_promotion("standard"):  # optax's bias correction mixes int and float
        log = fit(model, train_m1.loss_fn, train_m1.eval_fn, train, val,
                  TrainConfig(epochs=20, batch_size=64, patience=20), monitor="top3", maximise=True, desc="test")
    after = float(train_m1.loss_fn(model, batch))
    assert after < 0.8 * before
    assert log["best"]["top3"] > 0.5  # chance is 3 / 25


def test_train_script_without_arguments_builds_its_dataset(tmp_path, monkeypatch):
    from experiments import _train_common, make_tiles, train_m1

    # the fresh-checkout path on a tiny dataset: five small photographs, one lambda, few tiles
    monkeypatch.setattr(make_tiles, "SKIMAGE_PHOTOS", ("camera", "coins", "moon", "brick", "grass"))
    full = make_tiles.skimage_gray
    monkeypatch.setattr(make_tiles, "skimage_gray", lambda n: full(n)[:96, :128])  # one small shape
    monkeypatch.setattr(_train_common, "AUTO_LAMBDAS", ("0.3",))
    monkeypatch.chdir(tmp_path)
    with jax.numpy_dtype_promotion("standard"):  # optax's bias correction mixes int and float
        assert train_m1.main(["--auto-tiles-per-image", "12", "--epochs", "2"]) == 0
    meta = json.loads((tmp_path / "artifacts" / "tiles" / "meta.json").read_text())
    assert meta["examples"] > 0 and meta["lambdas"] == [0.3]
    rec = json.loads((tmp_path / "artifacts" / "weights" / "m1.json").read_text())
    assert rec["kind"] == "m1" and rec["dataset"]["examples"] == meta["examples"]
    # a second run reuses the dataset; an explicit folder that is missing is an error, not a build
    stamp = (tmp_path / "artifacts" / "tiles" / "tiles.npz").stat().st_mtime_ns
    with jax.numpy_dtype_promotion("standard"):
        assert train_m1.main(["--epochs", "1"]) == 0
    assert (tmp_path / "artifacts" / "tiles" / "tiles.npz").stat().st_mtime_ns == stamp
    with pytest.raises(SystemExit, match="make_tiles"):
        train_m1.main(["--data", str(tmp_path / "nowhere"), "--epochs", "1"])
