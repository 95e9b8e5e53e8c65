"""PC15: a procedural tile codec in JAX.

An image is a program: for each overlapping tile, the best (generator, quantised parameters,
seed) with a gain and an offset, chosen by a rate-distortion search that runs as jitted,
vmapped JAX (matrix products on CPU, GPU and TPU alike).

Examples:
  >>> import pc15jax as pc
  >>> [g.name for g in pc.list_generators()][:3]
  ['FLAT', 'STRIPES', 'WAVES']
"""

from pc15jax.bitstream import BitstreamError, RansTable, build_rans_tables, rans_decode, rans_encode
from pc15jax.bitstream.container import StreamHeader, TileRec
from pc15jax._src.codec import (
    decode,
    decode_native,
    decode_y,
    encode,
    encode_y,
    encode_y_with_hooks,
    ladder_geometry,
    read_bitstream,
    stream_info,
    write_bitstream,
)
from pc15jax._src.config import SEARCH_MODES, CodecConfig
from pc15jax._src.env import PathsConfig, env_summary
from pc15jax._src.hooks import HOOK_PRESETS, AiHooks, HeuristicHooks, hooks_from_name
from pc15jax._src.dictionary import Dictionary, build_dictionary
from pc15jax._src.generators import Generator, ParamSpec, get_generator, list_generators, render, render_batch
from pc15jax._src.metrics import mse, psnr, ssim
from pc15jax._src.pipeline import SearchOutput, search_image
from pc15jax._src.score import RateModel, rd_cost, tile_distortion, uniform_rate_model
from pc15jax._src.search import (
    AtomsResult,
    SearchParams,
    SearchResult,
    SearchTables,
    TileSymbols,
    default_tables,
    dictionary_for,
    make_tables,
    reconstruct_tiles,
    search_atoms,
    search_tiles,
    tile_symbols,
)
from pc15jax._src.tiling import TileGridCfg, TileSpec, blend, extract_tiles, seam_penalty_mask, tile_image, tile_starts

__version__ = "0.1.0"

__all__ = (
    "AiHooks",
    "AtomsResult",
    "SearchParams",
    "SearchTables",
    "default_tables",
    "dictionary_for",
    "make_tables",
    "search_atoms",
    "BitstreamError",
    "HOOK_PRESETS",
    "HeuristicHooks",
    "PathsConfig",
    "encode_y_with_hooks",
    "env_summary",
    "hooks_from_name",
    "CodecConfig",
    "RansTable",
    "StreamHeader",
    "TileRec",
    "build_rans_tables",
    "decode",
    "decode_native",
    "decode_y",
    "encode",
    "encode_y",
    "ladder_geometry",
    "stream_info",
    "rans_decode",
    "rans_encode",
    "read_bitstream",
    "write_bitstream",
    "Dictionary",
    "Generator",
    "ParamSpec",
    "RateModel",
    "SEARCH_MODES",
    "SearchOutput",
    "SearchResult",
    "TileGridCfg",
    "TileSpec",
    "TileSymbols",
    "blend",
    "build_dictionary",
    "extract_tiles",
    "get_generator",
    "list_generators",
    "mse",
    "psnr",
    "rd_cost",
    "reconstruct_tiles",
    "render",
    "render_batch",
    "seam_penalty_mask",
    "search_image",
    "search_tiles",
    "ssim",
    "tile_distortion",
    "tile_image",
    "tile_starts",
    "tile_symbols",
    "uniform_rate_model",
)
