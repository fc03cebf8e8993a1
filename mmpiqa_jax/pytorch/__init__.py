"""PyTorch MP-IQE and LIQE for models exported by `mmpiqa export CKPT --to torch --out DIR`.

    from mmpiqa_jax import pytorch
    model = pytorch.load("DIR")                          # torch.nn.Module, eval mode
    scores = pytorch.score_files(model, ["a.jpg"])       # [(path, score in [1, 5])]

Needs torch and safetensors (`pip install mmpiqa-jax[torch]`), nothing of JAX: of `mmpiqa_jax`
it imports `errors` and `data.transforms` only.
"""
from mmpiqa_jax.pytorch.images import eval_crops, score_files, score_images
from mmpiqa_jax.pytorch.model import CLIP, LIQE, MPIQE, ExportError, load, read_config

__all__ = ["CLIP", "LIQE", "MPIQE", "ExportError", "eval_crops", "load", "read_config",
           "score_files", "score_images"]
