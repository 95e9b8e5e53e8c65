"""Host rANS coder: tables, round trips (hypothesis), size against constriction and the entropy bound."""

import ast
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import pc15jax as pc
from pc15jax.bitstream import rans as R


def test_build_tables_normalises_and_keeps_every_symbol():
    t = pc.build_rans_tables(np.array([0, 10, 0, 1000, 3]), precision=12)
    assert int(t.freq.sum()) == 4096 and np.all(t.freq >= 1)
    assert t.cdf[0] == 0 and t.cdf[-1] == 4096
    assert np.array_equal(np.repeat(np.arange(5), t.freq), t.lut)
    s = pc.build_rans_tables(np.array([2, 2, 1]), precision=8, alphabet=4)
    assert s.size == 4 and s.freq[3] >= 1 and s.freq[2] > s.freq[1]
    with pytest.raises(ValueError, match="precision"):
        pc.build_rans_tables([1, 2], precision=17)
    with pytest.raises(ValueError, match="needs precision"):
        pc.build_rans_tables(np.ones(300), precision=8)
    with pytest.raises(ValueError, match="non-negative"):
        pc.build_rans_tables([1, -2])
    with pytest.raises(ValueError, match="symbols must be integers"):
        pc.build_rans_tables(np.array([5]), alphabet=3)


@pytest.mark.parametrize("adaptive", [False, True])
@settings(max_examples=150, deadline=None)
@given(data=st.data(), n=st.integers(0, 3000), k=st.integers(1, 4), prec=st.integers(9, 16))
def test_round_trip_many_tables(adaptive, data, n, k, prec):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    sizes = [data.draw(st.integers(1, 300)) for _ in range(k)]
    tables = [pc.build_rans_tables(rng.dirichlet(np.ones(m) * 0.3) * 1000, precision=prec) for m in sizes]
    tid = rng.integers(0, k, n)
    sym = np.asarray([rng.integers(0, sizes[t]) for t in tid], np.int64)
    enc = pc.rans_encode(sym, tables, tid, adaptive=adaptive)
    np.testing.assert_array_equal(pc.rans_decode(enc, tables, n, tid, adaptive=adaptive), sym)
    if adaptive:
        # What the coder pays: the state starts at 2**16 and ends in a 32-bit flush; its floor
        # division lets it code a few thousandths of a bit per symbol below the ideal (<= 0.0034 over
        # 400 random streams, static or adaptive).
        bits = R.adaptive_bits(sym, tables, tid).sum()
        assert bits + 16 - 1 - 0.005 * n <= 8 * len(enc) <= 1.002 * bits + 48


def test_lane_paths_agree_and_long_streams_round_trip():
    rng = np.random.default_rng(0)
    t = pc.build_rans_tables(rng.dirichlet(np.ones(50)) * 1e4, precision=14)
    sym = rng.integers(0, 50, 5000)
    start, freq = t.cdf[sym].astype(np.uint64), t.freq[sym].astype(np.uint64)
    np.testing.assert_array_equal(R._encode_scalar(start, freq, 14), R._encode_lanes(start, freq, 14, 1))
    n = (1 << 18) + 777  # 64 interleaved lanes
    assert R.lanes_for(n) == 64
    long = rng.integers(0, 50, n)
    np.testing.assert_array_equal(pc.rans_decode(pc.rans_encode(long, t), t, n), long)


def test_corrupt_payloads_raise_bitstream_error():
    t = pc.build_rans_tables(np.ones(16), precision=10)
    sym = np.random.default_rng(1).integers(0, 16, 2000)
    enc = pc.rans_encode(sym, t)
    for bad in (enc[:-2], enc[:3], enc + b"\x00\x00", enc[1:], b""):
        with pytest.raises(pc.BitstreamError):
            pc.rans_decode(bad, t, 2000)
    with pytest.raises(pc.BitstreamError):
        pc.rans_decode(enc, t, 1999)
    with pytest.raises(ValueError, match="outside"):
        pc.rans_encode([16], t)


