"""The atom dictionary's host side: symbol <-> atom index, and the disk cache (no JAX).

The decoder needs only the atoms a stream uses and the seam weights. With a cache folder set
(:func:`set_dictionary_cache`; the command line sets ``~/.cache/pc15jax/dictionaries``) it reads
them from the file the encoder's build left there, so decoding neither imports JAX nor renders a
generator. The file name is keyed by everything that shapes the atoms: tile, overlap, the float32
seam parameters, seed, the bank, the source of the bank, its render functions and the builder,
and the versions of JAX, jaxlib and NumPy. Atoms are always rendered on the CPU, so the key needs
no backend and every backend codes with the same atoms. A file that does not match its key's
digest is rebuilt, never trusted.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
from importlib import metadata
from pathlib import Path

import numpy as np

from . import genspec

__all__ = ["DISK_FORMAT", "FIELDS", "set_dictionary_cache", "cache_folder", "default_cache_folder",
           "use_default_cache_unless_set", "cache_path", "load_arrays",
           "save_arrays", "bank_offsets", "atom_index"]

DISK_FORMAT = 2  # 2: atoms rendered on the CPU, key without a backend
FIELDS = ("atoms", "sw", "searchable", "gen_id", "param_idx", "seed_sym", "offsets", "coarse", "neighbours")
_SOURCES = ("genspec.py", "generators.py", "dictionary.py", "dictcache.py")
_folder: list = [os.environ.get("PC15_DICT_CACHE") or None]  # folder, or None: in memory only


def set_dictionary_cache(folder) -> None:
    """Keep built dictionaries on disk in ``folder`` (None: in memory only, the library default;
    the command line uses ``~/.cache/pc15jax/dictionaries``, ``PC15_DICT_CACHE`` overrides)."""
    _folder[0] = None if folder is None else str(folder)


def cache_folder() -> str | None:
    return _folder[0]


def default_cache_folder() -> str:
    """The applications' cache folder (the command line's, the Pillow plugin's): ``PC15_DICT_CACHE``,
    else ``$XDG_CACHE_HOME/pc15jax/dictionaries`` (``~/.cache/pc15jax/dictionaries``)."""
    from shared_runtime import user_cache_dir

    return user_cache_dir("PC15_DICT_CACHE", "pc15jax", "dictionaries")


def use_default_cache_unless_set() -> None:
    """For applications: the default cache folder, unless the library user chose one already."""
    if _folder[0] is None:
        _folder[0] = default_cache_folder()


@functools.lru_cache(maxsize=1)
def _fingerprint() -> bytes:
    """Versions and sources every cached file depends on."""
    def version(pkg):
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    h = hashlib.sha256(json.dumps([DISK_FORMAT, version("jax"), version("jaxlib"), np.__version__]).encode())
    here = Path(__file__).parent
    for name in _SOURCES:
        h.update((here / name).read_bytes())
    return h.digest()


def disk_key(tile: int, overlap: int, gamma: float, power: float, seed: int, bank: str = "standard") -> str:
    h = hashlib.sha256(_fingerprint())
    h.update(json.dumps([tile, overlap, gamma, power, seed, bank]).encode())
    return h.hexdigest()[:32]


def cache_path(tile: int, overlap: int, gamma: float, power: float, seed: int, bank: str = "standard") -> Path | None:
    """The cache file of a dictionary, or None without a cache folder. ``gamma``/``power`` must
    already be float32-rounded (as the stream stores them)."""
    folder = _folder[0]
    if folder is None:
        return None
    name = "dict" if bank == "standard" else f"dict_{bank}"
    return Path(folder) / f"{name}_{tile}_{overlap}_{disk_key(tile, overlap, gamma, power, seed, bank)}.npz"


def load_arrays(path: Path | None, tile: int, fields=FIELDS) -> dict | None:
    """The arrays ``fields`` (default all of :data:`FIELDS`; ``atoms`` always) of a cache file, as
    numpy, or None when absent or not trustworthy. Only the named arrays are read."""
    if path is None or not path.exists():
        return None
    fields = tuple(dict.fromkeys(("atoms",) + tuple(fields)))
    try:
        with np.load(path, allow_pickle=False) as z:
            arrs = {k: np.asarray(z[k]) for k in fields}
            digest = str(z["digest"])
    except Exception:  # truncated (BadZipFile), missing fields, unreadable: rebuild
        return None
    if hashlib.sha256(arrs["atoms"].tobytes()).hexdigest() != digest or arrs["atoms"].shape[1] != tile * tile:
        return None
    return arrs


def save_arrays(path: Path | None, arrs: dict) -> None:
    """Write a cache file atomically (a read-only folder: nothing written, as without a cache)."""
    if path is None:
        return
    from shared_runtime import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, digest=hashlib.sha256(np.asarray(arrs["atoms"]).tobytes()).hexdigest(),
             **{k: np.asarray(arrs[k]) for k in FIELDS})
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError:
        pass


@functools.lru_cache(maxsize=4)
def bank_offsets(bank: str = "standard") -> np.ndarray:
    """First atom index of every generator of ``bank`` (int64 ``[G]``)."""
    sizes = np.asarray([g.grid_size for g in genspec.list_generators(bank)], np.int64)
    return np.concatenate([[0], np.cumsum(sizes)[:-1]])


def atom_index(bank: str, gen_id, param_idx, seed_sym) -> np.ndarray:
    """Symbols -> atom indices (int64). ``param_idx`` is ``[..., MAX_PARAMS]``. ValueError for a
    symbol outside its generator's grid."""
    gen_id = np.asarray(gen_id, np.int64)
    param_idx = np.asarray(param_idx, np.int64)
    seed_sym = np.asarray(seed_sym, np.int64)
    offsets = bank_offsets(bank)
    out = np.zeros(gen_id.shape, np.int64)
    for g in genspec.list_generators(bank):
        sel = gen_id == g.id
        if not np.any(sel):
            continue
        coords = [param_idx[..., i][sel] for i in range(len(g.params))]
        if g.seeded:
            coords.append(seed_sym[sel])
        shape = g.grid_shape
        for c, n in zip(coords, shape):
            if np.any((c < 0) | (c >= n)):
                raise ValueError(f"symbol out of range for generator {g.name}")
        local = np.ravel_multi_index(coords, shape) if shape else np.zeros(int(sel.sum()), np.int64)
        out[sel] = offsets[g.id] + local
    return out
