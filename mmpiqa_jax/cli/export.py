"""`mmpiqa export CKPT --to hf --out DIR`: a checkpoint to a Hugging Face CLIP folder;
`mmpiqa export WORKDIR --to torch --out DIR`: a trained MP-IQE / LIQE to the PyTorch module
`mmpiqa_jax.pytorch` loads; `mmpiqa export WORKDIR --to pyiqa --out FILE.pt`: a LIQE run to pyiqa's
LIQE weights file."""
from __future__ import annotations

import argparse
import sys

HELP = ("Export a checkpoint to a Hugging Face CLIP folder (extras in mmpiqa_extra.safetensors), "
        "or a training workdir to PyTorch (--to torch), or a LIQE workdir to pyiqa's LIQE file.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ckpt", help="hf: a checkpoint written by `mmpiqa convert` (or any "
                                     "supported format); torch: a training workdir; pyiqa: a "
                                     "LIQE training workdir, or one `mmpiqa convert` wrote from a "
                                     "LIQE model")
    parser.add_argument("--to", choices=["hf", "torch", "pyiqa"], default="hf",
                        help="hf: a Hugging Face CLIP folder; torch: model.safetensors and "
                             "config.json for mmpiqa_jax.pytorch.load; pyiqa (LIQE models only): "
                             "the file pyiqa's LIQE loads as pretrained_model_path, with mtl=True "
                             "for the 495 joint prompts, as liqe_mix, mtl=False for quality "
                             "prompts, as liqe")
    parser.add_argument("--out", required=True,
                        help="folder (hf, torch) or .pt file (pyiqa) to write")


def export_pyiqa(args: argparse.Namespace) -> int:
    """The best checkpoint of a LIQE workdir as pyiqa's `{'params': {'clip_model.*': ...}}`."""
    from mmpiqa_jax.checkpoints import CheckpointError, liqe_formats
    from mmpiqa_jax.checkpoints.clip_conversion import to_openai_state_dict
    from mmpiqa_jax.train import inference

    try:
        config = inference.read_config(args.ckpt)
        m = config.model
        if m.name != "liqe" or m.get("num_text_context", 0):
            raise ValueError(f"{args.ckpt}: a {m.name} model with num_text_context="
                             f"{m.get('num_text_context', 0)}; pyiqa's LIQE holds LIQE on its "
                             "fixed prompts only (model.name=liqe, num_text_context=0)")
        model, config = inference.load_for_inference(args.ckpt)
        out = liqe_formats.write_pyiqa(args.out, to_openai_state_dict(model.clip))
    except (CheckpointError, FileNotFoundError, ValueError, KeyError) as e:
        print(f"mmpiqa export: {e}", file=sys.stderr)
        return 1
    mtl = config.model.get("liqe_prompts", "joint") == "joint"
    print(f"wrote pyiqa's LIQE weights to {out}: pyiqa.archs.liqe_arch.LIQE("
          f"pretrained_model_path={out!r}, mtl={mtl}) (or create_metric("
          f"{'liqe_mix' if mtl else 'liqe'!r}, pretrained_model_path=...)); delete pyiqa's "
          "cached text features first (README, 'pyiqa')")
    return 0


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
    if args.to == "pyiqa":
        return export_pyiqa(args)
    if args.to == "torch":
        return _run_torch(args)
    from mmpiqa_jax.checkpoints import CheckpointError, export_hf, load_checkpoint

    try:
        checkpoint = load_checkpoint(args.ckpt)
        export_hf(checkpoint.clip, args.out, extra_params=checkpoint.extra_params,
                  extra_config=checkpoint.extra_config)
    except CheckpointError as e:
        print(f"mmpiqa export: {e}", file=sys.stderr)
        return 1
    n = len(checkpoint.extra_params or {})
    extras = f" and {n} extra parameters" if n else ""
    print(f"wrote a Hugging Face CLIP folder{extras} to {args.out} "
          "(load with transformers.CLIPModel.from_pretrained; no tokenizer files)")
    return 0
