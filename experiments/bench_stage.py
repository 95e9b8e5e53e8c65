"""Where one pursuit stage's time goes, exhaustive against hooked, and how fast a hook can make it.

Runs stage 1 of an image with the exhaustive search, then times stage 2 over every tile (median
of ``--repeat`` runs, compilation excluded): the exhaustive stage and its two halves (scoring +
proxy + shortlist, then the full-cost SSIM re-rank), and the M1-hooked stage at several
(``topk``, ``shortlist``) settings with its three parts (selection, per-generator dispatch,
re-rank). ``topk=1, shortlist=1`` is the cheapest stage a generator selector can give: its
speed-up bounds what M1 alone can reach, whatever its accuracy.

Usage:
  python -m experiments.bench_stage                       # kodim05 (or skimage's astronaut)
  python -m experiments.bench_stage --image FILE [--repeat 7] [--out results/stage]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import pc15jax as pc
from experiments.make_tiles import default_kodak, load_gray, skimage_gray
from pc15jax._src import hooks as H
from pc15jax._src import search as S
from pc15jax._src.search import blocks, hooked, rd
from pc15jax._src.codec import codec_tables
from shared_runtime import atomic_write_bytes

SETTINGS = ((3, 4), (2, 2), (1, 1))  # (M1 topk, shortlist); (3, 4) is the "m1" preset


def _median_ms(f, repeat: int) -> float:
    jax.block_until_ready(f())
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(f())
        ts.append(time.perf_counter() - t0)
    return round(1000.0 * float(np.median(ts)), 2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.bench_stage", description=__doc__.split("\n")[0])
    ap.add_argument("--image", default=None, help="grayscale image (default: kodim05, else skimage astronaut)")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--out", default="results/stage", help="folder for stage.json")
    a = ap.parse_args(argv)
    if a.image is not None and not Path(a.image).exists():
        ap.error(f"{a.image} does not exist")
    k5 = default_kodak() / "kodim05.png"
    name, img = ((Path(a.image).stem, load_gray(a.image)) if a.image else
                 ("kodim05", load_gray(k5)) if k5.exists() else ("skimage:astronaut", skimage_gray("astronaut")))
    cfg = pc.CodecConfig()
    x = img.astype(np.float32) / 255.0
    tiles = S.pad_tiles(pc.extract_tiles(x, pc.tile_image(x.shape, cfg.grid)))
    Np = tiles.shape[0]
    t, prm = codec_tables(cfg), S.SearchParams.from_config(cfg)
    block = blocks.block_size(Np)
    order, nb = blocks.stage_order(np.ones(Np, bool), block)
    spec = S.StageSpec("exhaustive", cfg.beam, cfg.shortlist)
    first = S.run_stage(tiles, None, order, nb, t, prm, spec=spec)
    count = (first.atom != 0).astype(jnp.int32)
    inp = S.StageInput(first.recon, first.dc_q, count, t.atom_gen[first.atom], jnp.full((Np,), -1, jnp.int32))
    pr = jax.jit(rd.prepare_more)(tiles, inp, t, prm)
    run = lambda f: _median_ms(f, a.repeat)  # noqa: E731
    over_blocks = lambda body, v: blocks.blocks(body, v, order, nb, block)  # noqa: E731

    ex_sl = jax.jit(lambda q: over_blocks(lambda b: rd.shortlist_of(b, t, prm, "exhaustive", 0, cfg.shortlist), q))
    cand = ex_sl(pr)
    ex_fin = jax.jit(lambda q, c: over_blocks(lambda b: rd.finalise(b[0], t, prm, b[1], False), (q, c)))
    ex = {"stage_ms": run(lambda: S.run_stage(tiles, inp, order, nb, t, prm, spec=spec)),
          "score_shortlist_ms": run(lambda: ex_sl(pr)), "rerank_ms": run(lambda: ex_fin(pr, cand))}
    rows = []
    gt, layout = H.grid_tables(S.dictionary_for(cfg)), S.generator_layout(cfg)
    sizes = np.asarray([s for _, s in layout])
    for topk, sl in SETTINGS:
        plan, hp = H.prepare_hooks(dataclasses.replace(pc.AiHooks.preset("m1"), topk=topk), np.zeros(len(layout)))
        sel = jax.jit(lambda q: over_blocks(lambda b: hooked.select(b, t, hp, plan, len(layout))[1], q))
        topg = sel(pr)
        disp = jax.jit(lambda q, g: hooked.dispatch(q, t, prm, g, layout, sl))
        c, jc = disp(pr, topg)
        rr = jax.jit(lambda q, c, jc: over_blocks(
            lambda b: hooked.rerank(b[0], t, prm, hp, plan, b[1], (b[2], None, None, None), sl, False, dedupe=False),
            (q, c, jc)))
        ex_spec = spec._replace(shortlist=sl)
        ex_same = run(lambda: S.run_stage(tiles, inp, order, nb, t, prm, spec=ex_spec))
        hk_spec = ex_spec._replace(plan=plan, layout=layout)
        stage = run(lambda: S.run_stage(tiles, inp, order, nb, t, prm, gt, hp, spec=hk_spec))
        rows.append({"topk": topk, "shortlist": sl, "stage_ms": stage, "select_ms": run(lambda: sel(pr)),
                     "dispatch_ms": run(lambda: disp(pr, topg)), "rerank_ms": run(lambda: rr(pr, c, jc)),
                     "atoms_scored_pct": round(100.0 * float(sizes[np.asarray(topg)].sum(1).mean()) / t.atoms.shape[0],
                                               1),
                     "exhaustive_same_shortlist_ms": ex_same, "speedup_vs_exhaustive": round(ex["stage_ms"] / stage, 2)})
    out = {"image": name, "tiles": int(Np), "block": block, "config": {"tile": cfg.tile, "overlap": cfg.overlap},
           "backend": jax.default_backend(), "exhaustive": ex, "m1": rows}
    print(f"{name}: stage 2 over {Np} tiles ({jax.default_backend()}), median of {a.repeat}")
    print(f"exhaustive (shortlist {cfg.shortlist}): {ex['stage_ms']} ms = scoring+proxy+shortlist "
          f"{ex['score_shortlist_ms']} ms + SSIM re-rank {ex['rerank_ms']} ms")
    print(f"{'topk':>4} {'short':>5} {'atoms%':>6} {'stage':>8} {'select':>7} {'dispatch':>8} {'rerank':>7} "
          f"{'speed-up':>8}")
    for r in rows:
        print(f"{r['topk']:>4} {r['shortlist']:>5} {r['atoms_scored_pct']:>6} {r['stage_ms']:>8} {r['select_ms']:>7} "
              f"{r['dispatch_ms']:>8} {r['rerank_ms']:>7} {r['speedup_vs_exhaustive']:>7}x")
    dest = Path(a.out) / "stage.json"
    atomic_write_bytes(dest, (json.dumps(out, indent=1) + "\n").encode())
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
