"""`load_clip`, `load_checkpoint` and `read_clip_config`: any supported checkpoint to a Flax CLIP
(and its extras), or to its architecture alone."""
from __future__ import annotations

import dataclasses
import os

from mmpiqa_jax.checkpoints.clip_conversion import (check_state_dict, from_openai_state_dict,
                                                   infer_config)
from mmpiqa_jax.checkpoints.errors import CheckpointError
from mmpiqa_jax.checkpoints.export import read_extras
from mmpiqa_jax.checkpoints.formats import OPEN_CLIP_CONFIG, OPENAI_FORMATS, Source, read_source
from mmpiqa_jax.checkpoints.open_clip_arch import OPEN_CLIP_CONFIGS, resolve_arch
from mmpiqa_jax.checkpoints.project import Checkpoint, is_project_checkpoint
from mmpiqa_jax.checkpoints.project import load_checkpoint as load_project_checkpoint
from mmpiqa_jax.models.clip_model import CLIP, CLIPConfig


def load_clip(path: str | os.PathLike, *, dtype: str = "float32", arch: str | None = None) -> CLIP:
    """A Flax `CLIP` from any supported checkpoint (see `formats`); `dtype` is the compute dtype.

    The architecture is `arch` if given (an open_clip model name such as "ViT-B-32-quickgelu",
    or an open_clip model config JSON file), else the file's own config, else, for OpenAI's
    files, their shapes; a bare open_clip state dict needs `arch`.
    """
    return load_checkpoint(path, dtype=dtype, arch=arch).clip


def load_checkpoint(path: str | os.PathLike, *, dtype: str = "float32",
                    arch: str | None = None) -> Checkpoint:
    """(CLIP, extra params, extra config) from any supported format (extras: from a project
    checkpoint or an `export_hf` folder)."""
    return read_checkpoint(path, dtype=dtype, arch=arch)[0]


def read_checkpoint(path: str | os.PathLike, *, dtype: str = "float32",
                    arch: str | None = None) -> tuple[Checkpoint, str]:
    """`load_checkpoint`, and the detected format's name (see `formats`)."""
    path = os.fspath(path)
    if arch is None and is_project_checkpoint(path):
        return load_project_checkpoint(path, dtype=dtype), "mmpiqa"
    source = read_source(path)
    config = architecture(source, path=path, arch=arch)
    model = from_openai_state_dict(source.state_dict, source=path, config=config, dtype=dtype,
                                   names=source.names)
    extras, extra_config = read_extras(path) if source.format == "huggingface" else ({}, {})
    return Checkpoint(model, extras, extra_config), source.format


def read_clip_config(path: str | os.PathLike, *, arch: str | None = None) -> CLIPConfig:
    """The architecture of the CLIP at `path` (as `load_clip` resolves it), without its weights
    where the format allows."""
    path = os.fspath(path)
    source = read_source(path, shapes_only=True)
    return architecture(source, path=path, arch=arch)


def architecture(source: Source, *, path: str, arch: str | None = None) -> CLIPConfig:
    """The `CLIPConfig` of `source` (see `load_clip` for the order); never a guess."""
    if arch is not None:
        stated = resolve_arch(arch)
        if source.config is not None and dataclasses.replace(source.config,
                                                             dtype=stated.dtype) != stated:
            raise CheckpointError(f"{path}: its own config ({source.config}) disagrees with "
                                  f"--arch {arch} ({stated})")
        return stated
    if source.config is not None:
        return source.config
    inferred = infer_config(source.state_dict, source=path)
    if source.format in OPENAI_FORMATS:
        return inferred
    # Shapes fix every tensor: report a damaged file before asking for what it cannot say.
    check_state_dict(source.state_dict, inferred, source=path, names=source.names)
    raise CheckpointError(
        f"{path}: an open_clip state dict, which says neither its attention heads nor its "
        "activation (QuickGELU for OpenAI's weights, exact GELU for LAION's and DataComp's). "
        f"Name its open_clip model: `mmpiqa convert {path} --arch NAME --out DIR` (in Python, "
        f"arch=NAME), NAME one of {', '.join(OPEN_CLIP_CONFIGS)} or an open_clip model "
        f"config JSON file; or put its {OPEN_CLIP_CONFIG} beside it. LIQE's LIQE.pt is "
        f"such a file: convert it as a LIQE model with `mmpiqa convert {path} --as liqe`.")
