"""OpenAI-layout state dicts <-> the Flax `CLIP`: one table of renames and transposes, read by
`from_openai_state_dict`, `to_openai_state_dict` and `check_state_dict`; `infer_config` reads the
architecture from the tensors' shapes.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from mmpiqa_jax.checkpoints.errors import CheckpointError, check_shapes
from mmpiqa_jax.checkpoints.openai_layout import NON_PARAMETER_KEYS, count_layers
from mmpiqa_jax.models.clip_model import CLIP, CLIPConfig

# Linear weights are [out, in] in torch, [in, out] here; conv weights [out, in, kh, kw] there,
# [kh, kw, in, out] here.
_T = (1, 0)
_CONV = (2, 3, 1, 0)

_BLOCK_ROWS = (
    ("ln_1.weight", ("ln_1", "scale"), None),
    ("ln_1.bias", ("ln_1", "bias"), None),
    ("attn.in_proj_weight", ("attn", "in_proj", "kernel"), _T),
    ("attn.in_proj_bias", ("attn", "in_proj", "bias"), None),
    ("attn.out_proj.weight", ("attn", "out_proj", "kernel"), _T),
    ("attn.out_proj.bias", ("attn", "out_proj", "bias"), None),
    ("ln_2.weight", ("ln_2", "scale"), None),
    ("ln_2.bias", ("ln_2", "bias"), None),
    ("mlp.c_fc.weight", ("mlp", "c_fc", "kernel"), _T),
    ("mlp.c_fc.bias", ("mlp", "c_fc", "bias"), None),
    ("mlp.c_proj.weight", ("mlp", "c_proj", "kernel"), _T),
    ("mlp.c_proj.bias", ("mlp", "c_proj", "bias"), None),
)

_VISION_ROWS = (
    ("visual.conv1.weight", ("visual", "conv1", "kernel"), _CONV),
    ("visual.class_embedding", ("visual", "class_embedding"), None),
    ("visual.positional_embedding", ("visual", "positional_embedding"), None),
    ("visual.ln_pre.weight", ("visual", "ln_pre", "scale"), None),
    ("visual.ln_pre.bias", ("visual", "ln_pre", "bias"), None),
    ("visual.ln_post.weight", ("visual", "ln_post", "scale"), None),
    ("visual.ln_post.bias", ("visual", "ln_post", "bias"), None),
    ("visual.proj", ("visual", "proj"), None),
)

_TEXT_ROWS = (
    ("token_embedding.weight", ("token_embedding", "embedding"), None),
    ("positional_embedding", ("positional_embedding",), None),
    ("ln_final.weight", ("ln_final", "scale"), None),
    ("ln_final.bias", ("ln_final", "bias"), None),
    ("text_projection", ("text_projection",), None),
    ("logit_scale", ("logit_scale",), None),
)


def conversion_table(config: CLIPConfig) -> list[tuple]:
    """(OpenAI key, NNX path, permutation from torch's layout to ours or None, layer: the slice of
    the stacked `resblocks` path or None) of every parameter of a CLIP with `config`."""
    rows = [(*r, None) for r in _VISION_ROWS + _TEXT_ROWS]
    towers = (("visual.transformer", ("visual", "transformer"), config.vision_layers),
              ("transformer", ("transformer",), config.text_layers))
    for prefix, path, layers in towers:
        for i in range(layers):
            rows += [(f"{prefix}.resblocks.{i}.{key}", (*path, "resblocks", *sub), perm, i)
                     for key, sub, perm in _BLOCK_ROWS]
    return rows


def _abstract(config: CLIPConfig):
    """(graphdef, {NNX path: abstract variable}) of a CLIP with `config`; nothing allocated."""
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: CLIP(config, rngs=nnx.Rngs(0))))
    return graphdef, dict(nnx.to_flat_state(abstract))


@functools.lru_cache(maxsize=16)
def expected_shapes(config: CLIPConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter of a CLIP with `config` and its shape, in OpenAI layout."""
    # Every layer's block has the same shapes: one layer per tower traces faster.
    variables = _abstract(dataclasses.replace(config, vision_layers=1, text_layers=1))[1]
    shapes = {}
    for key, path, perm, layer in conversion_table(config):
        shape = variables[path].shape[layer is not None:]  # a block's: one layer
        shapes[key] = tuple(shape[i] for i in np.argsort(perm)) if perm else shape
    return shapes


def check_state_dict(state_dict: Mapping[str, np.ndarray], config: CLIPConfig, *, source: str,
                     names: Mapping[str, str] | None = None) -> None:
    """Raise `CheckpointError` unless `state_dict` holds exactly the parameters of `config`;
    `names` maps OpenAI keys to the file's names (for the message)."""
    check_shapes(expected_shapes(config), {k: tuple(np.shape(v)) for k, v in state_dict.items()},
                 source=source, what="not a CLIP state dict of the expected architecture",
                 names=names)


