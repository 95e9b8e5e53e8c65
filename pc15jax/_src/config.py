"""The codec configuration (frozen, validated, hashable)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..bitstream.models import DEFAULT_TABLE_ID
from . import genspec as gens
from .checks import finite as _finite
from .blockmap import check_layers
from .checks import integer as _int
from .hooks import AiHooks, HeuristicHooks
from .tilegrid import WINDOWS, TileGridCfg, resolve_window

__all__ = ["CodecConfig", "SEARCH_MODES", "resolve_config"]

SEARCH_MODES = ("exhaustive", "coarse_to_fine")


@dataclasses.dataclass(frozen=True)
class CodecConfig:
    """Everything that shapes an encoding. Frozen and hashable.

    The rate-distortion cost of a tile candidate is ``J = D + lambda_rd * R / T**2`` with
    ``D = alpha_mix * (1 - SSIM) + (1 - alpha_mix) * MSE`` (pixels in [0, 1], every pixel
    weighted by ``1 + gamma_seam * seam_penalty_mask``) and ``R`` the candidate's bits, so
    ``lambda_rd`` is the distortion one bit per pixel is worth.

    Attributes:
      tile: tile size ``T`` in pixels, 8..256 (the dictionary holds every atom at this size).
      overlap: tile overlap in pixels, ``0 <= overlap < tile``.
      lambda_rd: rate weight (>= 0). Larger -> fewer bits.
      alpha_mix: SSIM share of the distortion, in [0, 1].
      seed: base seed of the noise generators (uint32); per-atom seeds derive from it.
      gamma_seam: seam penalty weight (>= 0).
      seam_power: exponent of the seam penalty ramp (> 0).
      window: blend window, ``"hann"``, ``"tukey"`` or ``"kaiser"``.
      window_params: ``{"alpha": a}`` (tukey) or ``{"beta": b}`` (kaiser); stored as a tuple.
      search: ``"exhaustive"`` (score every atom) or ``"coarse_to_fine"`` (score the even
        grid points, then the grid neighbours of the best ``beam``).
      beam: beam width K of the coarse-to-fine search.
      shortlist: candidates per tile re-ranked with the full cost (SSIM, exact bits).
      gain_step: quantisation step of an atom's amplitude, in pixel RMS units.
      dc_step: quantisation step of the tile offset (DC), in pixel units (>= 1/256).
      max_coef: largest quantised |amplitude| index (<= 1023).
      early_exit: a tile whose DC-only distortion is at most this skips the atom search.
      max_atoms: most atoms per tile (1..16); atoms are added while each lowers ``J``.
      generators: names of the generators the search may use (``None``: all). Decoding
        never depends on it.
      table_id: frozen rANS table set (recorded in the stream; the search's bit costs come from
        the same tables). ``"pc15-v2"`` conditions counts, generators and amplitudes on contexts;
        ``"pc15-v1"`` (no contexts) still encodes and decodes.
      target_bpp: when set, ``encode_y``/``encode`` search ``lambda_rd`` by bisection so the
        stream lands within 3 % of this rate (or as close as the image allows).
      chroma_lambda: the chroma planes are coded with ``lambda_rd * chroma_lambda``.
      loop_filter: fit a Wiener loop filter per plane and signal it where it lowers ``J``
        (:mod:`pc15jax._src.loopfilter`). ``False`` writes the stream the encoder wrote before
        coding tools existed.
      adaptive_coding: code the symbols with backward-adaptive rANS tables (the
        ``adaptive_coding`` tool, :class:`~pc15jax.bitstream.rans.AdaptiveTables`): every table
        starts frozen and follows the symbols it has coded. ``False`` codes with the frozen
        tables, exactly as before the tool existed.
      transform_residual: code what the atoms leave (after the loop filter) as an 8x8 lapped-transform
        residual (the ``transform_residual`` tool, :mod:`pc15jax.bitstream.residual`) with the
        quantiser step ``residual_step * sqrt(lambda)`` (the plane's lambda); the atoms are then
        searched with ``max(lambda, residual_base_lambda)``: they code the image's structure, the
        residual its detail. ``False`` codes exactly as before the tool existed.
      residual_step: the residual's step per ``sqrt(lambda)``, in pixel units of the orthonormal DCT (> 0).
      residual_lapped: the residual's transform is lapped (an orthogonal pre-filter across the 8x8
        block boundaries before the DCT, its transpose after the inverse DCT: Malvar's LOT in
        time-domain form), signalled in the stream; ``False``: the plain block DCT.
      residual_rdoq: the encoder lowers the residual's dead-zone levels where the rate-distortion
        cost falls (:func:`~pc15jax._src.residual_rd.rdoq`); an encoder decision, not a tool.
      residual_base_lambda: the least lambda the atom search runs at with the residual (>= 0).
      ai: search hooks (:class:`~pc15jax.AiHooks` or :class:`~pc15jax.HeuristicHooks`) that
        narrow the search's candidates; ``None`` is the exhaustive search. They never change
        the format: the header meta records which hooks (and weights) were used.
      dictionary: ``"standard"`` (4162 atoms) or ``"large"``: every searched non-integer grid
        about twice as fine and 4x the noise seeds (33,502 atoms, 8.05x).
        ``"large"`` is a coding tool (the header's ``large_dictionary`` bit), whose decoder
        needs the large dictionary too (the command line keeps it in its disk cache).
      block_sizes: ``None`` (one tile grid, ``tile``/``overlap``) or the ``(tile, overlap)`` tile
        layers of the ``block_map`` coding tool (2 or 3; e.g. ``((36, 4), (17, 1), (9, 1))``): every
        ``block_region`` x ``block_region`` region is coded by the layer that gives it the lowest
        ``J`` (:mod:`pc15jax._src.blockmap`). ``tile``/``overlap`` are then not used.
      block_region: region size in pixels, a multiple of every layer's stride.
    """

    tile: int = 16
    overlap: int = 1
    lambda_rd: float = 0.3
    alpha_mix: float = 0.7
    seed: int = 1234
    gamma_seam: float = 0.25
    seam_power: float = 1.5
    window: str = "hann"
    window_params: Any = ()
    search: str = "exhaustive"
    beam: int = 4
    shortlist: int = 4
    gain_step: float = 1.0 / 32.0
    dc_step: float = 1.0 / 128.0
    max_coef: int = 1023
    early_exit: float = 1e-5
    max_atoms: int = 16
    generators: tuple[str, ...] | None = None
    table_id: str = DEFAULT_TABLE_ID
    target_bpp: float | None = None
    chroma_lambda: float = 2.0
    loop_filter: bool = True
    adaptive_coding: bool = True
    transform_residual: bool = False
    residual_step: float = 0.35
    residual_lapped: bool = True
    residual_rdoq: bool = True
    residual_base_lambda: float = 0.6
    ai: Any = None
    dictionary: str = "standard"
    block_sizes: Any = None
    block_region: int = 64

    def __post_init__(self):
        _int("tile", self.tile, 8, 256)
        _int("overlap", self.overlap, 0)
        if self.overlap >= self.tile:
            raise ValueError(f"overlap must be smaller than tile, got overlap={self.overlap} tile={self.tile}")
        _finite("lambda_rd", self.lambda_rd, lo=0.0)
        _finite("alpha_mix", self.alpha_mix, lo=0.0, hi=1.0)
        _int("seed", self.seed, 0, 2**32 - 1)
        _finite("gamma_seam", self.gamma_seam, lo=0.0)
        _finite("seam_power", self.seam_power, lo=0.0, lo_open=True)
        if self.window not in WINDOWS:
            raise ValueError(f"window must be one of {WINDOWS}, got {self.window!r}")
        wp = self.window_params
        # float32 values: the stream stores them so, and the encoder must blend with what the decoder reads
        wp = tuple(sorted((k, float(np.float32(v)) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
                          for k, v in dict(wp).items())) if wp else ()
        resolve_window(self.window, dict(wp), self.tile, self.overlap)
        object.__setattr__(self, "window_params", wp)
        if self.search not in SEARCH_MODES:
            raise ValueError(f"search must be one of {SEARCH_MODES}, got {self.search!r}")
        _int("beam", self.beam, 1)
        _int("shortlist", self.shortlist, 1)
        _finite("gain_step", self.gain_step, lo=0.0, lo_open=True)
        _finite("dc_step", self.dc_step, lo=1.0 / 256.0, hi=1.0)
        _int("max_coef", self.max_coef, 1, 1023)
        _finite("early_exit", self.early_exit, lo=0.0)
        _int("max_atoms", self.max_atoms, 1, 16)
        if self.generators is not None:
            if isinstance(self.generators, str):
                raise ValueError("generators must be a sequence of names, not a single string")
            names = tuple(gens.get_generator(g).name for g in self.generators)
            if not names:
                raise ValueError("generators must name at least one generator (or be None for all)")
            object.__setattr__(self, "generators", names)
        _finite("chroma_lambda", self.chroma_lambda, lo=0.0)
        for name in ("loop_filter", "adaptive_coding", "transform_residual", "residual_lapped", "residual_rdoq"):
            v = getattr(self, name)
            if not isinstance(v, (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {v!r}")
            object.__setattr__(self, name, bool(v))
        _finite("residual_step", self.residual_step, lo=0.0, lo_open=True)
        _finite("residual_base_lambda", self.residual_base_lambda, lo=0.0)
        if self.target_bpp is not None:
            _finite("target_bpp", self.target_bpp, lo=0.0, lo_open=True)
        if self.ai is not None:
            if not isinstance(self.ai, (AiHooks, HeuristicHooks)):
                raise ValueError(f"ai must be an AiHooks, a HeuristicHooks or None, got {type(self.ai).__name__}")
        if not isinstance(self.table_id, str) or not self.table_id:
            raise ValueError(f"table_id must be a non-empty string, got {self.table_id!r}")
        if self.dictionary not in gens.BANKS:
            raise ValueError(f"dictionary must be one of {gens.BANKS}, got {self.dictionary!r}")
        if self.block_sizes is not None:
            object.__setattr__(self, "block_sizes", check_layers(self.block_sizes, self.block_region))
        if (self.dictionary != "standard" and isinstance(self.ai, AiHooks)
                and (self.ai.param_predictor is not None or self.ai.rd_predictor is not None)):
            raise ValueError("M2 and M3 predict the standard grids: with dictionary='large' use the M1 "
                             "selector alone, the heuristic hooks or none")

    @property
    def grid(self) -> TileGridCfg:
        return TileGridCfg(self.tile, self.overlap)

    @property
    def search_lambda(self) -> float:
        """The lambda the atom search runs at: ``lambda_rd``, with the residual tool at least
        ``residual_base_lambda``."""
        return max(self.lambda_rd, self.residual_base_lambda) if self.transform_residual else self.lambda_rd

    @property
    def dc_levels(self) -> int:
        return int(round(1.0 / self.dc_step)) + 1

    def tables_key(self) -> "CodecConfig":
        """The fields that shape the search tables (dictionary, rate model, allowed atoms) only:
        configs that differ in lambda, alpha, the search mode or the target share their tables."""
        d = CodecConfig()
        return dataclasses.replace(d, tile=self.tile, overlap=self.overlap, seed=self.seed,
                                   gamma_seam=self.gamma_seam, seam_power=self.seam_power, dc_step=self.dc_step,
                                   max_coef=self.max_coef, generators=self.generators, table_id=self.table_id,
                                   dictionary=self.dictionary)

    def replace(self, **changes) -> "CodecConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def resolve_config(cfg) -> CodecConfig:
    """``None`` -> ``CodecConfig()``; a ``CodecConfig`` as is; anything else -> ``ValueError``."""
    if cfg is None:
        return CodecConfig()
    if not isinstance(cfg, CodecConfig):
        raise ValueError(f"cfg must be a CodecConfig, got {type(cfg).__name__}")
    return cfg
