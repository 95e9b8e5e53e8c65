"""Search hooks: cheaper candidate sets for the matching-pursuit search, same bitstream format.

At every pursuit stage the exhaustive search scores each tile's residual against all ``A`` atoms.
A hook narrows that down, per tile, on device and inside the stage's jitted program:

* **selector** (M1 or :class:`HeuristicHooks`): logits over generator ids from tile features ->
  the ``topk`` generators. Alone, the stage scores every atom of those generators only
  (tiles are dispatched to per-generator matrix products, so the work follows the choice).
* **param_predictor** (M2): for each selected generator, the most likely level of every grid
  axis (parameters, then the seed) -> one atom; the stage scores it and its grid neighbours
  (+-1, +-2 along each axis, every other seed), then the +-1 neighbours of the best of them.
* **rd_predictor** (M3): predicts ``log(J_exact / J_proxy)`` of the proxy's best ``M3_POOL``
  candidates from their closed-form proxy terms; only the ``rd_keep`` best by the prediction
  (instead of ``cfg.shortlist`` by the proxy) are rendered and scored with the full SSIM cost.

The decoder never sees any of this: a stream records which hooks (and weights, by sha256) chose
its symbols in the header meta only. Missing or corrupt weights give a warning and the
exhaustive search.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..ai.features import COL_COHERENCE, COL_PYRAMID4, N_GENERATORS, N_STAGES
from . import generators as gens
from .checks import integer as _int
from .dictionary import Dictionary

__all__ = ["AiHooks", "HeuristicHooks", "HOOK_PRESETS", "hooks_from_name", "GridTables", "grid_tables",
           "candidate_features", "N_CAND_FEATURES", "HookPlan", "prepare_hooks", "selector_logits"]

HOOK_PRESETS = ("none", "heuristic", "m1")
# M2 and M3 left the presets: on held-out Kodak (bench_hooks) M1+M2 searched at 0.88x the
# exhaustive speed with a BD-rate of +12.8 %, M1+M2+M3 at 0.82x with +15.7 %: slower and worse.
# They stay usable by name: AiHooks(selector="m1", param_predictor="m2", rd_predictor="m3").
RETIRED_PRESETS = {"m1m2": ("m1", "m2", None), "m1m2m3": ("m1", "m2", "m3")}
N_AXES = gens.MAX_PARAMS + 1  # parameters, then the seed
N_LEVELS = max(max((p.levels for p in g.params), default=1) for g in gens.list_generators())
N_LEVELS = max(N_LEVELS, max(g.n_seeds for g in gens.list_generators()))
N_CAND_FEATURES = 7 + N_STAGES + N_GENERATORS
DISPATCH_CHUNK = 128  # (tile, generator) pairs per product of the hooked dispatch
M3_POOL = 8  # M3 ranks the proxy's best M3_POOL candidates (as in its training data)

# Which tile statistics each generator family explains (the heuristic selector's prior knowledge).
_ORIENTED = ("STRIPES", "WAVES", "GABOR", "EDGE", "LINE", "LINEAR_GRADIENT")
_SMOOTH = ("COSINE", "LINEAR_GRADIENT", "RADIAL_GRADIENT", "CORNER", "EDGE")


# ----------------------------------------------------------------------------------------------
# Grid layout of the dictionary (static, per generator)
# ----------------------------------------------------------------------------------------------


class GridTables(NamedTuple):
    """Per-generator grid layout as device arrays (``G`` generators, ``D = N_AXES`` axes).

    offset: int32 ``[G]`` first atom of each generator. levels: int32 ``[G, D]`` (1 for
    absent axes). stride: int32 ``[G, D]`` C-order strides of the grid. periodic: bool ``[G, D]``
    (seeds count as periodic: they are unordered, so the neighbourhood visits them all)."""

    offset: jax.Array
    levels: jax.Array
    stride: jax.Array
    periodic: jax.Array


def grid_arrays(dic: Dictionary) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The :class:`GridTables` fields of a dictionary as numpy arrays (offset, levels, stride, periodic)."""
    bank = gens.list_generators(dic.bank)
    G = len(bank)
    levels = np.ones((G, N_AXES), np.int32)
    periodic = np.zeros((G, N_AXES), bool)
    stride = np.zeros((G, N_AXES), np.int32)
    for g in bank:
        shape = g.grid_shape
        st = np.cumprod((shape[1:] + (1,))[::-1])[::-1] if shape else np.zeros(0, np.int64)
        for i, p in enumerate(g.params):
            levels[g.id, i], periodic[g.id, i], stride[g.id, i] = p.levels, p.periodic, st[i]
        if g.seeded:
            levels[g.id, -1], periodic[g.id, -1], stride[g.id, -1] = g.n_seeds, True, 1
    return np.asarray(dic.offsets, np.int32), levels, stride, periodic


