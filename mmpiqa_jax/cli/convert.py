"""`mmpiqa convert SRC --out DIR`: any supported CLIP checkpoint to the project's Orbax checkpoint,
or a released LIQE model (LIQE's, pyiqa's) to a model folder that `mmpiqa score`, `eval`,
`export` and `create_metric` read."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from mmpiqa_jax.errors import MissingFileError

HELP = ("Convert a CLIP checkpoint (OpenAI, open_clip or Hugging Face) to the project's "
        "checkpoint, or a LIQE model (LIQE's LIQE.pt, pyiqa's liqe_*.pt) to a model folder.")
# The LIQE config a converted LIQE model's workdir is written with.
LIQE_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "liqe.py"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="OpenAI/open_clip .pt/.bin/.safetensors file, or a Hugging "
                                    "Face folder")
    parser.add_argument("--out", required=True, help="folder to write the checkpoint to")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a checkpoint already in --out")
    parser.add_argument(
        "--arch", default=None, metavar="NAME",
        help="the architecture of a bare open_clip state dict, which carries neither its heads "
             "nor its activation: an open_clip model name (ViT-B-32 for exact GELU, "
             "ViT-B-32-quickgelu for OpenAI's weights, ...; see checkpoints/open_clip_arch.py) "
             "or an open_clip model config JSON file")
    parser.add_argument(
        "--as", dest="kind", choices=("auto", "clip", "liqe"), default="auto",
        help="what SRC holds. auto: pyiqa's LIQE files ({'params': {'clip_model.*'}}) and "
             "LIQE's training checkpoints ({'model_state_dict'}) are LIQE models, anything "
             "else a CLIP; liqe: also a bare CLIP state dict, as LIQE's released LIQE.pt is. "
             "A LIQE model becomes a model folder for `mmpiqa score --checkpoint`, `eval`, "
             "`export` and create_metric")
    parser.add_argument(
        "--prompts", choices=("joint", "quality"), default="joint",
        help="the prompts a LIQE model was trained with, which its file does not say: joint "
             "(the 495, LIQE's paper model, pyiqa's liqe_mix.pt) or quality (5 'a photo with "
             "{q} quality', LIQE's train_liqe_single.py, pyiqa's liqe_koniq.pt)")


def variant_name(config) -> str:
    """The name of the built-in variant that `config` is, else "custom"."""
    import dataclasses

    from mmpiqa_jax.models.clip_model import VARIANTS

    for name, variant in VARIANTS.items():
        if dataclasses.replace(variant, dtype=config.dtype) == config:
            return name
    return "custom"


def describe(model, fmt: str) -> str:
    """Format, variant, config and parameter count, for the user."""
    import jax
    from flax import nnx

    config = model.config
    fields = ", ".join(f"{k}={v}" for k, v in config.to_dict().items())
    count = sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))
    return (f"format: {fmt}\nvariant: {variant_name(config)}\nconfig: {fields}\n"
            f"parameters: {count:,}")


def liqe_config(variant: str, prompts: str, source: str, fmt: str):
    """configs/liqe.py on `variant` with `prompts`, noting where its weights came from."""
    from mmpiqa_jax import config as config_lib

    if not LIQE_CONFIG.is_file():
        raise MissingFileError(f"{LIQE_CONFIG} not found: converting a LIQE model needs the "
                               "repository's configs/ folder (install with pip install -e)")
    config = config_lib.load_config(f"{LIQE_CONFIG}:variant={variant},prompts={prompts},"
                                    "checkpoint=random")
    with config.unlocked():
        config.converted_from = {"file": os.path.abspath(source), "format": fmt}
    return config


def convert_liqe(args: argparse.Namespace) -> int:
    """A LIQE model file to a model folder (`train.inference.save_model`)."""
    from flax import nnx

    from mmpiqa_jax.checkpoints import CheckpointError, liqe_formats
    from mmpiqa_jax.checkpoints.clip_conversion import from_openai_state_dict
    from mmpiqa_jax.models import iqa
    from mmpiqa_jax.train import inference

    source = liqe_formats.read_liqe(args.src, bare_state_dict=args.kind == "liqe")
    variant = variant_name(source.config)
    if variant == "custom":
        raise CheckpointError(f"{args.src}: a LIQE model on a CLIP of {source.config}, which is "
                              "no built-in variant (LIQE and pyiqa use ViT-B/32)")
    config = liqe_config(variant, args.prompts, args.src, source.format)
    clip = from_openai_state_dict(source.state_dict, source=args.src, config=source.config,
                                  dtype=config.model.dtype)
    model = iqa.build_model(config.model, nnx.Rngs(config.seed), clip=clip)
    out = inference.save_model(model, config, args.out, overwrite=args.overwrite)
    print(f"read {args.src}\n{describe(clip, source.format)}\nprompts: {args.prompts}\n"
          f"wrote the LIQE model {out} (mmpiqa score --checkpoint {out} --crops pyiqa ...)")
    return 0


def run(args: argparse.Namespace) -> int:
    from mmpiqa_jax.checkpoints import liqe_formats, save_checkpoint
    from mmpiqa_jax.checkpoints.load import read_checkpoint

    if args.kind == "liqe" or (args.kind == "auto" and liqe_formats.detect(args.src)):
        return convert_liqe(args)
    checkpoint, fmt = read_checkpoint(args.src, arch=args.arch)
    out = save_checkpoint(args.out, checkpoint.clip, checkpoint.extra_params,
                          checkpoint.extra_config, overwrite=args.overwrite)
    print(f"read {args.src}\n{describe(checkpoint.clip, fmt)}\nwrote {out}")
    return 0
