"""PC15: a procedural tile codec in JAX.

An image is a program: for each overlapping tile, the best (generator, quantised parameters,
seed) with a gain and an offset, chosen by a rate-distortion search that runs as jitted,
vmapped JAX (matrix products on CPU, GPU and TPU alike).

Examples:
  >>> import pc15jax as pc
  >>> [g.name for g in pc.list_generators()][:3]
  ['FLAT', 'STRIPES', 'WAVES']
"""

import importlib

from pc15jax.bitstream import BitstreamError, RansTable, build_rans_tables, rans_decode, rans_encode
from pc15jax.bitstream.container import StreamHeader, TileRec

# The package imports only what its host side needs; every other name loads its module (and JAX)
# on first use, so that ``python -m pc15jax decode`` and ``import pc15jax.bitstream`` start fast.
_LAZY = {
    "AiHooks": "pc15jax._src.hooks",
    "AtomsResult": "pc15jax._src.search",
    "CodecConfig": "pc15jax._src.config",
    "Dictionary": "pc15jax._src.dictionary",
    "Generator": "pc15jax._src.genspec",
    "HOOK_PRESETS": "pc15jax._src.hooks",
    "HeuristicHooks": "pc15jax._src.hooks",
    "ParamSpec": "pc15jax._src.genspec",
    "PathsConfig": "pc15jax._src.env",
    "RateModel": "pc15jax._src.score",
    "SEARCH_MODES": "pc15jax._src.config",
    "SearchOutput": "pc15jax._src.pipeline",
    "SearchParams": "pc15jax._src.search",
    "SearchResult": "pc15jax._src.search",
    "SearchTables": "pc15jax._src.search",
    "TileGridCfg": "pc15jax._src.tilegrid",
    "TileSpec": "pc15jax._src.tilegrid",
    "TileSymbols": "pc15jax._src.search",
    "blend": "pc15jax._src.tiling",
    "build_dictionary": "pc15jax._src.dictionary",
    "decode": "pc15jax._src.decoder",
    "decode_native": "pc15jax._src.decoder",
    "decode_y": "pc15jax._src.decoder",
    "default_tables": "pc15jax._src.search",
    "dictionary_for": "pc15jax._src.search",
    "encode": "pc15jax._src.codec",
    "encode_y": "pc15jax._src.codec",
    "encode_y_with_hooks": "pc15jax._src.codec",
    "env_summary": "pc15jax._src.env",
    "extract_tiles": "pc15jax._src.tiling",
    "get_generator": "pc15jax._src.genspec",
    "hooks_from_name": "pc15jax._src.hooks",
    "ladder_geometry": "pc15jax._src.codec",
    "list_generators": "pc15jax._src.genspec",
    "make_tables": "pc15jax._src.search",
    "mse": "pc15jax._src.metrics",
    "psnr": "pc15jax._src.metrics",
    "rd_cost": "pc15jax._src.score",
    "read_bitstream": "pc15jax._src.decoder",
    "reconstruct_tiles": "pc15jax._src.search",
    "render": "pc15jax._src.generators",
    "render_batch": "pc15jax._src.generators",
    "seam_penalty_mask": "pc15jax._src.tilegrid",
    "search_atoms": "pc15jax._src.search",
    "search_image": "pc15jax._src.pipeline",
    "search_tiles": "pc15jax._src.search",
    "ssim": "pc15jax._src.metrics",
    "stream_info": "pc15jax._src.decoder",
    "tile_distortion": "pc15jax._src.score",
    "tile_image": "pc15jax._src.tilegrid",
    "tile_starts": "pc15jax._src.tilegrid",
    "tile_symbols": "pc15jax._src.search",
    "uniform_rate_model": "pc15jax._src.score",
    "write_bitstream": "pc15jax._src.codec",
}


def __getattr__(name):
    if name == "_src":  # pc._src.<module> for code that reaches into the internals
        importlib.import_module("pc15jax._src.codec")
        return globals()["_src"]
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'pc15jax' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


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
