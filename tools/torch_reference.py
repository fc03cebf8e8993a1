"""A PyTorch reference of MP-IQE and LIQE on open_clip's `CLIP`, for `tools/benchmark.py` and its
test.

Never imported by `mmpiqa_jax`. The models follow `mmpiqa_jax/models/` operation for operation
(VPT-deep visual prompts, the scene / distortion context banks, the fusion encoder, LIQE's 495-way
softmax with marginals), so that on the same weights they give the same loss; the losses are ports
of `mmpiqa_jax.losses`. The text tower runs the way the original PyTorch codes run it
(`text_length="full"`): every prompt at 77 tokens, every step (LIQE's `clip.encode_text` on the
495 prompts; CoOp / MaPLe's prompt learner). `text_length="trimmed"` runs it on the longest
prompt's length instead (the saving the JAX models make), to separate framework from algorithm.

Weights come from the JAX model: `export_jax(model)` gives CLIP's OpenAI-layout state dict (the
project's own converter, `to_openai_state_dict`) plus the model's other parameters under their NNX
paths; `from_export(...)` loads the first into open_clip's `CLIP` with `load_state_dict(strict)` and
maps the second in `_load_extras`.
"""
from __future__ import annotations

import math

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from mmpiqa_jax import labels

from bench_inputs import LOSS_WEIGHTS, export_jax, random_batch  # noqa: F401 (this module's API)

EPS = 1e-8  # LIQE's `esp`, as mmpiqa_jax.losses.EPS
PLACEHOLDER = "X"  # mmpiqa_jax.models.prompts._PLACEHOLDER: one token per context vector
QUALITY_LEVELS = torch.arange(1, labels.NUM_QUALITIES + 1, dtype=torch.float32)


# ----------------------------------------------------------------------------------------------
# Weights: JAX model -> numpy -> torch.

def build_clip(clip_config: dict, state_dict: dict | None = None) -> open_clip.model.CLIP:
    """open_clip's `CLIP` (QuickGELU, as OpenAI's) of the architecture `clip_config`."""
    c = clip_config
    vision = open_clip.model.CLIPVisionCfg(
        layers=c["vision_layers"], width=c["vision_width"],
        head_width=c["vision_width"] // c["vision_heads"], patch_size=c["vision_patch_size"],
        image_size=c["image_resolution"])
    text = open_clip.model.CLIPTextCfg(
        context_length=c["context_length"], vocab_size=c["vocab_size"], width=c["text_width"],
        heads=c["text_heads"], layers=c["text_layers"])
    clip = open_clip.model.CLIP(c["embed_dim"], vision, text, quick_gelu=True)
    if state_dict is not None:
        clip.load_state_dict({k: torch.from_numpy(np.asarray(v, np.float32).copy())
                              for k, v in state_dict.items()}, strict=True)
    return clip


def _linear_from_flax(linear: nn.Linear, kernel, bias) -> None:
    """Flax kernel [in, out] (or [in, H, D] / [H, D, out] for attention) into torch [out, in]."""
    kernel = np.asarray(kernel)
    in_features = linear.in_features
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(kernel.reshape(in_features, -1).T.copy()))
        linear.bias.copy_(torch.from_numpy(np.asarray(bias).reshape(-1).copy()))


def _layernorm_from_flax(ln: nn.LayerNorm, scale, bias) -> None:
    with torch.no_grad():
        ln.weight.copy_(torch.from_numpy(np.array(scale, np.float32)))
        ln.bias.copy_(torch.from_numpy(np.array(bias, np.float32)))


# ----------------------------------------------------------------------------------------------
# Text prompts.

def scene_texts() -> list[str]:
    return [f"{s.replace('_', ' ')}." for s in labels.SCENES]


def distortion_texts() -> list[str]:
    return [f"{d}." for d in labels.DISTORTIONS]


def liqe_texts() -> list[str]:
    return [labels.LIQE_TEMPLATE.format(scene=s, distortion=d, quality=q)
            for q in labels.QUALITIES for s in labels.SCENES for d in labels.DISTORTIONS]


def tokenize(texts, *, context_length: int, trimmed: bool) -> torch.Tensor:
    """open_clip's (OpenAI's) tokenizer; `trimmed` cuts to the longest prompt's end-of-text."""
    ids = open_clip.tokenize(list(texts), context_length=context_length)
    if trimmed:
        ids = ids[:, :int(ids.argmax(dim=-1).max()) + 1]
    return ids


def _normalize(x):
    return x / x.norm(dim=-1, keepdim=True)


