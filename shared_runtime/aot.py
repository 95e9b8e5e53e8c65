"""Compiled programs kept on disk, so that a fresh process neither traces nor lowers them.

JAX's persistent compilation cache spares XLA's compile, but a fresh process still traces and
lowers every program it runs, in order to compute the cache's key: for the command-line tools that
is most of their first-call time (about 1.1 s of a PC15 encode and 2.3 s of the mosaic demo on a
2-core CPU). :func:`jit` is ``jax.jit`` plus an executable cache: once :func:`enable_executable_cache`
names a folder, the first call of a signature compiles the program ahead of time
(``lower(...).compile()``), serialises the executable with
``jax.experimental.serialize_executable``, and later processes load it without tracing.

The key of a program is its function's module and name, the sources of the package it belongs to
(any edit invalidates every entry), the JAX, jaxlib, NumPy, Flax, Optax and chex versions, the
backend and device kind, the JAX options that change a trace (x64, matmul precision, dtype
promotion, ...), the pytree structure, abstract values (shape, dtype, weak type) and sharding specs
of the dynamic arguments, and the static arguments' ``repr``. Where the cache cannot apply, the
call is the plain ``jax.jit`` call, with the same result:

* no folder enabled (library use, tests), or more than one device or process;
* a call made while tracing (the program is inlined in its caller);
* a function that closes over values (a closure over modules is fine);
* a static argument whose ``repr`` is not stable across processes (``<... at 0x...>``);
* a program with a custom call other than LAPACK's (whose kernels the loader registers first);
* an executable that cannot be serialised, or a file that fails to load or run (it is compiled
  again).

Cache files hold the serialised executable and its pytree definitions (``pickle``), like the
native code of JAX's own cache: the folder must be as trusted as that one.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import pickle
import re
import sys
from pathlib import Path

__all__ = ["jit", "enable_executable_cache", "executable_cache_folder", "cache_stats", "device_array"]

_FOLDER: list = [None]
_STATS = {"loaded": 0, "compiled": 0, "plain": 0}
_FORMAT = 1


def enable_executable_cache(folder) -> None:
    """Keep compiled programs of :func:`jit` functions in ``folder`` (created; None turns it off).
    A folder that cannot be created, or ``SHARED_RUNTIME_AOT=0`` in the environment, leaves the
    cache off."""
    if folder is None or os.environ.get("SHARED_RUNTIME_AOT", "1") == "0":
        _FOLDER[0] = None
        return
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        _FOLDER[0] = None
        return
    _FOLDER[0] = Path(folder)


def executable_cache_folder():
    """The enabled folder, or None."""
    return _FOLDER[0]


def cache_stats() -> dict:
    """Calls of this process that loaded an executable, compiled one, or went to plain ``jax.jit``."""
    return dict(_STATS)


@functools.lru_cache(maxsize=None)
def _package_digest(module: str) -> bytes:
    """sha256 of every ``.py`` file of the top-level package of ``module`` (sorted by path)."""
    top = sys.modules.get(module.split(".")[0])
    h = hashlib.sha256()
    root = Path(getattr(top, "__file__", "") or "").parent if top is not None else None
    if root is None or not root.is_dir():
        h.update(module.encode())
        return h.digest()
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.digest()


@functools.lru_cache(maxsize=1)
def _runtime() -> tuple | None:
    """(versions, backend, device kind, x64) -- or None where the cache does not apply (several
    devices or processes: their programs carry device assignments)."""
    import jax

    if jax.process_count() != 1 or jax.device_count() != 1:
        return None
    import jaxlib

    from importlib import metadata

    def version(pkg):  # libraries whose code a traced program may run (numpy constants, Flax models)
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    d = jax.devices()[0]
    return (_FORMAT, jax.__version__, getattr(jaxlib, "__version__", ""), d.platform, d.device_kind,
            tuple(version(p) for p in ("numpy", "flax", "optax", "chex")))


_CONFIG_KEYS = ("jax_enable_x64", "jax_default_matmul_precision", "jax_numpy_dtype_promotion",
                "jax_numpy_rank_promotion", "jax_debug_nans", "jax_debug_infs", "jax_default_prng_impl",
                "jax_threefry_partitionable")


def _config_key() -> tuple:
    """The JAX options that change what a traced program computes."""
    import jax

    return tuple((k, str(getattr(jax.config, k, None))) for k in _CONFIG_KEYS)


def _keyable(fun) -> bool:
    """Whether a function's program follows from its source and arguments alone: a plain function
    whose closure holds nothing but modules (a closure over values could trace differently with the
    same arguments)."""
    import types

    if not isinstance(fun, types.FunctionType):
        return False
    try:
        return all(isinstance(c.cell_contents, types.ModuleType) for c in (fun.__closure__ or ()))
    except ValueError:  # a cell not yet filled
        return False


@functools.lru_cache(maxsize=1)
def _jax_jit():
    import jax

    return jax.jit


def _stable(r: str) -> bool:
    return " at 0x" not in r


class _Jit:
    """A ``jax.jit`` function whose compiled programs may be loaded from :func:`enable_executable_cache`'s folder."""

    def __init__(self, fun, jit_kwargs: dict):
        self._jit = _jax_jit()(fun, **jit_kwargs)
        names = jit_kwargs.get("static_argnames", ()) or ()
        nums = jit_kwargs.get("static_argnums", ()) or ()
        names = {names} if isinstance(names, str) else set(names)
        nums = {nums} if isinstance(nums, int) else set(nums)
        try:
            params = [p for p in inspect.signature(fun).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        except (TypeError, ValueError):
            params = []
        nums |= {i for i, p in enumerate(params) if p.name in names}
        names |= {params[i].name for i in nums if i < len(params)}
        self._static_nums, self._static_names = frozenset(nums), frozenset(names)
        self._positional = tuple(p.name for p in params)
        self._name = f"{getattr(fun, '__module__', '?')}.{getattr(fun, '__qualname__', repr(fun))}"
        self._keyable = _keyable(fun)
        self._exes: dict = {}
        functools.update_wrapper(self, fun)

    def __getattr__(self, name):  # lower, trace, eval_shape, ... of the jitted function
        return getattr(self._jit, name)

    def __get__(self, obj, objtype=None):  # as a method: bind like a function
        return self if obj is None else functools.partial(self, obj)

    def __call__(self, *args, **kwargs):
        if _FOLDER[0] is None or not self._keyable:
            return self._jit(*args, **kwargs)
        return self._cached_call(args, kwargs)

    def _cached_call(self, args, kwargs):
        import jax

        rt = _runtime()
        if rt is None or jax.config.jax_disable_jit:
            _STATS["plain"] += 1
            return self._jit(*args, **kwargs)
        dyn_args = tuple(a for i, a in enumerate(args) if i not in self._static_nums)
        dyn_kwargs = {k: v for k, v in kwargs.items() if k not in self._static_names}
        named = lambda i: self._positional[i] if i < len(self._positional) else f"#{i}"  # noqa: E731
        statics = tuple(sorted([(named(i), a) for i, a in enumerate(args) if i in self._static_nums]
                               + [(k, v) for k, v in kwargs.items() if k in self._static_names],
                               key=lambda kv: kv[0]))
        leaves, tree = jax.tree.flatten((dyn_args, dyn_kwargs))
        if any(isinstance(x, jax.core.Tracer) for x in leaves):
            return self._jit(*args, **kwargs)
        try:
            sig = (tree, tuple(_signature(x) for x in leaves), statics)
            exe = self._exes.get(sig)
        except TypeError:  # an unhashable static argument: jax.jit says what is wrong
            return self._jit(*args, **kwargs)
        if exe is None:
            exe = self._exes[sig] = self._load_or_compile(rt, sig, args, kwargs)
        if exe is False:
            _STATS["plain"] += 1
            return self._jit(*args, **kwargs)
        if isinstance(exe, _Loaded):  # its first call is checked: a broken file falls back to jax.jit
            out = exe.first_call(dyn_args, dyn_kwargs)
            self._exes[sig] = exe.exe if out is not None else False
            return out if out is not None else self._jit(*args, **kwargs)
        return exe(*dyn_args, **dyn_kwargs)

    def _load_or_compile(self, rt, sig, args, kwargs):
        from jax.experimental import serialize_executable as se

        tree, avals, statics = sig
        text = repr((rt, _config_key(), self._name, str(tree), avals, statics))
        if not _stable(text):
            return False
        h = hashlib.sha256(_package_digest(self._name.split(".")[0]))
        h.update(text.encode())
        path = _FOLDER[0] / f"{self._name.rsplit('.', 1)[-1][:40]}-{h.hexdigest()[:32]}.jaxexe"
        try:
            needs_lapack, blob, in_tree, out_tree = pickle.loads(path.read_bytes())
            if needs_lapack:
                _lapack_initializer()()
            exe = se.deserialize_and_load(blob, in_tree, out_tree)
            _STATS["loaded"] += 1
            return _Loaded(exe, path)
        except Exception:  # absent, truncated, from another runtime: compile it again
            pass
        lowered = self._jit.lower(*args, **kwargs)
        exe, fresh = _compile_fresh(lowered)
        _STATS["compiled"] += 1
        targets = _custom_calls(lowered.as_text())
        needs_lapack = any(t.startswith("lapack_") for t in targets)
        if not fresh or any(not (t.startswith("lapack_") or t in _PARTITIONING_CALLS) for t in targets) or (
                needs_lapack and _lapack_initializer() is None):
            return exe  # a custom call whose run-time registration a loaded executable may lack
        try:
            data = pickle.dumps((needs_lapack, *se.serialize(exe)), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # a backend or program that cannot be serialised: in memory only
            return exe
        try:
            from . import atomic_write_bytes

            atomic_write_bytes(path, data)
        except OSError:  # a read-only or full folder: as without a cache
            pass
        return exe


def _compile_fresh(lowered):
    """``lowered.compile()`` past JAX's persistent compilation cache -> (executable, whether it may
    be serialised). An executable that cache returns cannot be serialised again (its object code
    is not kept: loading it fails with ``Function ... not found``), so the cache is bypassed for
    this one compile; where JAX lacks the hook to do so, the executable stays in memory."""
    try:
        from jax._src import compilation_cache as cc

        was = (cc._cache_checked, cc._cache_used)
        lock = cc._cache_initialized_mutex
    except (ImportError, AttributeError):
        return lowered.compile(), False
    with lock:
        cc._cache_checked, cc._cache_used = True, False
    try:
        return lowered.compile(), True
    finally:
        with lock:
            cc._cache_checked, cc._cache_used = was


_PARTITIONING_CALLS = frozenset({"Sharding", "SPMDFullToShardShape", "SPMDShardToFullShape"})


def _custom_calls(text: str) -> set:
    """Custom-call targets of a lowered module's text."""
    return set(re.findall(r"custom_call @([\w.$-]+)", text)) | set(re.findall(r'call_target_name = "([^"]+)"', text))


@functools.lru_cache(maxsize=1)
def _lapack_initializer():
    """jaxlib registers its LAPACK kernels on the first lowering that needs them; a loaded
    executable that calls them must do it first, or it crashes. None where that hook is missing
    (such programs then stay in memory)."""
    try:
        from jax._src.lax.linalg import initialize_lapack
    except Exception:
        return None
    return initialize_lapack


class _Loaded:
    """An executable loaded from disk, before its first call."""

    def __init__(self, exe, path: Path):
        self.exe, self.path = exe, path

    def first_call(self, args, kwargs):
        """Its outputs, waited for; None (and the file removed) if it fails to run."""
        import jax

        try:
            return jax.block_until_ready(self.exe(*args, **kwargs))
        except Exception:
            _STATS["loaded"] -= 1
            try:
                self.path.unlink()
            except OSError:
                pass
            return None


def _signature(x) -> tuple:
    """What a compiled program's input must match: abstract value (shape, dtype, weak type) and sharding."""
    import jax

    sh = getattr(x, "sharding", None)
    spec = getattr(sh, "spec", None)  # host data and single-device arrays: no spec, the same program
    return str(jax.typeof(x)), None if spec is None else f"{type(sh).__name__}:{spec}"


def jit(fun=None, **jit_kwargs):
    """``jax.jit(fun, **jit_kwargs)`` with the executable cache (:mod:`shared_runtime.aot`); usable as
    ``@jit``, ``@partial(jit, static_argnames=...)`` or ``jit(f, ...)``."""
    if fun is None:
        return functools.partial(jit, **jit_kwargs)
    return _Jit(fun, jit_kwargs)


def device_array(a, dtype=None):
    """``jnp.asarray(a, dtype)`` without a device program for host data: numpy casts on the host,
    then ``jax.device_put``. In a fresh process ``jnp.asarray`` of a numpy array compiles (or
    loads) one small conversion program per shape, 10-20 ms each on a 2-core CPU. Device arrays,
    tracers and Python scalars without a ``dtype`` (weakly typed) go to ``jnp.asarray``."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    if isinstance(a, (jax.Array, jax.core.Tracer)) or (dtype is None and isinstance(a, (bool, int, float, complex))):
        return jnp.asarray(a, dtype)
    x = np.asarray(a) if dtype is None else np.asarray(a, dtype)
    return jax.device_put(x.astype(jax.dtypes.canonicalize_dtype(x.dtype), copy=False))
