"""The public CLIP API: `from mmpiqa_jax import clip; model = clip.load(path)`."""
from mmpiqa_jax.models.clip_model import CLIP, VARIANTS, CLIPConfig, get_variant
from mmpiqa_jax.tokenizer import tokenize

__all__ = ["CLIP", "CLIPConfig", "VARIANTS", "get_variant", "load", "tokenize"]


def load(path, **kwargs) -> CLIP:
    """A CLIP from any supported checkpoint (see `mmpiqa_jax.checkpoints.load_clip`)."""
    # Imported here: the checkpoint readers are only needed when something is loaded.
    from mmpiqa_jax.checkpoints import load_clip

    return load_clip(path, **kwargs)
