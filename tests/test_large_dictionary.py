"""The large dictionary as a coding tool: its atoms, its symbol tables, its streams."""

from __future__ import annotations

import numpy as np
import pytest

import pc15jax as pc
from pc15jax._src import generators as G
from pc15jax._src.codec import stream_bank, symbol_model
from pc15jax._src.dictionary import get_dictionary
from pc15jax.bitstream.errors import BitstreamError
from pc15jax.bitstream.models import _counts

CFG = pc.CodecConfig(tile=8, overlap=1, lambda_rd=0.1, dictionary="large")


@pytest.fixture(scope="module")
def banks():
    args = (CFG.tile, CFG.overlap, CFG.gamma_seam, CFG.seam_power, CFG.seed)
    return get_dictionary(*args), get_dictionary(*args, bank="large")


def _in_large(std, big) -> np.ndarray:
    """Every standard atom's index in the large bank: its symbols at their fine levels (2 i on a
    refined grid)."""
    fine = std.param_idx.copy()
    for g in G.list_generators():
        sel = std.gen_id == g.id
        for i, (ps, pl) in enumerate(zip(g.params, G.list_generators("large")[g.id].params)):
            if pl.levels != ps.levels:
                fine[sel, i] *= 2
    return big.atom_index(std.gen_id, fine, std.seed_sym)


def test_the_standard_atoms_are_the_large_banks_coarse_level(banks):
    std, big = banks
    assert big.bank == "large" and std.bank == "standard" and big.size > 7 * std.size
    idx = _in_large(std, big)
    np.testing.assert_allclose(np.asarray(big.atoms)[idx], np.asarray(std.atoms), atol=2e-6)
    np.testing.assert_array_equal(big.searchable[idx], std.searchable)


def test_large_streams_decode_to_the_reconstruction_and_say_so(camera):
    img = (camera[96:160, 160:240] * 255).astype(np.uint8)
    for lf in (True, False):
        enc = pc.encode_y(img, CFG.replace(loop_filter=lf))
        info = pc.stream_info(enc["bitstream"])
        assert "large_dictionary" in info["tools"]
        assert np.array_equal(pc.decode_y(enc["bitstream"]), enc["recon"])
        h, recs = pc.read_bitstream(enc["bitstream"])
        assert stream_bank(h) == "large"
        assert pc.write_bitstream(h, recs) == enc["bitstream"]  # records round trip on the large grids
    std = pc.encode_y(img, CFG.replace(dictionary="standard"))
    assert "large_dictionary" not in pc.stream_info(std["bitstream"])["tools"]
    rgb = (camera[96:144, 160:224, None] * np.asarray([255, 200, 150])).astype(np.uint8)
    enc = pc.encode(rgb, CFG)
    assert np.array_equal(pc.decode(enc["bitstream"]), enc["recon"])


def test_large_symbol_tables_resample_the_standard_counts():
    np.testing.assert_allclose(_counts({"k": [1.0, 3.0, 5.0]}, "k", 5, resample=True), [1, 2, 3, 4, 5])
    with pytest.raises(BitstreamError, match="must hold 5"):
        _counts({"k": [1.0, 3.0, 5.0]}, "k", 5)
    std, big = symbol_model(CFG.table_id), symbol_model(CFG.table_id, "large")
    edge = G.get_generator("EDGE", "large")
    assert len(big.bits(f"param:{edge.id}:0")) == edge.params[0].levels == 2 * G.get_generator("EDGE").params[0].levels
    assert len(std.bits(f"param:{edge.id}:0")) == G.get_generator("EDGE").params[0].levels


def test_dictionary_validation():
    with pytest.raises(ValueError, match="dictionary must be one of"):
        pc.CodecConfig(dictionary="huge")
    with pytest.raises(ValueError, match="M2 and M3 predict the standard grids"):
        pc.CodecConfig(dictionary="large", ai=pc.AiHooks(selector="m1", param_predictor="m2"))
    assert pc.CodecConfig(dictionary="large", ai=pc.AiHooks.preset("m1")).dictionary == "large"


def test_large_coarse_level_is_the_standard_bank_and_its_cells(banks, camera):
    std, big = banks
    # the coarse atoms are exactly the standard bank's searchable atoms; each cell stays in its generator
    np.testing.assert_array_equal(np.sort(big.coarse), np.sort(_in_large(std, big)[std.searchable]))
    assert np.all(big.neighbours[:, 0] == big.coarse)
    assert np.all(big.gen_id[big.neighbours] == big.gen_id[big.coarse][:, None])
    img = (camera[96:160, 160:240] * 255).astype(np.uint8)
    enc = pc.encode_y(img, CFG.replace(search="coarse_to_fine", loop_filter=False))
    assert np.array_equal(pc.decode_y(enc["bitstream"]), enc["recon"])
