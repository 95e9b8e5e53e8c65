"""Benchmark the search hooks against the exhaustive search on held-out images.

For every image, lambda and hook setting (``none`` = exhaustive, ``heuristic``, ``m1``,
``m1m2``, ``m1m2m3``, ``c2f`` = coarse-to-fine without hooks), on the standard and, with
``--dictionaries standard large``, the large dictionary: search seconds, total encode seconds, bpp and PSNR of the decoded
image at equal lambda, then per setting the mean speed-up of the search, the mean PSNR change at
equal lambda and the BD-rate against the exhaustive curve (mean over images of the per-image
curves' BD-rate). It also labels the held-out tiles with the exhaustive search and reports the
models' own accuracy there: M1 top-1/3/5, M2's share within the encoder's +-2 neighbourhood,
M3's rank correlation. Timings exclude compilation (one warm-up encode per setting and image size).

Usage:
  python -m experiments.bench_hooks                          # kodim01-04 (held out by make_tiles)
  python -m experiments.bench_hooks --images DIR_OR_FILE ... [--lambdas 0.1 0.3 1.0] [--out results/hooks]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import pc15jax as pc
from experiments.bench_rd import bd_rate
from experiments.make_tiles import DEFAULT_HOLDOUT, IMAGE_EXT, default_kodak, label_image, load_gray, skimage_gray
from shared_runtime import atomic_write, atomic_write_bytes

SETTINGS = ("none", "heuristic", "m1", "m1m2", "m1m2m3", "c2f")  # c2f: no hooks, search="coarse_to_fine"


def hooks_of(setting: str, m1=None):
    """A setting's hooks: the presets by name; ``m1m2`` / ``m1m2m3`` (no longer presets, still
    measured here) built from their models; ``m1`` a checkpoint path instead of the shipped M1."""
    from pc15jax._src.hooks import RETIRED_PRESETS

    if setting == "m1" and m1 is not None:
        return pc.AiHooks(selector=str(m1))
    if setting in RETIRED_PRESETS:
        s, p, r = RETIRED_PRESETS[setting]
        return pc.AiHooks(selector=s, param_predictor=p, rd_predictor=r)
    return None if setting == "c2f" else pc.hooks_from_name(setting)


def config_of(base, setting: str, dictionary: str, lam: float, m1=None):
    """A setting's configuration at ``lam`` on ``dictionary`` (``m1``: per-dictionary M1 paths)."""
    return base.replace(lambda_rd=lam, ai=hooks_of(setting, (m1 or {}).get(dictionary)), dictionary=dictionary,
                        search="coarse_to_fine" if setting == "c2f" else base.search)


def held_out_images(paths) -> list[tuple[str, np.ndarray]]:
    if paths:
        files = []
        for p in map(Path, paths):
            if not p.exists():
                raise SystemExit(f"bench_hooks: {p} does not exist")
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXT) if p.is_dir() else [p]
        return [(f.stem, load_gray(f)) for f in files]
    k = default_kodak()
    if all((k / f"{n}.png").exists() for n in DEFAULT_HOLDOUT):
        return [(n, load_gray(k / f"{n}.png")) for n in DEFAULT_HOLDOUT]
    return [("skimage:text", skimage_gray("text")), ("skimage:colorwheel", skimage_gray("colorwheel"))]


def encode_point(img, cfg):
    enc = pc.encode_y(img, cfg)
    rec = np.round(pc.decode_y(enc["bitstream"]) * 255.0) / 255.0
    return {"bpp": enc["bpp"], "psnr": float(pc.psnr(img.astype(np.float32) / 255.0, rec.astype(np.float32))),
            "search_s": enc["stats"]["search_s"], "encode_s": enc["stats"]["encode_s"],
            "meta_ai": pc.stream_info(enc["bitstream"])["meta"].get("ai")}


