"""The PC15 v15 container: header with CRC32, two rANS payloads with CRC32 (numpy + stdlib only).

Layout (little-endian)::

    header  'PC15' | u8 version=15 | u8 colour layout (0 = Y) | u32 H | u32 W | u16 tile | u16 overlap
            | u8 window (0 hann, 1 tukey, 2 kaiser) | f32 window parameter (NaN = default)
            | u32 seed | f32 gain_step | f32 dc_step | f32 gamma_seam | f32 seam_power
            | u8 len + table id (ASCII) | u16 len + encoder meta (canonical JSON, nothing run-dependent)
            | [only when bit 7 of the layout byte is set: u16 coding tools (bit i = ``TOOLS[i]``)
               | u16 len + the tools' parameters]
            | u32 CRC32 of everything above
    body    per plane (Y; or Y, Cb, Cr for YCbCr420, chroma planes of ceil(H/2) x ceil(W/2)):
              u32 symbols in A | u32 words in A | u32 symbols in B | u32 words in B
              | [with the ``transform_residual`` tool: u32 symbols in R | u32 words in R]
              | A words | B words [| R words]
            then u32 CRC32 of the whole body

A stream with no coding tools (every stream written before they existed) has bit 7 of the layout
byte clear and no tools block: the two read alike.

Every check happens before any allocation that depends on the stream: sizes are bounded by
``MAX_DIM``/``MAX_PIXELS`` and by the bytes actually present. Every malformed input raises
:class:`BitstreamError`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
import zlib
from typing import Any


from .errors import BitstreamError

__all__ = ["StreamHeader", "TileRec", "pack_stream", "unpack_stream", "plane_shapes", "MAGIC",
           "VERSION",
           "MAX_DIM", "MAX_PIXELS", "MAX_TILE", "MAX_TILE_SAMPLES", "WINDOW_CODES", "LAYOUTS", "TOOLS"]

MAGIC = b"PC15"
VERSION = 15
MAX_DIM = 1 << 16  # each side, pixels
MAX_PIXELS = 1 << 28  # H * W
MAX_TILE = 256  # the decoder renders atoms at tile size: bounds its dictionary (~1.1 GB at 256)
MAX_TILE_SAMPLES = 1 << 30  # tiles * tile**2: bounds the decoded tile stack (4 GiB of float32)
WINDOW_CODES = ("hann", "tukey", "kaiser")
LAYOUTS = ("Y", "YCbCr420")  # luma only; luma + chroma subsampled 2x2
TOOLS = ("loop_filter", "large_dictionary", "block_map", "adaptive_coding", "transform_residual")  # coding tools, by bit of the header's tools field
_TOOLS_FLAG = 0x80  # layout byte: a tools block follows the meta
_FIXED = struct.Struct("<4sBBIIHHBfIffff")


@dataclasses.dataclass(frozen=True)
class StreamHeader:
    """Everything the decoder needs besides the symbols. Frozen; ``meta`` is a JSON-able dict."""

    H: int
    W: int
    tile: int
    overlap: int
    window: str = "hann"
    window_param: float | None = None
    seed: int = 0
    gain_step: float = 1.0 / 32.0
    dc_step: float = 1.0 / 128.0
    gamma_seam: float = 0.25
    seam_power: float = 1.5
    table_id: str = "pc15-v2"
    layout: str = "Y"
    meta: Any = dataclasses.field(default_factory=dict)
    version: int = VERSION
    tools: int = 0
    tool_data: bytes = b""

    def __post_init__(self):
        check_geometry(self.H, self.W, self.tile, self.overlap, exc=ValueError)
        if self.window not in WINDOW_CODES:
            raise ValueError(f"window must be one of {WINDOW_CODES}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}")
        if not 0 <= self.tools < (1 << len(TOOLS)):
            raise ValueError(f"tools must be a bit set of {TOOLS}, got {self.tools}")
        if len(self.tool_data) > 65535 or (self.tool_data and not self.tools):
            raise ValueError("tool data needs a tool and at most 65535 bytes")

    @property
    def tool_names(self) -> tuple[str, ...]:
        """The coding tools this stream uses, by name."""
        return tuple(n for i, n in enumerate(TOOLS) if self.tools >> i & 1)


def check_geometry(H, W, tile, overlap, exc=BitstreamError):
    if not (1 <= H <= MAX_DIM and 1 <= W <= MAX_DIM) or H * W > MAX_PIXELS:
        raise exc(f"image size {H}x{W} exceeds the maximum ({MAX_DIM} per side, {MAX_PIXELS} pixels)")
    if not 8 <= tile <= MAX_TILE:
        raise exc(f"tile size {tile} outside [8, {MAX_TILE}]")
    if not 0 <= overlap < tile:
        raise exc(f"overlap {overlap} must lie in [0, tile)")
    ny, nx = grid_shape(H, W, tile, overlap)
    if ny * nx * tile * tile > MAX_TILE_SAMPLES:
        raise exc(f"{ny * nx} tiles of {tile}x{tile} exceed the maximum of {MAX_TILE_SAMPLES} tile samples")


def grid_shape(H: int, W: int, tile: int, overlap: int) -> tuple[int, int]:
    """Tile rows and columns (the same rule as ``pc15jax.tile_starts``)."""
    stride = tile - overlap
    f = lambda L: 1 if L <= tile else -(-(L - tile) // stride) + 1  # noqa: E731
    return f(H), f(W)


@dataclasses.dataclass(frozen=True)
class TileRec:
    """One tile's record, as users inspect streams.

    Attributes:
      tile_id: raster index. gen_id: generator id of the first atom (0 = FLAT: DC only). qv_id:
      index of its quantised parameter vector within the generator's grid (C order over its
      searched parameters). seed: its seed symbol. rec_flags: bit 0 set when the tile has an atom.
      payload_fmt, payload: ``1`` and the further atoms of the tile, each packed little-endian as
      ``u8 gen_id, u32 qv_id, u8 seed, i16 gain_q`` (``0`` and ``b""`` for one atom or none).
      gain_q: quantised amplitude of the first atom. offset_q: quantised DC.
    """

    tile_id: int
    gen_id: int
    qv_id: int
    seed: int
    rec_flags: int = 0
    payload_fmt: int = 0
    payload: bytes = b""
    gain_q: int = 0
    offset_q: int = 0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["payload"] = self.payload.hex()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TileRec":
        d = dict(d)
        p = d.get("payload", b"")
        d["payload"] = bytes.fromhex(p) if isinstance(p, str) else bytes(p)
        return cls(**d)


def _canonical_meta(meta) -> bytes:
    try:
        b = json.dumps(meta, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise ValueError(f"header meta must be JSON-serialisable: {e}") from None
    if len(b) > 65535:
        raise ValueError("header meta is too large (> 65535 bytes as JSON)")
    return b


def plane_shapes(layout: str, H: int, W: int) -> list[tuple[int, int]]:
    """Sizes of the coded planes of a layout."""
    if layout == "Y":
        return [(H, W)]
    c = ((H + 1) // 2, (W + 1) // 2)
    return [(H, W), c, c]


def _has_residual(tools: int) -> bool:
    return bool(tools >> TOOLS.index("transform_residual") & 1)


def pack_stream(h: StreamHeader, planes) -> bytes:
    """Header + one ``(n_a, a_words, n_b, b_words)`` payload per plane (with the
    ``transform_residual`` tool ``(n_a, a_words, n_b, b_words, n_r, r_words)``) -> bytes."""
    planes = list(planes)
    if len(planes) != len(plane_shapes(h.layout, h.H, h.W)):
        raise ValueError(f"layout {h.layout} needs {len(plane_shapes(h.layout, h.H, h.W))} planes, got {len(planes)}")
    resid = _has_residual(h.tools)
    if any(len(p) != (6 if resid else 4) for p in planes):
        raise ValueError("a plane's payload is (n_a, A, n_b, B), with the transform_residual tool (..., n_r, R)")
    wp = float("nan") if h.window_param is None else float(h.window_param)
    tid = h.table_id.encode("ascii")
    if not 0 < len(tid) < 256:
        raise ValueError("table id must be 1-255 ASCII characters")
    meta = _canonical_meta(h.meta)
    layout = LAYOUTS.index(h.layout) | (_TOOLS_FLAG if h.tools else 0)
    head = _FIXED.pack(MAGIC, VERSION, layout, h.H, h.W, h.tile, h.overlap,
                       WINDOW_CODES.index(h.window), wp, h.seed, h.gain_step, h.dc_step, h.gamma_seam, h.seam_power)
    head += struct.pack("<B", len(tid)) + tid + struct.pack("<H", len(meta)) + meta
    if h.tools:
        head += struct.pack("<HH", h.tools, len(h.tool_data)) + bytes(h.tool_data)
    head += struct.pack("<I", zlib.crc32(head))
    parts = []
    for p in planes:
        n_a, a, n_b, b = p[:4]
        parts.append(struct.pack("<IIII", n_a, len(a) // 2, n_b, len(b) // 2))
        if resid:
            parts.append(struct.pack("<II", p[4], len(p[5]) // 2))
        parts += [a, b] + ([p[5]] if resid else [])
    body = b"".join(parts)
    return head + body + struct.pack("<I", zlib.crc32(body))


def unpack_stream(data: bytes) -> tuple[StreamHeader, list[tuple]]:
    """Bytes -> (header, one ``(n_a, a_words, n_b, b_words)`` per plane, with the
    ``transform_residual`` tool ``(n_a, a_words, n_b, b_words, n_r, r_words)``). Raises BitstreamError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < 4 or data[:4] != MAGIC:
        raise BitstreamError("not a PC15 stream (wrong magic)")
    if len(data) < 5:
        raise BitstreamError("truncated header")
    if data[4] != VERSION:
        raise BitstreamError(f"unsupported PC15 version {data[4]} (this decoder reads version {VERSION})")
    if len(data) < _FIXED.size + 1:
        raise BitstreamError("truncated header")
    (_, _, layout, H, W, tile, overlap, window, wp, seed, gain_step, dc_step, gamma, power) = _FIXED.unpack_from(data)
    pos = _FIXED.size
    n_tid = data[pos]
    pos += 1
    if len(data) < pos + n_tid + 2:
        raise BitstreamError("truncated header")
    tid_b = data[pos:pos + n_tid]
    pos += n_tid
    (n_meta,) = struct.unpack_from("<H", data, pos)
    pos += 2
    if len(data) < pos + n_meta + 4:
        raise BitstreamError("truncated header")
    meta_b = data[pos:pos + n_meta]
    pos += n_meta
    tools, tool_data = 0, b""
    if layout & _TOOLS_FLAG:
        if len(data) < pos + 4:
            raise BitstreamError("truncated header")
        tools, n_tool = struct.unpack_from("<HH", data, pos)
        pos += 4
        if len(data) < pos + n_tool + 4:
            raise BitstreamError("truncated header")
        tool_data = data[pos:pos + n_tool]
        pos += n_tool
    (crc,) = struct.unpack_from("<I", data, pos)
    if zlib.crc32(data[:pos]) != crc:
        raise BitstreamError("header CRC mismatch (corrupt header)")
    pos += 4
    # The CRC matched: now validate what the fields mean.
    if tools >> len(TOOLS):
        raise BitstreamError(f"stream uses coding tools this decoder does not know (tools field {tools:#x})")
    if layout & _TOOLS_FLAG and not tools:
        raise BitstreamError("header has a tools block that names no tool")
    layout &= ~_TOOLS_FLAG
    if layout >= len(LAYOUTS):
        raise BitstreamError(f"unknown colour layout code {layout}")
    if window >= len(WINDOW_CODES):
        raise BitstreamError(f"unknown window code {window}")
    check_geometry(H, W, tile, overlap)
    for name, v in (("gain_step", gain_step), ("dc_step", dc_step)):
        if not (math.isfinite(v) and v > 0):
            raise BitstreamError(f"invalid {name} {v}")
    if not (math.isfinite(gamma) and gamma >= 0 and math.isfinite(power) and power > 0):
        raise BitstreamError("invalid seam parameters")
    if not (math.isnan(wp) or (math.isfinite(wp) and wp >= 0)):
        raise BitstreamError("invalid window parameter")
    try:
        tid = tid_b.decode("ascii")
        meta = json.loads(meta_b.decode("utf-8")) if n_meta else {}
    except (UnicodeDecodeError, ValueError):
        raise BitstreamError("corrupt header strings") from None
    shapes = plane_shapes(LAYOUTS[layout], H, W)
    body_start = pos
    planes = []
    for ph, pw in shapes:
        if len(data) < pos + 16 + 4:
            raise BitstreamError("truncated body")
        n_a, w_a, n_b, w_b = struct.unpack_from("<IIII", data, pos)
        pos += 16
        n_r = w_r = 0
        if _has_residual(tools):
            if len(data) < pos + 8 + 4:
                raise BitstreamError("truncated body")
            n_r, w_r = struct.unpack_from("<II", data, pos)
            pos += 8
        end = pos + 2 * (w_a + w_b + w_r)
        if end + 4 > len(data):
            raise BitstreamError("truncated body")
        ny, nx = grid_shape(ph, pw, tile, overlap)
        if n_a < ny * nx and not tools >> TOOLS.index("block_map") & 1:  # block maps: the decoder checks
            raise BitstreamError("stream holds fewer symbols than tiles")
        b_end = pos + 2 * (w_a + w_b)
        pl = (n_a, data[pos:pos + 2 * w_a], n_b, data[pos + 2 * w_a:b_end])
        planes.append(pl + (n_r, data[b_end:end]) if _has_residual(tools) else pl)
        pos = end
    if pos + 4 < len(data):
        raise BitstreamError(f"{len(data) - pos - 4} trailing bytes after the stream")
    (crc,) = struct.unpack_from("<I", data, pos)
    if zlib.crc32(data[body_start:pos]) != crc:
        raise BitstreamError("payload CRC mismatch (corrupt data)")
    h = StreamHeader(H=H, W=W, tile=tile, overlap=overlap, window=WINDOW_CODES[window],
                     window_param=None if math.isnan(wp) else float(wp), seed=seed, gain_step=gain_step,
                     dc_step=dc_step, gamma_seam=gamma, seam_power=power, table_id=tid, layout=LAYOUTS[layout],
                     meta=meta, tools=tools, tool_data=tool_data)
    return h, planes