@functools.lru_cache(maxsize=8)
def grid_tables(dic: Dictionary) -> GridTables:
    """The :class:`GridTables` of a dictionary (cached)."""
    return GridTables(*(jnp.asarray(a) for a in grid_arrays(dic)))


def atom_axes(dic: Dictionary, atom) -> np.ndarray:
    """Atom indices ``[...]`` -> grid levels ``[..., N_AXES]`` (parameters, then the seed). Host-side."""
    atom = np.asarray(atom)
    out = np.zeros(atom.shape + (N_AXES,), np.int32)
    out[..., : gens.MAX_PARAMS] = dic.param_idx[atom]
    out[..., -1] = dic.seed_sym[atom]
    return out


def atoms_of(gt: GridTables, gen, idx):
    """(generator ``[...]``, levels ``[..., D]``) -> atom indices ``[...]``."""
    return gt.offset[gen] + jnp.sum(idx * gt.stride[gen], axis=-1)


def neighbourhood(gt: GridTables, gen, idx, radius: int, all_seeds: bool):
    """Atoms around grid points ``idx`` [P, D] of generators ``gen`` [P] -> ``[P, M]`` (-1: none).

    The point itself, then +-1 .. +-radius along every parameter axis (wrapping where periodic),
    then, with ``all_seeds``, every other seed of the same parameters."""
    lv = gt.levels[gen]  # [P, D]
    per = gt.periodic[gen]
    out = [atoms_of(gt, gen, idx)]
    for d in range(N_AXES - 1):
        for delta in [v for r in range(1, radius + 1) for v in (-r, r)]:
            v = idx[:, d] + delta
            ok = lv[:, d] > 2 * abs(delta) - (delta > 0)  # wrapping would revisit a level
            ok = jnp.where(per[:, d], ok, (v >= 0) & (v < lv[:, d]))
            v = jnp.where(per[:, d], jnp.mod(v, lv[:, d]), v)
            out.append(jnp.where(ok & (lv[:, d] > 1), atoms_of(gt, gen, idx.at[:, d].set(v)), -1))
    if all_seeds:
        n_s = lv[:, -1]
        for delta in range(1, N_LEVELS):
            v = jnp.mod(idx[:, -1] + delta, n_s)
            out.append(jnp.where(delta < n_s, atoms_of(gt, gen, idx.at[:, -1].set(v)), -1))
    return jnp.stack(out, axis=1)


# ----------------------------------------------------------------------------------------------
# The hooks users pass
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class HeuristicHooks:
    """Non-learned baseline: generators ranked from tile statistics.

    Oriented generators score with the residual's orientation coherence (structure tensor),
    smooth ones with its share of coarse-scale energy, textures with neither; the generator
    prior of the coder's own tables breaks ties. The search then scores every atom of the
    ``topk`` best generators.

    Examples:
      >>> import pc15jax as pc
      >>> cfg = pc.CodecConfig(ai=pc.HeuristicHooks(topk=8))
    """

    topk: int = 8

    def __post_init__(self):
        _int("topk", self.topk, 1, N_GENERATORS - 1)

    @property
    def name(self) -> str:
        return "heuristic"

    def describe(self) -> dict:
        return {"name": "heuristic", "topk": self.topk}


