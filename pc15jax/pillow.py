"""Pillow plugin: ``import pc15jax.pillow`` registers the PC15 format with Pillow::

    import pc15jax.pillow
    from PIL import Image

    Image.open("photo.png").save("photo.pc15", lambda_rd=0.3)   # or target_bpp=0.25, tile=12, ...
    im = Image.open("photo.pc15")

Saving takes any :class:`~pc15jax.CodecConfig` field as a keyword (``lambda_rd``, ``target_bpp``,
``tile``, ``overlap``, ``loop_filter``, ...); ``target_bpp`` without ``tile`` picks the rate
ladder's geometry, as the command line does. Grayscale images (modes ``1``, ``L``, ``I``, ``F``...)
are coded as luma, everything else as colour (YCbCr 4:2:0); an alpha channel is not coded: a
warning says so. Opening reads only the header (size, mode); the pixels are decoded on
``load()`` and are what :func:`pc15jax.decode` gives, rounded to 8 bits. A corrupt stream raises
``OSError`` from ``load()`` with the decoder's message. Decoding runs on the host and, with the
dictionary in the disk cache the command line also uses (``~/.cache/pc15jax/dictionaries``, unless
``set_dictionary_cache`` chose another folder), imports no JAX.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
from PIL import Image, ImageFile

from .bitstream.container import _FIXED, LAYOUTS, MAGIC, VERSION

__all__ = ["FORMAT", "PC15ImageFile"]

FORMAT = "PC15"
_LAYOUT_MASK = 0x7F  # the layout byte's high bit flags the tools block


def _accept(prefix: bytes) -> bool:
    return prefix[:4] == MAGIC and len(prefix) > 4 and prefix[4] == VERSION


class PC15ImageFile(ImageFile.ImageFile):
    """A ``.pc15`` stream as a Pillow image (``L`` for luma streams, ``RGB`` for colour ones)."""

    format = FORMAT
    format_description = "PC15 procedural tile codec"

    def _open(self) -> None:
        head = self.fp.read(_FIXED.size)
        if len(head) < _FIXED.size or not _accept(head):
            raise SyntaxError("not a PC15 stream")
        _, _, layout, H, W = _FIXED.unpack_from(head)[:5]
        layout &= _LAYOUT_MASK
        if layout >= len(LAYOUTS) or not (H > 0 and W > 0):
            raise SyntaxError("not a PC15 stream (bad layout or size)")
        self._mode = "L" if LAYOUTS[layout] == "Y" else "RGB"
        self._size = (int(W), int(H))
        tile = (FORMAT, (0, 0) + self.size, 0, None)
        self.tile = [ImageFile._Tile(*tile) if hasattr(ImageFile, "_Tile") else tile]  # Pillow < 11: tuples


class _PC15Decoder(ImageFile.PyDecoder):
    _pulls_fd = True

    def decode(self, buffer):
        from ._src.dictcache import use_default_cache_unless_set
        from ._src.decoder import decode_native

        use_default_cache_unless_set()
        self.fd.seek(0)
        data = self.fd.read()
        try:
            img = decode_native(data)
        except ValueError as e:  # BitstreamError: Pillow reports decoder failures as OSError
            raise OSError(f"PC15: {e}") from None
        u8 = np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
        if u8.shape[:2] != (self.state.ysize, self.state.xsize):
            raise OSError("PC15: the stream's size disagrees with its header")
        self.set_as_raw(u8.tobytes())
        return -1, 0


def _config(im: Image.Image):
    from ._src.codec import tile_geometry
    from ._src.config import CodecConfig

    opts = {k: v for k, v in im.encoderinfo.items() if k in {f.name for f in dataclasses.fields(CodecConfig)}}
    ignored = set(im.encoderinfo) - set(opts) - _PILLOW_KEYS
    if ignored:
        raise ValueError(f"PC15: unknown save option(s) {sorted(ignored)}; any CodecConfig field is accepted")
    target = opts.get("target_bpp")
    opts["tile"], opts["overlap"] = tile_geometry(None if target is None else float(target), opts.get("tile"),
                                                  opts.get("overlap"))
    return CodecConfig(**opts)


_PILLOW_KEYS = {"format", "append_images", "save_all", "bitmap_format", "optimize", "exif", "icc_profile", "dpi"}


def _save(im: Image.Image, fp, filename) -> None:
    import pc15jax as pc

    from ._src.dictcache import use_default_cache_unless_set
    from ._src.pilio import coding_mode, has_alpha

    use_default_cache_unless_set()
    cfg = _config(im)
    if has_alpha(im):
        warnings.warn("PC15 codes colour or grey only: the alpha channel is not saved", stacklevel=3)
    mode = coding_mode(im)
    arr = np.asarray(im.convert(mode))
    enc = pc.encode_y(arr, cfg) if mode == "L" else pc.encode(arr, cfg)
    fp.write(enc["bitstream"])


Image.register_open(FORMAT, PC15ImageFile, _accept)
Image.register_decoder(FORMAT, _PC15Decoder)
Image.register_save(FORMAT, _save)
Image.register_extension(FORMAT, ".pc15")
Image.register_mime(FORMAT, "image/x-pc15")
