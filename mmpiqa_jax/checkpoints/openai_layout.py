"""The OpenAI CLIP state-dict layout: the key names and shapes every reader produces.

Keys and layouts are those of OpenAI's `clip/model.py` (open_clip's `CLIP` class uses the same).
Arrays are numpy; linear weights are torch's `[out, in]`, `visual.proj` and `text_projection`
are `[width, embed_dim]`, `visual.conv1.weight` is `[width, 3, patch, patch]`.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mmpiqa_jax.checkpoints.errors import CheckpointError, key_mismatch

# Entries that OpenAI and open_clip files carry but that are not parameters: OpenAI's TorchScript
# archives store the model's hyper-parameters as tensors, open_clip registers the causal mask.
# Dropped knowingly; the architecture is inferred from the parameters' shapes instead.
NON_PARAMETER_KEYS = frozenset({"input_resolution", "context_length", "vocab_size", "attn_mask"})


def _resblock_shapes(prefix: str, width: int, hidden: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.ln_1.weight": (width,),
        f"{prefix}.ln_1.bias": (width,),
        f"{prefix}.attn.in_proj_weight": (3 * width, width),
        f"{prefix}.attn.in_proj_bias": (3 * width,),
        f"{prefix}.attn.out_proj.weight": (width, width),
        f"{prefix}.attn.out_proj.bias": (width,),
        f"{prefix}.ln_2.weight": (width,),
        f"{prefix}.ln_2.bias": (width,),
        f"{prefix}.mlp.c_fc.weight": (hidden, width),
        f"{prefix}.mlp.c_fc.bias": (hidden,),
        f"{prefix}.mlp.c_proj.weight": (width, hidden),
        f"{prefix}.mlp.c_proj.bias": (width,),
    }


def expected_shapes(config) -> dict[str, tuple[int, ...]]:
    """Every parameter of a CLIP with `config` (a `CLIPConfig`) and its shape, in OpenAI layout."""
    vw, tw, d = config.vision_width, config.text_width, config.embed_dim
    grid = config.image_resolution // config.vision_patch_size
    p = config.vision_patch_size
    shapes = {
        "visual.class_embedding": (vw,),
        "visual.positional_embedding": (grid * grid + 1, vw),
        "visual.conv1.weight": (vw, 3, p, p),
        "visual.ln_pre.weight": (vw,),
        "visual.ln_pre.bias": (vw,),
    }
    for i in range(config.vision_layers):
        shapes.update(_resblock_shapes(f"visual.transformer.resblocks.{i}", vw,
                                       config.vision_mlp_width))
    shapes.update({
        "visual.ln_post.weight": (vw,),
        "visual.ln_post.bias": (vw,),
        "visual.proj": (vw, d),
        "token_embedding.weight": (config.vocab_size, tw),
        "positional_embedding": (config.context_length, tw),
    })
    for i in range(config.text_layers):
        shapes.update(_resblock_shapes(f"transformer.resblocks.{i}", tw, config.text_mlp_width))
    shapes.update({
        "ln_final.weight": (tw,),
        "ln_final.bias": (tw,),
        "text_projection": (tw, d),
        "logit_scale": (),
    })
    return shapes


def check_state_dict(state_dict: Mapping[str, np.ndarray], config, *, source: str,
                     names: Mapping[str, str] | None = None) -> None:
    """Raise `CheckpointError` unless `state_dict` holds exactly the parameters of `config`.

    `names` maps OpenAI keys to the names the tensors have in the file (Hugging Face's), so that
    the message names the tensor as the user will find it.
    """
    expected = expected_shapes(config)
    missing = expected.keys() - state_dict.keys()
    unexpected = state_dict.keys() - expected.keys()
    if missing or unexpected:
        raise CheckpointError(f"{source}: not a CLIP state dict of the expected architecture; "
                              + key_mismatch(missing, unexpected))
    for key, shape in expected.items():
        found = tuple(np.shape(state_dict[key]))
        if found != shape:
            name = key if not names or names.get(key, key) == key else f"{names[key]} (-> {key})"
            raise CheckpointError(f"{source}: tensor {name} has shape {found}, expected {shape}")


def clean_state_dict(obj, *, source: str) -> dict[str, np.ndarray]:
    """The parameters of an OpenAI-layout state dict as it comes out of a file.

    Unwraps open_clip training checkpoints (`{"state_dict": ...}`), strips the `module.` prefix
    that DistributedDataParallel adds, and drops `NON_PARAMETER_KEYS`.
    """
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{source}: expected a state dict (a mapping of names to tensors), "
                              f"found {type(obj).__name__}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return {k: v for k, v in obj.items() if k not in NON_PARAMETER_KEYS}


def looks_like_openai(keys) -> bool:
    """Whether `keys` use OpenAI's names (both towers at the top level)."""
    keys = set(keys)
    return "visual.conv1.weight" in keys and "token_embedding.weight" in keys
