"""transformers CLIP configs of a chosen shape, for tests that write random Hugging Face folders."""
from typing import NamedTuple

import transformers


class Tower(NamedTuple):
    width: int
    mlp_width: int
    layers: int
    heads: int


def hf_clip_config(text: Tower, vision: Tower, *, image_size: int, patch_size: int,
                   projection_dim: int, act: str = "quick_gelu", **vision_overrides):
    """A `transformers.CLIPConfig`: CLIP's 49408-token vocabulary and 77-token context, `act`
    in both towers (`vision_overrides` may replace it, or any vision key, in the vision tower)."""
    common = dict(hidden_act=act, projection_dim=projection_dim)
    text_config = transformers.CLIPTextConfig(
        vocab_size=49408, hidden_size=text.width, intermediate_size=text.mlp_width,
        num_hidden_layers=text.layers, num_attention_heads=text.heads,
        max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, **common)
    vision_config = transformers.CLIPVisionConfig(
        hidden_size=vision.width, intermediate_size=vision.mlp_width,
        num_hidden_layers=vision.layers, num_attention_heads=vision.heads, image_size=image_size,
        patch_size=patch_size, **{**common, **vision_overrides})
    return transformers.CLIPConfig(text_config=text_config.to_dict(),
                                   vision_config=vision_config.to_dict(),
                                   projection_dim=projection_dim)
