"""Reading PyTorch files (`torch.save` pickles and TorchScript archives) into numpy; torch is
imported only when such a file is read."""
from __future__ import annotations

import dataclasses
import pickle
import zipfile
from collections.abc import Mapping

import numpy as np

from mmpiqa_jax.checkpoints.errors import CheckpointError


@dataclasses.dataclass(frozen=True)
class TensorShape:
    """A tensor's shape without its values (what `np.shape` reads), for shape-only reading."""
    shape: tuple[int, ...]


def require_torch(path: str):
    """The torch module; raises `CheckpointError` naming `path` when torch is not installed."""
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{path}: reading a PyTorch file (.pt/.bin) needs torch, which is not installed; "
            "`pip install torch` (the CPU build is enough), or give a .safetensors file") from None
    return torch


def is_torchscript(path: str) -> bool:
    """Whether the zip archive at `path` is a TorchScript archive (it holds code and constants)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt zip archive ({e})") from None
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def _to_numpy(tree, torch, *, shapes_only: bool = False):
    """`tree` with every torch tensor as numpy (floating point as float32) or `TensorShape`."""
    if isinstance(tree, Mapping):
        return {k: _to_numpy(v, torch, shapes_only=shapes_only) for k, v in tree.items()}
    if isinstance(tree, torch.Tensor) and shapes_only:
        return TensorShape(tuple(tree.shape))
    if isinstance(tree, torch.Tensor):
        tensor = tree.detach().cpu()
        # numpy has no bfloat16.
        return (tensor.float() if tensor.is_floating_point() else tensor).numpy()
    return tree


def load_pickle(path: str, *, shapes_only: bool = False):
    """The object in a `torch.save` file, tensors as numpy (or `TensorShape`s, a zip file
    memory-mapped); only plain data is unpickled."""
    torch = require_torch(path)
    try:
        mmap = shapes_only and zipfile.is_zipfile(path)  # torch maps zip files only
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Weights only" in str(e):
            raise CheckpointError(
                f"{path}: holds Python objects besides tensors, which are not unpickled "
                f"(weights_only=True); save its state_dict() instead. torch said: "
                f"{str(e).splitlines()[0]}"
            ) from None
        raise CheckpointError(f"{path}: truncated or corrupt PyTorch pickle ({e})") from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt PyTorch file "
                              f"({type(e).__name__}: {e})") from None
    return _to_numpy(obj, torch, shapes_only=shapes_only)


def load_torchscript(path: str, *, shapes_only: bool = False) -> dict[str, np.ndarray]:
    """The state dict of a TorchScript archive (OpenAI's `.pt` files), as numpy (or
    `TensorShape`s)."""
    torch = require_torch(path)
    try:
        module = torch.jit.load(path, map_location="cpu")
    except (RuntimeError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt TorchScript archive ({e})") from None
    return _to_numpy(dict(module.state_dict()), torch, shapes_only=shapes_only)
