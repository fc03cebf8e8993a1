"""Export an MP-IQE or LIQE model to the folder that `mmpiqa_jax.pytorch.load` reads
(`export_torch`; numpy only): `model.safetensors`, float32 tensors named as the PyTorch module's
parameters, and `config.json`: the model name, the `CLIPConfig`, MP-IQE's prompt and fusion sizes,
every prompt bank's token ids, context length and depth, the labels, the test-time crops and the
score range.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
from flax import nnx

from mmpiqa_jax import files, labels
from mmpiqa_jax.checkpoints.clip_conversion import to_openai_state_dict
from mmpiqa_jax.checkpoints.errors import CheckpointError
from mmpiqa_jax.models import iqa

# Repeated in `mmpiqa_jax.pytorch.model`, which imports no JAX (a test checks that they agree).
FORMAT = "mmpiqa_jax.torch"
VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PREPROCESS_KEYS = ("crop_mode", "num_crops", "crop_size")


def _array(x) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x, np.float32))


def fusion_state_dict(fusion) -> dict[str, np.ndarray]:
    """The fusion encoder's parameters as torch `Linear` / `LayerNorm` tensors (no prefix)."""
    out = {}
    for path, var in nnx.to_flat_state(nnx.state(fusion, nnx.Param)):
        *module, leaf = map(str, path)
        value = np.asarray(var.get_value(), np.float32)
        if leaf == "kernel":
            if value.ndim == 3:
                value = (value.reshape(-1, value.shape[-1]) if module[-1] == "out"
                         else value.reshape(value.shape[0], -1))
            name, value = "weight", value.T
        elif leaf == "scale":
            name = "weight"
        elif leaf == "bias":
            name, value = "bias", value.reshape(-1)
        else:
            raise CheckpointError(f"fusion parameter {'/'.join(map(str, path))}: no torch name")
        out[".".join([*module, name])] = _array(value)
    return out


def _bank(bank) -> tuple[dict, dict[str, np.ndarray]]:
    """(config entry, tensors without prefix) of a `PromptBank`."""
    depth = 1 if bank.deep_ctx is None else 1 + int(bank.deep_ctx.shape[0])
    entry = {"token_ids": [list(ids) for ids in bank.token_ids], "num_context": bank.num_context,
             "depth": depth, "texts": list(bank.texts)}
    tensors = {}
    if bank.ctx is not None:
        tensors["ctx"] = _array(bank.ctx[...])
    if bank.deep_ctx is not None:
        tensors["deep_ctx"] = _array(bank.deep_ctx[...])
    return entry, tensors


def torch_export(model) -> tuple[dict, dict[str, np.ndarray]]:
    """(config without `preprocess`, tensors) of an `iqa.MPIQE` or `iqa.LIQE`."""
    if not isinstance(model, (iqa.MPIQE, iqa.LIQE)):
        raise CheckpointError(f"can export MP-IQE or LIQE models to torch, not "
                              f"{type(model).__name__}")
    tensors = {f"clip.{k}": _array(v) for k, v in to_openai_state_dict(model.clip).items()}
    config = {"format": FORMAT, "version": VERSION,
              "model": "mpiqe" if isinstance(model, iqa.MPIQE) else "liqe",
              "clip": {**model.clip.config.to_dict(), "dtype": "float32"},
              "labels": {"scenes": list(labels.SCENES), "distortions": list(labels.DISTORTIONS),
                         "qualities": list(labels.QUALITIES)},
              "score_range": [1, labels.NUM_QUALITIES], "lower_better": False, "prompts": {}}
    for name in ("scene", "distortion", "joint"):
        if name in model.prompts:
            entry, bank = _bank(model.prompts[name])
            config["prompts"][name] = entry
            tensors.update({f"{name}.{k}": v for k, v in bank.items()})
    if config["model"] == "liqe":
        # The 495 joint prompts, or LIQE's 5 quality-only prompts (`model.liqe_prompts`).
        config["liqe_prompts"] = "joint" if model.joint else "quality"
    if config["model"] == "mpiqe":
        tokens = model.prompts["visual"].tokens
        fusion = model.fusion
        layer = fusion.layers[0]
        width = int(fusion.text_in.out_features)
        config["mpiqe"] = {
            "num_visual_prompts": 0 if tokens is None else int(tokens.shape[1]),
            "visual_prompt_depth": 0 if tokens is None else int(tokens.shape[0]),
            "fusion_layers": len(fusion.layers), "fusion_width": width,
            "fusion_heads": int(layer.cross_attn.num_heads),
            "fusion_mlp_ratio": int(layer.mlp_in.out_features) // width,
            "scene_activation": model.scene_activation}
        if tokens is not None:
            tensors["visual_prompts"] = _array(tokens[...])
        tensors.update({f"fusion.{k}": v for k, v in fusion_state_dict(fusion).items()})
    return config, tensors


def export_torch(model, out_dir: str | os.PathLike, *,
                 preprocess: Mapping | None = None) -> str:
    """Writes `model` (MP-IQE or LIQE) to `out_dir` for `mmpiqa_jax.pytorch.load` (float32);
    returns `out_dir`.

    `preprocess`: the test-time crops (`crop_mode`, `num_crops`, `crop_size`; default LIQE's 15
    crops at CLIP's resolution).
    """
    from safetensors.numpy import save_file

    config, tensors = torch_export(model)
    resolution = model.clip.config.image_resolution
    pre = {"crop_mode": "liqe", "num_crops": 15, "crop_size": resolution, **(preprocess or {})}
    if unknown := sorted(set(pre) - set(PREPROCESS_KEYS)):
        raise CheckpointError(f"preprocess keys {unknown} unknown; expected {PREPROCESS_KEYS}")
    if int(pre["crop_size"]) != resolution:
        raise CheckpointError(f"preprocess crop_size {pre['crop_size']} differs from the CLIP's "
                              f"image_resolution {resolution}")
    config["preprocess"] = {"crop_mode": str(pre["crop_mode"]), "num_crops": int(pre["num_crops"]),
                            "crop_size": int(pre["crop_size"])}
    with files.replacing(out_dir, last=CONFIG_NAME) as staging:
        save_file(tensors, os.fspath(staging / WEIGHTS_NAME), metadata={"format": "pt"})
        files.write_json(staging / CONFIG_NAME, config)
    return os.fspath(out_dir)
