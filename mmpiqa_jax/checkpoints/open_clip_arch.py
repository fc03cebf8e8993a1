"""open_clip model configs -> `CLIPConfig`: the heads and activation an open_clip state dict
does not say.

`resolve_arch` takes a name of `OPEN_CLIP_CONFIGS` (`--arch`) or an open_clip model config JSON
file (`open_clip_config.json`, `{"model_cfg": {...}}`, or a bare model config); what a config
leaves out takes open_clip's defaults (`CLIPVisionCfg` / `CLIPTextCfg`).
"""
from __future__ import annotations

import os
from collections.abc import Mapping

from mmpiqa_jax.checkpoints.errors import CheckpointError
from mmpiqa_jax.files import read_json
from mmpiqa_jax.models.clip_model import CLIPConfig


def _cfg(embed_dim, image_size, layers, width, patch_size, text_width, text_heads, text_layers,
         head_width=None, mlp_ratio=None) -> dict:
    vision = {"image_size": image_size, "layers": layers, "width": width,
              "patch_size": patch_size}
    optional = {"head_width": head_width, "mlp_ratio": mlp_ratio}
    vision.update({k: v for k, v in optional.items() if v is not None})
    return {"embed_dim": embed_dim,
            "vision_cfg": vision,
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": text_width,
                         "heads": text_heads, "layers": text_layers}}


# open_clip 3.3.0's model_configs/{name}.json; "-quickgelu" adds "quick_gelu": true only.
_PLAIN = {
    "ViT-B-32": _cfg(512, 224, 12, 768, 32, 512, 8, 12),
    "ViT-B-16": _cfg(512, 224, 12, 768, 16, 512, 8, 12),
    "ViT-L-14": _cfg(768, 224, 24, 1024, 14, 768, 12, 12),
    "ViT-L-14-336": _cfg(768, 336, 24, 1024, 14, 768, 12, 12),
    "ViT-H-14": _cfg(1024, 224, 32, 1280, 14, 1024, 16, 24, head_width=80),
    "ViT-bigG-14": _cfg(1280, 224, 48, 1664, 14, 1280, 20, 32, head_width=104,
                        mlp_ratio=4.9231),
}
OPEN_CLIP_CONFIGS: dict[str, dict] = {
    **_PLAIN,
    **{f"{name}-quickgelu": {**cfg, "quick_gelu": True} for name, cfg in _PLAIN.items()},
    # open_clip has no ViT-g-14-quickgelu.
    "ViT-g-14": _cfg(1024, 224, 40, 1408, 14, 1024, 16, 24, head_width=88, mlp_ratio=4.3637),
}

# open_clip's options that the Flax CLIP implements at these values (its defaults) only.
_VISION_DEFAULTS = {"ls_init_value": None, "patch_dropout": 0.0, "attentional_pool": False,
                    "no_ln_pre": False, "pos_embed_type": "learnable",
                    "final_ln_after_pool": False, "pool_type": "tok", "output_tokens": False,
                    "act_kwargs": None, "norm_kwargs": None, "timm_model_name": None}
_TEXT_DEFAULTS = {"ls_init_value": None, "embed_cls": False, "pad_id": 0,
                  "no_causal_mask": False, "final_ln_after_pool": False, "pool_type": "argmax",
                  "proj_bias": False, "proj_type": "linear", "output_tokens": False,
                  "act_kwargs": None, "norm_kwargs": None, "hf_model_name": None,
                  "hf_tokenizer_name": None, "tokenizer_kwargs": None}
# `cast_dtype` and `init_logit_scale` do not change the weights; `custom_text` must be off.
_TOP_KEYS = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "cast_dtype", "init_logit_scale",
             "custom_text"}


def _check_options(cfg: Mapping, defaults: Mapping, known: set, *, where: str, source: str):
    for key, value in cfg.items():
        if key in known:
            continue
        if key not in defaults:
            raise CheckpointError(f"{source}: open_clip option {where}.{key} is not supported "
                                  f"by the Flax CLIP (a standard ViT CLIP only)")
        if value != defaults[key]:
            raise CheckpointError(f"{source}: open_clip option {where}.{key}={value!r} is not "
                                  f"supported; the Flax CLIP implements {defaults[key]!r} only")


