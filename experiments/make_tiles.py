"""Tile dataset for the learned hooks, labelled by the exhaustive search.

Runs the codec's exhaustive matching pursuit on every image (luma) at a few lambdas and records,
for a random subset of tiles, every pursuit stage the tile went through:

* ``feats`` float32 ``[E, F]``: the device-computed tile features of the stage's residual
  (``pc15jax.ai.features.tile_features``), raw (training freezes their normalisation);
* the oracle: ``atom``/``gen``/``axes`` of the best non-FLAT candidate by the full cost,
  ``accepted`` (whether it beat stopping), ``cost`` and ``stop_cost``;
* ``gen_best`` float32 ``[E, G]``: the best proxy cost of every generator (inf: not allowed),
  i.e. what choosing each generator would cost: the runner-ups;
* for M3, ``cand_feats`` float16 ``[E, 8, C]`` and ``cand_target`` float32 ``[E, 8]``: the
  8 best candidates by the closed-form proxy, their features and ``log(J_exact / J_proxy)``
  (NaN where not allowed).

Images are split **by image** into train / val (``split`` per example, 0 = train, 1 = val);
``--holdout`` images are never read (they are the benchmark's). Output: ``OUT/tiles.npz`` and
``OUT/meta.json`` (config, images and their split, lambdas, code version, software versions).

Usage:
  python -m experiments.make_tiles --out artifacts/tiles            # skimage + ../shared/data/kodak
  python -m experiments.make_tiles --images DIR_OR_FILE ... --out DATASET [--tile 16 --overlap 1]
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import pc15jax as pc
from pc15jax._src import hooks as H
from pc15jax._src import search as S
from pc15jax._src.search import rd
from pc15jax._src.codec import codec_tables
from pc15jax._src.tiling import extract_tiles, tile_image
from pc15jax.ai.features import tile_features
from pc15jax.bitstream.models import count_contexts
from shared_runtime import atomic_write_bytes

SKIMAGE_PHOTOS = ("camera", "astronaut", "coffee", "chelsea", "rocket", "coins", "moon", "brick", "grass", "gravel",
                  "clock", "cell", "immunohistochemistry", "hubble_deep_field", "page")
DEFAULT_HOLDOUT = ("kodim01", "kodim02", "kodim03", "kodim04")
DEFAULT_LAMBDAS = (0.1, 0.3, 1.0)
N_M3 = 8
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def default_kodak() -> Path:
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"


def load_gray(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


def skimage_gray(name: str) -> np.ndarray:
    from skimage import color, data

    a = getattr(data, name)()
    if a.ndim == 3:
        a = (color.rgb2gray(a[..., :3]) * 255.0 + 0.5).astype(np.uint8)
    return a


def collect_images(paths, use_skimage: bool, holdout) -> list[tuple[str, object]]:
    """-> ``[(name, loader)]`` sorted by name; holdout names (file stems) are skipped."""
    out = {}
    if use_skimage:
        for n in SKIMAGE_PHOTOS:
            out[f"skimage:{n}"] = (lambda n=n: skimage_gray(n))
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise SystemExit(f"make_tiles: {p} does not exist")
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXT) if p.is_dir() else [p]
        for f in files:
            if f.stem not in holdout:
                out[f.stem] = (lambda f=f: load_gray(f))
    return sorted(out.items())


def split_of(names: list[str], val_every: int) -> dict[str, int]:
    """Deterministic split by image: every ``val_every``-th image (sorted by name) is validation."""
    return {n: int(i % val_every == val_every - 1) for i, n in enumerate(names)}


@functools.partial(jax.jit, static_argnames="layout")
def _label_stage(pr: rd.Residual, t: S.SearchTables, p: S.SearchParams, shortlist_idx, layout):
    """Exhaustive stage plus the labels (see the module docstring)."""
    N, n = pr.xc.shape
    T = int(round(n ** 0.5))
    A = t.atoms.shape[0]
    feats = tile_features((pr.xc / t.sw).reshape(N, T, T), pr.n_prev, pr.prev_gen)
    c = jnp.dot(pr.xc, t.atoms.T)
    atom = jnp.arange(A, dtype=jnp.int32)[None, :]
    j, d, bits = rd.proxy_terms(c, atom, pr, t, p)
    j = j.at[:, 0].set(jnp.inf)  # FLAT ("no further atom") is always appended by rd.finalise
    j, d, bits, c = jax.lax.optimization_barrier((j, d, bits, c))  # computed once, not per consumer
    gen_best = jnp.stack([jnp.min(j[:, o:o + s], axis=1) if s else jnp.full((N,), jnp.inf)
                          for o, s in layout], axis=1)  # [N, G]
    _, top = jax.lax.top_k(-j, N_M3)
    top = top.astype(jnp.int32)
    full = rd.finalise_costs(pr, t, p, top, first=False)
    jn = full.j[:, :-1]
    in_sl = jnp.arange(N_M3 + 1)[None, :] < shortlist_idx.shape[0]
    best = jnp.argmin(jnp.where(in_sl[:, :-1], jn, jnp.inf), axis=1)
    # the exhaustive search's decision: the best of the shortlist or "no further atom"
    pick = jnp.argmin(jnp.where(in_sl.at[:, -1].set(True), full.j, jnp.inf), axis=1)
    tk = lambda v: jnp.take_along_axis(v, pick[:, None], axis=1)[:, 0]  # noqa: E731
    recon = pr.p + tk(full.c_hat)[:, None] * jnp.take_along_axis(full.a, pick[:, None, None], axis=1)[:, 0]
    res = S.SearchResult(atom=tk(full.cand), coef_q=tk(full.k), dc_q=pr.dc_q, cost=tk(full.j),
                         distortion=tk(full.d), bits=tk(full.bits), recon=recon.reshape(N, T, T))
    oracle = jnp.take_along_axis(top, best[:, None], axis=1)[:, 0]
    take = lambda v: jnp.take_along_axis(v, top, axis=1)  # noqa: E731
    jp, dp, bp, cp = take(j), take(d), take(bits), take(c)
    cf = H.candidate_features(jp, dp, bp, cp, pr.energy, pr.kappa, pr.n_prev, t.atom_gen[top], p.lam, n)
    target = jnp.where(jnp.isfinite(jn) & jnp.isfinite(jp), jnp.log(jn + 1e-10) - jnp.log(jp + 1e-10), jnp.nan)
    labels = dict(feats=feats, atom=oracle, cost=jnp.take_along_axis(jn, best[:, None], axis=1)[:, 0],
                  stop_cost=full.j[:, -1], gen_best=gen_best, cand_feats=cf.astype(jnp.float16), cand_target=target)
    return res, labels


def label_image(x: np.ndarray, cfg: pc.CodecConfig, sample: np.ndarray) -> dict[str, np.ndarray]:
    """Exhaustive pursuit of one image (as ``search_atoms`` runs it), labels of the sampled tiles."""
    t = codec_tables(cfg)
    spec = tile_image(x.shape, cfg.grid)
    tiles = S.pad_tiles(extract_tiles(x, spec))
    Np, N = tiles.shape[0], spec.count
    prm = S.SearchParams.from_config(cfg)
    sl = jnp.zeros((cfg.shortlist,), jnp.int32)
    layout = S.generator_layout(cfg)
    pr = rd.prepare(tiles, t, prm)
    res, lab = _label_stage(pr, t, prm, sl, layout)
    out = []
    count = (res.atom != 0).astype(jnp.int32)
    recon, last = res.recon, res.atom
    active = np.zeros(Np, bool)
    active[:N] = True
    stage = 0
    while True:
        lab = jax.device_get(lab)
        keep = active[:N] & sample
        rows = np.nonzero(keep)[0]
        d = {k: np.asarray(v)[rows] for k, v in lab.items()}
        d["stage"] = np.full(len(rows), stage, np.int32)
        d["tile"] = rows.astype(np.int32)
        out.append(d)
        stage += 1
        count_host = np.asarray(count)
        active = count_host == stage
        if stage >= cfg.max_atoms or not active.any():
            break
        ctx = np.full(Np, -1, np.int32)
        ctx[:N] = count_contexts(count_host[:N], spec.ny, spec.nx)
        pr = rd.prepare_more(tiles, S.StageInput(recon, res.dc_q, count, t.atom_gen[last], jnp.asarray(ctx)), t, prm)
        r, lab = _label_stage(pr, t, prm, sl, layout)
        add = jnp.asarray(active) & (r.atom != 0)
        last = jnp.where(add, r.atom, last)
        recon = jnp.where(add[:, None, None], r.recon, recon)
        count = count + add.astype(jnp.int32)
    return {k: np.concatenate([o[k] for o in out]) for k in out[0]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.make_tiles", description=__doc__.split("\n")[0])
    ap.add_argument("--images", nargs="*", default=None,
                    help="image folders or files (default: ../shared/data/kodak when present)")
    ap.add_argument("--no-skimage", action="store_true", help="leave out scikit-image's shipped photographs")
    ap.add_argument("--holdout", nargs="*", default=list(DEFAULT_HOLDOUT), help="image stems never used")
    ap.add_argument("--out", required=True, help="dataset folder (tiles.npz + meta.json)")
    ap.add_argument("--tile", type=int, default=16)
    ap.add_argument("--overlap", type=int, default=1)
    ap.add_argument("--dictionary", choices=("standard", "large"), default="standard",
                    help="atom bank the exhaustive search labels with")
    ap.add_argument("--lambdas", type=float, nargs="+", default=list(DEFAULT_LAMBDAS))
    ap.add_argument("--tiles-per-image", type=int, default=400, help="tiles sampled per image and lambda")
    ap.add_argument("--val-every", type=int, default=5, help="every k-th image goes to validation")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        cfg = pc.CodecConfig(tile=a.tile, overlap=a.overlap, dictionary=a.dictionary)
        if a.tiles_per_image < 1 or a.val_every < 2:
            raise ValueError("--tiles-per-image must be >= 1 and --val-every >= 2")
    except ValueError as e:
        ap.error(str(e))
    paths = a.images
    if paths is None:
        paths = [default_kodak()] if default_kodak().is_dir() else []
    images = collect_images(paths, not a.no_skimage, set(a.holdout))
    if len(images) < 2:
        ap.error("need at least two images (one for training, one for validation)")
    names = [n for n, _ in images]
    split = split_of(names, a.val_every)
    rng = np.random.default_rng(a.seed)
    parts = []
    t0 = time.perf_counter()
    bar = tqdm(total=len(images) * len(a.lambdas), desc="labelling", unit="run", file=sys.stderr)
    for i, (name, load) in enumerate(images):
        x = pc._src.pipeline.as_gray_float(load())
        spec = tile_image(x.shape, cfg.grid)
        for lam in a.lambdas:
            sample = np.zeros(spec.count, bool)
            sample[rng.choice(spec.count, min(a.tiles_per_image, spec.count), replace=False)] = True
            d = label_image(x, cfg.replace(lambda_rd=lam), sample)
            d["image"] = np.full(len(d["stage"]), i, np.int32)
            d["lam"] = np.full(len(d["stage"]), lam, np.float32)
            d["split"] = np.full(len(d["stage"]), split[name], np.int8)
            parts.append(d)
            bar.set_postfix(image=name[-12:], examples=sum(len(p["stage"]) for p in parts))
            bar.update()
    bar.close()
    data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    dic = S.dictionary_for(cfg)
    data["gen"] = dic.gen_id[data["atom"]].astype(np.int32)
    data["axes"] = H.atom_axes(dic, data["atom"])
    data["accepted"] = data["cost"] < data["stop_cost"]
    out = Path(a.out)
    buf = io.BytesIO()
    np.savez_compressed(buf, **data)
    atomic_write_bytes(out / "tiles.npz", buf.getvalue())
    meta = {"config": {"tile": cfg.tile, "overlap": cfg.overlap, "table_id": cfg.table_id, "dictionary": cfg.dictionary,
                       "shortlist": cfg.shortlist, "max_atoms": cfg.max_atoms},
            "lambdas": a.lambdas, "images": [{"name": n, "split": ["train", "val"][split[n]]} for n in names],
            "holdout": sorted(a.holdout), "tiles_per_image": a.tiles_per_image, "seed": a.seed,
            "examples": int(len(data["stage"])), "train_examples": int((data["split"] == 0).sum()),
            "val_examples": int((data["split"] == 1).sum()), "code_version": pc.__version__,
            "env": pc.env_summary(), "seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_bytes(out / "meta.json", (json.dumps(meta, indent=1) + "\n").encode())
    print(f"{meta['examples']} examples ({meta['train_examples']} train, {meta['val_examples']} val) from "
          f"{len(names)} images x {len(a.lambdas)} lambdas in {meta['seconds']} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