@dataclasses.dataclass(frozen=True, eq=False)
class AiHooks:
    """Learned search hooks (M1 selector, M2 parameter init, M3 RD surrogate).

    Each model is given as a shipped name (``"m1"``, ``"m2"``, ``"m3"``), a checkpoint path,
    or ``None`` (not used). Weights are loaded on first use; a missing or corrupt checkpoint
    gives a ``UserWarning`` and that hook is dropped (without a selector the search is the
    exhaustive one). M2 and M3 need a selector.

    Attributes:
      selector, param_predictor, rd_predictor: the three models (see above).
      topk: generators kept per tile by the selector.
      rd_keep: candidates per tile rendered with the full cost when M3 ranks them.

    Examples:
      >>> import pc15jax as pc
      >>> hooks = pc.AiHooks(selector="m1", param_predictor="m2")
      >>> cfg = pc.CodecConfig(ai=hooks)
    """

    selector: Any = None
    param_predictor: Any = None
    rd_predictor: Any = None
    topk: int = 3
    rd_keep: int = 2

    def __post_init__(self):
        for f in ("selector", "param_predictor", "rd_predictor"):
            v = getattr(self, f)
            if v is not None and not isinstance(v, (str, Path)):
                raise ValueError(f"{f} must be a shipped model name, a checkpoint path or None, got {v!r}")
        _int("topk", self.topk, 1, N_GENERATORS - 1)
        _int("rd_keep", self.rd_keep, 1)
        if self.selector is None and (self.param_predictor is not None or self.rd_predictor is not None):
            raise ValueError("param_predictor and rd_predictor need a selector")

    @classmethod
    def preset(cls, name: str, **kw) -> "AiHooks":
        """``"m1"`` with the shipped weights (the only learned preset that pays, see ``HOOK_PRESETS``)."""
        if name in RETIRED_PRESETS:
            s, p, r = RETIRED_PRESETS[name]
            raise ValueError(
                f"preset {name!r} was removed: it searched slower than the exhaustive search and lost RD "
                f"(README, 'Learned search hooks'); to use it anyway: AiHooks(selector={s!r}, "
                f"param_predictor={p!r}, rd_predictor={r!r})")
        if name != "m1":
            raise ValueError(f"unknown preset {name!r}; expected 'm1'")
        return cls(selector="m1", **kw)

    @property
    def name(self) -> str:
        return "".join(k for k, v in (("m1", self.selector), ("m2", self.param_predictor),
                                       ("m3", self.rd_predictor)) if v is not None) or "none"

    def loaded(self) -> "_Loaded":
        """The models (loaded once; failures warn and drop the hook)."""
        return _load_hooks(self)

    def describe(self) -> dict:
        """What a stream's header records: names, versions and sha256 of the weights used."""
        ld = self.loaded()
        d = {"name": ld.name, "topk": self.topk}
        if ld.m3 is not None:
            d["rd_keep"] = self.rd_keep
        d["models"] = [{"name": r.get("name"), "kind": r.get("kind"), "version": r.get("version"),
                        "sha256": r.get("sha256")} for r in ld.records]
        return d


class _Loaded(NamedTuple):
    name: str
    m1: Any
    m2: Any
    m3: Any
    records: tuple


_LOAD_CACHE: dict = {}


def _load_one(spec, kind: str):
    from ..ai.models import CheckpointError, load_checkpoint

    key = (str(spec), kind)
    if key not in _LOAD_CACHE:
        try:
            _LOAD_CACHE[key] = load_checkpoint(spec, kind)
        except CheckpointError as e:
            warnings.warn(f"pc15jax hooks: {kind} weights unusable ({e}); falling back", UserWarning, stacklevel=4)
            _LOAD_CACHE[key] = None
    return _LOAD_CACHE[key]


def _load_hooks(h: AiHooks) -> _Loaded:
    m1 = _load_one(h.selector, "m1") if h.selector is not None else None
    if m1 is None:
        if h.selector is not None:
            warnings.warn("pc15jax hooks: no usable selector, using the exhaustive search", UserWarning, stacklevel=3)
        return _Loaded("none", None, None, None, ())
    m2 = _load_one(h.param_predictor, "m2") if h.param_predictor is not None else None
    m3 = _load_one(h.rd_predictor, "m3") if h.rd_predictor is not None else None
    parts = [("m1", m1), ("m2", m2), ("m3", m3)]
    return _Loaded("".join(k for k, v in parts if v is not None), *(v[0] if v else None for _, v in parts),
                   tuple(v[1] for _, v in parts if v is not None))


def hooks_from_name(name: str, **kw):
    """CLI names -> hooks: ``none`` -> None, ``heuristic`` -> :class:`HeuristicHooks`, else a preset."""
    if name in RETIRED_PRESETS:
        return AiHooks.preset(name, **kw)  # raises, saying why and how to build it anyway
    if name not in HOOK_PRESETS:
        raise ValueError(f"unknown hooks {name!r}; expected one of {HOOK_PRESETS}")
    if name == "none":
        return None
    if name == "heuristic":
        return HeuristicHooks(**{k: v for k, v in kw.items() if k == "topk"})
    return AiHooks.preset(name, **kw)


# ----------------------------------------------------------------------------------------------
# What the jitted stage receives: a static plan and a pytree of parameters
# ----------------------------------------------------------------------------------------------


