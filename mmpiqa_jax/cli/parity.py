"""`mmpiqa parity`: the Flax CLIP against transformers' torch `CLIPModel`, on random weights
(every weight perturbed, so that a mis-mapped bias or norm cannot hide)."""
from __future__ import annotations

import argparse
import tempfile

import numpy as np

HELP = ("Check that clip.load gives transformers' CLIPModel features on random weights "
        "(needs torch).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", default="tiny",
                        help="CLIP variant, e.g. tiny (default) or ViT-B/32")
    parser.add_argument("--batch", type=int, default=2, help="images and texts to encode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest allowed max |difference| / feature norm")


def random_hf_clip(config, seed: int):
    """A `transformers.CLIPModel` of `config` with seeded random weights, all of them perturbed."""
    import torch
    import transformers

    from mmpiqa_jax.checkpoints.hf import hf_config_for

    torch.manual_seed(seed)
    model = transformers.CLIPModel(hf_config_for(config)).eval()
    with torch.no_grad():
        for param in model.parameters():  # LayerNorms start at 1/0: make every weight matter
            param.add_(0.02 * torch.randn_like(param))
    return model


def relative_difference(ours: np.ndarray, reference: np.ndarray) -> float:
    """max |ours - reference| per row over that row's norm, the worst row."""
    diff = np.abs(ours - reference).max(axis=-1)
    return float((diff / np.linalg.norm(reference, axis=-1)).max())


def _prompts(n: int) -> list[str]:
    from mmpiqa_jax import labels

    return [labels.LIQE_TEMPLATE.format(
                scene=labels.SCENES[i % labels.NUM_SCENES],
                distortion=labels.DISTORTIONS[(3 * i) % labels.NUM_DISTORTIONS],
                quality=labels.QUALITIES[i % labels.NUM_QUALITIES])
            for i in range(n)]


def run(args: argparse.Namespace) -> int:
    try:
        import torch
        import transformers
    except ImportError as e:
        print(f"mmpiqa parity needs torch and transformers as the reference ({e}); "
              "`pip install -e .[test]`")
        return 2
    from mmpiqa_jax import clip

    transformers.utils.logging.disable_progress_bar()
    config = clip.get_variant(args.variant)
    reference = random_hf_clip(config, args.seed)
    with tempfile.TemporaryDirectory() as folder:
        reference.save_pretrained(folder)
        model = clip.load(folder)

    rng = np.random.default_rng(args.seed)
    res = config.image_resolution
    pixels = rng.standard_normal((args.batch, res, res, 3), dtype=np.float32)  # NHWC, "normalised"
    token_ids = clip.tokenize(_prompts(args.batch), context_length=config.context_length)
    with torch.no_grad():
        image_ref = reference.get_image_features(
            pixel_values=torch.from_numpy(pixels).permute(0, 3, 1, 2))
        text_ref = reference.get_text_features(input_ids=torch.from_numpy(token_ids).long())
    # transformers 5 returns an output object whose pooler_output is the projected feature.
    image_ref, text_ref = (getattr(f, "pooler_output", f).numpy() for f in (image_ref, text_ref))
    image = np.asarray(model.encode_image(pixels))
    text = np.asarray(model.encode_text(token_ids))

    worst = 0.0
    print(f"CLIP {args.variant}, random weights (seed {args.seed}), fp32, batch {args.batch}: "
          "Flax vs transformers CLIPModel")
    for name, ours, ref in (("image", image, image_ref), ("text", text, text_ref)):
        if ours.shape != ref.shape:
            print(f"  {name} features: shape {ours.shape}, transformers {ref.shape}")
            return 1
        rel = relative_difference(ours, ref)
        worst = max(worst, rel)
        print(f"  {name} features {ours.shape}: max |diff| / norm = {rel:.2e}")
    ok = worst <= args.tolerance
    print(f"{'PASS' if ok else 'FAIL'} (tolerance {args.tolerance:.0e})")
    return 0 if ok else 1