def _causal_mask(length: int) -> torch.Tensor:
    return torch.full((length, length), float("-inf")).triu(1)


def encode_text_embeddings(clip, embeddings, eot, *, deep_ctx=None, num_ctx: int = 0):
    """CoOp / MaPLe text encoder: embeddings [N, L, W] (context already in), deep context replaces
    positions 1 .. num_ctx at the inputs of layers 1 .. len(deep_ctx)."""
    length = embeddings.shape[1]
    x = embeddings + clip.positional_embedding[:length]
    mask = _causal_mask(length).to(x.dtype)
    for i, block in enumerate(clip.transformer.resblocks):
        if deep_ctx is not None and 1 <= i <= deep_ctx.shape[0]:
            ctx = deep_ctx[i - 1].expand(x.shape[0], -1, -1)
            x = torch.cat([x[:, :1], ctx, x[:, 1 + num_ctx:]], dim=1)
        x = block(x, attn_mask=mask)
    x = clip.ln_final(x)
    return x[torch.arange(x.shape[0]), eot] @ clip.text_projection


class PromptBank(nn.Module):
    """`[SOS] ctx_1 .. ctx_n <text> [EOS]` with n learnable context vectors (CoOp), optional deep
    ctx."""

    def __init__(self, texts, *, context_length: int, num_context: int, trimmed: bool,
                 width: int, depth: int = 1):
        super().__init__()
        prefix = " ".join([PLACEHOLDER] * num_context)
        texts = [f"{prefix} {t}" if num_context else t for t in texts]
        ids = tokenize(texts, context_length=context_length, trimmed=trimmed)
        self.register_buffer("token_ids", ids, persistent=False)
        self.register_buffer("eot", ids.argmax(dim=-1), persistent=False)
        self.num_context = num_context
        self.ctx = nn.Parameter(torch.zeros(num_context, width)) if num_context else None
        self.deep_ctx = (nn.Parameter(torch.zeros(depth - 1, num_context, width))
                         if num_context and depth > 1 else None)

    def forward(self, clip):
        emb = clip.token_embedding(self.token_ids)
        if self.ctx is not None:
            ctx = self.ctx.expand(emb.shape[0], -1, -1)
            emb = torch.cat([emb[:, :1], ctx, emb[:, 1 + self.num_context:]], dim=1)
        return encode_text_embeddings(clip, emb, self.eot, deep_ctx=self.deep_ctx,
                                      num_ctx=self.num_context)


# ----------------------------------------------------------------------------------------------
# The fusion encoder (flax's MultiHeadAttention, LayerNorm eps 1e-6, tanh-approximated GELU).