class HookPlan(NamedTuple):
    """Static (hashable) part of a hook setting."""

    selector: str  # "heuristic" | "m1"
    topk: int
    m1_def: Any
    m2_def: Any
    m3_def: Any
    rd_keep: int


def _heuristic_groups():
    bank = gens.list_generators()
    grp = np.zeros((len(bank), 3), np.float32)  # oriented, smooth, texture
    for g in bank:
        grp[g.id] = (g.name in _ORIENTED, g.name in _SMOOTH, not (g.name in _ORIENTED or g.name in _SMOOTH))
    grp[0] = 0.0
    return grp


def prepare_hooks(hooks, gen_prior: np.ndarray):
    """Hooks -> ``(plan, params)`` for the jitted stage, or ``None`` for the exhaustive search.

    ``gen_prior``: float ``[G]`` log-probabilities of the generators (the heuristic's tie-break)."""
    if hooks is None:
        return None
    prior = jnp.asarray(gen_prior, jnp.float32)
    if isinstance(hooks, HeuristicHooks):
        plan = HookPlan("heuristic", hooks.topk, None, None, None, 0)
        return plan, {"prior": prior, "groups": jnp.asarray(_heuristic_groups())}
    ld = hooks.loaded()
    if ld.m1 is None:
        return None
    import flax.nnx as nnx  # only a hooked search with models needs Flax

    split = lambda m: nnx.split(m) if m is not None else (None, None)  # noqa: E731
    (d1, s1), (d2, s2), (d3, s3) = split(ld.m1), split(ld.m2), split(ld.m3)
    plan = HookPlan("m1", hooks.topk, d1, d2, d3, hooks.rd_keep if d3 is not None else 0)
    return plan, {"prior": prior, "m1": s1, "m2": s2, "m3": s3}


def merge_model(graphdef, state):
    """The Flax module of a split model (Flax is imported here, on first use)."""
    import flax.nnx as nnx

    return nnx.merge(graphdef, state)


def selector_logits(feats, plan: HookPlan, hp) -> jax.Array:
    """Generator logits ``[N, G]`` of raw tile features ``[N, F]``."""
    if plan.selector == "m1":
        return merge_model(plan.m1_def, hp["m1"])(feats)
    # heuristic: columns of tile_features (see pc15jax.ai.features)
    low = jnp.mean(feats[:, COL_PYRAMID4] ** 2, axis=1)  # coarse-scale share of the unit-RMS residual
    coh = feats[:, COL_COHERENCE]
    aff = jnp.stack([coh, low, (1.0 - coh) * (1.0 - low)], axis=1)  # [N, 3]
    return 4.0 * aff @ hp["groups"].T + hp["prior"][None, :]


def candidate_features(j_proxy, d_proxy, bits, c, energy, kappa, n_prev, gen, lam, n: int):
    """M3's input ``[N, M, N_CAND_FEATURES]`` from the closed-form proxy terms of candidates ``[N, M]``.

    Args:
      j_proxy, d_proxy, bits, c: ``[N, M]`` proxy cost, proxy distortion, bits and amplitude.
      energy, kappa: ``[N]`` residual energy and the tile's MSE -> (1 - SSIM) factor.
      n_prev: ``[N]`` atoms already in the tile. gen: ``[N, M]`` generator ids. lam: lambda.
    """
    eps = 1e-10
    jmin = jnp.min(jnp.where(jnp.isfinite(j_proxy), j_proxy, jnp.inf), axis=1, keepdims=True)
    safe_j = jnp.where(jnp.isfinite(j_proxy), j_proxy, 1.0)
    shape = j_proxy.shape
    cols = [jnp.log(safe_j + eps), jnp.log(jnp.maximum(d_proxy, 0.0) + eps), lam * bits / n,
            c * c / (energy[:, None] + eps), jnp.broadcast_to(jnp.log(kappa)[:, None], shape),
            jnp.clip((safe_j - jmin) / (jnp.abs(jmin) + eps), 0.0, 10.0),
            jnp.broadcast_to(jnp.log(energy / n + eps)[:, None], shape)]
    stage = jax.nn.one_hot(jnp.minimum(n_prev, N_STAGES - 1), N_STAGES, dtype=jnp.float32)
    return jnp.concatenate([jnp.stack(cols, -1), jnp.broadcast_to(stage[:, None, :], shape + (N_STAGES,)),
                            jax.nn.one_hot(gen, N_GENERATORS, dtype=jnp.float32)], axis=-1)

