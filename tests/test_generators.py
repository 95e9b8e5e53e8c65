"""Generator bank: table, ranges, determinism, references, validation, vmap/jit equivalence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pc15jax as pc
from pc15jax._src import generators as G

BANK = pc.list_generators()
NAMES = [g.name for g in BANK]


def test_bank_table():
    assert len(BANK) >= 24
    assert [g.id for g in BANK] == list(range(len(BANK)))
    assert len(set(NAMES)) == len(NAMES)
    for needed in ["FLAT", "STRIPES", "WAVES", "RINGS", "SPIRAL", "CHECKER", "BRICK", "HEXGRID", "DIAMOND",
                   "DOTS", "GABOR", "LINEAR_GRADIENT", "RADIAL_GRADIENT", "VALUE_NOISE", "PERLIN", "FBM",
                   "RIDGED", "WORLEY", "MARBLE", "WOOD", "STARFIELD", "EDGE", "LINE", "CORNER", "COSINE"]:
        assert needed in NAMES
    # Stable ids: the bitstream stores them; these must never move.
    assert pc.get_generator("STRIPES").id == 1 and pc.get_generator("EDGE").id == 21
    assert pc.get_generator("COSINE").id == 24 and pc.get_generator(0).name == "FLAT"


@pytest.mark.parametrize("name", NAMES)
def test_render_range_dtype_determinism(name):
    a = pc.render(name, 24, 40, seed=3)
    b = pc.render(name, 24, 40, seed=3)
    assert a.shape == (24, 40) and a.dtype == jnp.float32
    a = np.asarray(a)
    assert np.all(np.isfinite(a)) and a.min() >= -1.0 and a.max() <= 1.0
    np.testing.assert_array_equal(a, np.asarray(b))
    if name != "FLAT":
        assert a.std() > 1e-3, "default parameters should render a non-constant pattern"


@pytest.mark.parametrize("gen", BANK, ids=NAMES)
def test_param_grids(gen):
    for spec in gen.params:
        g = spec.grid()
        assert g.dtype == np.float32 and g.shape == (spec.levels,)
        if spec.levels > 1:
            assert g.min() >= spec.lo - 1e-6
            assert (g.max() < spec.hi) if spec.periodic else (g.max() <= spec.hi + 1e-6)
            assert np.all(np.diff(g) > 0)
        if spec.integer:
            np.testing.assert_array_equal(g, np.round(g))
        if not spec.periodic:
            assert spec.lo <= spec.default <= spec.hi


def test_noise_uses_only_the_seed():
    for g in BANK:
        a, b = np.asarray(pc.render(g.id, 32, 32, seed=1)), np.asarray(pc.render(g.id, 32, 32, seed=2))
        if g.family == "noise":
            assert g.seeded and np.abs(a - b).max() > 1e-2, g.name
        else:
            np.testing.assert_array_equal(a, b)


def test_seeds_example_stripes_matches_numpy():
    p = {"freq": 6.0, "angle_deg": 15.0, "phase": 0.25, "contrast": 0.9}
    img = np.asarray(pc.render(name="STRIPES", H=256, W=256, params=p))
    y, x = np.mgrid[0:256, 0:256] + 0.5
    u, v = (x - 128) / 256, (y - 128) / 256
    t = np.deg2rad(15.0)
    ref = 0.9 * np.cos(2 * np.pi * (6.0 * (u * np.cos(t) + v * np.sin(t)) + 0.25))
    np.testing.assert_allclose(img, ref, atol=2e-5)


def test_cosine_matches_dct_basis():
    img = np.asarray(pc.render("COSINE", 16, 24, {"kx": 3, "ky": 2}))
    y, x = np.mgrid[0:16, 0:24]
    ref = np.cos(np.pi * 3 * (x + 0.5) / 24) * np.cos(np.pi * 2 * (y + 0.5) / 16)
    np.testing.assert_allclose(img, ref, atol=1e-5)


def test_edge_is_a_step_across_the_tile():
    img = np.asarray(pc.render("EDGE", 32, 32, {"angle_deg": 0.0, "offset": 0.0, "softness": 0.01}))
    assert np.all(img[:, :12] < -0.99) and np.all(img[:, 20:] > 0.99)


def test_validation_errors():
    with pytest.raises(ValueError, match="unknown generator"):
        pc.render("NOPE", 8, 8)
    with pytest.raises(ValueError, match="unknown generator id"):
        pc.render(999, 8, 8)
    with pytest.raises(ValueError, match="unknown parameter"):
        pc.render("STRIPES", 8, 8, {"frequency": 2.0})
    with pytest.raises(ValueError, match="outside its range"):
        pc.render("STRIPES", 8, 8, {"freq": 100.0})
    with pytest.raises(ValueError, match="finite"):
        pc.render("STRIPES", 8, 8, {"freq": float("nan")})
    with pytest.raises(ValueError, match="positive integer"):
        pc.render("STRIPES", 0, 8)
    with pytest.raises(ValueError, match="seed"):
        pc.render("PERLIN", 8, 8, seed=-1)
    # periodic parameters wrap instead of raising
    a = np.asarray(pc.render("STRIPES", 16, 16, {"angle_deg": 10.0}))
    b = np.asarray(pc.render("STRIPES", 16, 16, {"angle_deg": 370.0}))
    np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("name", ["STRIPES", "PERLIN", "CORNER", "WORLEY"])
def test_render_batch_equals_loop(name):
    gen = pc.get_generator(name)
    rng = np.random.default_rng(0)
    spec = gen.params[0]
    vals = rng.uniform(spec.lo, spec.hi, 5).astype(np.float32)
    seeds = np.arange(5, dtype=np.uint32) * 7
    batch = np.asarray(pc.render_batch(name, 16, 20, {spec.name: vals}, seeds))
    for i in range(5):
        one = np.asarray(pc.render(name, 16, 20, {spec.name: float(vals[i])}, seed=int(seeds[i])))
        np.testing.assert_allclose(batch[i], one, atol=1e-6)


@pytest.mark.parametrize("name", ["GABOR", "FBM", "STARFIELD", "CORNER"])
def test_jit_matches_eager(name):
    gen = pc.get_generator(name)
    pvec = jnp.asarray(gen.resolve(None))
    coords = G.Coords(16, 16)
    jitted = jax.jit(lambda p: G.render_one(gen, coords, p, jnp.uint32(5)))(pvec)
    with jax.disable_jit():
        eager = G.render_one(gen, coords, pvec, jnp.uint32(5))
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), atol=1e-5)


def test_hash_is_an_avalanche_function():
    x = jnp.arange(1 << 12, dtype=jnp.uint32)
    h = np.asarray(G.hash_u32(x))
    assert len(np.unique(h)) == len(h)  # a bijection on uint32
    bits = np.unpackbits(h.view(np.uint8)).mean()
    assert abs(bits - 0.5) < 0.01
    # pure-Python lowbias32 reference (uint32 wrap-around arithmetic)
    def ref(v):
        v ^= v >> 16
        v = (v * 0x7FEB352D) & 0xFFFFFFFF
        v ^= v >> 15
        v = (v * 0x846CA68B) & 0xFFFFFFFF
        return v ^ (v >> 16)

    for v in [1, 2, 12345, 0xDEADBEEF, 0xFFFFFFFF]:
        assert int(np.asarray(G.hash_u32(jnp.uint32(v)))) == ref(v)


def test_the_large_bank_nests_the_standard_grids():
    """The large bank's claim 'the standard bank is its coarse level' holds: every refined grid
    holds the standard grid at its even levels, seeds extend."""
    refined = G.refined
    grew = 0
    for g in G.list_generators():
        big = refined(g)
        assert big.n_seeds == 4 * g.n_seeds and big.id == g.id
        for ps, pl in zip(g.params, big.params):
            if pl.levels == ps.levels:
                continue
            grew += 1
            assert not ps.integer and pl.levels == (2 * ps.levels if ps.periodic else 2 * ps.levels - 1)
            np.testing.assert_allclose(pl.grid()[::2], ps.grid(), atol=1e-6)
    assert grew > 20
    assert sum(refined(g).grid_size for g in G.list_generators()) >= 8 * sum(
        g.grid_size for g in G.list_generators())
    assert tuple(refined(g) for g in G.list_generators()) == G.list_generators("large")
    with pytest.raises(ValueError, match="unknown dictionary"):
        G.list_generators("huge")