def _entropy_bytes(sym, m):
    c = np.bincount(sym, minlength=m).astype(np.float64)
    p = c / c.sum()
    return -(c[c > 0] * np.log2(p[c > 0])).sum() / 8


@pytest.mark.parametrize("n,m,conc", [(10_000, 40, 0.3), (20_000, 256, 1.0), (50_000, 8, 0.2)])
def test_size_against_constriction_and_entropy(n, m, conc):
    constriction = pytest.importorskip("constriction")
    rng = np.random.default_rng(n)
    sym = rng.choice(m, n, p=rng.dirichlet(np.ones(m) * conc))
    t = pc.build_rans_tables(np.bincount(sym, minlength=m), precision=16)
    ours = len(pc.rans_encode(sym, t))
    coder = constriction.stream.stack.AnsCoder()
    model = constriction.stream.model.Categorical(t.freq.astype(np.float64) / 2**16, perfect=False)
    coder.encode_reverse(sym.astype(np.int32), model)
    theirs = 4 * len(coder.get_compressed())
    assert ours <= theirs * 1.005 + 8, (ours, theirs)
    assert ours <= _entropy_bytes(sym, m) * 1.01, (ours, _entropy_bytes(sym, m))


def test_bitstream_package_never_imports_jax():
    for f in (Path(pc.__file__).parent / "bitstream").glob("*.py"):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                assert name.split(".")[0] in {"numpy", "dataclasses", "hashlib", "json", "os", "pathlib", "typing",
                                              "struct", "zlib", "tempfile", "math", "functools", "bisect", "__future__"}, (f.name, name)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), n=st.integers(0, 2000), prec=st.integers(9, 16))
def test_symbol_by_symbol_decoder_with_contexts(data, n, prec):
    """A table chosen from the previous symbol (a context) round-trips through RansDecoder."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    m = data.draw(st.integers(2, 40))
    tables = [pc.build_rans_tables(rng.dirichlet(np.ones(m) * 0.3) * 1000, precision=prec) for _ in range(m)]
    sym = rng.integers(0, m, n)
    tid = np.concatenate([[0], sym[:-1]]) if n else np.zeros(0, np.int64)
    enc = pc.rans_encode(sym, tables, tid, lanes=1)
    dec = R.RansDecoder(enc, prec)
    out, prev = [], 0
    for _ in range(n):
        prev = dec.decode(tables[prev])
        out.append(prev)
    dec.finish()
    np.testing.assert_array_equal(np.asarray(out, np.int64), sym)
    if n:  # the one-lane stream is the same whichever decoder reads it
        np.testing.assert_array_equal(pc.rans_decode(enc, tables, n, tid, lanes=1), sym)


def test_symbol_by_symbol_decoder_detects_corruption():
    t = pc.build_rans_tables(np.arange(1, 17), precision=12)
    sym = np.random.default_rng(2).integers(0, 16, 500)
    enc = pc.rans_encode(sym, t, lanes=1)
    for bad, n in ((enc + b"\x01\x00", 500), (enc[:-2], 500), (enc, 499), (b"\x00\x00", 0), (enc[:3], 1)):
        with pytest.raises(pc.BitstreamError):
            dec = R.RansDecoder(bad, 12)
            for _ in range(n):
                dec.decode(t)
            dec.finish()
    with pytest.raises(ValueError, match="precision"):
        R.RansDecoder(enc, 12).decode(pc.build_rans_tables(np.ones(4), precision=10))
    with pytest.raises(ValueError, match="lanes"):
        pc.rans_encode(sym, t, lanes=3)


# ------------------------------------------------------------------------------- adaptive tables

def test_adaptive_tables_learn_a_distribution_the_frozen_table_does_not_know():
    rng = np.random.default_rng(3)
    frozen = pc.build_rans_tables(np.ones(64), precision=15)  # uniform: 6 bits a symbol
    sym = rng.choice(64, 20_000, p=rng.dirichlet(np.ones(64) * 0.2))
    static, adaptive = pc.rans_encode(sym, frozen), pc.rans_encode(sym, frozen, adaptive=True)
    assert len(static) == pytest.approx(20_000 * 6 / 8, rel=0.01)
    assert len(adaptive) <= 1.02 * _entropy_bytes(sym, 64) + 200  # within 2 % of the empirical entropy
    np.testing.assert_array_equal(pc.rans_decode(adaptive, frozen, 20_000, adaptive=True), sym)
    ad = R.AdaptiveTables([frozen])
    for v in sym[:R.ADAPT_FIRST - 1]:
        ad.update(0, int(v))
    assert ad[0].freq.tolist() == frozen.freq.tolist()  # unchanged until the first rebuild point
    ad.update(0, int(sym[R.ADAPT_FIRST - 1]))
    t = ad[0]
    assert int(t.freq.sum()) == 1 << 15 and t.freq.min() >= 1 and t.cdf[-1] == 1 << 15
    counts = R.ADAPT_WEIGHT / 64 + np.bincount(sym[:R.ADAPT_FIRST], minlength=64)
    np.testing.assert_allclose(t.freq, 1 + counts / counts.sum() * ((1 << 15) - 64), atol=1.0)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), n=st.integers(0, 6000), k=st.integers(1, 5))
def test_adaptive_steps_follow_the_tables_symbol_by_symbol(data, n, k):
    """The encoder's run-by-run (start, freq) equal :class:`AdaptiveTables` updated symbol by
    symbol, across rebuild points (16, 32, ..., then 12.5 % steps) and for several tables."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    tables = [pc.build_rans_tables(rng.integers(1, 50, rng.integers(2, 40)), precision=int(rng.integers(12, 16)))
              for _ in range(k)]
    prec = tables[0].precision
    tables = [pc.build_rans_tables(np.asarray(t.freq), precision=prec) for t in tables]
    tid = rng.integers(0, k, n)
    sym = np.asarray([rng.integers(0, tables[i].size) for i in tid], np.int64)
    ad = R.AdaptiveTables(tables)
    want = []
    for i, v in zip(tid.tolist(), sym.tolist()):
        f, c = ad.lists(i)
        want.append((c[v], f[v]))
        ad.update(i, v)
    start, freq = R._adaptive_steps(sym, tables, tid)
    assert list(zip(start.tolist(), freq.tolist())) == want


