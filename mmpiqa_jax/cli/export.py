"""`mmpiqa export CKPT --to hf --out DIR`: a checkpoint to a Hugging Face CLIP folder;
`mmpiqa export WORKDIR --to torch --out DIR`: a trained MP-IQE / LIQE to the PyTorch module
`mmpiqa_jax.pytorch` loads; `mmpiqa export WORKDIR --to pyiqa --out FILE.pt`: a LIQE run to pyiqa's
LIQE weights file."""
from __future__ import annotations

import argparse

from mmpiqa_jax.errors import UserError

HELP = ("Export a checkpoint to a Hugging Face CLIP folder (extras in mmpiqa_extra.safetensors), "
        "or a training workdir to PyTorch (--to torch), or a LIQE workdir to pyiqa's LIQE file.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ckpt", help="a training workdir, one checkpoint in it "
                                     "(WORKDIR/checkpoints/N), or a model folder (`mmpiqa "
                                     "convert` of a LIQE model); hf also takes any CLIP "
                                     "checkpoint; pyiqa takes LIQE models only")
    parser.add_argument("--to", choices=["hf", "torch", "pyiqa"], default="hf",
                        help="hf: a Hugging Face CLIP folder; torch: model.safetensors and "
                             "config.json for mmpiqa_jax.pytorch.load; pyiqa (LIQE models only): "
                             "the file pyiqa's LIQE loads as pretrained_model_path, with mtl=True "
                             "for the 495 joint prompts, as liqe_mix, mtl=False for quality "
                             "prompts, as liqe")
    parser.add_argument("--out", required=True,
                        help="folder (hf, torch) or .pt file (pyiqa) to write")


def _pyiqa(model, config, out: str) -> str:
    """A LIQE run's model as pyiqa's `{'params': {'clip_model.*': ...}}`."""
    from mmpiqa_jax.checkpoints import liqe_formats
    from mmpiqa_jax.checkpoints.clip_conversion import to_openai_state_dict

    m = config.model
    if m.name != "liqe" or m.num_text_context:
        raise UserError(f"{m.name} with num_text_context={m.num_text_context}: "
                        "pyiqa's LIQE holds LIQE on its fixed prompts only (model.name=liqe, "
                        "num_text_context=0)")
    out = liqe_formats.write_pyiqa(out, to_openai_state_dict(model.clip))
    mtl = m.liqe_prompts == "joint"
    return (f"wrote pyiqa's LIQE weights to {out}: pyiqa.archs.liqe_arch.LIQE("
            f"pretrained_model_path={out!r}, mtl={mtl}) (or create_metric("
            f"{'liqe_mix' if mtl else 'liqe'!r}, pretrained_model_path=...)); delete pyiqa's "
            "cached text features first (docs/checkpoints.md)")


def run(args: argparse.Namespace) -> int:
    from mmpiqa_jax.checkpoints import export_hf, load_checkpoint
    from mmpiqa_jax.checkpoints.torch_export import export_torch
    from mmpiqa_jax.evaluate.scoring import crop_setting
    from mmpiqa_jax.train import inference

    if args.to == "hf" and not inference.is_run(args.ckpt):
        # Any checkpoint, a model folder included: its CLIP, extras passed on as they are.
        checkpoint = load_checkpoint(args.ckpt)
        clip, extras, extra_config = checkpoint
    elif args.to == "hf":
        model, config = inference.load_model(args.ckpt)
        clip, (extras, extra_config) = model.clip, inference.extras_of(model, config)
    else:
        model, config = inference.load_model(args.ckpt)
        if args.to == "pyiqa":
            print(_pyiqa(model, config, args.out))
            return 0
        export_torch(model, args.out, preprocess=crop_setting(config))
        print(f"wrote a PyTorch {config.model.name} to {args.out} (model.safetensors, "
              "config.json; load with mmpiqa_jax.pytorch.load)")
        return 0
    export_hf(clip, args.out, extra_params=extras, extra_config=extra_config)
    more = f" and {len(extras)} extra parameters" if extras else ""
    print(f"wrote a Hugging Face CLIP folder{more} to {args.out} "
          "(load with transformers.CLIPModel.from_pretrained; no tokenizer files)")
    return 0
