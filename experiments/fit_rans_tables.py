"""Fit the frozen rANS tables (symbol counts) that ship with pc15jax, reproducibly.

The corpus is the photographs shipped inside scikit-image's wheel, converted to luma. Kodak is
kept out: it is the evaluation set. Each image is encoded at several lambdas with the default
configuration. The first pass starts from uniform tables; the next pass encodes again with the
counts of the previous one (the search's bit costs come from the tables, so the two must agree).
Counts get a pseudo-count of 0.5 per symbol, so no symbol is ever impossible.

Usage:
  python -m experiments.fit_rans_tables [--out pc15jax/bitstream/tables/pc15-v1.json] [--passes 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

CORPUS = ("camera", "astronaut", "coffee", "chelsea", "rocket", "coins", "moon", "page", "grass", "gravel",
          "brick", "hubble_deep_field", "immunohistochemistry", "text", "clock")
LAMBDAS = (0.05, 0.2, 0.5, 2.0)


def corpus_images() -> list[tuple[str, np.ndarray]]:
    """Grayscale uint8 photographs available in the installed scikit-image (no download)."""
    from skimage import color, data, util

    out = []
    for name in CORPUS:
        try:
            img = getattr(data, name)()
        except Exception:  # not shipped in this wheel (would need a download): skip
            continue
        if img.ndim == 3:
            img = color.rgb2gray(img[..., :3])
        out.append((name, util.img_as_ubyte(img)))
    return out


def count_symbols(table_id: str, images, lambdas) -> dict:
    import pc15jax as pc
    from pc15jax._src import codec
    from pc15jax.bitstream.models import MAX_ATOMS, MAX_COEF, MAX_DC, dc_delta

    layout = codec.generator_layout()
    counts = {"count": np.zeros(MAX_ATOMS + 1), "gen": np.zeros(len(layout)), "coef": np.zeros(2 * MAX_COEF + 1),
              "dc": np.zeros(2 * MAX_DC + 1), "param": {}, "seed": {}}
    for g in layout:
        for i in g.searched:
            counts["param"][f"{g.name}.{g.param_names[i]}"] = np.zeros(g.levels[i])
        if g.n_seeds > 1:
            counts["seed"][g.name] = np.zeros(g.n_seeds)
    jobs = [(n, im, lam) for n, im in images for lam in lambdas]
    for name, img, lam in tqdm(jobs, desc=f"encoding with {table_id}", unit="img"):
        cfg = pc.CodecConfig(lambda_rd=lam, table_id=table_id)
        enc = pc.encode_y(img, cfg)
        _, planes = codec._parse(enc["bitstream"])
        count, gen, params, seed, coef, dc = planes[0]
        ny, nx = enc["stats"]["grid"]
        np.add.at(counts["dc"], dc_delta(dc, ny, nx) + MAX_DC, 1)
        np.add.at(counts["count"], count, 1)
        for t in range(count.shape[0]):
            for k in range(int(count[t])):
                g = layout[int(gen[t, k])]
                counts["gen"][g.id] += 1
                for i in g.searched:
                    counts["param"][f"{g.name}.{g.param_names[i]}"][params[t, k, i]] += 1
                if g.n_seeds > 1:
                    counts["seed"][g.name][seed[t, k]] += 1
                counts["coef"][coef[t, k] + MAX_COEF] += 1
    return counts


def to_json(table_id: str, counts: dict, images, lambdas) -> dict:
    smooth = lambda a: [round(float(v) + 0.5, 1) for v in a]  # noqa: E731
    return {
        "id": table_id,
        "about": "PC15 rANS symbol counts fitted by experiments/fit_rans_tables.py",
        "corpus": [n for n, _ in images],
        "lambdas": list(lambdas),
        "count": smooth(counts["count"]),
        "gen": smooth(counts["gen"]),
        "coef": smooth(counts["coef"]),
        "dc": smooth(counts["dc"]),
        "param": {k: smooth(v) for k, v in sorted(counts["param"].items())},
        "seed": {k: smooth(v) for k, v in sorted(counts["seed"].items())},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.fit_rans_tables", description=__doc__.split("\n")[0])
    default_out = Path(__file__).resolve().parents[1] / "pc15jax" / "bitstream" / "tables" / "pc15-v1.json"
    ap.add_argument("--out", default=str(default_out))
    ap.add_argument("--passes", type=int, default=2)
    args = ap.parse_args(argv)
    out = Path(args.out)
    table_id = out.stem
    images = corpus_images()
    if not images:
        print("error: no corpus image could be loaded from scikit-image", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "rans").mkdir()
        os.environ["PC15_MODELS_DIR"] = tmp  # fitting tables take precedence over the shipped ones
        current = {"id": "fit-pass0"}  # uniform
        for p in range(args.passes):
            (Path(tmp) / "rans" / f"{current['id']}.json").write_text(json.dumps(current))
            counts = count_symbols(current["id"], images, LAMBDAS)
            current = to_json(f"fit-pass{p + 1}", counts, images, LAMBDAS)
    final = dict(current, id=table_id)
    from pc15jax.bitstream.container import atomic_write_bytes

    atomic_write_bytes(out, (json.dumps(final, indent=1, sort_keys=True) + "\n").encode())
    print(f"wrote {out} from {len(images)} images x {len(LAMBDAS)} lambdas, {args.passes} passes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
