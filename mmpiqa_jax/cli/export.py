"""`mmpiqa export CKPT --to hf|torch --out DIR`: a checkpoint to a Hugging Face CLIP folder, or a
trained MP-IQE / LIQE to the PyTorch module `mmpiqa_jax.pytorch` loads."""
from __future__ import annotations

import argparse
import sys

HELP = ("Export a checkpoint to a Hugging Face CLIP folder (extras in mmpiqa_extra.safetensors), "
        "or a training workdir to PyTorch (--to torch)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ckpt", help="hf: a checkpoint written by `mmpiqa convert` (or any "
                                     "supported format); torch: a training workdir")
    parser.add_argument("--to", choices=["hf", "torch"], default="hf",
                        help="hf: a Hugging Face CLIP folder; torch: model.safetensors and "
                             "config.json for mmpiqa_jax.pytorch.load")
    parser.add_argument("--out", required=True, help="folder to write to")


def _run_torch(args: argparse.Namespace) -> int:
    from mmpiqa_jax.checkpoints import CheckpointError
    from mmpiqa_jax.checkpoints.torch_export import export_torch
    from mmpiqa_jax.evaluate.scoring import crop_setting
    from mmpiqa_jax.train import inference

    try:
        model, config = inference.load_for_inference(args.ckpt)
        export_torch(model, args.out, preprocess=crop_setting(config))
    except (FileNotFoundError, ValueError, KeyError) as e:  # CheckpointError is a ValueError
        kind = "" if isinstance(e, CheckpointError) else f"cannot load {args.ckpt}: "
        print(f"mmpiqa export: {kind}{e}", file=sys.stderr)
        return 1
    print(f"wrote a PyTorch {config.model.name} to {args.out} (model.safetensors, config.json; "
          "load with mmpiqa_jax.pytorch.load)")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.to == "torch":
        return _run_torch(args)
    from mmpiqa_jax.checkpoints import CheckpointError, export_hf, load_checkpoint

    try:
        checkpoint = load_checkpoint(args.ckpt)
        export_hf(checkpoint.clip, args.out, extra_params=checkpoint.extra_params,
                  extra_config=checkpoint.extra_config)
    except CheckpointError as e:
        print(f"mmpiqa export: {e}")
        return 1
    n = len(checkpoint.extra_params or {})
    extras = f" and {n} extra parameters" if n else ""
    print(f"wrote a Hugging Face CLIP folder{extras} to {args.out} "
          "(load with transformers.CLIPModel.from_pretrained; no tokenizer files)")
    return 0
