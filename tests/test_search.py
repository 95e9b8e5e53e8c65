"""Config validation, dictionary invariants, and the RD search: optimality against brute force,
recovery of planted atoms, coarse-to-fine, early exit, lambda, no recompiles, jit/eager, batching."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pc15jax as pc
from pc15jax._src import search as S
from pc15jax._src.search import blocks, rd
from pc15jax._src.pipeline import dictionary_for

CFG = pc.CodecConfig(tile=16, overlap=4, lambda_rd=0.5)


@pytest.fixture(scope="module")
def dic():
    return dictionary_for(CFG)


def _photo_tiles(img, n=24, T=16, seed=0):
    rng = np.random.default_rng(seed)
    ys = rng.integers(0, img.shape[0] - T, n)
    xs = rng.integers(0, img.shape[1] - T, n)
    return np.stack([img[y:y + T, x:x + T] for y, x in zip(ys, xs)]).astype(np.float32)


# ---------------------------------------------------------------------------------------------- config

@pytest.mark.parametrize("bad,match", [
    (dict(tile=0), "tile"), (dict(tile=16, overlap=16), "overlap"), (dict(overlap=-1), "overlap"),
    (dict(lambda_rd=-1.0), "lambda_rd"), (dict(lambda_rd=float("nan")), "lambda_rd"),
    (dict(alpha_mix=1.5), "alpha_mix"), (dict(window="box"), "window"), (dict(search="greedy"), "search"),
    (dict(seed=-3), "seed"), (dict(generators=("NOPE",)), "unknown generator"), (dict(generators="EDGE"), "sequence"),
    (dict(gain_step=0.0), "gain_step"), (dict(beam=0), "beam"), (dict(window="tukey", window_params={"alpha": 3}), "alpha"),
])
def test_config_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        pc.CodecConfig(**bad)


def test_config_defaults_are_hashable_and_frozen():
    cfg = pc.CodecConfig(tile=256, overlap=24, lambda_rd=0.015, alpha_mix=0.7, seed=1234)
    assert hash(cfg) == hash(pc.CodecConfig(tile=256, overlap=24, lambda_rd=0.015, alpha_mix=0.7, seed=1234))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.tile = 8
    assert cfg.replace(lambda_rd=1.0).lambda_rd == 1.0
    assert pc.CodecConfig(generators=["edge", "line"]).generators == ("EDGE", "LINE")


# ---------------------------------------------------------------------------------------------- dictionary

def test_dictionary_invariants(dic):
    atoms = np.asarray(dic.atoms)
    sw = np.asarray(dic.sw)
    A = atoms.shape[0]
    assert atoms.shape == (A, 256) and atoms.dtype == np.float32
    assert A == sum(g.grid_size for g in pc.list_generators())
    norms = np.linalg.norm(atoms, axis=1)
    np.testing.assert_allclose(norms[dic.searchable & (dic.gen_id != 0)], 1.0, atol=1e-5)
    assert norms[0] == 0.0  # FLAT: DC only
    np.testing.assert_allclose(atoms @ (sw / np.linalg.norm(sw)), 0.0, atol=1e-5)  # offset-free
    np.testing.assert_array_equal(dic.atom_index(dic.gen_id, dic.param_idx, dic.seed_sym), np.arange(A))
    cos00 = dic.atom_index([24], [[0, 0, 0, 0, 0, 0]], [0])[0]
    assert not dic.searchable[cos00]  # constant render other than FLAT: never searched


def test_dictionary_atoms_are_normalised_renders(dic):
    sw = np.asarray(dic.sw, np.float64)
    e = sw / np.linalg.norm(sw)
    for name, idx, seed_sym in [("EDGE", [3, 5, 1], 0), ("PERLIN", [2], 5), ("GABOR", [4, 2, 1, 1, 0, 0], 0)]:
        g = pc.get_generator(name)
        pidx = np.zeros(6, np.int64)
        pidx[: len(idx)] = idx
        a = dic.atom_index([g.id], [pidx], [seed_sym])[0]
        params = {p.name: float(p.grid()[pidx[i]]) for i, p in enumerate(g.params)}
        raw_seed = int(pc._src.dictionary.derive_seed(CFG.seed, seed_sym)) if g.seeded else 0
        r = np.asarray(pc.render(name, 16, 16, params, seed=raw_seed), np.float64).reshape(-1) * sw
        r -= (r @ e) * e
        np.testing.assert_allclose(np.asarray(dic.atoms[a]), r / np.linalg.norm(r), atol=2e-5)


# ---------------------------------------------------------------------------------------------- search

def _distortion64(x, r, w, alpha):
    """Independent float64 reference of the seam-weighted distortion (scipy Gaussian, reflect)."""
    from scipy.ndimage import gaussian_filter

    g = lambda v: gaussian_filter(v, 1.5, truncate=3.5, mode="reflect", axes=(-2, -1))  # noqa: E731
    ux, uy = g(x), g(r)
    vx, vy, vxy = g(x * x) - ux * ux, g(r * r) - uy * uy, g(x * r) - ux * uy
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    d = alpha * (1 - s) + (1 - alpha) * (x - r) ** 2
    return (d * w).sum((-2, -1)) / w.sum()


def _reference_costs(tiles, cfg, tables):
    """Brute force: every allowed atom, rendered and scored with the direct metric path."""
    T = cfg.tile
    n = T * T
    sw = np.asarray(tables.sw, np.float64)
    w = (sw * sw).reshape(T, T)
    atoms = np.asarray(tables.atoms, np.float64)
    x = tiles.reshape(len(tiles), n).astype(np.float64)
    o = (x * w.reshape(-1)).sum(1) / w.sum()
    dc_q = np.clip(np.round(o / cfg.dc_step), 0, cfg.dc_levels - 1)
    o_hat = dc_q * cfg.dc_step
    xc = x * sw - (((x * sw) @ (sw / np.linalg.norm(sw)))[:, None] * (sw / np.linalg.norm(sw))[None])
    c = xc @ atoms.T
    step = cfg.gain_step * np.sqrt(n)
    k = np.clip(np.round(c / step), -cfg.max_coef, cfg.max_coef)
    k[:, 0] = 0
    recon = o_hat[:, None, None] + (k * step)[:, :, None] * (atoms / sw)[None]  # [N, A, n]
    d = _distortion64(np.broadcast_to(tiles[:, None].astype(np.float64), (len(tiles), atoms.shape[0], T, T)),
                      recon.reshape(len(tiles), -1, T, T), w, cfg.alpha_mix)
    coef_bits = np.asarray(tables.coef_bits)[0][(k + cfg.max_coef).astype(int)]  # first atom's context
    coef_bits[:, 0] = 0
    cnt = np.asarray(tables.count_bits)
    count_bits = np.where(np.arange(atoms.shape[0]) == 0, cnt[0], cnt[1])[None]
    bits = (np.asarray(tables.static_bits)[0][None] + coef_bits + count_bits
            + np.asarray(tables.dc_bits)[dc_q.astype(int)][:, None])
    j = d + cfg.lambda_rd * bits / n
    return np.where(np.asarray(tables.allowed)[None], j, np.inf)


def test_search_matches_brute_force(camera):
    cfg = CFG.replace(generators=("EDGE", "CORNER", "COSINE"), shortlist=2000)
    tables = S.default_tables(cfg)
    tiles = _photo_tiles(camera, n=12)
    res = S.search_tiles(tiles, cfg, tables)
    ref = _reference_costs(tiles, cfg, tables)
    np.testing.assert_allclose(np.asarray(res.cost), ref.min(1), rtol=1e-5, atol=1e-6)
    picked = ref[np.arange(len(tiles)), np.asarray(res.atom)]
    np.testing.assert_allclose(picked, ref.min(1), rtol=1e-5, atol=1e-6)
    # and the direct float32 metric path agrees with the float64 reference for the chosen atoms
    T = cfg.tile
    w = jnp.asarray((np.asarray(tables.sw) ** 2).reshape(T, T))
    d32 = pc.tile_distortion(jnp.asarray(tiles), res.recon, w, jnp.float32(cfg.alpha_mix))
    np.testing.assert_allclose(np.asarray(d32), np.asarray(res.distortion), atol=5e-5)


@pytest.mark.parametrize("name,idx,seed_sym", [("EDGE", [7, 4, 0], 0), ("CORNER", [1, 2, 5, 1], 0),
                                              ("PERLIN", [1], 6), ("STRIPES", [5, 3, 1], 0)])
def test_search_recovers_planted_atoms(dic, name, idx, seed_sym):
    g = pc.get_generator(name)
    pidx = np.zeros(6, np.int64)
    pidx[: len(idx)] = idx
    a = int(dic.atom_index([g.id], [pidx], [seed_sym])[0])
    k, dc_q = 9, 64
    step = CFG.gain_step * 16.0
    tile = dc_q * CFG.dc_step + k * step * np.asarray(dic.atoms[a] / dic.sw).reshape(16, 16)
    cfg = CFG.replace(lambda_rd=0.01)
    res = S.search_tiles(tile[None], cfg)
    assert int(res.dc_q[0]) == dc_q
    assert int(res.atom[0]) == a or np.allclose(np.asarray(dic.atoms[int(res.atom[0])]), np.asarray(dic.atoms[a]), atol=1e-4)
    assert abs(int(res.coef_q[0])) == k
    np.testing.assert_allclose(np.asarray(res.recon[0]), tile, atol=1e-5)


def test_coarse_to_fine_close_to_exhaustive(camera):
    tiles = _photo_tiles(camera, n=64, seed=3)
    ex = S.search_tiles(tiles, CFG)
    c2f = S.search_tiles(tiles, CFG.replace(search="coarse_to_fine", beam=4))
    j_ex, j_c2f = np.asarray(ex.cost), np.asarray(c2f.cost)
    assert j_c2f.mean() <= 1.05 * j_ex.mean()
    assert np.mean(j_c2f <= j_ex + 1e-6) > 0.25  # often finds the same or a better candidate


def test_early_exit_and_flat_batches():
    flat = np.full((5, 16, 16), 0.25, np.float32)
    res = S.search_tiles(flat, CFG)
    np.testing.assert_array_equal(np.asarray(res.atom), 0)
    np.testing.assert_array_equal(np.asarray(res.coef_q), 0)
    np.testing.assert_allclose(np.asarray(res.recon), 0.25, atol=1e-6)
    # a textured tile next to flat ones still gets an atom
    mixed = flat.copy()
    mixed[2] = 0.5 + 0.3 * np.asarray(pc.render("EDGE", 16, 16, {"angle_deg": 30.0, "offset": 0.1}))
    res = S.search_tiles(mixed, CFG)
    assert int(res.atom[2]) != 0 and int(res.atom[0]) == 0


def test_lambda_trades_bits_for_distortion(camera):
    tiles = _photo_tiles(camera, n=64, seed=5)
    lo = S.search_tiles(tiles, CFG.replace(lambda_rd=0.01))
    hi = S.search_tiles(tiles, CFG.replace(lambda_rd=20.0))
    assert float(jnp.sum(hi.bits)) < float(jnp.sum(lo.bits))
    assert float(jnp.mean(hi.distortion)) > float(jnp.mean(lo.distortion))
    assert int(jnp.sum(hi.atom == 0)) > int(jnp.sum(lo.atom == 0))


def test_generator_subset_is_honoured(camera):
    out = pc.search_image(camera[:64, :64], CFG.replace(generators=("EDGE",)))
    assert set(np.unique(out.symbols.gen_id)) <= {0, 21}


def test_no_recompile_for_same_shape(camera, astronaut_gray, trace_once):
    from pc15jax._src.search import pursuit

    trace_once(pursuit, "_first_stage", static_argnames="spec")
    trace_once(pursuit, "pursue", static_argnames=("spec", "max_atoms"))
    pc.search_image(camera[:96, :80], CFG)
    pc.search_image(astronaut_gray[:96, :80], CFG.replace(lambda_rd=2.0, alpha_mix=0.3))
    pc.search_image(camera[:90, :70], CFG)  # fewer tiles, the same bucket
    S.search_atoms(camera[:32, :32].reshape(-1, 16, 16), CFG.replace(max_atoms=3))
    S.search_atoms(camera[32:96, :16].reshape(-1, 16, 16), CFG.replace(max_atoms=3, lambda_rd=0.01), grid=(4, 1))
    with pytest.raises(AssertionError, match="trace"):  # another bucket is another program
        pc.search_image(camera[:200, :200], CFG)


def test_device_count_contexts_equal_the_coders():
    from pc15jax.bitstream.models import count_contexts

    rng = np.random.default_rng(4)
    for ny, nx in [(5, 7), (1, 9), (8, 1), (1, 1)]:
        count = rng.integers(0, 17, ny * nx)
        cg = S.CountGrid.of(64, (ny, nx))
        padded = jnp.asarray(np.r_[count, rng.integers(0, 17, 64 - ny * nx)], jnp.int32)
        got = np.asarray(S.count_context(padded, cg))
        np.testing.assert_array_equal(got[:ny * nx], count_contexts(count, ny, nx))
        assert np.all(got[ny * nx:] == -1)
    assert np.all(np.asarray(S.count_context(jnp.ones(64, jnp.int32), S.CountGrid.of(64, None))) == -1)


def test_blocked_stage_runs_the_active_tiles_only(camera):
    """A stage in blocks over a permutation (the last block clamped onto the one before) gives
    every active tile what the whole-batch stage gives it, and atom 0 to the rows it skips."""
    tiles = jnp.asarray(_photo_tiles(camera, n=192, seed=5))
    t = S.default_tables(CFG)
    prm = S.SearchParams.from_config(CFG)
    kw = dict(mode="exhaustive", beam=4, shortlist=4)
    first = rd.search_block(tiles, t, prm, **kw)
    count = (first.atom != 0).astype(jnp.int32)
    inp = S.StageInput(first.recon, first.dc_q, count, t.atom_gen[first.atom], jnp.full((192,), -1, jnp.int32))
    whole = rd.search_more_block(tiles, inp, t, prm, **kw)
    active = np.random.default_rng(0).random(192) < 0.85
    assert blocks.block_size(192) == 128 and 128 < active.sum() < 192
    order, n_blocks = blocks.stage_order(active, 128)
    np.testing.assert_array_equal(np.asarray(order), np.r_[np.flatnonzero(active), np.flatnonzero(~active)])
    assert int(n_blocks) == 2
    spec = S.StageSpec(**kw)
    blk = S.run_stage(tiles, inp, order, n_blocks, t, prm, spec=spec)
    np.testing.assert_array_equal(np.asarray(blk.atom)[active], np.asarray(whole.atom)[active])
    np.testing.assert_array_equal(np.asarray(blk.coef_q)[active], np.asarray(whole.coef_q)[active])
    np.testing.assert_allclose(np.asarray(blk.recon)[active], np.asarray(whole.recon)[active], atol=1e-6)
    one = S.run_stage(tiles, inp, order, jnp.int32(1), t, prm, spec=spec)
    skipped = np.ones(192, bool)
    skipped[np.asarray(order)[:128]] = False
    assert np.all(np.asarray(one.atom)[skipped] == 0) and np.all(np.asarray(one.recon)[skipped] == 0)
    np.testing.assert_array_equal(np.asarray(one.atom)[~skipped], np.asarray(whole.atom)[~skipped])


def test_jit_matches_eager(camera):
    tiles = jnp.asarray(_photo_tiles(camera, n=64, seed=7))
    t = S.default_tables(CFG)
    p = S.SearchParams.from_config(CFG)
    jitted = rd.search_block(tiles, t, p, mode="exhaustive", beam=4, shortlist=4)
    with jax.disable_jit():
        eager = rd.search_block(tiles, t, p, mode="exhaustive", beam=4, shortlist=4)
    np.testing.assert_array_equal(np.asarray(jitted.atom), np.asarray(eager.atom))
    np.testing.assert_allclose(np.asarray(jitted.cost), np.asarray(eager.cost), rtol=1e-5, atol=1e-6)


def test_batch_equals_one_by_one(camera):
    tiles = _photo_tiles(camera, n=6, seed=9)
    batch = S.search_tiles(tiles, CFG)
    for i in range(len(tiles)):
        one = S.search_tiles(tiles[i:i + 1], CFG)
        assert int(one.atom[0]) == int(batch.atom[i]) and int(one.coef_q[0]) == int(batch.coef_q[i])
        np.testing.assert_allclose(np.asarray(one.recon[0]), np.asarray(batch.recon[i]), atol=1e-6)


def test_reconstruct_from_symbols_equals_search_recon(camera, dic):
    res = S.search_tiles(_photo_tiles(camera, n=20, seed=11), CFG)
    rec = pc.reconstruct_tiles(dic, res.atom, res.coef_q, res.dc_q, CFG)
    np.testing.assert_allclose(np.asarray(rec), np.asarray(res.recon), atol=1e-6)
    sym = pc.tile_symbols(dic, res)
    np.testing.assert_array_equal(dic.atom_index(sym.gen_id, sym.param_idx, sym.seed_sym), np.asarray(res.atom))


def test_search_image_end_to_end(camera):
    img = (camera[:70, :90] * 255).astype(np.uint8)
    a = pc.search_image(img, CFG)
    b = pc.search_image(img, CFG)
    assert a.recon.shape == (70, 90) and a.recon.dtype == np.float32
    assert 0.0 <= a.recon.min() and a.recon.max() <= 1.0
    np.testing.assert_array_equal(a.symbols.gen_id, b.symbols.gen_id)
    np.testing.assert_array_equal(a.recon, b.recon)
    assert a.bpp == pytest.approx(a.bits / (70 * 90))
    assert float(pc.psnr(img / np.float32(255), a.recon)) > 20.0


@pytest.mark.parametrize("shape", [(1, 1), (5, 40), (16, 16), (17, 3)])
def test_tiny_images(shape):
    img = np.random.default_rng(0).random(shape).astype(np.float32)
    out = pc.search_image(img, CFG)
    assert out.recon.shape == shape and np.all(np.isfinite(out.recon))


@pytest.mark.parametrize("bad,match", [(np.zeros((8, 8, 3)), "grayscale"), (np.full((8, 8), np.nan), "NaN"),
                                       (np.full((8, 8), 2.0), r"\[0, 1\]"), (np.zeros((8, 8), np.int32), "dtype")])
def test_search_image_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        pc.search_image(bad, CFG)


# ---------------------------------------------------------------------------------------------- several atoms

def test_later_stage_distortion_matches_direct_metric(camera):
    tiles = jnp.asarray(_photo_tiles(camera, n=64, seed=13))
    t = S.default_tables(CFG)
    prm = S.SearchParams.from_config(CFG.replace(lambda_rd=0.01))
    first = rd.search_block(tiles, t, prm, mode="exhaustive", beam=4, shortlist=4)
    count = (first.atom != 0).astype(jnp.int32)
    inp = S.StageInput(first.recon, first.dc_q, count, t.atom_gen[first.atom], jnp.full((64,), -1, jnp.int32))
    more = rd.search_more_block(tiles, inp, t, prm, mode="exhaustive", beam=4, shortlist=4)
    w = jnp.asarray((np.asarray(t.sw) ** 2).reshape(16, 16))
    direct = pc.tile_distortion(tiles, more.recon, w, jnp.float32(CFG.alpha_mix))
    np.testing.assert_allclose(np.asarray(more.distortion), np.asarray(direct), atol=5e-5)
    added = np.asarray(more.atom) != 0
    assert added.any()
    assert np.all(np.asarray(more.distortion)[added] <= np.asarray(first.distortion)[added] + 1e-6)


def test_two_planted_atoms_are_recovered(dic):
    g1, g2 = pc.get_generator("EDGE"), pc.get_generator("COSINE")
    a1 = int(dic.atom_index([g1.id], [[10, 6, 0, 0, 0, 0]], [0])[0])
    a2 = int(dic.atom_index([g2.id], [[3, 5, 0, 0, 0, 0]], [0])[0])
    step = CFG.gain_step * 16.0
    tile = (64 * CFG.dc_step + 8 * step * np.asarray(dic.atoms[a1] / dic.sw)
            + 5 * step * np.asarray(dic.atoms[a2] / dic.sw)).reshape(16, 16)
    res = S.search_atoms(tile[None], CFG.replace(lambda_rd=0.001, max_atoms=4))
    assert int(res.count[0]) >= 2
    assert {a1, a2} <= set(np.asarray(res.atom[0]).tolist())
    np.testing.assert_allclose(np.asarray(res.recon[0]), tile, atol=2e-3)


def test_more_atoms_never_raise_the_error_and_respect_max_atoms(camera):
    tiles = _photo_tiles(camera, n=40, seed=17)
    one = S.search_atoms(tiles, CFG.replace(lambda_rd=0.02, max_atoms=1))
    many = S.search_atoms(tiles, CFG.replace(lambda_rd=0.02, max_atoms=6))
    assert int(jnp.max(one.count)) <= 1 and int(jnp.max(many.count)) <= 6 and int(jnp.max(many.count)) > 1
    e1 = np.mean((np.asarray(one.recon) - tiles) ** 2, axis=(1, 2))
    e6 = np.mean((np.asarray(many.recon) - tiles) ** 2, axis=(1, 2))
    assert np.all(e6 <= e1 + 1e-7) and e6.mean() < 0.8 * e1.mean()
    np.testing.assert_array_equal(np.asarray(many.atom)[np.arange(6)[None, :] >= np.asarray(many.count)[:, None]], 0)
