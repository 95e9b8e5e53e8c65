"""Learned search hooks: tile features, the Flax NNX models M1-M3, their checkpoints and training loop.

The models (and with them Flax) are imported on first use, so that ``import pc15jax`` -- whose
search reads the tile features -- does not pay for Flax unless a hooked search runs.
"""

from pc15jax.ai.features import N_FEATURES, tile_features

__all__ = ("N_FEATURES", "CheckpointError", "build_model", "load_checkpoint", "save_checkpoint", "tile_features")

_FROM_MODELS = ("CheckpointError", "build_model", "load_checkpoint", "save_checkpoint")


def __getattr__(name):
    if name in _FROM_MODELS:
        from pc15jax.ai import models

        return getattr(models, name)
    raise AttributeError(f"module 'pc15jax.ai' has no attribute {name!r}")
