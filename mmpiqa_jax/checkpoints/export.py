"""Export to a Hugging Face CLIP folder that `transformers.CLIPModel.from_pretrained` loads.

The folder holds `config.json` and `model.safetensors`; the project's extra parameters go to
`mmpiqa_extra.safetensors` and their config to `mmpiqa_config.json`, which transformers ignores.
No tokenizer files are written (OpenAI's tokenizer gives the ids).
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from mmpiqa_jax import files
from mmpiqa_jax.checkpoints.clip_conversion import to_openai_state_dict
from mmpiqa_jax.checkpoints.errors import CheckpointError
from mmpiqa_jax.checkpoints.hf import hf_config_for, openai_to_hf
from mmpiqa_jax.checkpoints.project import check_extras
from mmpiqa_jax.models.clip_model import CLIP

EXTRA_WEIGHTS = "mmpiqa_extra.safetensors"
EXTRA_CONFIG = "mmpiqa_config.json"
EXTRA_FORMAT = "mmpiqa_jax.hf_extra"


def export_hf(clip_model: CLIP, out_dir: str | os.PathLike, *,
              extra_params: Mapping | None = None, extra_config: Mapping | None = None) -> str:
    """Write a Hugging Face CLIP folder of `clip_model` in `out_dir`; returns `out_dir`."""
    from safetensors.numpy import save_file

    out_dir = os.fspath(out_dir)
    config = clip_model.config
    weights = {k: v.astype(np.float32)
               for k, v in openai_to_hf(to_openai_state_dict(clip_model)).items()}

    extras = check_extras(extra_params)
    meta = {"format": EXTRA_FORMAT, "version": 1, "clip": config.to_dict(),
            "extra_params": sorted(extras), "extra_config": dict(extra_config or {})}
    # Every file is written before any replaces an earlier export's (files.replacing).
    with files.replacing(out_dir, last="config.json", stale=(EXTRA_WEIGHTS,)) as staging:
        hf_config_for(config).save_pretrained(os.fspath(staging))
        # transformers refuses safetensors files without this metadata.
        save_file(weights, os.fspath(staging / "model.safetensors"), metadata={"format": "pt"})
        files.write_json(staging / EXTRA_CONFIG, meta)
        if extras:
            save_file(extras, os.fspath(staging / EXTRA_WEIGHTS), metadata={"format": "np"})
    return out_dir


def read_extras(folder: str) -> tuple[dict[str, np.ndarray], dict]:
    """The extra parameters and config that `export_hf` wrote in a folder, if any."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    config_path = os.path.join(folder, EXTRA_CONFIG)
    if not os.path.isfile(config_path):
        return {}, {}
    meta = files.read_json(config_path, object_only=True)
    names = meta.get("extra_params", [])
    weights_path = os.path.join(folder, EXTRA_WEIGHTS)
    extras = {}
    if names:
        try:
            extras = load_file(weights_path)
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{weights_path}: missing, truncated or corrupt ({e})") from None
        if set(extras) != set(names):
            raise CheckpointError(f"{weights_path}: holds {sorted(extras)}, "
                                  f"{config_path} lists {sorted(names)}")
    return extras, meta.get("extra_config", {})
