"""The per-tile rate-distortion search, as jitted matrix products.

For tiles ``x`` (flattened, ``n = T*T`` pixels) and the dictionary of weighted, offset-free,
unit-norm atoms ``a`` (see :mod:`pc15jax._src.dictionary`):

1. **Closed-form fit.** ``xw = sw * x``; its offset part gives the tile DC ``o`` (weighted mean,
   quantised with ``dc_step``); ``xc`` is the rest. The amplitude of atom ``a`` is
   ``c = <xc, a>``, quantised to ``k = round(c / (gain_step * sqrt(n)))``, and the weighted
   squared error is exactly ``|xc|^2 - c^2 + (c - c_hat)^2 + (o - o_hat)^2 |sw|^2``.
2. **Stage 1 (matmul).** ``C = xc @ atoms.T`` scores every tile against every atom
   (``"exhaustive"``), or against the even grid points only, followed by the +-1 grid
   neighbours of the best ``beam`` (``"coarse_to_fine"``). Candidates are ranked by a proxy of
   ``J`` in which ``1 - SSIM`` is approximated by ``MSE / (2 var(x) + C2)``.
3. **Re-rank.** The ``shortlist`` best candidates and FLAT (DC only) are rendered and scored
   with the full cost: seam-weighted ``alpha (1 - SSIM) + (1 - alpha) MSE`` plus
   ``lambda * bits / n`` under the rate model.
4. **Early exit.** A tile whose DC-only distortion is at most ``early_exit`` is coded FLAT; a
   block made only of such tiles skips the search altogether (``lax.cond``).
5. **Pursuit.** Later stages add one atom to the residual where it lowers ``J``, until no tile
   gains or ``max_atoms``; the loop runs on the device.

The modules: :mod:`.tables` (what the search reads), :mod:`.rd` (RD scoring of one block),
:mod:`.hooked` (the learned / heuristic stage), :mod:`.blocks` (the block scheduler over the
active tiles), :mod:`.pursuit` (stages and the pursuit loop), :mod:`.symbols` (results as stream
symbols). Tile batches are padded to a multiple of ``TILE_BUCKET`` so that images whose tile
counts fall in the same bucket share one compiled program.
"""

from .pursuit import (TILE_BUCKET, AtomsResult, CountGrid, PursuitState, StageSpec, count_context, pad_tiles,
                      pursue, run_stage, search_atoms, search_tiles, stage)
from .rd import SearchResult, StageInput
from .symbols import TileSymbols, reconstruct_tiles, render_symbols, tile_symbols
from .tables import (SearchParams, SearchTables, atom_ssim_tables, default_tables, dictionary_for, generator_layout,
                     make_tables)

__all__ = [
    "AtomsResult",
    "CountGrid",
    "PursuitState",
    "SearchParams",
    "SearchResult",
    "SearchTables",
    "StageInput",
    "StageSpec",
    "TILE_BUCKET",
    "TileSymbols",
    "atom_ssim_tables",
    "count_context",
    "default_tables",
    "dictionary_for",
    "generator_layout",
    "make_tables",
    "pad_tiles",
    "pursue",
    "reconstruct_tiles",
    "render_symbols",
    "run_stage",
    "search_atoms",
    "search_tiles",
    "stage",
    "tile_symbols",
]
