"""The project's own checkpoint: a folder with the CLIP parameters (and any extras) in Orbax.

Layout of `out_dir`:
  config.json   {"format": "mmpiqa_jax.checkpoint", "version": 2, "clip": CLIPConfig.to_dict(),
                 "extra_params": {name: {"shape", "dtype"}}, "extra_config": {...}}
  params/       Orbax (StandardCheckpointer) of {"clip": the nnx.Param state as a pure dict
                (the blocks stacked, as the model holds them), "extra": {name: array}}
`config.json` is written last, so a folder that has it is complete. Extras are a flat
name -> array dict beside CLIP (prompts, heads), with a JSON-able config.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from mmpiqa_jax import files
from mmpiqa_jax.checkpoints.errors import CheckpointError, check_shapes
from mmpiqa_jax.models.clip_model import CLIP, CLIPConfig

PROJECT_FORMAT = "mmpiqa_jax.checkpoint"  # the marker in a project checkpoint's config.json
VERSION = 2
CONFIG_FILE = "config.json"
PARAMS_DIR = "params"


class Checkpoint(NamedTuple):
    """What a checkpoint holds: the CLIP model, the extra parameters and their config."""
    clip: CLIP
    extra_params: dict[str, np.ndarray]
    extra_config: dict


def _flat_shapes(tree) -> dict[str, tuple[int, ...]]:
    return {jax.tree_util.keystr(p, simple=True, separator="/"): tuple(leaf.shape)
            for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def check_extras(extra_params) -> dict[str, np.ndarray]:
    """Extra parameters as C-ordered numpy arrays by name; a name must be a non-empty string."""
    extras = {}
    for name, value in (extra_params or {}).items():
        if not isinstance(name, str) or not name:
            raise CheckpointError(f"extra parameter names must be non-empty strings, got {name!r}")
        extras[name] = np.ascontiguousarray(value)
    return extras


def save_checkpoint(out_dir: str | os.PathLike, clip_model: CLIP,
                    extra_params: Mapping | None = None, extra_config: Mapping | None = None, *,
                    overwrite: bool = False) -> str:
    """Write `clip_model` (+ extras) as a project checkpoint in `out_dir`; returns its path."""
    out_dir = os.path.abspath(os.fspath(out_dir))
    config_path = os.path.join(out_dir, CONFIG_FILE)
    if os.path.exists(config_path) and not overwrite:
        raise CheckpointError(f"{out_dir}: already holds a checkpoint (--overwrite, in Python "
                              "overwrite=True, replaces it)")
    extras = check_extras(extra_params)
    meta = {
        "format": PROJECT_FORMAT,
        "version": VERSION,
        "clip": clip_model.config.to_dict(),
        "extra_params": {k: {"shape": list(v.shape), "dtype": v.dtype.name}
                         for k, v in extras.items()},
        "extra_config": dict(extra_config or {}),
    }
    meta_text = json.dumps(meta, indent=2)  # fails before anything is written if not JSON-able
    params = nnx.to_pure_dict(nnx.state(clip_model, nnx.Param))
    # The earlier checkpoint is replaced only once the new one is written in full.
    with files.replacing(out_dir, last=CONFIG_FILE) as staging:
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(os.fspath(staging / PARAMS_DIR), {"clip": params, "extra": extras})
        files.write_text(staging / CONFIG_FILE, meta_text + "\n")
    return out_dir


def read_config(folder: str) -> dict:
    """The checked `config.json` of a project checkpoint."""
    path = os.path.join(folder, CONFIG_FILE)
    meta = files.read_json(path, object_only=True)
    if meta.get("format") != PROJECT_FORMAT:
        raise CheckpointError(f"{path}: not a project checkpoint (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {meta.get('version')!r}, "
                              f"this code reads version {VERSION}")
    return meta


def load_checkpoint(path: str | os.PathLike, *, dtype: str | None = None) -> Checkpoint:
    """The model, extras and extra config of a project checkpoint; `dtype` overrides the compute
    dtype."""
    folder = os.path.abspath(os.fspath(path))
    meta = read_config(folder)
    config = CLIPConfig.from_dict(meta["clip"])
    if dtype is not None:
        config = dataclasses.replace(config, dtype=dtype)
    # A CLIP's state is its parameters only.
    graphdef, abstract_params = nnx.split(nnx.eval_shape(lambda: CLIP(config, rngs=nnx.Rngs(0))))
    target = {
        "clip": nnx.to_pure_dict(abstract_params),
        "extra": {k: jax.ShapeDtypeStruct(tuple(v["shape"]), np.dtype(v["dtype"]))
                  for k, v in meta.get("extra_params", {}).items()},
    }
    # Onto this process's first device: under `jax.set_mesh` a bare target would carry the
    # abstract mesh, which Orbax cannot place arrays on.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), target)
    params_dir = os.path.join(folder, PARAMS_DIR)
    with ocp.StandardCheckpointer() as checkpointer:
        try:
            stored = checkpointer.metadata(params_dir).item_metadata.tree
        except (FileNotFoundError, OSError, ValueError) as e:
            raise CheckpointError(
                f"{params_dir}: missing or corrupt Orbax parameters ({e})") from None
        # Orbax restores into a target of another shape without complaint: check first.
        check_shapes(_flat_shapes(target), _flat_shapes(stored), source=params_dir,
                     what="parameters do not match config.json")
        try:
            restored = checkpointer.restore(params_dir, target)
        except Exception as e:  # tensorstore raises a variety of types for damaged arrays
            raise CheckpointError(f"{params_dir}: cannot restore the parameters "
                                  f"({type(e).__name__}: {e})") from None
    nnx.replace_by_pure_dict(abstract_params, restored["clip"])
    model = nnx.merge(graphdef, abstract_params)
    extras = {k: np.asarray(v) for k, v in restored["extra"].items()}
    return Checkpoint(model, extras, meta.get("extra_config", {}))


def is_project_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder written by `save_checkpoint`."""
    config_path = os.path.join(os.fspath(path), CONFIG_FILE)
    return (os.path.isfile(config_path)
            and files.read_json(config_path, object_only=True).get("format") == PROJECT_FORMAT)
