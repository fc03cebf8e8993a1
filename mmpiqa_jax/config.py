"""Configs as Python files with `get_config(arg)`, loaded as `FILE[:ARGS]` (`load_config`), plus
`--set` overrides, as in big_vision: `configs/mpiqe.py:depth=12` calls `get_config("depth=12")`,
typed by `parse_arg`. Loaded configs are locked: an override of an unknown key names it.
"""
from __future__ import annotations

import ast
import importlib.util
import itertools
import os
from collections.abc import Sequence
from typing import Any

import ml_collections

from mmpiqa_jax.errors import MissingFileError, UserError


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """Parses `"a=1,b=x"` into a ConfigDict typed like `defaults`; unknown names are errors.

    A value takes the type of its default (bool accepts true/false/1/0/yes/no). Values cannot
    contain commas; use `--set` for tuples.
    """
    out = ml_collections.ConfigDict(defaults)
    if not arg:
        return out
    for item in arg.split(","):
        if not item.strip():
            continue
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep:
            raise UserError(f"config argument {item!r} is not of the form name=value")
        if name not in defaults:
            raise UserError(f"unknown config argument {name!r}; known: {sorted(defaults)}")
        out[name] = _convert(text.strip(), defaults[name], f"config argument {name!r}")
    return out


def _convert(text: str, like: Any, what: str) -> Any:
    """`text` as a value of the type of `like` (None: a Python literal, else the string)."""
    if isinstance(like, bool):
        low = text.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise UserError(f"{what}: expected a bool, got {text!r}")
    if isinstance(like, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if like is None:
            return text
        raise UserError(f"{what}: expected {type(like).__name__}, got {text!r}") from None
    if like is None:
        return value
    if isinstance(like, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(like, (tuple, list)) and isinstance(value, (tuple, list)):
        return type(like)(value)
    if type(value) is not type(like):
        raise UserError(f"{what}: expected {type(like).__name__}, got {text!r}")
    return value


def _load_module(path: str):
    if not os.path.isfile(path):
        raise MissingFileError(f"config file {path!r} does not exist")
    spec = importlib.util.spec_from_file_location(
        "mmpiqa_config_" + os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def split_spec(spec: str) -> tuple[str, str | None]:
    """`"configs/mpiqe.py:depth=0"` -> `("configs/mpiqe.py", "depth=0")`."""
    path, sep, arg = spec.partition(".py:")
    return (path + ".py", arg) if sep else (spec, None)


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Loads `FILE[:ARGS]`, applies `key=value` overrides, and returns the locked config."""
    path, arg = split_spec(spec)
    module = _load_module(path)
    if not hasattr(module, "get_config"):
        raise UserError(f"config file {path!r} has no get_config(arg) function")
    config = module.get_config(arg)
    if not isinstance(config, ml_collections.ConfigDict):
        raise UserError(f"get_config in {path!r} returned {type(config).__name__}, "
                        "not a ConfigDict")
    config.lock()
    apply_overrides(config, overrides)
    return config


def _parent(config: ml_collections.ConfigDict, key: str):
    *parents, leaf = key.split(".")
    node = config
    for i, name in enumerate(parents):
        if not isinstance(node, ml_collections.ConfigDict) or name not in node:
            raise UserError(f"unknown config key {key!r} "
                            f"(no section {'.'.join(parents[:i + 1])!r})")
        node = node[name]
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
        raise UserError(f"unknown config key {key!r}")
    return node, leaf


def get_key(config: ml_collections.ConfigDict, key: str) -> Any:
    """The value at a dotted key; an unknown key is an error naming it."""
    node, leaf = _parent(config, key)
    return node[leaf]


def set_key(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
    """Sets a dotted key to a value of its type (ints promote to float); unknown keys are errors."""
    node, leaf = _parent(config, key)
    old = node[leaf]
    if isinstance(old, ml_collections.ConfigDict):
        raise UserError(f"config key {key!r} is a section, not a value")
    if isinstance(value, str) and not isinstance(old, str):
        value = _convert(value, old, f"config key {key!r}")
    try:
        node[leaf] = value
    except TypeError as e:  # ConfigDict's own type check, e.g. a str for an int
        raise UserError(f"config key {key!r}: {e}") from None


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
    """Applies `key=value` strings (`--set`), each typed like the value it replaces."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise UserError(f"override {item!r} is not of the form key=value")
        set_key(config, key.strip(), text.strip())


def expand_sweep(config: ml_collections.ConfigDict) -> list[tuple[str, ml_collections.ConfigDict]]:
    """The runs of the grid that `config.sweep` declares, as `(name, config)` pairs.

    `config.sweep` mirrors the config's structure with a list of values at each swept key, e.g.
    `sweep.model.visual_prompt_depth = (0, 3, 6)`; the grid is the product over keys. Without a
    sweep, the config itself is the only run.
    """
    if "sweep" not in config or not config.sweep:
        return [("run", config)]
    axes = []
    for key, value in sorted(flatten(config.sweep.to_dict()).items()):
        if not isinstance(value, (tuple, list)) or not value:
            raise UserError(f"sweep key {key!r} must list its values, got {value!r}")
        get_key(config, key)  # fails early, naming the key, when it does not exist
        axes.append((key, tuple(value)))
    runs = []
    for values in itertools.product(*(v for _, v in axes)):
        run = ml_collections.ConfigDict(config.to_dict())
        del run["sweep"]
        run.lock()
        for (key, _), value in zip(axes, values):
            set_key(run, key, value)
        name = ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for (k, _), v in zip(axes, values))
        runs.append((name, run))
    return runs


def flatten(tree: dict, prefix: str = "") -> dict:
    """A nested dict as `{"a.b.c": value}`, the dotted keys of `--set`."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def load_sibling(config_file: str, name: str):
    """Imports `name.py` from the directory of `config_file` (configs share `configs/common.py`)."""
    return _load_module(os.path.join(os.path.dirname(os.path.abspath(config_file)), name + ".py"))
