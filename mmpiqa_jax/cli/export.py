"""`mmpiqa export CKPT --to hf --out DIR`: a checkpoint to a Hugging Face CLIP folder."""
from __future__ import annotations

import argparse

HELP = "Export a checkpoint to a Hugging Face CLIP folder (extras in mmpiqa_extra.safetensors)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ckpt", help="a checkpoint written by `mmpiqa convert` (or any supported format)")
    parser.add_argument("--to", choices=["hf"], default="hf", help="target format")
    parser.add_argument("--out", required=True, help="folder to write to")


def run(args: argparse.Namespace) -> int:
    from mmpiqa_jax.checkpoints import CheckpointError, export_hf, load_checkpoint

    try:
        checkpoint = load_checkpoint(args.ckpt)
        export_hf(checkpoint.clip, args.out, extra_params=checkpoint.extra_params,
                  extra_config=checkpoint.extra_config)
    except CheckpointError as e:
        print(f"mmpiqa export: {e}")
        return 1
    extras = f" and {len(checkpoint.extra_params)} extra parameters" if checkpoint.extra_params else ""
    print(f"wrote a Hugging Face CLIP folder{extras} to {args.out} "
          "(load with transformers.CLIPModel.from_pretrained; no tokenizer files)")
    return 0