@settings(max_examples=100, deadline=None)
@given(data=st.data(), prec=st.integers(8, 16))
def test_requantise_is_exact_largest_remainder_rounding(data, prec):
    n = data.draw(st.integers(1, min(300, (1 << prec) - 1)))
    c = np.asarray(data.draw(st.lists(st.integers(0, 2**34), min_size=n, max_size=n)), np.int64)
    c[data.draw(st.integers(0, n - 1))] += 1  # a positive total
    f = R._requantise(c, prec)
    assert int(f.sum()) == 1 << prec and f.min() >= 1
    ideal = 1 + c / c.sum() * ((1 << prec) - n)  # each frequency is its ideal share rounded up or down
    assert np.all(np.abs(f - ideal) < 1.0)
    frac = ideal - np.floor(ideal)
    up = f > np.floor(ideal)  # rounded up: remainders at least those of every symbol rounded down
    if up.any() and (~up).any():
        assert frac[up].min() >= frac[~up].max() - 1e-9


def test_adaptive_streams_detect_corruption_and_refuse_lanes():
    t = pc.build_rans_tables(np.arange(1, 17), precision=12)
    sym = np.random.default_rng(4).integers(0, 16, 800)
    enc = pc.rans_encode(sym, t, adaptive=True)
    assert enc != pc.rans_encode(sym, t, lanes=1)
    for bad, n in ((enc + b"\x01\x00", 800), (enc[:-2], 800), (enc, 799), (enc[1:], 800), (b"", 0)):
        with pytest.raises(pc.BitstreamError):
            pc.rans_decode(bad, t, n, adaptive=True)
    with pytest.raises(ValueError, match="one lane"):
        pc.rans_encode(sym, t, lanes=64, adaptive=True)
    with pytest.raises(ValueError, match="weight"):
        R.AdaptiveTables([t], weight=0)