def model_accuracy(images, cfg, lambdas) -> dict:
    """The shipped models on the held-out tiles, labelled by the exhaustive search."""
    from experiments import train_m1, train_m2, train_m3
    from pc15jax._src import hooks as H
    from pc15jax._src.search import dictionary_for
    from pc15jax.ai.models import CheckpointError, load_checkpoint

    parts = []
    for name, img in images:
        x = img.astype(np.float32) / 255.0
        n = pc.tile_image(x.shape, cfg.grid).count
        for lam in lambdas:
            parts.append(label_image(x, cfg.replace(lambda_rd=lam), np.ones(n, bool)))
    a = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    dic = dictionary_for(cfg)
    a["gen"] = dic.gen_id[a["atom"]].astype(np.int32)
    a["axes"] = H.atom_axes(dic, a["atom"])
    out = {"examples": int(len(a["gen"]))}

    class _Ds:  # what the train scripts' prepare() reads
        arrays, meta = a, {"config": {"tile": cfg.tile, "overlap": cfg.overlap}}

    for kind, mod in (("m1", train_m1), ("m2", train_m2), ("m3", train_m3)):
        try:
            model, rec = load_checkpoint(kind, kind)
        except CheckpointError as e:
            out[kind] = f"unavailable: {e}"
            continue
        arr, keep = mod.prepare(_Ds)
        arr = {k: jnp.asarray(v[keep]) for k, v in arr.items()}
        out[kind] = {k: round(float(v), 4) for k, v in mod.eval_fn(model, arr).items()}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.bench_hooks", description=__doc__.split("\n")[0])
    ap.add_argument("--images", nargs="*", default=None, help="held-out images (default: kodim01-04)")
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.1, 0.3, 1.0])
    ap.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    ap.add_argument("--dictionaries", nargs="+", choices=("standard", "large"), default=["standard"],
                    help="atom banks to run every setting on (large: 'large+<setting>'; M2/M3 need standard)")
    ap.add_argument("--m1-large", default=None,
                    help="M1 checkpoint (.npz) for the large dictionary's m1 setting (default: the shipped M1)")
    ap.add_argument("--tile", type=int, default=16)
    ap.add_argument("--overlap", type=int, default=1)
    ap.add_argument("--out", default="results/hooks", help="folder for hooks.json and hooks.png")
    ap.add_argument("--no-accuracy", action="store_true", help="skip the models' held-out accuracy")
    a = ap.parse_args(argv)
    try:
        base = pc.CodecConfig(tile=a.tile, overlap=a.overlap)
    except ValueError as e:
        ap.error(str(e))
    if "none" not in a.settings:
        a.settings = ["none"] + a.settings
    if "standard" not in a.dictionaries:  # the reference is the standard bank's exhaustive search
        a.dictionaries = ["standard"] + a.dictionaries
    combos = [(d, s, s if d == "standard" else f"{d}+{s}") for d in a.dictionaries for s in a.settings
              if d == "standard" or s in ("none", "heuristic", "m1", "c2f")]
    a.settings = [n for _, _, n in combos]
    m1_paths = {"large": a.m1_large} if a.m1_large else None
    images = held_out_images(a.images)
    rows = []
    bar = tqdm(total=len(images) * len(a.lambdas) * len(combos), desc="bench hooks", file=sys.stderr)
    for name, img in images:
        for d, s, label in combos:
            pc.encode_y(img, config_of(base, s, d, a.lambdas[0], m1_paths))  # warm-up: compile
            for lam in a.lambdas:
                r = encode_point(img, config_of(base, s, d, lam, m1_paths))
                rows.append({"image": name, "setting": label, "lambda": lam, **r})
                bar.update()
    bar.close()
    summary = {}
    for s in a.settings:
        sp, dpsnr, dbpp, bd, ts, te = [], [], [], [], [], []
        for name, _ in images:
            ref = sorted((r for r in rows if r["image"] == name and r["setting"] == "none"), key=lambda r: r["lambda"])
            mine = sorted((r for r in rows if r["image"] == name and r["setting"] == s), key=lambda r: r["lambda"])
            for r0, r1 in zip(ref, mine):
                sp.append(r0["search_s"] / r1["search_s"])
                dpsnr.append(r1["psnr"] - r0["psnr"])
                dbpp.append(100.0 * (r1["bpp"] / r0["bpp"] - 1.0))
                ts.append(r1["search_s"])
                te.append(r1["encode_s"])
            curve = lambda rs: np.asarray(sorted((r["bpp"], r["psnr"]) for r in rs))  # noqa: E731
            b = bd_rate(curve(mine), curve(ref), window=(0.0, np.inf))
            if b is not None:
                bd.append(b)
        summary[s] = {"search_speedup": round(float(np.mean(sp)), 2), "search_s": round(float(np.mean(ts)), 3),
                      "encode_s": round(float(np.mean(te)), 3), "dpsnr_db": round(float(np.mean(dpsnr)), 3),
                      "dbpp_pct": round(float(np.mean(dbpp)), 2),
                      "bd_rate_pct": round(float(np.mean(bd)), 2) if bd else None}
    result = {"images": [n for n, _ in images], "lambdas": a.lambdas, "config": {"tile": a.tile, "overlap": a.overlap},
              "summary": summary, "points": rows, "env": pc.env_summary()}
    if not a.no_accuracy:
        result["held_out_accuracy"] = model_accuracy(images, base, a.lambdas)
    out = Path(a.out)
    atomic_write_bytes(out / "hooks.json", (json.dumps(result, indent=1) + "\n").encode())
    _plot(rows, a.settings, out / "hooks.png", summary)
    print(f"{len(images)} images x {len(a.lambdas)} lambdas, tile {a.tile}/{a.overlap}; search speed-up and quality "
          f"against the exhaustive search at equal lambda:")
    print("| hooks | search s | encode s | search speed-up | dPSNR dB | dbpp % | BD-rate % |")
    print("|---|---|---|---|---|---|---|")
    for s, v in summary.items():
        print(f"| {s} | {v['search_s']} | {v['encode_s']} | {v['search_speedup']}x | {v['dpsnr_db']:+.3f} | "
              f"{v['dbpp_pct']:+.2f} | {v['bd_rate_pct'] if v['bd_rate_pct'] is not None else '-'} |")
    if "held_out_accuracy" in result:
        print("held-out model accuracy:", json.dumps(result["held_out_accuracy"]))
    print(f"-> {out / 'hooks.json'}, {out / 'hooks.png'}")
    return 0


