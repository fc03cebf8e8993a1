"""Hugging Face `CLIPModel` <-> OpenAI layout (one table of renames, read both ways), and the
configs. Hugging Face's separate q/k/v projections are OpenAI's one `in_proj`; its output
projections are transposed.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mmpiqa_jax.checkpoints.errors import CheckpointError, key_mismatch
from mmpiqa_jax.checkpoints.openai_layout import count_layers
from mmpiqa_jax.models.clip_model import CLIPConfig
from mmpiqa_jax.models.layers import ACTIVATIONS

# Buffers that Hugging Face checkpoints (older transformers) carry; they are `arange`s, not weights.
IGNORED_KEYS = frozenset({"text_model.embeddings.position_ids",
                          "vision_model.embeddings.position_ids"})

# (Hugging Face suffix, OpenAI suffix) inside one transformer layer.
_LAYER = [
    ("self_attn.out_proj.weight", "attn.out_proj.weight"),
    ("self_attn.out_proj.bias", "attn.out_proj.bias"),
    ("layer_norm1.weight", "ln_1.weight"),
    ("layer_norm1.bias", "ln_1.bias"),
    ("mlp.fc1.weight", "mlp.c_fc.weight"),
    ("mlp.fc1.bias", "mlp.c_fc.bias"),
    ("mlp.fc2.weight", "mlp.c_proj.weight"),
    ("mlp.fc2.bias", "mlp.c_proj.bias"),
    ("layer_norm2.weight", "ln_2.weight"),
    ("layer_norm2.bias", "ln_2.bias"),
]
# (Hugging Face key, OpenAI key) outside the layers; "pre_layrnorm" is Hugging Face's spelling.
_TOP = [
    ("vision_model.embeddings.class_embedding", "visual.class_embedding"),
    ("vision_model.embeddings.patch_embedding.weight", "visual.conv1.weight"),
    ("vision_model.embeddings.position_embedding.weight", "visual.positional_embedding"),
    ("vision_model.pre_layrnorm.weight", "visual.ln_pre.weight"),
    ("vision_model.pre_layrnorm.bias", "visual.ln_pre.bias"),
    ("vision_model.post_layernorm.weight", "visual.ln_post.weight"),
    ("vision_model.post_layernorm.bias", "visual.ln_post.bias"),
    ("text_model.embeddings.token_embedding.weight", "token_embedding.weight"),
    ("text_model.embeddings.position_embedding.weight", "positional_embedding"),
    ("text_model.final_layer_norm.weight", "ln_final.weight"),
    ("text_model.final_layer_norm.bias", "ln_final.bias"),
    ("logit_scale", "logit_scale"),
]
_TRANSPOSED = [("visual_projection.weight", "visual.proj"),
               ("text_projection.weight", "text_projection")]
_TOWERS = [("vision_model.encoder.layers", "visual.transformer.resblocks"),
           ("text_model.encoder.layers", "transformer.resblocks")]


def _rules(num_layers: Mapping[str, int]):
    """(openai_key, hf_keys, kind) for every parameter; kind is "copy", "transpose" or "qkv"."""
    rules = [(oa, (hf,), "copy") for hf, oa in _TOP]
    rules += [(oa, (hf,), "transpose") for hf, oa in _TRANSPOSED]
    for hf_tower, oa_tower in _TOWERS:
        for i in range(num_layers[hf_tower]):
            hf, oa = f"{hf_tower}.{i}", f"{oa_tower}.{i}"
            for part in ("weight", "bias"):
                qkv = tuple(f"{hf}.self_attn.{p}_proj.{part}" for p in "qkv")
                rules.append((f"{oa}.attn.in_proj_{part}", qkv, "qkv"))
            rules += [(f"{oa}.{o}", (f"{hf}.{h}",), "copy") for h, o in _LAYER]
    return rules


def hf_to_openai(hf: Mapping[str, np.ndarray], *,
                 source: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """A Hugging Face `CLIPModel` state dict in OpenAI layout, and OpenAI key -> Hugging Face
    key."""
    num_layers = {tower: count_layers(hf, tower) for tower, _ in _TOWERS}
    out, names, used = {}, {}, set(IGNORED_KEYS)
    missing = []
    for oa, hf_keys, kind in _rules(num_layers):
        used.update(k for k in hf_keys if k in hf)
        absent = [k for k in hf_keys if k not in hf]
        if absent:
            missing += absent
            continue
        names[oa] = (hf_keys[0] if kind != "qkv"
                     else hf_keys[0].replace(".q_proj.", ".{q,k,v}_proj."))
        if kind == "qkv":
            parts = [np.asarray(hf[k]) for k in hf_keys]
            shapes = {p.shape[1:] for p in parts}
            if len(shapes) != 1:
                raise CheckpointError(f"{source}: tensors {', '.join(hf_keys)} have shapes "
                                      f"{[p.shape for p in parts]}; q, k and v must agree")
            out[oa] = np.concatenate(parts, axis=0)
        elif kind == "transpose":
            w = np.asarray(hf[hf_keys[0]])
            if w.ndim != 2:
                raise CheckpointError(f"{source}: tensor {hf_keys[0]} has shape {w.shape}, "
                                      "expected a matrix")
            out[oa] = w.T
        else:
            out[oa] = np.asarray(hf[hf_keys[0]])
    unexpected = hf.keys() - used
    if missing or unexpected:
        raise CheckpointError(f"{source}: not a Hugging Face CLIPModel state dict; "
                              + key_mismatch(missing, unexpected))
    return out, names


def openai_to_hf(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """An OpenAI-layout state dict (complete and checked) under Hugging Face `CLIPModel` names."""
    num_layers = {hf: count_layers(state_dict, oa) for hf, oa in _TOWERS}
    out = {}
    for oa, hf_keys, kind in _rules(num_layers):
        value = np.asarray(state_dict[oa])
        if kind == "qkv":
            for key, part in zip(hf_keys, np.split(value, 3, axis=0)):
                out[key] = part
        elif kind == "transpose":
            out[hf_keys[0]] = value.T
        else:
            out[hf_keys[0]] = value
    return {k: np.asarray(v, order="C") for k, v in out.items()}


def config_from_hf(hf_config: Mapping, *, source: str) -> CLIPConfig:
    """The `CLIPConfig` that a Hugging Face CLIP `config.json` (as a dict) describes; only what
    the Flax CLIP implements: QuickGELU or exact GELU in both towers, LayerNorm eps 1e-5."""
    if hf_config.get("model_type", "clip") != "clip":
        raise CheckpointError(f"{source}: model_type is {hf_config.get('model_type')!r}; "
                              "only Hugging Face CLIPModel folders (model_type 'clip') "
                              "are supported")
    towers, acts = {}, {}
    for name in ("text_config", "vision_config"):
        tower = hf_config.get(name)
        if not isinstance(tower, Mapping):
            raise CheckpointError(f"{source}: no {name} in the Hugging Face config")
        act = tower.get("hidden_act", "quick_gelu")  # transformers' default
        if act not in ACTIVATIONS:
            raise CheckpointError(f"{source}: {name}.hidden_act is {act!r}; the Flax CLIP "
                                  f"implements {' and '.join(map(repr, ACTIVATIONS))}")
        eps = tower.get("layer_norm_eps", 1e-5)
        if abs(eps - 1e-5) > 1e-12:
            raise CheckpointError(f"{source}: {name}.layer_norm_eps is {eps}; expected 1e-05")
        towers[name], acts[name] = tower, act
    text, vision = towers["text_config"], towers["vision_config"]
    if len(set(acts.values())) != 1:
        raise CheckpointError(f"{source}: the towers' hidden_act differ ({acts}); the Flax CLIP "
                              "uses one activation in both")
    try:
        return CLIPConfig(
            embed_dim=int(hf_config.get("projection_dim", text.get("projection_dim", 512))),
            image_resolution=int(vision["image_size"]),
            vision_layers=int(vision["num_hidden_layers"]),
            vision_width=int(vision["hidden_size"]),
            vision_patch_size=int(vision["patch_size"]),
            vision_heads=int(vision["num_attention_heads"]),
            context_length=int(text["max_position_embeddings"]),
            vocab_size=int(text["vocab_size"]),
            text_width=int(text["hidden_size"]),
            text_heads=int(text["num_attention_heads"]),
            text_layers=int(text["num_hidden_layers"]),
            activation=acts["vision_config"],
            vision_mlp_width=int(vision["intermediate_size"]),
            text_mlp_width=int(text["intermediate_size"]),
        )
    except KeyError as e:
        raise CheckpointError(f"{source}: the Hugging Face config has no {e.args[0]!r}") from None
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from None


def hf_config_for(config: CLIPConfig):
    """A `transformers.CLIPConfig` for a `CLIPConfig`, with OpenAI's token ids."""
    import transformers

    common = dict(hidden_act=config.activation, layer_norm_eps=1e-5,
                  projection_dim=config.embed_dim)
    text = transformers.CLIPTextConfig(
        vocab_size=config.vocab_size, hidden_size=config.text_width,
        intermediate_size=config.text_mlp_width, num_hidden_layers=config.text_layers,
        num_attention_heads=config.text_heads, max_position_embeddings=config.context_length,
        # OpenAI's tokenizer's ids; with this eos id transformers pools at the first
        # end-of-text token, as OpenAI does.
        bos_token_id=49406, eos_token_id=49407, pad_token_id=0, **common)
    vision = transformers.CLIPVisionConfig(
        hidden_size=config.vision_width, intermediate_size=config.vision_mlp_width,
        num_hidden_layers=config.vision_layers, num_attention_heads=config.vision_heads,
        image_size=config.image_resolution, patch_size=config.vision_patch_size, **common)
    hf_config = transformers.CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                                        projection_dim=config.embed_dim)
    hf_config.architectures = ["CLIPModel"]
    return hf_config
