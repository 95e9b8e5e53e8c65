"""The codec's own ``search="coarse_to_fine"`` against its exhaustive search, on the standard bank.

kodim01-04 luma (``../shared/data/kodak``), lambdas 0.1 / 0.3 / 1.0, loop filter off: mean bpp,
PSNR and encode seconds per mode, and the BD-rate (PSNR) of coarse-to-fine against exhaustive per
image. It is the companion of ``probe_large_dictionary``, whose coarse level is the whole standard
bank rather than its even grid points.

  python -m experiments.probe_c2f
"""
import time, numpy as np, pc15jax as pc
from experiments.make_tiles import load_gray
from experiments.bench_rd import bd_rate
from pathlib import Path
KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"
imgs = [load_gray(KODAK / f"kodim0{i}.png") for i in (1, 2, 3, 4)]
res = {}
for mode in ("exhaustive", "coarse_to_fine"):
    base = pc.CodecConfig(search=mode, loop_filter=False)
    pc.encode_y(imgs[0], base)
    rows = []
    for img in imgs:
        pts = []
        for lam in (0.1, 0.3, 1.0):
            t0 = time.perf_counter(); e = pc.encode_y(img, base.replace(lambda_rd=lam)); dt = time.perf_counter() - t0
            pts.append((e["bpp"], float(pc.psnr(e["recon"], img / 255.0 if img.max() > 1 else img)), dt))
        rows.append(np.asarray(sorted(pts)))
    res[mode] = rows
for m in res:
    r = np.stack(res[m])
    print(m, "mean bpp", r[:, :, 0].mean().round(4), "psnr", r[:, :, 1].mean().round(3), "encode s", r[:, :, 2].mean().round(3))
bd = [bd_rate(c[:, :2], e[:, :2], window=(0, np.inf)) for c, e in zip(res["coarse_to_fine"], res["exhaustive"])]
print("BD-rate c2f vs exhaustive per image", np.round(bd, 2), "mean", np.mean(bd).round(2))
