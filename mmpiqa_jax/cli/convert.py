"""`mmpiqa convert SRC --out DIR`: any supported CLIP checkpoint to the project's Orbax checkpoint."""
from __future__ import annotations

import argparse

HELP = "Convert a CLIP checkpoint (OpenAI, open_clip or Hugging Face) to the project's checkpoint."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="OpenAI/open_clip .pt/.bin/.safetensors file, or a Hugging Face folder")
    parser.add_argument("--out", required=True, help="folder to write the checkpoint to")
    parser.add_argument("--overwrite", action="store_true", help="replace a checkpoint already in --out")
    parser.add_argument(
        "--arch", default=None, metavar="NAME",
        help="the architecture of a bare open_clip state dict, which carries neither its heads "
             "nor its activation: an open_clip model name (ViT-B-32 for exact GELU, "
             "ViT-B-32-quickgelu for OpenAI's weights, ...; see checkpoints/open_clip_arch.py) "
             "or an open_clip model config JSON file")


def variant_name(config) -> str:
    """The name of the built-in variant that `config` is, else "custom"."""
    import dataclasses

    from mmpiqa_jax.models.clip_model import VARIANTS

    for name, variant in VARIANTS.items():
        if dataclasses.replace(variant, dtype=config.dtype) == config:
            return name
    return "custom"


def parameter_count(model) -> int:
    import jax
    from flax import nnx

    return sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))


def describe(model, fmt: str) -> str:
    """Format, variant, config and parameter count, for the user."""
    config = model.config
    fields = ", ".join(f"{k}={v}" for k, v in config.to_dict().items())
    return (f"format: {fmt}\nvariant: {variant_name(config)}\nconfig: {fields}\n"
            f"parameters: {parameter_count(model):,}")


def run(args: argparse.Namespace) -> int:
    from mmpiqa_jax.checkpoints import CheckpointError, save_checkpoint
    from mmpiqa_jax.checkpoints.load import read_checkpoint

    try:
        checkpoint, fmt = read_checkpoint(args.src, arch=args.arch)
        out = save_checkpoint(args.out, checkpoint.clip, checkpoint.extra_params,
                              checkpoint.extra_config, overwrite=args.overwrite)
    except CheckpointError as e:
        print(f"mmpiqa convert: {e}")
        return 1
    print(f"read {args.src}\n{describe(checkpoint.clip, fmt)}\nwrote {out}")
    return 0
