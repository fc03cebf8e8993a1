"""Dataset names -> tfds builders: build (`prepare`) and read (`load_source`) by name.

A name may carry a builder config, `synthetic_iqa/small`. Prepared data live under
`default_data_dir()`.
"""
import importlib
import logging
import os
from typing import Any

import tensorflow_datasets as tfds

from mmpiqa_jax.errors import MissingFileError, UserError

# name -> module defining `BUILDER`; modules are imported only when their dataset is used.
BUILDER_MODULES = {
    name: f"mmpiqa_jax.data.builders.{name}"
    for name in ("kadid10k", "csiq", "live_iqa", "tid2013", "koniq10k", "live_challenge", "bid",
                 "spaq", "synthetic_iqa")
}
# Datasets built from nothing the user downloads.
EMBEDDED = ("synthetic_iqa",)


def default_data_dir() -> str:
    """Where datasets are prepared and read: `$MMPIQA_DATA_DIR`, else `~/mmpiqa_data`."""
    return os.path.expanduser(os.environ.get("MMPIQA_DATA_DIR") or "~/mmpiqa_data")


def _split_name(name: str) -> tuple[str, str | None]:
    base, _, config = name.partition("/")
    if base not in BUILDER_MODULES:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(BUILDER_MODULES)}")
    return base, (config or None)


def builder_class(name: str) -> type:
    """The builder class of a dataset (name without config)."""
    base, _ = _split_name(name)
    try:
        module = importlib.import_module(BUILDER_MODULES[base])
    except ModuleNotFoundError as e:
        raise UserError(f"dataset {base!r}: builder module {BUILDER_MODULES[base]} is missing "
                        f"({e})") from e
    return module.BUILDER


def get_builder(name: str, data_dir: str | None = None, **kwargs: Any) -> tfds.core.DatasetBuilder:
    """The builder of `name` (`base` or `base/config`), writing array_record under `data_dir`."""
    _, config = _split_name(name)
    if config is not None:
        kwargs.setdefault("config", config)
    kwargs.setdefault("file_format", "array_record")
    return builder_class(name)(data_dir=data_dir or default_data_dir(), **kwargs)


def _prepare_hint(name: str, data_dir: str | None) -> str:
    base, _ = _split_name(name)
    manual = "" if base in EMBEDDED else " --manual-dir DIR"
    where = f" --data-dir {data_dir}" if data_dir else ""
    return f"run: mmpiqa prepare {name}{manual}{where}"


# How a published dataset's images may be stored: the builder option and its metadata key.
STORAGE_VARIANTS = {"liqe_resize": "liqe_resized", "uncompressed": "uncompressed"}


def _describe_storage(variant: dict[str, bool]) -> str:
    resize = "with" if variant["liqe_resize"] else "without"
    return (f"{resize} LIQE's resize, "
            f"{'uncompressed (BMP)' if variant['uncompressed'] else 'as published'}")


def prepare(name: str, manual_dir: str | None = None, data_dir: str | None = None, *,
            allow_partial: bool = False, liqe_resize: bool = False,
            uncompressed: bool = False) -> tfds.core.DatasetBuilder:
    """Builds `name` into `data_dir` from the user's folder `manual_dir` (none for embedded ones).

    allow_partial: accept another image count than the published one (metadata `partial`).
    liqe_resize, uncompressed: store the images after LIQE's resize (no `full` evaluation from
    them), as BMP; metadata `liqe_resized`, `uncompressed`; each in a data dir of its own.
    """
    base, _ = _split_name(name)
    if data_dir is not None and os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise UserError(f"--data-dir {data_dir} is a file, not a folder")
    # Only the builders of published datasets check their count (and take the switches).
    checks = hasattr(builder_class(name), "PUBLISHED_RECORDS")
    variant = {"liqe_resize": bool(liqe_resize), "uncompressed": bool(uncompressed)}
    if any(variant.values()) and not checks:
        flags = " ".join("--" + k.replace("_", "-") for k, on in variant.items() if on)
        raise UserError(f"dataset {name!r}: {flags} is for published datasets only")
    options = {"allow_partial": allow_partial, **variant} if checks else {}
    builder = get_builder(name, data_dir, **options)
    if builder.is_prepared() and checks:
        stored = {k: bool(builder.info.metadata.get(key, False))
                  for k, key in STORAGE_VARIANTS.items()}
        if stored != variant:
            raise UserError(
                f"dataset {name!r} is already prepared in {builder.data_dir} "
                f"{_describe_storage(stored)}; prepare it {_describe_storage(variant)} into "
                "another --data-dir")
    if manual_dir is None and base not in EMBEDDED:
        raise UserError(f"dataset {name!r} is built from a folder you download: "
                        f"{_prepare_hint(name, data_dir)}\n{builder.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    if manual_dir is not None and not (os.path.isdir(manual_dir) and os.listdir(manual_dir)):
        what = "is empty" if os.path.isdir(manual_dir) else "is not a folder"
        raise MissingFileError(f"dataset {name!r}: --manual-dir {manual_dir} {what}; it must "
                               f"hold the download:\n{builder.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    if builder.is_prepared():
        if manual_dir is not None:
            logging.warning("%s is already prepared in %s; nothing was read from %s (remove "
                            "that folder to build it again)", name, builder.data_dir, manual_dir)
        return builder
    config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
    builder.download_and_prepare(download_config=config)
    return builder


def load_source(name: str, split: str = "all", data_dir: str | None = None, *,
                decode_images: bool = True):
    """The `tfds.data_source` of a prepared dataset (`all`: every example, in order); with
    `decode_images=False` the `image` field stays encoded bytes."""
    builder = get_builder(name, data_dir)
    if not builder.is_prepared():
        raise MissingFileError(
            f"dataset {name!r} is not prepared in {builder.data_dir}; "
            f"{_prepare_hint(name, data_dir)}")
    decoders = None if decode_images else {"image": tfds.decode.SkipDecoding()}
    try:
        return builder.as_data_source(split=split, decoders=decoders)
    except (KeyError, ValueError) as e:
        known = ", ".join(builder.info.splits.keys())
        raise UserError(f"dataset {name!r}: unknown split {split!r}; known: all, {known}") from e
