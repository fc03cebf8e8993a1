"""The public CLIP API: `from mmpiqa_jax import clip; model = clip.load(path)`.

It sits above `models` and `checkpoints`: the model classes and the checkpoint readers in one
place for users.
"""
from mmpiqa_jax.checkpoints.load import load_clip
from mmpiqa_jax.models.clip_model import CLIP, VARIANTS, CLIPConfig, get_variant
from mmpiqa_jax.tokenizer import tokenize

__all__ = ["CLIP", "CLIPConfig", "VARIANTS", "get_variant", "load", "tokenize"]


def load(path, **kwargs) -> CLIP:
    """A CLIP from any supported checkpoint (see `mmpiqa_jax.checkpoints.load_clip`)."""
    return load_clip(path, **kwargs)
