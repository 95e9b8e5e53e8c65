"""Search-engine speed benchmark: steady-state search time and its FLOP rate against a plain matmul.

Runs the PC15 tile search on a 768x512 grayscale photograph (kodim01 from ``../shared/data/kodak``
when present, else scikit-image's ``astronaut`` converted to luma and resized), after a warm-up,
and prints: tiles, candidates per tile, steady-state search seconds (median of ``--repeats``),
tile-candidate evaluations per second, compile seconds, dictionary build seconds (in memory, as a
library call without a cache folder builds it) and load seconds (from the on-disk cache the command
line uses, as a fresh process reads it), and the search's
FLOP rate as a fraction of a plain ``jnp.matmul`` of the stage-1 shape timed in the same run.
The search timed is the codec's first stage as the pursuit runs it (``run_stage``: blocks of
``STAGE_BLOCK`` tiles); ``unblocked_*`` is the same stage as one block of the whole batch.

Usage:
  python -m experiments.bench_speed [--json] [--image PATH] [--search exhaustive|coarse_to_fine]
                                    [--tile T] [--overlap O] [--repeats R]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import pc15jax as pc
from pc15jax._src import search as S
from pc15jax._src.search import rd
from pc15jax._src.search.blocks import block_size, stage_order
from pc15jax._src.pipeline import as_gray_float

KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak" / "kodim01.png"


def load_image(path: str | None) -> tuple[np.ndarray, str]:
    """Grayscale float32 [512, 768] test photograph and its name."""
    from PIL import Image

    if path is not None:
        return as_gray_float(np.asarray(Image.open(path).convert("L"))), str(path)
    if KODAK.exists():
        return as_gray_float(np.asarray(Image.open(KODAK).convert("L"))), KODAK.name
    from skimage import color, data, transform

    y = color.rgb2gray(data.astronaut())  # float64 in [0, 1]
    y = transform.resize(y, (512, 768), anti_aliasing=True)
    return y.astype(np.float32), "skimage.astronaut (resized 768x512)"


def _median_time(fn, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def _dictionary_load_s(cfg) -> float:
    """Seconds to load the dictionary from the on-disk cache the command line uses (written to a
    temporary folder first), with the in-memory cache cleared: what a fresh process pays."""
    import tempfile

    from pc15jax._src import dictionary as D

    with tempfile.TemporaryDirectory() as folder:
        previous = D.dictcache.cache_folder()
        D.set_dictionary_cache(folder)
        try:
            D._cached_dictionary.cache_clear()
            S.dictionary_for(cfg)  # built and written
            D._cached_dictionary.cache_clear()
            t = time.perf_counter()
            jax.block_until_ready(S.dictionary_for(cfg).atoms)
            return time.perf_counter() - t
        finally:
            D.set_dictionary_cache(previous)
            D._cached_dictionary.cache_clear()


def run(args) -> dict:
    img, name = load_image(args.image)
    cfg = pc.CodecConfig(tile=args.tile, overlap=args.overlap, search=args.search)
    t = time.perf_counter()
    tables = jax.block_until_ready(S.default_tables(cfg))
    dictionary_s = time.perf_counter() - t
    dictionary_load_s = _dictionary_load_s(cfg)

    spec = pc.tile_image(img, cfg.grid)
    tiles = pc.extract_tiles(img, spec)
    N = spec.count
    tiles_p = S.pad_tiles(tiles)
    Np = tiles_p.shape[0]
    params = S.SearchParams.from_config(cfg)
    kw = dict(mode=cfg.search, beam=cfg.beam, shortlist=cfg.shortlist)

    # The codec's stage 1 (what search_tiles and the pursuit run): blocks of STAGE_BLOCK tiles.
    stage_spec = S.StageSpec.from_config(cfg)
    order, n_blocks = stage_order(np.arange(Np) < N, block_size(Np))
    t = time.perf_counter()
    compiled = S.run_stage.lower(tiles_p, None, order, n_blocks, tables, params, spec=stage_spec).compile()
    compile_s = time.perf_counter() - t
    jax.block_until_ready(compiled(tiles_p, None, order, n_blocks, tables, params))  # warm-up
    search_s = _median_time(lambda: compiled(tiles_p, None, order, n_blocks, tables, params), args.repeats)
    # The same stage as one block of the whole batch (the [Np, A] scores at once).
    whole = rd.search_block.lower(tiles_p, tables, params, **kw).compile()
    jax.block_until_ready(whole(tiles_p, tables, params))
    unblocked_s = _median_time(lambda: whole(tiles_p, tables, params), args.repeats)

    n = cfg.tile * cfg.tile
    A = int(np.asarray(tables.allowed).sum())
    if cfg.search == "exhaustive":
        ref_atoms = tables.atoms
        candidates = A
        flops = 2.0 * Np * n * tables.atoms.shape[0]
    else:
        ref_atoms = tables.coarse_atoms
        nb = int(tables.neighbours.shape[1])
        candidates = int(tables.coarse.shape[0]) + cfg.beam * nb
        flops = 2.0 * Np * n * (tables.coarse_atoms.shape[0] + cfg.beam * nb)
    mm = jax.jit(lambda a, b: jnp.matmul(a, b.T))
    x = jax.random.normal(jax.random.key(0), (Np, n), jnp.float32)
    jax.block_until_ready(mm(x, ref_atoms))
    matmul_s = _median_time(lambda: mm(x, ref_atoms), args.repeats)
    mm_flops = 2.0 * Np * n * ref_atoms.shape[0]

    res = S.search_tiles(tiles, cfg, tables)
    recon = np.clip(np.asarray(pc.blend(res.recon, spec, window=cfg.window)), 0, 1)
    return {
        "image": name,
        "backend": jax.default_backend(),
        "devices": len(jax.devices()),
        "search": cfg.search,
        "tile": cfg.tile,
        "overlap": cfg.overlap,
        "tiles": N,
        "tiles_padded": Np,
        "candidates_per_tile": candidates,
        "dictionary_atoms": int(tables.atoms.shape[0]),
        "search_s": search_s,
        "evals_per_s": N * candidates / search_s,
        "compile_s": compile_s,
        "dictionary_s": dictionary_s,
        "dictionary_load_s": dictionary_load_s,
        "search_gflops": flops / search_s / 1e9,
        "matmul_s": matmul_s,
        "matmul_gflops": mm_flops / matmul_s / 1e9,
        "matmul_fraction": (flops / search_s) / (mm_flops / matmul_s),
        "unblocked_search_s": unblocked_s,
        "unblocked_matmul_fraction": (flops / unblocked_s) / (mm_flops / matmul_s),
        "est_bpp": float(np.sum(np.asarray(res.bits))) / img.size,
        "psnr_db": float(pc.psnr(img, recon)),
        "ssim": float(pc.ssim(img, recon)),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.bench_speed", description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    ap.add_argument("--image", default=None, help="grayscale-convertible image (default: kodim01 or astronaut)")
    ap.add_argument("--search", default="exhaustive", choices=pc.SEARCH_MODES)
    ap.add_argument("--tile", type=int, default=pc.CodecConfig.tile)
    ap.add_argument("--overlap", type=int, default=pc.CodecConfig.overlap)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    try:
        r = run(args)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(r))
    else:
        w = max(map(len, r))
        for k, v in r.items():
            print(f"{k:<{w}}  {v:.4g}" if isinstance(v, float) else f"{k:<{w}}  {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