class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value, self.out = (nn.Linear(width, width) for _ in range(4))

    def forward(self, xq, xkv):
        split = lambda t: t.reshape(*t.shape[:2], self.heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(split(self.query(xq)), split(self.key(xkv)),
                                             split(self.value(xkv)))
        return self.out(out.transpose(1, 2).reshape(*xq.shape[:2], -1))

    def load_flax(self, p: dict) -> None:
        for name in ("query", "key", "value", "out"):
            _linear_from_flax(getattr(self, name), p[f"{name}/kernel"], p[f"{name}/bias"])


class FusionLayer(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: int):
        super().__init__()
        ln = lambda: nn.LayerNorm(width, eps=1e-6)
        self.ln_q, self.ln_kv, self.ln_1, self.ln_2 = ln(), ln(), ln(), ln()
        self.cross_attn = Attention(width, heads)
        self.self_attn = Attention(width, heads)
        self.mlp_in = nn.Linear(width, mlp_ratio * width)
        self.mlp_out = nn.Linear(mlp_ratio * width, width)

    def forward(self, queries, image_tokens):
        kv = self.ln_kv(image_tokens)
        x = queries + self.cross_attn(self.ln_q(queries), kv)
        h = self.ln_1(x)
        x = x + self.self_attn(h, h)
        return x + self.mlp_out(F.gelu(self.mlp_in(self.ln_2(x)), approximate="tanh"))


class FusionEncoder(nn.Module):
    def __init__(self, text_dim, image_dim, *, width, layers, heads, mlp_ratio):
        super().__init__()
        self.text_in = nn.Linear(text_dim, width)
        self.image_in = nn.Linear(image_dim, width)
        self.layers = nn.ModuleList([FusionLayer(width, heads, mlp_ratio) for _ in range(layers)])
        self.ln_out = nn.LayerNorm(width, eps=1e-6)
        self.head = nn.Linear(width, labels.NUM_QUALITIES)

    def forward(self, text_features, image_tokens):
        kv = self.image_in(image_tokens)
        q = self.text_in(text_features)
        x = q.expand(kv.shape[0], *q.shape)
        for layer in self.layers:
            x = layer(x, kv)
        return self.head(self.ln_out(x).mean(dim=1))

    def load_flax(self, p: dict) -> None:
        for name in ("text_in", "image_in", "head"):
            _linear_from_flax(getattr(self, name), p[f"{name}/kernel"], p[f"{name}/bias"])
        _layernorm_from_flax(self.ln_out, p["ln_out/scale"], p["ln_out/bias"])
        for i, layer in enumerate(self.layers):
            sub = lambda pre: {k[len(pre):]: v for k, v in p.items() if k.startswith(pre)}
            lp = sub(f"layers/{i}/")
            for name in ("ln_q", "ln_kv", "ln_1", "ln_2"):
                _layernorm_from_flax(getattr(layer, name), lp[f"{name}/scale"], lp[f"{name}/bias"])
            layer.cross_attn.load_flax({k[len("cross_attn/"):]: v for k, v in lp.items()
                                        if k.startswith("cross_attn/")})
            layer.self_attn.load_flax({k[len("self_attn/"):]: v for k, v in lp.items()
                                       if k.startswith("self_attn/")})
            for name in ("mlp_in", "mlp_out"):
                _linear_from_flax(getattr(layer, name), lp[f"{name}/kernel"], lp[f"{name}/bias"])


# ----------------------------------------------------------------------------------------------
# The models. Input: crops [B, C, 3, H, W] (NCHW, CLIP-normalised).

def _quality_outputs(quality_logits):
    probs = quality_logits.softmax(dim=-1)
    return {"quality_logits": quality_logits, "quality_probs": probs,
            "score": probs @ QUALITY_LEVELS.to(probs.dtype)}


def _mean_over_crops(x, b, c):
    return x.reshape(b, c, *x.shape[1:]).mean(dim=1)


class MPIQE(nn.Module):
    def __init__(self, clip, *, num_visual_prompts, visual_prompt_depth, num_text_context,
                 text_prompt_depth, fusion_layers, fusion_width, fusion_heads, fusion_mlp_ratio,
                 scene_activation, text_length: str = "full", **unused):
        super().__init__()
        self.clip = clip
        width = clip.visual.conv1.out_channels
        self.depth = visual_prompt_depth if num_visual_prompts else 0
        self.visual_prompts = (nn.Parameter(torch.zeros(self.depth, num_visual_prompts, width))
                               if self.depth else None)
        ctx_len, text_width = clip.positional_embedding.shape
        bank = lambda texts: PromptBank(texts, context_length=ctx_len, num_context=num_text_context,
                                        trimmed=text_length == "trimmed", width=text_width,
                                        depth=text_prompt_depth)
        self.scene = bank(scene_texts())
        self.distortion = bank(distortion_texts())
        self.fusion = FusionEncoder(clip.text_projection.shape[1], width, width=fusion_width,
                                    layers=fusion_layers, heads=fusion_heads,
                                    mlp_ratio=fusion_mlp_ratio)
        self.scene_activation = scene_activation

    def load_extras(self, extras: dict) -> None:
        t = lambda k: torch.from_numpy(np.asarray(extras[k], np.float32).copy())
        with torch.no_grad():
            if self.visual_prompts is not None:
                self.visual_prompts.copy_(t("prompts/visual/tokens"))
            for name, bank in (("scene", self.scene), ("distortion", self.distortion)):
                if bank.ctx is not None:
                    bank.ctx.copy_(t(f"prompts/{name}/ctx"))
                if bank.deep_ctx is not None:
                    bank.deep_ctx.copy_(t(f"prompts/{name}/deep_ctx"))
        self.fusion.load_flax({k[len("fusion/"):]: v for k, v in extras.items()
                               if k.startswith("fusion/")})

    def trainable_names(self, mode: str):
        if mode != "prompt":
            raise ValueError(f"the MP-IQE reference implements the 'prompt' groups, not {mode!r}")
        return lambda name: not name.startswith("clip.")

    def encode_image(self, pixels):
        """(features [N, D], tokens after ln_post [N, 1 + patches + P, W]), VPT-deep."""
        v = self.clip.visual
        x = v.conv1(pixels)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = v.class_embedding.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding
        n = x.shape[1]
        if self.depth:
            x = torch.cat([x, self.visual_prompts[0].expand(x.shape[0], -1, -1)], dim=1)
        x = v.ln_pre(x)
        for i, block in enumerate(v.transformer.resblocks):
            if 1 <= i < self.depth:
                x = torch.cat([x[:, :n], self.visual_prompts[i].expand(x.shape[0], -1, -1)], dim=1)
            x = block(x)
        tokens = v.ln_post(x)
        return tokens[:, 0] @ v.proj, tokens

    def text_features(self):
        return _normalize(torch.cat([self.scene(self.clip), self.distortion(self.clip)], dim=0))

    def forward(self, crops):
        b, c = crops.shape[:2]
        image, tokens = self.encode_image(crops.flatten(0, 1))
        text = self.text_features()
        sims = self.clip.logit_scale.exp() * _normalize(image) @ text.T
        quality = self.fusion(text, tokens)
        n_s = labels.NUM_SCENES
        scene, distortion, quality = (_mean_over_crops(x, b, c)
                                      for x in (sims[:, :n_s], sims[:, n_s:], quality))
        if self.scene_activation == "softmax":
            scene_probs = scene.softmax(dim=-1)
        else:
            scene_probs = torch.sigmoid(scene - scene.mean(dim=-1, keepdim=True))
        return {**_quality_outputs(quality), "scene_logits": scene, "scene_probs": scene_probs,
                "distortion_logits": distortion, "distortion_probs": distortion.softmax(dim=-1)}


class LIQE(nn.Module):
    """LIQE's code: `clip.encode_text` over all 495 prompts (77 tokens) every call."""

    def __init__(self, clip, *, num_text_context=0, text_length: str = "full", **unused):
        super().__init__()
        if num_text_context:
            raise ValueError("the LIQE reference implements LIQE's fixed template (ctx=0)")
        self.clip = clip
        ids = tokenize(liqe_texts(), context_length=clip.positional_embedding.shape[0],
                       trimmed=text_length == "trimmed")
        self.register_buffer("token_ids", ids, persistent=False)
        self.register_buffer("eot", ids.argmax(dim=-1), persistent=False)

    def load_extras(self, extras: dict) -> None:
        if extras:
            raise ValueError(f"LIQE has no parameters besides CLIP, got {sorted(extras)}")

    def trainable_names(self, mode: str):
        if mode != "full":
            raise ValueError(f"the LIQE reference implements the 'full' groups, not {mode!r}")
        return lambda name: name != "clip.logit_scale"

    def text_features(self):
        # open_clip's encode_text slices its 77 x 77 mask; a trimmed length needs its own.
        if self.token_ids.shape[1] == self.clip.positional_embedding.shape[0]:
            return _normalize(self.clip.encode_text(self.token_ids))
        emb = self.clip.token_embedding(self.token_ids)
        return _normalize(encode_text_embeddings(self.clip, emb, self.eot))

    def forward(self, crops):
        b, c = crops.shape[:2]
        image = _normalize(self.clip.encode_image(crops.flatten(0, 1)))
        text = self.text_features()
        logits = _mean_over_crops(self.clip.logit_scale.exp() * image @ text.T, b, c)
        joint = logits.reshape(b, labels.NUM_QUALITIES, labels.NUM_SCENES, labels.NUM_DISTORTIONS)
        scene, distortion = joint.logsumexp(dim=(1, 3)), joint.logsumexp(dim=(1, 2))
        return {**_quality_outputs(joint.logsumexp(dim=(2, 3))), "logits": logits,
                "probs": logits.softmax(dim=-1), "scene_logits": scene,
                "scene_probs": scene.softmax(dim=-1), "distortion_logits": distortion,
                "distortion_probs": distortion.softmax(dim=-1)}


MODELS = {"mpiqe": MPIQE, "liqe": LIQE}


def from_export(exported: dict, model_config: dict, *, mode: str, text_length: str = "full"):
    """The reference model of `model_config` (the `model` config section as a dict) holding the
    exported weights, with `requires_grad` set for the param-group preset `mode`."""
    clip = build_clip(exported["clip_config"], exported["clip"])
    model = MODELS[model_config["name"]](clip, text_length=text_length, **model_config)
    model.load_extras(exported["extras"])
    trains = model.trainable_names(mode)
    for name, p in model.named_parameters():
        p.requires_grad_(trains(name))
    return model


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


def compare(jax_model, model_config: dict, mode: str, batch: dict, ref=None) -> dict:
    """Both sides on the same weights and batch: {"loss": (jax, torch), "task_losses": (..),
    "score_max_abs_diff": float, "grad_norm": (..), "trainable": (..)}. `ref` defaults to
    `from_export(export_jax(jax_model), ...)`."""
    if ref is None:
        ref = from_export(export_jax(jax_model), model_config, mode=mode)
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
