"""Host-side entropy coding and the PC15 container: numpy and the standard library only (never jax).

Symbols chosen on the accelerator are coded here, so streams can be parsed and inspected on a
machine without one.
"""

from .errors import BitstreamError
from .rans import RANS_L, RansTable, build_rans_tables, lanes_for, rans_decode, rans_encode

__all__ = ["BitstreamError", "RANS_L", "RansTable", "build_rans_tables", "lanes_for", "rans_decode", "rans_encode"]
