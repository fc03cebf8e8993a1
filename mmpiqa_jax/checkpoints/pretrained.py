"""The pretrained CLIP an IQA model starts from (`load_pretrained_clip`), or its architecture
alone (`clip_config`), from the `model` section of a training config.

`model.variant` names a built-in architecture (`clip_model.VARIANTS`), or is "checkpoint": the
architecture of `model.clip_checkpoint`.
"""
from __future__ import annotations

import dataclasses

from mmpiqa_jax.checkpoints.formats import ACCEPTED
from mmpiqa_jax.checkpoints.load import load_clip, read_clip_config
from mmpiqa_jax.errors import UserError
from mmpiqa_jax.models.clip_model import CLIP, CLIPConfig, get_variant

RANDOM_CLIP = "random"  # `model.clip_checkpoint` asking for a random initialisation of `variant`
FROM_CHECKPOINT = "checkpoint"  # `model.variant`: the architecture of `model.clip_checkpoint`


def clip_weights_path(model_config) -> str | None:
    """The checkpoint to load for `model_config` (the `model` section), or None: random init.

    `clip_checkpoint` "random" asks for a random initialisation; empty is one for the `tiny`
    variant only, and raises for any other. (A file named `random`: write `./random`.)
    """
    path = model_config.clip_checkpoint
    if model_config.variant == FROM_CHECKPOINT and (not path or path == RANDOM_CLIP):
        raise UserError(f"model.variant={FROM_CHECKPOINT!r} takes the architecture from "
                        f"model.clip_checkpoint, which is {path!r}: set it to a checkpoint "
                        "(anything clip.load reads), or name a variant")
    if path == RANDOM_CLIP:
        return None
    if not path:
        if model_config.variant == "tiny":
            return None
        variant = model_config.variant
        raise UserError(
            f"model.clip_checkpoint is empty for model.variant {variant!r}: that would "
            f"train a randomly initialised CLIP, whose scores on real data mean nothing. Set "
            f"model.clip_checkpoint to pretrained {variant} weights: {ACCEPTED} (open_clip "
            "weights with their open_clip_config.json beside them, or converted with --arch). "
            f"To train from a random initialisation on purpose, set "
            f"model.clip_checkpoint={RANDOM_CLIP}.")
    return path


def clip_config(model_config) -> CLIPConfig:
    """The architecture of the CLIP that `model_config` builds, in `model_config.dtype`:
    `model.variant`'s, or for "checkpoint" `model.clip_checkpoint`'s (its weights not read)."""
    if model_config.variant == FROM_CHECKPOINT:
        config = read_clip_config(clip_weights_path(model_config))
    else:
        config = get_variant(model_config.variant)
    return dataclasses.replace(config, dtype=model_config.dtype)


def load_pretrained_clip(model_config) -> CLIP | None:
    """The CLIP of `model_config.clip_checkpoint` in `model_config.dtype` (`clip_config`'s
    architecture, else an error); None for random init (`clip_weights_path`)."""
    path = clip_weights_path(model_config)
    if path is None:
        return None
    expected = clip_config(model_config)
    clip = load_clip(path, dtype=model_config.dtype)
    if clip.config != expected:
        raise UserError(f"model.clip_checkpoint {path!r} holds a CLIP of {clip.config}, not "
                        f"model.variant {model_config.variant!r} ({expected}); "
                        f"model.variant={FROM_CHECKPOINT} takes the checkpoint's own")
    return clip
