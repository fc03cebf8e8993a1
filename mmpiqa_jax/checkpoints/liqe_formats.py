"""LIQE's released models in and out: LIQE's own files and pyiqa's, as OpenAI-layout state dicts.

Formats (the names `read_liqe` returns): "liqe" (zwx8981/LIQE's `LIQE.pt`, a bare CLIP state
dict: read as LIQE's only when asked, `mmpiqa convert --as liqe`), "liqe-train" (its training
checkpoints, `{"model_state_dict": ...}`), "pyiqa" (`liqe_mix.pt` / `liqe_koniq.pt`,
`{"params": state_dict}` with the CLIP under `clip_model.`).

None says its prompts: pyiqa's `liqe_mix` scores the 495 joint prompts, `liqe_koniq` the 5
"a photo with {q} quality". The architecture is OpenAI's, from the shapes; torch is needed.
"""
from __future__ import annotations

import io
import os
from collections.abc import Mapping

import numpy as np

from mmpiqa_jax import files
from mmpiqa_jax.checkpoints.clip_conversion import check_state_dict, infer_config
from mmpiqa_jax.checkpoints.errors import CheckpointError, listing
from mmpiqa_jax.checkpoints.formats import Source, container
from mmpiqa_jax.checkpoints.openai_layout import (clean_state_dict, looks_like_openai,
                                                  strip_ddp_prefix)
from mmpiqa_jax.checkpoints.torch_files import load_pickle, require_torch
from mmpiqa_jax.errors import MissingFileError

PYIQA_KEY = "params"
PYIQA_PREFIX = "clip_model."
LIQE_TRAIN_KEY = "model_state_dict"


def format_of(obj) -> str | None:
    """"pyiqa" or "liqe-train" for an unpickled object of those formats, else None."""
    if not isinstance(obj, Mapping):
        return None
    params = obj.get(PYIQA_KEY)
    if isinstance(params, Mapping) and params:
        if all(k.startswith(PYIQA_PREFIX) for k in strip_ddp_prefix(params)):
            return "pyiqa"
    if isinstance(obj.get(LIQE_TRAIN_KEY), Mapping):
        return "liqe-train"
    return None


def detect(path: str | os.PathLike) -> str | None:
    """The LIQE format recognised in the file at `path` ("pyiqa", "liqe-train"), else None (a
    bare CLIP state dict, as LIQE's `LIQE.pt`, is None)."""
    path = os.fspath(path)
    try:
        if container(path) != "pickle":
            return None
        return format_of(load_pickle(path, shapes_only=True))
    except CheckpointError:
        return None  # not a file, or not plain data: let the CLIP readers report it


def _state_dict_of(obj, fmt: str) -> dict:
    if fmt == "pyiqa":
        return {k[len(PYIQA_PREFIX):]: v for k, v in strip_ddp_prefix(obj[PYIQA_KEY]).items()}
    if fmt == "liqe-train":
        return obj[LIQE_TRAIN_KEY]
    return obj


def read_liqe(path: str | os.PathLike, *, bare_state_dict: bool = False) -> Source:
    """The CLIP of a LIQE model file (see the module docstring), checked against its shapes.

    `bare_state_dict`: a file in neither pyiqa's nor LIQE's training format is taken as LIQE's
    `LIQE.pt` (a bare CLIP state dict); otherwise it is an error.
    """
    path = os.fspath(path)
    if container(path) != "pickle":
        raise CheckpointError(f"{path}: not a torch.save file; a LIQE model is a .pt file "
                              f"(LIQE's LIQE.pt or training checkpoint, pyiqa's liqe_*.pt)")
    obj = load_pickle(path)
    fmt = format_of(obj)
    if fmt is None:
        if not bare_state_dict:
            found = listing(obj, 8) if isinstance(obj, Mapping) else type(obj).__name__
            raise CheckpointError(
                f"{path}: neither pyiqa's LIQE ({{'{PYIQA_KEY}': {{'{PYIQA_PREFIX}...': ...}}}}) "
                f"nor a LIQE training checkpoint ({{'{LIQE_TRAIN_KEY}': ...}}); found {found}. "
                "LIQE's LIQE.pt is a bare CLIP state dict: convert it with --as liqe")
        fmt = "liqe"
    state_dict = clean_state_dict(_state_dict_of(obj, fmt), source=path)
    if not looks_like_openai(state_dict):
        raise CheckpointError(f"{path}: a {fmt} file whose state dict is not OpenAI CLIP's (no "
                              f"visual.conv1.weight / token_embedding.weight; found "
                              f"{listing(state_dict, 8)})")
    config = infer_config(state_dict, source=path)  # OpenAI's: QuickGELU, 64-wide heads
    check_state_dict(state_dict, config, source=path)
    floats = {k: np.asarray(v, np.float32) for k, v in state_dict.items()}
    return Source(floats, fmt, config)


def write_pyiqa(path: str | os.PathLike, state_dict: Mapping[str, np.ndarray]) -> str:
    """Writes the file pyiqa's `LIQE(pretrained_model_path=path)` loads (whole or not at all,
    `files.write_bytes`); returns its path."""
    path = os.fspath(path)
    torch = require_torch(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise MissingFileError(f"{path}: the folder {folder} does not exist")
    buffer = io.BytesIO()
    torch.save({PYIQA_KEY: {PYIQA_PREFIX + k: torch.from_numpy(np.array(v, np.float32))
                            for k, v in state_dict.items()}}, buffer)
    files.write_bytes(path, buffer.getvalue())
    return path
