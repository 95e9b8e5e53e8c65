"""Fit the frozen rANS tables (symbol counts) that ship with pc15jax, reproducibly.

The corpus is the photographs shipped inside scikit-image's wheel, converted to luma. Kodak is
kept out: it is the evaluation set. Each image is encoded at every (tile, overlap, lambda) of
``SETTINGS``, the operating points of the rate ladder. The first pass starts from the ``--start``
tables (uniform when omitted); the next pass encodes again with the counts of the previous one
(the search's bit costs come from the tables, so the two must agree).

Besides one table per symbol class, the set holds the context tables (``count`` given the
neighbours' counts, ``gen`` given the previous generator, ``coef`` given the atom's position; see
``pc15jax.bitstream.models``), and DCs are predicted by the median edge detector. Marginal counts
get a pseudo-count of 0.5 per symbol; a context's row gets ``CONTEXT_PRIOR`` pseudo-observations
spread like its class's marginal, so rare contexts fall back to it and no symbol is ever
impossible.

Usage:
  python -m experiments.fit_rans_tables [--out pc15jax/bitstream/tables/pc15-v2.json] [--passes 2]
                                        [--start pc15-v1]
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
SETTINGS = ((32, 4, 1.0), (32, 4, 0.3), (24, 2, 0.3), (16, 1, 0.3), (16, 1, 0.1), (12, 1, 0.03), (8, 1, 0.05))
CONTEXT_PRIOR = 32.0
DC_PREDICTOR = "med"


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


def count_symbols(table_id: str, images, settings) -> dict:
    import pc15jax as pc
    from pc15jax._src import codec
    from pc15jax.bitstream.models import (MAX_ATOMS, MAX_COEF, MAX_DC, N_COEF_CTX, N_COUNT_CTX, coef_context,
                                          count_contexts, dc_delta)

    layout = codec.generator_layout()
    G = len(layout)
    counts = {"count": np.zeros((N_COUNT_CTX, MAX_ATOMS + 1)), "gen": np.zeros((G, G)),
              "coef": np.zeros((N_COEF_CTX, 2 * MAX_COEF + 1)), "dc": np.zeros(2 * MAX_DC + 1), "param": {}, "seed": {}}
    for g in layout:
        for i in g.searched:
            counts["param"][f"{g.name}.{g.param_names[i]}"] = np.zeros(g.levels[i])
        if g.n_seeds > 1:
            counts["seed"][g.name] = np.zeros(g.n_seeds)
    jobs = [(n, im, s) for n, im in images for s in settings]
    for name, img, (tile, overlap, lam) in tqdm(jobs, desc=f"encoding with {table_id}", unit="img"):
        cfg = pc.CodecConfig(tile=tile, overlap=overlap, lambda_rd=lam, table_id=table_id)
        enc = pc.encode_y(img, cfg)
        _, planes, _ = codec._parse(enc["bitstream"])
        count, gen, params, seed, coef, dc = planes[0]
        ny, nx = enc["stats"]["grid"]
        np.add.at(counts["dc"], dc_delta(dc, ny, nx, DC_PREDICTOR) + MAX_DC, 1)
        np.add.at(counts["count"], (count_contexts(count, ny, nx), count), 1)
        for t in range(count.shape[0]):
            prev = 0
            for k in range(int(count[t])):
                g = layout[int(gen[t, k])]
                counts["gen"][prev, g.id] += 1
                prev = g.id
                for i in g.searched:
                    counts["param"][f"{g.name}.{g.param_names[i]}"][params[t, k, i]] += 1
                if g.n_seeds > 1:
                    counts["seed"][g.name][seed[t, k]] += 1
                counts["coef"][coef_context(k), coef[t, k] + MAX_COEF] += 1
    return counts


def to_json(table_id: str, counts: dict, images, settings) -> dict:
    smooth = lambda a: [round(float(v) + 0.5, 1) for v in a]  # noqa: E731

    def rows(c):  # per-context rows, shrunk towards the class marginal
        m = c.sum(0) + 0.5
        prior = CONTEXT_PRIOR * m / m.sum()
        return [[round(float(v), 2) for v in r + prior] for r in c]

    return {
        "id": table_id,
        "about": "PC15 rANS symbol counts fitted by experiments/fit_rans_tables.py",
        "corpus": [n for n, _ in images],
        "settings": [list(s) for s in settings],
        "count": smooth(counts["count"].sum(0)),
        "gen": smooth(counts["gen"].sum(0)),
        "coef": smooth(counts["coef"].sum(0)),
        "dc": smooth(counts["dc"]),
        "dc_predictor": DC_PREDICTOR,
        "count_ctx": rows(counts["count"]),
        "gen_ctx": rows(counts["gen"]),
        "coef_ctx": rows(counts["coef"]),
        "param": {k: smooth(v) for k, v in sorted(counts["param"].items())},
        "seed": {k: smooth(v) for k, v in sorted(counts["seed"].items())},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.fit_rans_tables", description=__doc__.split("\n")[0])
    default_out = Path(__file__).resolve().parents[1] / "pc15jax" / "bitstream" / "tables" / "pc15-v2.json"
    ap.add_argument("--out", default=str(default_out))
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--start", default=None, help="table id the first pass encodes with (default: uniform)")
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
        from pc15jax.bitstream.models import load_table_json

        current = {"id": "fit-pass0"} if args.start is None else dict(load_table_json(args.start), id="fit-pass0")
        for p in range(args.passes):
            (Path(tmp) / "rans" / f"{current['id']}.json").write_text(json.dumps(current))
            counts = count_symbols(current["id"], images, SETTINGS)
            current = to_json(f"fit-pass{p + 1}", counts, images, SETTINGS)
    final = dict(current, id=table_id)
    from shared_runtime import atomic_write_bytes

    atomic_write_bytes(out, (json.dumps(final, indent=1, sort_keys=True) + "\n").encode())
    print(f"wrote {out} from {len(images)} images x {len(SETTINGS)} settings, {args.passes} passes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
