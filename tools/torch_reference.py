"""The PyTorch reference of MP-IQE and LIQE for `tools/benchmark.py` and its test:
`mmpiqa_jax.pytorch`'s models on open_clip's `CLIP`, with torch losses, AdamW and train step.

Never imported by `mmpiqa_jax`. The weights are those of `checkpoints.torch_export` (CLIP in
OpenAI's layout, loaded strictly into open_clip's `CLIP`, so JAX is checked against an
independent CLIP); the prompts are tokenised again by open_clip. The text tower runs the way the
original PyTorch codes run it (`text_length="full"`): every prompt at 77 tokens, every step
(LIQE's `clip.encode_text` on the 495 prompts; CoOp / MaPLe's prompt learner).
`text_length="trimmed"` runs it on the longest prompt's length instead (the saving the JAX
models make), to separate framework from algorithm.
"""
from __future__ import annotations

import copy
import math
import os

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from mmpiqa_jax.pytorch import model as torch_model

from bench_inputs import LOSS_WEIGHTS, random_batch  # noqa: F401 (this module's API)

EPS = 1e-8  # LIQE's `esp`, as mmpiqa_jax.losses.EPS
PLACEHOLDER = "X"  # mmpiqa_jax.models.prompts._PLACEHOLDER: one token per context vector
# What trains under a param-group preset: (model, preset) -> parameter name -> bool.
TRAINABLE = {("mpiqe", "prompt"): lambda name: not name.startswith("clip."),
             ("liqe", "full"): lambda name: name != "clip.logit_scale"}


def build_clip(c: dict) -> open_clip.model.CLIP:
    """open_clip's `CLIP` of a `CLIPConfig` dict, randomly initialised."""
    vision = open_clip.model.CLIPVisionCfg(
        layers=c["vision_layers"], width=c["vision_width"],
        head_width=c["vision_width"] // c["vision_heads"], patch_size=c["vision_patch_size"],
        image_size=c["image_resolution"], mlp_ratio=c["vision_mlp_width"] / c["vision_width"])
    text = open_clip.model.CLIPTextCfg(
        context_length=c["context_length"], vocab_size=c["vocab_size"], width=c["text_width"],
        heads=c["text_heads"], layers=c["text_layers"],
        mlp_ratio=c["text_mlp_width"] / c["text_width"])
    return open_clip.model.CLIP(c["embed_dim"], vision, text,
                                quick_gelu=c["activation"] == "quick_gelu")


def reference(config: dict, tensors: dict, *, mode: str, text_length: str = "full"):
    """`torch_export`'s (config, tensors) as `mmpiqa_jax.pytorch`'s model on open_clip's CLIP,
    prompts tokenised by open_clip (77 tokens, or trimmed), `requires_grad` set for `mode`."""
    if (config["model"], mode) not in TRAINABLE:
        raise ValueError(f"the reference trains {config['model']} with {mode!r}: not implemented")
    config = copy.deepcopy(config)
    for bank in config["prompts"].values():
        n = bank["num_context"]
        texts = [f"{' '.join([PLACEHOLDER] * n)} {t}" if n else t for t in bank["texts"]]
        ids = open_clip.tokenize(texts, context_length=config["clip"]["context_length"])
        if text_length == "trimmed":
            ids = ids[:, :int(ids.argmax(dim=-1).max()) + 1]
        bank["token_ids"] = ids.tolist()
    model = torch_model.MODELS[config["model"]](config, clip=build_clip(config["clip"]))
    model.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in tensors.items()},
                          strict=True)
    trains = TRAINABLE[config["model"], mode]
    for name, p in model.named_parameters():
        p.requires_grad_(trains(name))
    return model


def load(folder, **kw):
    """`reference` of the folder `checkpoints.torch_export.export_torch` wrote."""
    from safetensors.numpy import load_file

    return reference(torch_model.read_config(folder),
                     load_file(os.path.join(folder, torch_model.WEIGHTS_NAME)), **kw)


# ----------------------------------------------------------------------------------------------
# Losses: ports of mmpiqa_jax.losses (no `valid` padding mask: the benchmark batches are full).

