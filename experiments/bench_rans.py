"""rANS coder benchmark: symbols/s per direction and size against constriction and the entropy bound.

Usage: python -m experiments.bench_rans [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

import pc15jax as pc


def run() -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for n, m in [(10_000, 64), (100_000, 64), (1_000_000, 64), (1_000_000, 2047)]:
        sym = rng.choice(m, n, p=rng.dirichlet(np.ones(m) * 0.3))
        t = pc.build_rans_tables(np.bincount(sym, minlength=m), precision=16)
        t0 = time.perf_counter()
        enc = pc.rans_encode(sym, t)
        t1 = time.perf_counter()
        dec = pc.rans_decode(enc, t, n)
        t2 = time.perf_counter()
        assert np.array_equal(dec, sym)
        c = np.bincount(sym, minlength=m).astype(np.float64)
        ent = -(c[c > 0] * np.log2(c[c > 0] / n)).sum() / 8
        row = {"symbols": n, "alphabet": m, "bytes": len(enc), "entropy_bytes": round(ent, 1),
               "overhead_vs_entropy_pct": round(100 * (len(enc) / ent - 1), 3),
               "encode_msym_s": round(n / (t1 - t0) / 1e6, 2), "decode_msym_s": round(n / (t2 - t1) / 1e6, 2)}
        try:
            import constriction

            coder = constriction.stream.stack.AnsCoder()
            coder.encode_reverse(sym.astype(np.int32),
                                 constriction.stream.model.Categorical(t.freq / 2.0**16, perfect=False))
            theirs = 4 * len(coder.get_compressed())
            row.update(constriction_bytes=theirs, overhead_vs_constriction_pct=round(100 * (len(enc) / theirs - 1), 3))
        except ImportError:
            pass
        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.bench_rans", description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    for r in run():
        print(json.dumps(r) if args.json else "  ".join(f"{k}={v}" for k, v in r.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
