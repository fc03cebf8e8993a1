"""Which checkpoint a path holds (told from its bytes, not its name), read into the OpenAI layout.

Formats (the names `read_state_dict` returns): "huggingface" (a folder with `config.json` and
`model.safetensors` / `pytorch_model.bin`, maybe sharded), "openai-torchscript" (OpenAI's `.pt`
files), "openai" (a pickled state dict with OpenAI's `input_resolution` / `context_length` /
`vocab_size`), "open_clip" (a `.pt`, `.bin` or `.safetensors` state dict in OpenAI's names, maybe
`{"state_dict": ...}` with DDP's `module.`; its architecture: an `open_clip_config.json` beside
it, or stated, `open_clip_arch`), "mmpiqa" (the project's checkpoint folder, `project.py`).
"""
from __future__ import annotations

import dataclasses
import os
import struct
from collections.abc import Mapping

import numpy as np

from mmpiqa_jax.checkpoints.clip_conversion import (check_state_dict, infer_config,
                                                   to_openai_state_dict)
from mmpiqa_jax.checkpoints.errors import CheckpointError, listing
from mmpiqa_jax.checkpoints.hf import config_from_hf, hf_to_openai
from mmpiqa_jax.checkpoints.open_clip_arch import config_from_open_clip
from mmpiqa_jax.checkpoints.openai_layout import clean_state_dict, looks_like_openai
from mmpiqa_jax.checkpoints.project import PROJECT_FORMAT
from mmpiqa_jax.checkpoints.project import load_checkpoint as load_project_checkpoint
from mmpiqa_jax.checkpoints.project import read_config as read_project_config
from mmpiqa_jax.checkpoints.torch_files import (TensorShape, is_torchscript, load_pickle,
                                                load_torchscript)
from mmpiqa_jax.files import read_json
from mmpiqa_jax.models.clip_model import CLIPConfig

ACCEPTED = ("a Hugging Face CLIP folder (config.json + model.safetensors or pytorch_model.bin), "
            "an OpenAI CLIP .pt (TorchScript or state dict), an open_clip state dict "
            "(.pt, .bin or .safetensors), or a checkpoint folder written by `mmpiqa convert`")
_HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json",
               "pytorch_model.bin", "pytorch_model.bin.index.json")
OPEN_CLIP_CONFIG = "open_clip_config.json"  # beside the weights in Hub open_clip repositories
OPENAI_FORMATS = ("openai", "openai-torchscript")


@dataclasses.dataclass(frozen=True)
class Source:
    """What a checkpoint file holds, in OpenAI layout (`TensorShape`s for `shapes_only`)."""
    state_dict: dict[str, np.ndarray]
    format: str
    config: CLIPConfig | None = None       # where the file states one (HF, project)
    names: Mapping[str, str] | None = None  # OpenAI key -> name in the file, where they differ


def container(path: str) -> str:
    """"folder", "safetensors", "torchscript" or "pickle" (a `torch.save` file, zip or legacy),
    from the first bytes; else CheckpointError."""
    if os.path.isdir(path):
        return "folder"
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file or folder")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04":  # torch.save's zip format and TorchScript archives
        return "torchscript" if is_torchscript(path) else "pickle"
    # safetensors: u64 header length, then JSON. Tested before pickles: the length's first byte
    # may be 0x80, a pickle's first byte; a pickle's ninth byte is never "{".
    if len(head) == 9 and head[8:9] == b"{":
        header_len = struct.unpack("<Q", head[:8])[0]
        if 8 + header_len > size:
            raise CheckpointError(f"{path}: truncated safetensors file (its header says "
                                  f"{header_len} bytes of metadata, the file has {size} bytes)")
        return "safetensors"
    if head[:1] == b"\x80":  # a pickle (protocol >= 2): torch.save's legacy format
        return "pickle"
    raise CheckpointError(f"{path}: unknown checkpoint format (first bytes {head[:8]!r}: neither a "
                          f"safetensors, zip nor pickle file); accepted: {ACCEPTED}")


