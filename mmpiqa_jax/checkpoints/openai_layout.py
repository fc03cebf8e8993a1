"""The OpenAI CLIP state-dict layout that every reader produces (keys and layouts of OpenAI's
`clip/model.py`, numpy arrays; every key's shape: `clip_conversion.expected_shapes`).
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from mmpiqa_jax.checkpoints.errors import CheckpointError

# Not parameters: OpenAI's TorchScript hyper-parameters, open_clip's causal mask.
NON_PARAMETER_KEYS = frozenset({"input_resolution", "context_length", "vocab_size", "attn_mask"})


def count_layers(keys, prefix: str) -> int:
    """The blocks of `prefix` (e.g. `transformer.resblocks`) that `keys` name: the highest block
    index + 1 (a missing block's keys are then missing)."""
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    indices = {int(m.group(1)) for k in keys if (m := pattern.match(k))}
    return max(indices) + 1 if indices else 0


def clean_state_dict(obj, *, source: str) -> dict[str, np.ndarray]:
    """The parameters of an OpenAI-layout state dict from a file: `{"state_dict": ...}`
    unwrapped, DDP's `module.` stripped, `NON_PARAMETER_KEYS` dropped."""
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{source}: expected a state dict (a mapping of names to tensors), "
                              f"found {type(obj).__name__}")
    return {k: v for k, v in strip_ddp_prefix(obj).items() if k not in NON_PARAMETER_KEYS}


def strip_ddp_prefix(state_dict: Mapping) -> dict:
    """`state_dict` without the `module.` that DistributedDataParallel puts before its keys."""
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def looks_like_openai(keys) -> bool:
    """Whether `keys` use OpenAI's names (both towers at the top level)."""
    keys = set(keys)
    return "visual.conv1.weight" in keys and "token_embedding.weight" in keys