def pareto_front(points) -> list[int]:
    """Indices of the points ``(cost, loss)`` no other point beats on both (lower is better),
    ordered by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], np.inf
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def _plot(rows, settings, path: Path, summary=None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3 if summary else 2, figsize=(15 if summary else 10, 4))
    for s in settings:
        mine = [r for r in rows if r["setting"] == s]
        lams = sorted({r["lambda"] for r in mine})
        bpp = [np.mean([r["bpp"] for r in mine if r["lambda"] == lam]) for lam in lams]
        psnr = [np.mean([r["psnr"] for r in mine if r["lambda"] == lam]) for lam in lams]
        t = [np.mean([r["search_s"] for r in mine if r["lambda"] == lam]) for lam in lams]
        ax[0].plot(bpp, psnr, "o-", label=s)
        ax[1].plot(lams, t, "o-", label=s)
    ax[0].set(xlabel="bpp", ylabel="PSNR (dB)", title="rate-distortion (mean over images)")
    ax[1].set(xlabel="lambda", ylabel="search seconds per image", xscale="log", title="search time")
    if summary:
        pts = [(summary[s]["search_s"], summary[s]["bd_rate_pct"]) for s in settings
               if summary[s]["bd_rate_pct"] is not None]
        names = [s for s in settings if summary[s]["bd_rate_pct"] is not None]
        for (t, b), s in zip(pts, names):
            ax[2].plot(t, b, "o")
            ax[2].annotate(s, (t, b), textcoords="offset points", xytext=(4, 4))
        front = pareto_front(pts)
        ax[2].plot([pts[i][0] for i in front], [pts[i][1] for i in front], "k--", lw=1, label="Pareto front")
        ax[2].set(xlabel="search seconds per image", ylabel="BD-rate against exhaustive (%)",
                  title="BD-rate against search time")
    for x in ax:
        x.grid(alpha=0.3)
        x.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
