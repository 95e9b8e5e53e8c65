"""Command line shared by train_m1/m2/m3: data -> normalisation -> fit -> checkpoint."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pc15jax as pc
from pc15jax.ai.models import build_model, save_checkpoint
from pc15jax.ai.train import TrainConfig, add_train_args, fit, load_dataset, split_arrays

WEIGHTS_VERSION = "2026.11-1"
DEFAULT_DATA = "artifacts/tiles"
# The dataset a fresh checkout builds for itself: scikit-image's 15 photographs, two lambdas.
AUTO_LAMBDAS = ("0.1", "0.3")
AUTO_TILES_PER_IMAGE = 150


def ensure_dataset(data: str, tiles_per_image: int) -> None:
    """Build the small default dataset when ``data`` is the default folder and holds none (a fresh
    checkout); any other missing folder is the user's to make (``load_dataset`` says how)."""
    if Path(data, "tiles.npz").exists() or Path(data) != Path(DEFAULT_DATA):
        return
    from experiments import make_tiles

    print(f"no tile dataset in {data}: labelling a small one from scikit-image's photographs "
          f"({tiles_per_image} tiles per image and lambda, lambdas {', '.join(AUTO_LAMBDAS)}); "
          f"python -m experiments.make_tiles --out {data} makes a larger one", file=sys.stderr)
    make_tiles.main(["--images", "--out", data, "--tiles-per-image", str(tiles_per_image),
                     "--lambdas", *AUTO_LAMBDAS])


def main_for(kind, doc, prepare, model_config, loss_fn, eval_fn, *, monitor, maximise, argv=None) -> int:
    ap = argparse.ArgumentParser(prog=f"python -m experiments.train_{kind}", description=doc.split("\n")[0])
    ap.add_argument("--data", default=DEFAULT_DATA,
                    help="dataset folder from experiments.make_tiles (the default one is built when missing)")
    ap.add_argument("--auto-tiles-per-image", type=int, default=AUTO_TILES_PER_IMAGE,
                    help="size of the dataset built when the default folder is empty")
    ap.add_argument("--out", default="artifacts/weights", help="folder for NAME.npz + NAME.json")
    ap.add_argument("--name", default=kind, help="checkpoint name (default: the model kind)")
    add_train_args(ap)
    a = ap.parse_args(argv)
    try:
        tc = TrainConfig(**{k: getattr(a, k) for k in TrainConfig.__dataclass_fields__})
    except ValueError as e:
        ap.error(str(e))
    if a.auto_tiles_per_image < 1:
        ap.error("--auto-tiles-per-image must be >= 1")
    ensure_dataset(a.data, a.auto_tiles_per_image)
    ds = load_dataset(a.data)
    arrays, keep = prepare(ds)
    train, val = split_arrays({**arrays, "split": ds.arrays["split"]}, keep)
    train.pop("split"), val.pop("split")
    cfg = model_config(train)
    model = build_model(kind, cfg, seed=tc.seed)
    x = train["x"].reshape(-1, train["x"].shape[-1])
    model.set_normalisation(x.mean(0), x.std(0))  # frozen from the training split, saved with the weights
    log = fit(model, loss_fn, eval_fn, train, val, tc, monitor=monitor, maximise=maximise, desc=f"train {kind}")
    rec = save_checkpoint(f"{a.out}/{a.name}", model, kind=kind, config=cfg, meta={
        "version": WEIGHTS_VERSION, "dataset": {"path": str(ds.path), "examples": ds.meta.get("examples"),
                                                 "config": ds.meta.get("config"), "lambdas": ds.meta.get("lambdas"),
                                                 "images": ds.meta.get("images")},
        "monitor": monitor, "metrics": log["best"], "best_epoch": log["best_epoch"], "seconds": log["seconds"],
        "examples": log["examples"], "train_config": log["train_config"], "env": pc.env_summary()})
    best = {k: round(v, 4) if isinstance(v, float) else v for k, v in log["best"].items()}
    print(json.dumps({"kind": kind, "n_params": rec["n_params"], "best_epoch": log["best_epoch"],
                      "epochs_run": len(log["epochs"]), "seconds": log["seconds"], "val": best,
                      "examples": log["examples"], "sha256": rec["sha256"][:16],
                      "out": f"{a.out}/{a.name}.npz"}, indent=1))
    return 0

