"""Context-conditioned symbol models: contexts, stream A decoded symbol by symbol, the search's rates."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import pc15jax as pc
from pc15jax._src import codec
from pc15jax.bitstream import models as M
from pc15jax.bitstream.rans import rans_decode, rans_encode

LAYOUT = codec.generator_layout()
G = len(LAYOUT)


def _context_table(rng, table_id="ctx-test") -> dict:
    """Random counts for every class, context tables included."""
    d = {"id": table_id, "count": rng.random(M.MAX_ATOMS + 1).tolist(), "gen": rng.random(G).tolist(),
         "coef": rng.random(2 * M.MAX_COEF + 1).tolist(), "dc": rng.random(2 * M.MAX_DC + 1).tolist(),
         "count_ctx": (rng.random((M.N_COUNT_CTX, M.MAX_ATOMS + 1)) ** 4 * 100).tolist(),
         "gen_ctx": (rng.random((G, G)) ** 4 * 100).tolist(),
         "coef_ctx": (rng.random((M.N_COEF_CTX, 2 * M.MAX_COEF + 1)) ** 4 * 100).tolist()}
    return d


def _random_symbols(rng, ny, nx, K=5):
    N = ny * nx
    count = rng.integers(0, K + 1, N)
    gen = rng.integers(1, G, (N, K))
    params = np.zeros((N, K, 6), np.int64)
    seed = np.zeros((N, K), np.int64)
    for t in range(N):
        for k in range(K):
            g = LAYOUT[gen[t, k]]
            for i in g.searched:
                params[t, k, i] = rng.integers(0, g.levels[i])
            seed[t, k] = rng.integers(0, max(g.n_seeds, 1))
    coef = rng.integers(-40, 41, (N, K))
    dc = np.clip(128 + np.cumsum(rng.integers(-3, 4, N)), 0, 256)
    return count, gen, params, seed, coef, dc


def test_count_contexts_follow_the_left_and_upper_tiles():
    rng = np.random.default_rng(0)
    ny, nx = 5, 7
    count = rng.integers(0, M.MAX_ATOMS + 1, ny * nx)
    bucket = lambda n: 0 if n == 0 else 1 if n == 1 else 2 if n == 2 else 3 if n <= 4 else 4 if n <= 8 else 5  # noqa
    ctx = M.count_contexts(count, ny, nx)
    for t in range(ny * nx):
        y, x = divmod(t, nx)
        left = bucket(count[t - 1]) if x else 6
        up = bucket(count[t - nx]) if y else 6
        assert ctx[t] == 7 * left + up
    assert ctx.max() < M.N_COUNT_CTX


def _split_by_loop(model, count, gen, params, seed, coef, dc_q, ny, nx, used=None):
    """The stream order spelt out tile by tile, atom by atom: the oracle of the vectorised split."""
    use = np.ones(len(count), bool) if used is None else np.asarray(used, bool)
    a_sym, a_tid = list(np.asarray(count)[use]), list(model.count_tid[M.count_contexts(count, ny, nx)][use])
    b_sym, b_tid = [], []
    for t in range(len(count)):
        prev = 0
        for k in range(int(count[t])):
            g = model.layout[int(gen[t, k])]
            a_sym.append(g.id)
            a_tid.append(model.gen_tid[prev])
            prev = g.id
            for i in g.searched:
                b_sym.append(int(params[t, k, i]))
                b_tid.append(model.index[f"param:{g.id}:{i}"])
            if g.n_seeds > 1:
                b_sym.append(int(seed[t, k]))
                b_tid.append(model.index[f"seed:{g.id}"])
            b_sym.append(int(coef[t, k]) + M.MAX_COEF)
            b_tid.append(model.coef_tid[M.coef_context(k)])
    delta = M.dc_delta(np.asarray(dc_q, np.int64), ny, nx, model.dc_predictor)
    b_sym += (delta[use] + M.MAX_DC).tolist()
    b_tid += [model.index["dc"]] * int(use.sum())
    return a_sym, a_tid, b_sym, b_tid


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), ny=st.integers(1, 6), nx=st.integers(1, 6), contexts=st.booleans())
def test_split_is_the_stream_order(seed, ny, nx, contexts):
    rng = np.random.default_rng(seed)
    model = M.SymbolModel(LAYOUT, _context_table(rng) if contexts else {"id": "flat"})
    sym = _random_symbols(rng, ny, nx, K=int(rng.integers(1, 7)))
    got = model.split(*sym, ny, nx)
    for g, w in zip(got, _split_by_loop(model, *sym, ny, nx)):
        assert g.dtype == np.int64
        np.testing.assert_array_equal(g, np.asarray(w, np.int64).reshape(-1))


def test_split_rejects_bad_amplitudes_and_counts():
    rng = np.random.default_rng(1)
    model = M.SymbolModel(LAYOUT, _context_table(rng))
    count, gen, params, seed_, coef, dc = _random_symbols(rng, 2, 3)
    count[:] = 2
    coef[4, 1] = M.MAX_COEF + 1
    with pytest.raises(ValueError, match=f"amplitude index {M.MAX_COEF + 1}"):
        model.split(count, gen, params, seed_, coef, dc, 2, 3)
    count[0] = gen.shape[1] + 1
    with pytest.raises(ValueError, match="atom slots"):
        model.split(count, gen, params, seed_, np.zeros_like(coef), dc, 2, 3)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), ny=st.integers(1, 6), nx=st.integers(1, 6))
def test_context_streams_round_trip(seed, ny, nx):
    rng = np.random.default_rng(seed)
    model = M.SymbolModel(LAYOUT, _context_table(rng))
    assert model.contexts and model.a_lanes == 1
    count, gen, params, seed_, coef, dc = _random_symbols(rng, ny, nx)
    a, atid, b, btid = model.split(count, gen, params, seed_, coef, dc, ny, nx)
    A = rans_encode(a, model.tables, atid, lanes=model.a_lanes)
    dcount, dgens = model.decode_a(A, len(a), ny, nx)
    np.testing.assert_array_equal(dcount, count)
    np.testing.assert_array_equal(model.b_table_ids(dcount, dgens), btid)
    bsym = rans_decode(rans_encode(b, model.tables, btid), model.tables, len(b), btid)
    out = model.join(dcount, dgens, bsym, ny, nx, 6)
    live = np.arange(gen.shape[1])[None, :] < count[:, None]
    K = out[0].shape[1]
    for got, want in zip(out[:4], (gen, params, seed_, coef)):
        np.testing.assert_array_equal(np.where(live[:, :K, None] if got.ndim == 3 else live[:, :K], got, 0),
                                      np.where(live[:, :K, None] if got.ndim == 3 else live[:, :K], want[:, :K], 0))
    np.testing.assert_array_equal(out[4], dc)


def test_context_tables_are_all_or_nothing_and_checked():
    rng = np.random.default_rng(1)
    d = _context_table(rng)
    del d["gen_ctx"]
    with pytest.raises(pc.BitstreamError, match="all of"):
        M.SymbolModel(LAYOUT, d)
    d = _context_table(rng)
    d["coef_ctx"] = d["coef_ctx"][:2]
    with pytest.raises(pc.BitstreamError, match="rows"):
        M.SymbolModel(LAYOUT, d)


def test_corrupt_context_stream_raises():
    rng = np.random.default_rng(2)
    model = M.SymbolModel(LAYOUT, _context_table(rng))
    count, gen, params, seed_, coef, dc = _random_symbols(rng, 4, 4)
    a, atid, _, _ = model.split(count, gen, params, seed_, coef, dc, 4, 4)
    A = rans_encode(a, model.tables, atid, lanes=1)
    for bad, n in ((A[:-2], len(a)), (A + b"\0\0", len(a)), (A, len(a) + 1), (A, 3)):
        with pytest.raises(pc.BitstreamError):
            model.decode_a(bad, n, 4, 4)


def test_shipped_context_tables_beat_the_context_free_ones(camera):
    """The same symbols cost fewer bits under pc15-v2 (contexts) than under pc15-v1."""
    img = (camera[128:384, 128:384] * 255).astype(np.uint8)
    enc = pc.encode_y(img, pc.CodecConfig(tile=16, overlap=1, lambda_rd=0.1, table_id="pc15-v1"))
    _, planes, _ = codec._parse(enc["bitstream"])
    ny, nx = enc["stats"]["grid"]
    totals = {}
    for tid in ("pc15-v1", "pc15-v2"):
        model = codec.symbol_model(tid)
        a, atid, b, btid = model.split(*planes[0], ny, nx)
        totals[tid] = codec._class_bits(model, a, atid, b, btid)
    for cls in ("count", "coef"):
        assert totals["pc15-v2"][cls] < 0.95 * totals["pc15-v1"][cls], cls
    assert sum(totals["pc15-v2"].values()) < 0.97 * sum(totals["pc15-v1"].values())


def test_search_prices_atoms_as_the_coder_does(camera):
    """Generator, parameter, seed and amplitude bits of the chosen atoms, priced by the search's
    tables in the coder's contexts, equal the coder's ideal bits for those classes."""
    img = (camera[:192, :192] * 255).astype(np.uint8)
    cfg = pc.CodecConfig(tile=16, overlap=1, lambda_rd=0.05, adaptive_coding=False)  # the frozen tables' bits
    enc = pc.encode_y(img, cfg)
    _, planes, _ = codec._parse(enc["bitstream"])
    count, gen, params, seed_, coef, dc = planes[0]
    t = codec.codec_tables(cfg)
    dic = codec.dictionary_for(cfg)
    static, coef_bits = np.asarray(t.static_bits, np.float64), np.asarray(t.coef_bits, np.float64)
    total = 0.0
    for i in range(count.shape[0]):
        prev = 0
        for k in range(int(count[i])):
            atom = int(dic.atom_index(gen[i, k:k + 1], params[i, k:k + 1], seed_[i, k:k + 1])[0])
            total += static[prev, atom] + coef_bits[M.coef_context(k), coef[i, k] + cfg.max_coef]
            prev = int(gen[i, k])
    bits = enc["stats"]["bits_by_class"]
    coder = bits["gen"] + bits["param"] + bits.get("seed", 0.0) + bits["coef"]
    assert total == pytest.approx(coder, rel=1e-4)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), ny=st.integers(1, 7), nx=st.integers(1, 7),
       predictor=st.sampled_from(M.DC_PREDICTORS))
def test_dc_prediction_round_trips(seed, ny, nx, predictor):
    dc = np.random.default_rng(seed).integers(0, 129, ny * nx)
    d = M.dc_delta(dc, ny, nx, predictor)
    np.testing.assert_array_equal(M.dc_undelta(d, ny, nx, predictor), dc)


def test_med_predictor_is_loco_i():
    rng = np.random.default_rng(3)
    ny, nx = 6, 9
    dc = rng.integers(0, 129, (ny, nx))
    d = M.dc_delta(dc.reshape(-1), ny, nx, "med").reshape(ny, nx)
    for y in range(ny):
        for x in range(nx):
            if y and x:
                a, b, c = dc[y, x - 1], dc[y - 1, x], dc[y - 1, x - 1]
                p = min(a, b) if c >= max(a, b) else max(a, b) if c <= min(a, b) else a + b - c
            else:
                p = dc[y, x - 1] if x else dc[y - 1, x] if y else M.MAX_DC // 2
            assert d[y, x] == dc[y, x] - p
    with pytest.raises(pc.BitstreamError, match="DC predictor"):
        M.SymbolModel(LAYOUT, {"id": "x", "dc_predictor": "paeth"})
