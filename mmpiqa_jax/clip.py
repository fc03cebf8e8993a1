"""The public CLIP API: `from mmpiqa_jax import clip; model = clip.load(path)` (any checkpoint
`checkpoints.load_clip` reads)."""
from mmpiqa_jax.checkpoints.load import load_clip
from mmpiqa_jax.models.clip_model import CLIP, VARIANTS, CLIPConfig, get_variant
from mmpiqa_jax.tokenizer import tokenize

__all__ = ["CLIP", "CLIPConfig", "VARIANTS", "get_variant", "load", "tokenize"]

load = load_clip