def _weighted_mean(values, weights):
    total = weights.sum()
    num = torch.where(weights > 0, values * weights, torch.zeros_like(values)).sum()
    return torch.where(total > 0, num / total.clamp_min(1e-30), torch.zeros_like(num))


def binary_fidelity(p, g, eps=EPS):
    return 1.0 - torch.sqrt(p * g + eps) - torch.sqrt((1.0 - p) * (1.0 - g) + eps)


def quality_fidelity_loss(scores, targets, dataset_ids, eps=EPS):
    """LIQE's pairwise fidelity within each dataset, mean per dataset then over datasets."""
    n = scores.shape[0]
    same = dataset_ids[:, None] == dataset_ids[None, :]
    pairs = same & torch.ones(n, n, dtype=torch.bool).triu(1)
    x = (scores[:, None] - scores[None, :]) / math.sqrt(2.0)
    p = 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))  # Phi(x)
    g = 0.5 * (torch.sign(targets[:, None] - targets[None, :]) + 1.0)
    count = same.sum(dim=1).to(scores.dtype)
    n_pairs = (count * (count - 1.0) / 2.0).clamp_min(1.0)
    weights = torch.where(pairs, 1.0 / n_pairs[:, None], torch.zeros_like(p))
    return _weighted_mean(binary_fidelity(p, g, eps), weights)


def distortion_fidelity_loss(probs, labels_, eps=EPS):
    mask = labels_ >= 0
    g = F.one_hot(labels_.long().clamp_min(0), probs.shape[1]).to(probs.dtype)
    p = torch.where(mask[:, None], probs, torch.zeros_like(probs))
    return _weighted_mean(1.0 - torch.sqrt(p * g + eps).sum(dim=-1), mask.to(probs.dtype))


def scene_fidelity_loss(probs, targets, mask, eps=EPS):
    labelled = mask & (targets > 0).any(dim=-1)
    p = torch.where(labelled[:, None], probs, torch.zeros_like(probs))
    return _weighted_mean(binary_fidelity(p, targets, eps).mean(dim=-1), labelled.to(probs.dtype))


def task_losses(outputs: dict, batch: dict) -> torch.Tensor:
    """[quality, distortion, scene] (the JAX step's first three tasks; the benchmark weighs the
    optional L1 and PLCC terms 0)."""
    return torch.stack([
        quality_fidelity_loss(outputs["score"], batch["quality"], batch["dataset_id"]),
        distortion_fidelity_loss(outputs["distortion_probs"], batch["distortion_class"]),
        scene_fidelity_loss(outputs["scene_probs"], batch["scenes"], batch["scene_mask"]),
    ])


def torch_batch(batch: dict) -> dict:
    """A numpy batch in the JAX layout as torch tensors; pixels to NCHW crops [B, C, 3, H, W]."""
    out = {k: torch.from_numpy(np.asarray(v)) for k, v in batch.items() if k != "pixels"}
    out["pixels"] = torch.from_numpy(
        np.ascontiguousarray(np.asarray(batch["pixels"], np.float32).transpose(0, 1, 4, 2, 3)))
    out["scene_mask"] = out["scene_mask"].bool()
    return out


def make_optimizer(model, optimizer_config: dict) -> torch.optim.Optimizer:
    """AdamW with the config's hyper-parameters over the trainable parameters (constant lr)."""
    o = optimizer_config
    if o["name"] != "adamw":
        raise ValueError(f"the reference implements AdamW, not {o['name']!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=o["learning_rate"], betas=(o["b1"], o["b2"]),
                             eps=o["eps"], weight_decay=o["weight_decay"])


def make_train_step(model, optimizer, *, clip_norm: float):
    """`step(batch) -> (loss, grad_norm)`: forward, the three task losses, backward, clip, AdamW.

    Both are of the weights before the update (the gradient norm before clipping), as the JAX
    step's metrics `loss` and `grad_norm`: a first step checks the reference as `compare` does.
    """
    params = [p for p in model.parameters() if p.requires_grad]

    def step(batch):
        loss = task_losses(model(batch["pixels"]), batch).sum()
        loss.backward()
        if clip_norm > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, clip_norm)
        else:
            grad_norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach(), grad_norm.detach()

    return step