def infer_config(state_dict: Mapping[str, np.ndarray], *, source: str) -> CLIPConfig:
    """The architecture of an OpenAI-layout state dict from its shapes, as OpenAI's `build_model`.

    Heads and activation are OpenAI's (width // 64, QuickGELU): right for OpenAI's own files only.
    Only shapes are read (anything with `.shape` will do).
    """
    if "visual.layer1.0.conv1.weight" in state_dict:
        raise CheckpointError(f"{source}: a ResNet CLIP; only ViT image towers are supported")
    needed = ("visual.conv1.weight", "visual.positional_embedding", "text_projection",
              "positional_embedding", "token_embedding.weight", "ln_final.weight")
    if missing := [k for k in needed if k not in state_dict]:
        raise CheckpointError(f"{source}: not an OpenAI CLIP state dict, missing keys: "
                              f"{', '.join(missing)}")
    shape = lambda key: tuple(np.shape(state_dict[key]))

    if len(shape("visual.conv1.weight")) != 4:
        raise CheckpointError(f"{source}: tensor visual.conv1.weight has shape "
                              f"{shape('visual.conv1.weight')}, expected [width, 3, patch, patch]")
    vision_width, _, patch, _ = shape("visual.conv1.weight")
    grid = round((shape("visual.positional_embedding")[0] - 1) ** 0.5)
    text_width = shape("ln_final.weight")[0]

    def mlp_width(prefix: str, width: int) -> int:
        key = f"{prefix}.resblocks.0.mlp.c_fc.weight"  # absent: `check_state_dict` says so
        return shape(key)[0] if key in state_dict and len(shape(key)) == 2 else 4 * width

    return CLIPConfig(
        embed_dim=shape("text_projection")[1],
        image_resolution=patch * grid,
        vision_layers=count_layers(state_dict, "visual.transformer.resblocks"),
        vision_width=vision_width,
        vision_patch_size=patch,
        vision_heads=max(1, vision_width // 64),
        context_length=shape("positional_embedding")[0],
        vocab_size=shape("token_embedding.weight")[0],
        text_width=text_width,
        text_heads=max(1, text_width // 64),
        text_layers=count_layers(state_dict, "transformer.resblocks"),
        activation="quick_gelu",
        vision_mlp_width=mlp_width("visual.transformer", vision_width),
        text_mlp_width=mlp_width("transformer", text_width),
    )


def from_openai_state_dict(state_dict: Mapping[str, np.ndarray], *, source: str = "<state dict>",
                           config: CLIPConfig | None = None, dtype: str | None = None,
                           names: Mapping[str, str] | None = None) -> CLIP:
    """A CLIP holding the parameters of an OpenAI-layout state dict (numpy arrays, any float dtype).

    The architecture is inferred from the shapes unless `config` is given; `dtype` (if given)
    replaces its compute dtype. `NON_PARAMETER_KEYS` are dropped; other unknown keys, missing keys
    and wrong shapes raise `CheckpointError` (`names`: as `check_state_dict`'s).
    """
    state_dict = {k: v for k, v in state_dict.items() if k not in NON_PARAMETER_KEYS}
    config = config or infer_config(state_dict, source=source)
    if dtype is not None:
        config = dataclasses.replace(config, dtype=dtype)
    check_state_dict(state_dict, config, source=source, names=names)

    # Allocate nothing random: build the model abstractly, then fill in the converted arrays.
    graphdef, variables = _abstract(config)
    values = {}  # path -> the converted array (a stacked path: one numpy array filled by layer)
    for key, path, perm, layer in conversion_table(config):
        value = np.asarray(state_dict[key], np.float32)
        if perm is not None:
            value = value.transpose(perm)
        if layer is None:
            values[path] = value
        else:
            stack = values.setdefault(path, np.empty(variables[path].shape, np.float32))
            stack[layer] = value
    for path, value in values.items():
        variables[path] = variables[path].replace(jnp.asarray(value))
    return nnx.merge(graphdef, nnx.from_flat_state(variables))


def to_openai_state_dict(model: CLIP) -> dict[str, np.ndarray]:
    """The model's parameters as float32 numpy arrays under OpenAI's keys and layouts."""
    variables = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    out, arrays = {}, {}
    for key, path, perm, layer in conversion_table(model.config):
        if path not in arrays:
            arrays[path] = np.asarray(variables[path].get_value(), np.float32)
        value = arrays[path] if layer is None else arrays[path][layer]
        out[key] = value.transpose(np.argsort(perm)) if perm is not None else value
    return out
