"""`load_clip` and `load_checkpoint`: any supported checkpoint to a Flax CLIP (and its extras)."""
from __future__ import annotations

import dataclasses
import os

from mmpiqa_jax.checkpoints.clip_conversion import from_openai_state_dict, infer_config
from mmpiqa_jax.checkpoints.export import read_extras
from mmpiqa_jax.checkpoints.formats import read_source
from mmpiqa_jax.checkpoints.openai_layout import check_state_dict
from mmpiqa_jax.checkpoints.project import Checkpoint, is_project_checkpoint
from mmpiqa_jax.checkpoints.project import load_checkpoint as load_project_checkpoint
from mmpiqa_jax.models.clip_model import CLIP, CLIPConfig


def load_clip(path: str | os.PathLike, *, dtype: str = "float32",
              config: CLIPConfig | None = None) -> CLIP:
    """A Flax `CLIP` from any supported checkpoint (see `formats`); `dtype` is the compute dtype.

    The architecture is the file's own config where it has one (Hugging Face, project), else it
    is inferred from the tensors' shapes; `config` overrides both (e.g. for heads that are not
    width // 64 in an open_clip file).
    """
    return load_checkpoint(path, dtype=dtype, config=config).clip


def load_checkpoint(path: str | os.PathLike, *, dtype: str = "float32",
                    config: CLIPConfig | None = None) -> Checkpoint:
    """(CLIP, extra params, extra config) from a project checkpoint or any supported format.

    Extras come from a project checkpoint or from a Hugging Face folder written by `export_hf`;
    other formats have none.
    """
    return read_checkpoint(path, dtype=dtype, config=config)[0]


def read_checkpoint(path: str | os.PathLike, *, dtype: str = "float32",
                    config: CLIPConfig | None = None) -> tuple[Checkpoint, str]:
    """`load_checkpoint`, and the detected format's name (see `formats`)."""
    path = os.fspath(path)
    if config is None and is_project_checkpoint(path):
        return load_project_checkpoint(path, dtype=dtype), "mmpiqa"
    source = read_source(path)
    config = config or source.config or infer_config(source.state_dict, source=path)
    config = dataclasses.replace(config, dtype=dtype)
    check_state_dict(source.state_dict, config, source=path, names=source.names)
    model = from_openai_state_dict(source.state_dict, source=path, config=config, dtype=dtype)
    extras, extra_config = read_extras(path) if source.format == "huggingface" else ({}, {})
    return Checkpoint(model, extras, extra_config), source.format