# ----------------------------------------------------------------------------------------------
# The check: the same loss (and scores, and gradient norm) as the JAX model on the same weights.

def jax_side(jax_model, mode: str, batch: dict) -> dict:
    """Loss, task losses, scores and gradient norm of the JAX model (the train step's `loss_fn`)."""
    import jax
    import jax.numpy as jnp
    import optax

    from mmpiqa_jax.models import iqa
    from mmpiqa_jax.train import param_groups as pg
    from mmpiqa_jax.train import step as step_lib

    graphdef, trainable, frozen = pg.split_trainable(jax_model, pg.resolve(mode))
    use_cache = not iqa.text_path_is_trainable(jax_model, trainable)
    fn = jax.jit(jax.value_and_grad(step_lib.loss_fn, has_aux=True),
                 static_argnums=(1,), static_argnames=("use_text_cache",))
    (loss, (tasks, outputs)), grads = fn(trainable, graphdef, frozen,
                                         {k: jnp.asarray(v) for k, v in batch.items()},
                                         LOSS_WEIGHTS, use_text_cache=use_cache)
    return {"loss": float(loss), "task_losses": np.asarray(tasks)[:3].tolist(),
            "score": np.asarray(outputs["score"]), "grad_norm": float(optax.tree.norm(grads)),
            "trainable": sum(int(np.size(x)) for x in jax.tree.leaves(trainable))}


def torch_side(ref, batch: dict) -> dict:
    """The same quantities for a reference model (its gradients are left in `.grad`)."""
    tb = torch_batch(batch)
    out = ref(tb["pixels"])
    tasks = task_losses(out, tb)
    loss = tasks.sum()
    loss.backward()
    params = [p for p in ref.parameters() if p.requires_grad]
    return {"loss": loss.item(), "task_losses": tasks.detach().numpy().tolist(),
            "score": out["score"].detach().numpy(),
            "grad_norm": float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params))),
            "trainable": sum(p.numel() for p in params)}


def compare(jax_model, mode: str, batch: dict, ref=None) -> dict:
    """Both sides on the same weights and batch: {"loss": (jax, torch), "task_losses": (..),
    "score_max_abs_diff": float, "grad_norm": (..), "trainable": (..)}. `ref` defaults to
    `reference(*torch_export(jax_model), mode=mode)`."""
    if ref is None:
        from mmpiqa_jax.checkpoints.torch_export import torch_export

        ref = reference(*torch_export(jax_model), mode=mode)
    j, t = jax_side(jax_model, mode, batch), torch_side(ref, batch)
    out = {k: (j[k], t[k]) for k in ("loss", "task_losses", "grad_norm", "trainable")}
    out["score_max_abs_diff"] = float(np.max(np.abs(j["score"] - t["score"])))
    return out


def check(result: dict, *, loss_tol: float = 1e-4, score_tol: float = 1e-3,
          grad_rtol: float = 1e-2) -> list[str]:
    """The failures of `compare`'s result against the tolerances (empty: the reference agrees)."""
    fails = []
    (jl, tl), (jg, tg), (jn, tn) = result["loss"], result["grad_norm"], result["trainable"]
    if not abs(jl - tl) <= loss_tol:
        fails.append(f"loss {jl:.7f} (JAX) vs {tl:.7f} (torch): |diff| {abs(jl - tl):.2e} > "
                     f"{loss_tol}")
    if "score_max_abs_diff" in result and not result["score_max_abs_diff"] <= score_tol:
        fails.append(f"scores differ by up to {result['score_max_abs_diff']:.2e} > {score_tol}")
    if not abs(jg - tg) <= grad_rtol * max(abs(jg), 1e-12):
        fails.append(f"gradient norm {jg:.6g} (JAX) vs {tg:.6g} (torch)")
    if jn != tn:
        fails.append(f"trainable parameters {jn} (JAX) vs {tn} (torch)")
    return fails