def config_from_open_clip(model_cfg: Mapping, *, source: str) -> CLIPConfig:
    """The `CLIPConfig` of an open_clip model config (`open_clip.get_model_config(name)`)."""
    if "model_cfg" in model_cfg:  # an open_clip_config.json of the Hugging Face Hub
        model_cfg = model_cfg["model_cfg"]
    try:
        vision, text = dict(model_cfg["vision_cfg"]), dict(model_cfg["text_cfg"])
        embed_dim = int(model_cfg["embed_dim"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{source}: not an open_clip model config (needs embed_dim, "
                              f"vision_cfg and text_cfg; {type(e).__name__}: {e})") from None
    if unknown := sorted(set(model_cfg) - _TOP_KEYS):
        raise CheckpointError(f"{source}: open_clip options {unknown} are not supported by the "
                              "Flax CLIP (a standard ViT CLIP only)")
    if model_cfg.get("custom_text"):
        raise CheckpointError(f"{source}: open_clip option custom_text=True (a CustomTextCLIP, "
                              "its text tower under other names) is not supported")
    _check_options(vision, _VISION_DEFAULTS, {"layers", "width", "head_width", "mlp_ratio",
                                              "patch_size", "image_size"},
                   where="vision_cfg", source=source)
    _check_options(text, _TEXT_DEFAULTS, {"context_length", "vocab_size", "width", "heads",
                                          "layers", "mlp_ratio", "eos_id"},
                   where="text_cfg", source=source)
    if not isinstance(vision.get("layers", 12), int):
        raise CheckpointError(f"{source}: vision_cfg.layers {vision['layers']!r}: a ResNet "
                              "image tower; only ViTs are supported")
    if not isinstance(vision.get("image_size", 224), int):
        raise CheckpointError(f"{source}: vision_cfg.image_size {vision['image_size']!r}: only "
                              "square images are supported")
    # open_clip's defaults (CLIPVisionCfg, CLIPTextCfg); MLP widths as its blocks compute them.
    v_width, t_width = int(vision.get("width", 768)), int(text.get("width", 512))
    head_width = int(vision.get("head_width", 64))
    if v_width % head_width:
        raise CheckpointError(f"{source}: vision_cfg.width {v_width} is not a multiple of "
                              f"head_width {head_width}")
    try:
        return CLIPConfig(
            embed_dim=embed_dim,
            image_resolution=int(vision.get("image_size", 224)),
            vision_layers=int(vision.get("layers", 12)),
            vision_width=v_width,
            vision_patch_size=int(vision.get("patch_size", 16)),
            vision_heads=v_width // head_width,
            context_length=int(text.get("context_length", 77)),
            vocab_size=int(text.get("vocab_size", 49408)),
            text_width=t_width,
            text_heads=int(text.get("heads", 8)),
            text_layers=int(text.get("layers", 12)),
            activation="quick_gelu" if model_cfg.get("quick_gelu", False) else "gelu",
            vision_mlp_width=int(v_width * float(vision.get("mlp_ratio", 4.0))),
            text_mlp_width=int(t_width * float(text.get("mlp_ratio", 4.0))),
        )
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from None


def resolve_arch(arch: str | os.PathLike) -> CLIPConfig:
    """The `CLIPConfig` that `arch` names: a key of `OPEN_CLIP_CONFIGS`, or an open_clip model
    config JSON file (e.g. `open_clip_config.json`)."""
    arch = os.fspath(arch)
    if arch in OPEN_CLIP_CONFIGS:
        return config_from_open_clip(OPEN_CLIP_CONFIGS[arch], source=f"--arch {arch}")
    if os.path.isfile(arch):
        return config_from_open_clip(read_json(arch, object_only=True), source=arch)
    raise CheckpointError(f"--arch {arch!r}: neither an open_clip model name known here "
                          f"({', '.join(OPEN_CLIP_CONFIGS)}) nor an open_clip model config "
                          "JSON file")
