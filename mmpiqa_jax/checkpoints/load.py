"""`load_clip` and `load_checkpoint`: any supported checkpoint to a Flax CLIP (and its extras)."""
from __future__ import annotations

import dataclasses
import os

from mmpiqa_jax.checkpoints import export, formats, openai_layout, project


def load_clip(path: str | os.PathLike, *, dtype: str = "float32", config=None):
    """A Flax `CLIP` from any supported checkpoint (see `formats`); `dtype` is the compute dtype.

    The architecture is the file's own config where it has one (Hugging Face, project), else it
    is inferred from the tensors' shapes; `config` overrides both (e.g. for heads that are not
    width // 64 in an open_clip file).
    """
    return load_checkpoint(path, dtype=dtype, config=config).clip


def load_checkpoint(path: str | os.PathLike, *, dtype: str = "float32", config=None) -> project.Checkpoint:
    """(CLIP, extra params, extra config) from a project checkpoint or any supported format.

    Extras come from a project checkpoint or from a Hugging Face folder written by `export_hf`;
    other formats have none.
    """
    return read_checkpoint(path, dtype=dtype, config=config)[0]


def read_checkpoint(path: str | os.PathLike, *, dtype: str = "float32",
                    config=None) -> tuple[project.Checkpoint, str]:
    """`load_checkpoint`, and the detected format's name (see `formats`)."""
    path = os.fspath(path)
    if config is None and project.is_project_checkpoint(path):
        return project.load_checkpoint(path, dtype=dtype), "mmpiqa"
    from mmpiqa_jax.models.clip_model import from_openai_state_dict, infer_config

    source = formats.read_source(path)
    config = config or source.config or infer_config(source.state_dict, source=path)
    config = dataclasses.replace(config, dtype=dtype)
    openai_layout.check_state_dict(source.state_dict, config, source=path, names=source.names)
    model = from_openai_state_dict(source.state_dict, source=path, config=config, dtype=dtype)
    extras, extra_config = export.read_extras(path) if source.format == "huggingface" else ({}, {})
    return project.Checkpoint(model, extras, extra_config), source.format