def _read_safetensors(path: str, *, shapes_only: bool = False) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file, floating point as float32 (or their shapes)."""
    import ml_dtypes  # a jax dependency; registers bfloat16 with numpy, so safetensors can read it
    from safetensors import SafetensorError, safe_open
    from safetensors.numpy import load_file

    try:
        if shapes_only:
            with safe_open(path, framework="numpy") as f:
                return {k: TensorShape(tuple(f.get_slice(k).get_shape())) for k in f.keys()}
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({e})") from None
    is_float = lambda dtype: np.issubdtype(dtype, np.floating) or dtype == ml_dtypes.bfloat16
    return {k: v.astype(np.float32) if is_float(v.dtype) else v for k, v in tensors.items()}


def _read_tensor_file(path: str, *, shapes_only: bool = False) -> tuple[dict, str]:
    """(the tensors, the `container`) of a weights file."""
    kind = container(path)
    readers = {"safetensors": _read_safetensors, "torchscript": load_torchscript,
               "pickle": load_pickle}
    if kind not in readers:
        raise CheckpointError(f"{path}: is a folder, expected a weights file")
    return readers[kind](path, shapes_only=shapes_only), kind


def _read_hf_weights(folder: str) -> dict:
    """All tensors of a Hugging Face folder, following a shard index if there is one."""
    for name in _HF_WEIGHTS:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        if not name.endswith(".index.json"):
            return _read_tensor_file(path)[0]
        weight_map = read_json(path, object_only=True).get("weight_map")
        if not isinstance(weight_map, Mapping):
            raise CheckpointError(f"{path}: shard index without a weight_map")
        tensors = {}
        for shard in sorted(set(weight_map.values())):
            shard_path = os.path.join(folder, shard)
            if not os.path.isfile(shard_path):
                raise CheckpointError(f"{path}: names shard {shard}, which is not in {folder}")
            tensors.update(_read_tensor_file(shard_path)[0])
        absent = weight_map.keys() - tensors.keys()
        if absent:
            raise CheckpointError(f"{path}: tensors listed in the index but in no shard: "
                                  f"{listing(absent)}")
        return tensors
    raise CheckpointError(f"{folder}: a Hugging Face folder without weights (found "
                          f"{listing(os.listdir(folder))}; expected one of "
                          f"{', '.join(_HF_WEIGHTS)})")


def _read_folder(folder: str, *, shapes_only: bool = False) -> Source:
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise CheckpointError(f"{folder}: a folder without config.json (found "
                              f"{listing(os.listdir(folder)) or 'nothing'}); accepted: {ACCEPTED}")
    config_dict = read_json(config_path, object_only=True)
    if config_dict.get("format") == PROJECT_FORMAT:
        if shapes_only:
            return Source({}, "mmpiqa", CLIPConfig.from_dict(read_project_config(folder)["clip"]))
        model = load_project_checkpoint(folder).clip
        return Source(to_openai_state_dict(model), "mmpiqa", model.config)
    config = config_from_hf(config_dict, source=config_path)
    if shapes_only:  # the config says it all
        return Source({}, "huggingface", config)
    state_dict, names = hf_to_openai(_read_hf_weights(folder), source=folder)
    return Source(state_dict, "huggingface", config, names)


def read_source(path: str | os.PathLike, *, shapes_only: bool = False) -> Source:
    """The checkpoint at `path` in OpenAI layout, its format and the config it states, if any;
    `shapes_only`: what the architecture needs, read cheaply where the format allows."""
    path = os.fspath(path)
    if container(path) == "folder":
        return _read_folder(path, shapes_only=shapes_only)
    tensors, stored = _read_tensor_file(path, shapes_only=shapes_only)
    raw_keys = set(tensors.get("state_dict", tensors)) if isinstance(tensors, Mapping) else set()
    state_dict = clean_state_dict(tensors, source=path)
    if looks_like_openai(state_dict):
        if stored == "torchscript":
            fmt = "openai-torchscript"
        elif raw_keys & {"input_resolution", "context_length", "vocab_size"}:
            fmt = "openai"
        else:  # its architecture: the `open_clip_config.json` beside it, if any
            beside = os.path.join(os.path.dirname(os.path.abspath(path)), OPEN_CLIP_CONFIG)
            config = (config_from_open_clip(read_json(beside, object_only=True), source=beside)
                      if os.path.isfile(beside) else None)
            return Source(state_dict, "open_clip", config)
        return Source(state_dict, fmt)
    if "vision_model.embeddings.patch_embedding.weight" in state_dict:
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isfile(os.path.join(folder, "config.json")):
            return _read_folder(folder, shapes_only=shapes_only)
        raise CheckpointError(f"{path}: Hugging Face CLIPModel weights without their config.json; "
                              "give the folder that holds both")
    raise CheckpointError(f"{path}: a state dict of {len(state_dict)} tensors, but not CLIP's "
                          f"(no visual.conv1.weight / token_embedding.weight; found "
                          f"{listing(state_dict, 8)}); accepted: {ACCEPTED}")


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
    """(the checkpoint at `path` as an OpenAI-layout numpy state dict, the detected format name),
    checked against the file's config or its shapes."""
    path = os.fspath(path)
    source = read_source(path)
    config = source.config or infer_config(source.state_dict, source=path)
    check_state_dict(source.state_dict, config, source=path, names=source.names)
    return source.state_dict, source.format
