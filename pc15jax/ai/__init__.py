"""Learned search hooks: tile features, the Flax NNX models M1-M3, their checkpoints and training loop."""

from pc15jax.ai.features import N_FEATURES, tile_features
from pc15jax.ai.models import CheckpointError, build_model, load_checkpoint, save_checkpoint

__all__ = ("N_FEATURES", "CheckpointError", "build_model", "load_checkpoint", "save_checkpoint", "tile_features")
