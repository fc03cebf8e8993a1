"""MP-IQE and LIQE in PyTorch (`load`), from `mmpiqa export CKPT --to torch --out DIR`.

The computation follows `mmpiqa_jax.models` operation for operation, with OpenAI's module names
under `clip.`. Models take crops [B, C, 3, H, W] (NCHW; uint8 RGB or CLIP-normalised float) and
return the dict of `mmpiqa_jax.models.iqa`'s models (`score` [B] in [1, 5], higher is better).
"""
from __future__ import annotations

import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmpiqa_jax.data.transforms import CLIP_MEAN, CLIP_STD
from mmpiqa_jax.errors import UserError

FORMAT = "mmpiqa_jax.torch"
VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

ACTIVATIONS = {
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),  # OpenAI's
    "gelu": lambda x: F.gelu(x),  # exact, as open_clip's LAION and DataComp models
}


class ExportError(UserError):
    """An export folder that cannot be loaded; the message names the file and key."""


# ----------------------------------------------------------------------------------------------
# CLIP, named as OpenAI's.

class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_width: int, activation: str):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=1e-5)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width, eps=1e-5)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, mlp_width))
        self.mlp.add_module("c_proj", nn.Linear(mlp_width, width))
        self.activation = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp.c_proj(self.activation(self.mlp.c_fc(self.ln_2(x))))


# The towers' computations are functions of the modules (no `forward`), so that they run on this
# CLIP and on open_clip's (the same module names), which the benchmark's reference uses.

def run_blocks(transformer, x, *, attn_mask=None, deep: torch.Tensor | None = None,
               start: int = 0) -> torch.Tensor:
    """`transformer.resblocks` on x [N, L, W]; `deep[j]` [n, W] replaces positions
    [start, start + n) at the input of block j + 1. Honours open_clip's `grad_checkpointing`."""
    recompute = getattr(transformer, "grad_checkpointing", False) and torch.is_grad_enabled()
    for i, block in enumerate(transformer.resblocks):
        if deep is not None and 1 <= i <= deep.shape[0]:
            p = deep[i - 1].expand(x.shape[0], -1, -1).to(x.dtype)
            x = torch.cat([x[:, :start], p, x[:, start + p.shape[1]:]], dim=1)
        if recompute:
            x = checkpoint(block, x, attn_mask=attn_mask, use_reentrant=False)
        else:
            x = block(x, attn_mask=attn_mask)
    return x


def image_tokens(visual, pixels: torch.Tensor, prompts: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """Tokens after ln_post [N, 1 + patches (+ P), W] of normalised pixels [N, 3, H, W];
    `prompts` [depth, P, W]: row 0 appended before ln_pre, row i replaces them at block i."""
    x = visual.conv1(pixels).flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(x.shape[0], 1, -1).to(x.dtype), x], dim=1)
    x = x + visual.positional_embedding.to(x.dtype)
    n = x.shape[1]
    if prompts is not None:
        x = torch.cat([x, prompts[0].expand(x.shape[0], -1, -1).to(x.dtype)], dim=1)
        prompts = prompts[1:]
    return visual.ln_post(run_blocks(visual.transformer, visual.ln_pre(x), deep=prompts, start=n))


def encode_text_embeddings(clip, emb: torch.Tensor, eot: torch.Tensor, *,
                           deep: torch.Tensor | None = None) -> torch.Tensor:
    """Features [N, D] of token embeddings [N, L, W] (context in place), pooled at `eot` [N];
    `deep` [d, n, W] replaces positions 1 .. n at blocks 1 .. d."""
    length = emb.shape[1]
    mask = torch.full((length, length), float("-inf"), dtype=emb.dtype, device=emb.device).triu(1)
    x = run_blocks(clip.transformer, emb + clip.positional_embedding[:length], attn_mask=mask,
                   deep=deep, start=1)
    x = clip.ln_final(x)
    return x[torch.arange(x.shape[0]), eot] @ clip.text_projection


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_width: int, activation: str):
        super().__init__()
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads, mlp_width, activation)
                                        for _ in range(layers)])


class VisionTransformer(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        width, patch = c["vision_width"], c["vision_patch_size"]
        grid = c["image_resolution"] // patch
        self.conv1 = nn.Conv2d(3, width, patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width, eps=1e-5)
        self.transformer = Transformer(width, c["vision_layers"], c["vision_heads"],
                                       c["vision_mlp_width"], c["activation"])
        self.ln_post = nn.LayerNorm(width, eps=1e-5)
        self.proj = nn.Parameter(torch.zeros(width, c["embed_dim"]))


class CLIP(nn.Module):
    """OpenAI CLIP of a `CLIPConfig` dict (`mmpiqa_jax.models.clip_model.CLIPConfig.to_dict`)."""

    def __init__(self, config: dict):
        super().__init__()
        c = self.config = dict(config)
        self.visual = VisionTransformer(c)
        self.transformer = Transformer(c["text_width"], c["text_layers"], c["text_heads"],
                                       c["text_mlp_width"], c["activation"])
        self.token_embedding = nn.Embedding(c["vocab_size"], c["text_width"])
        self.positional_embedding = nn.Parameter(torch.zeros(c["context_length"],
                                                             c["text_width"]))
        self.ln_final = nn.LayerNorm(c["text_width"], eps=1e-5)
        self.text_projection = nn.Parameter(torch.zeros(c["text_width"], c["embed_dim"]))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))


class PromptBank(nn.Module):
    """`[SOS] ctx_1 .. ctx_n <text> [EOS]` prompts from the export's token ids [N, L]."""

    def __init__(self, token_ids, *, num_context: int, depth: int, width: int):
        super().__init__()
        ids = torch.as_tensor(np.asarray(token_ids, np.int64))
        self.register_buffer("token_ids", ids, persistent=False)
        self.register_buffer("eot", ids.argmax(dim=-1), persistent=False)
        self.num_context = num_context
        self.ctx = nn.Parameter(torch.zeros(num_context, width)) if num_context else None
        self.deep_ctx = (nn.Parameter(torch.zeros(depth - 1, num_context, width))
                         if num_context and depth > 1 else None)

    def forward(self, clip) -> torch.Tensor:
        """Projected text features [N, D], not normalised (this module's CLIP or open_clip's)."""
        emb = clip.token_embedding(self.token_ids)
        if self.ctx is not None:
            ctx = self.ctx.expand(emb.shape[0], -1, -1)
            emb = torch.cat([emb[:, :1], ctx, emb[:, 1 + self.num_context:]], dim=1)
        return encode_text_embeddings(clip, emb, self.eot, deep=self.deep_ctx)


# ----------------------------------------------------------------------------------------------
# The fusion encoder (flax's MultiHeadAttention and LayerNorm eps 1e-6, tanh GELU).

class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value, self.out = (nn.Linear(width, width) for _ in range(4))

    def forward(self, xq, xkv):
        split = lambda t: t.unflatten(-1, (self.heads, -1)).transpose(1, 2)
        out = F.scaled_dot_product_attention(split(self.query(xq)), split(self.key(xkv)),
                                             split(self.value(xkv)))
        return self.out(out.transpose(1, 2).flatten(2))


class FusionLayer(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: int):
        super().__init__()
        ln = lambda: nn.LayerNorm(width, eps=1e-6)
        self.ln_q, self.ln_kv, self.ln_1, self.ln_2 = ln(), ln(), ln(), ln()
        self.cross_attn, self.self_attn = Attention(width, heads), Attention(width, heads)
        self.mlp_in = nn.Linear(width, mlp_ratio * width)
        self.mlp_out = nn.Linear(mlp_ratio * width, width)

    def forward(self, queries, image_tokens):
        kv = self.ln_kv(image_tokens)
        x = queries + self.cross_attn(self.ln_q(queries), kv)
        h = self.ln_1(x)
        x = x + self.self_attn(h, h)
        return x + self.mlp_out(F.gelu(self.mlp_in(self.ln_2(x)), approximate="tanh"))


class FusionEncoder(nn.Module):
    """(text features [Q, D], image tokens [B, T, W]) -> quality logits [B, levels]."""

    def __init__(self, text_dim, image_dim, *, width, layers, heads, mlp_ratio, levels):
        super().__init__()
        self.text_in = nn.Linear(text_dim, width)
        self.image_in = nn.Linear(image_dim, width)
        self.layers = nn.ModuleList([FusionLayer(width, heads, mlp_ratio) for _ in range(layers)])
        self.ln_out = nn.LayerNorm(width, eps=1e-6)
        self.head = nn.Linear(width, levels)

    def forward(self, text_features, image_tokens):
        kv = self.image_in(image_tokens)
        q = self.text_in(text_features)
        x = q.expand(kv.shape[0], *q.shape)
        for layer in self.layers:
            x = layer(x, kv)
        return self.head(self.ln_out(x).mean(dim=1))


# ----------------------------------------------------------------------------------------------
# The models.

def _normalize(x):
    return x / x.norm(dim=-1, keepdim=True)


class _IQAModel(nn.Module):
    """What MP-IQE and LIQE share: the labels, normalisation of uint8 crops, the outputs.

    `clip`: a CLIP of the config's architecture to use (open_clip's too); None: a new one.
    `forward(crops, text_features=None)`: `text_features()` once for many calls."""

    def __init__(self, config: dict, clip: nn.Module | None = None):
        super().__init__()
        self.config = config
        self.clip = CLIP(config["clip"]) if clip is None else clip
        lab = config["labels"]
        self.scenes, self.distortions = list(lab["scenes"]), list(lab["distortions"])
        self.qualities = list(lab["qualities"])
        self.register_buffer("levels", torch.arange(1, len(self.qualities) + 1,
                                                    dtype=torch.float32), persistent=False)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(3, 1, 1), persistent=False)

    def _images(self, crops: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """crops [B, C, 3, H, W] -> normalised images [B * C, 3, H, W], B, C."""
        size = self.config["clip"]["image_resolution"]
        if crops.ndim != 5 or tuple(crops.shape[2:]) != (3, size, size):
            raise ValueError(f"crops must be [B, C, 3, {size}, {size}] (NCHW), got shape "
                             f"{tuple(crops.shape)}")
        if crops.dtype == torch.uint8:
            crops = (crops.float() / 255.0 - self.mean) / self.std
        elif not crops.is_floating_point():
            raise TypeError(f"crops must be uint8 or floating (normalised), got {crops.dtype}")
        return crops.flatten(0, 1), crops.shape[0], crops.shape[1]

    def outputs(self, quality, scene, scene_probs, distortion) -> dict:
        probs = quality.softmax(dim=-1)
        return {"quality_logits": quality, "quality_probs": probs,
                "score": probs @ self.levels.to(probs.dtype), "scene_logits": scene,
                "scene_probs": scene_probs, "distortion_logits": distortion,
                "distortion_probs": distortion.softmax(dim=-1)}

    def text_features(self) -> torch.Tensor:
        """Normalised features [prompts, D] of every prompt bank in order."""
        return _normalize(torch.cat([bank(self.clip) for bank in self.banks()], dim=0))


def _mean_over_crops(x, b, c):
    return x.reshape(b, c, *x.shape[1:]).mean(dim=1)


class MPIQE(_IQAModel):
    """CLIP with VPT-deep visual prompts, scene and distortion context banks, a fusion encoder."""

    def __init__(self, config: dict, clip: nn.Module | None = None):
        super().__init__(config, clip)
        m, c = config["mpiqe"], config["clip"]
        width = c["vision_width"]
        depth = m["visual_prompt_depth"] if m["num_visual_prompts"] else 0
        self.visual_prompts = (nn.Parameter(torch.zeros(depth, m["num_visual_prompts"], width))
                               if depth else None)
        p = config["prompts"]
        bank = lambda name: PromptBank(p[name]["token_ids"], num_context=p[name]["num_context"],
                                       depth=p[name]["depth"], width=c["text_width"])
        self.scene, self.distortion = bank("scene"), bank("distortion")
        self.fusion = FusionEncoder(c["embed_dim"], width, width=m["fusion_width"],
                                    layers=m["fusion_layers"], heads=m["fusion_heads"],
                                    mlp_ratio=m["fusion_mlp_ratio"], levels=len(self.qualities))
        self.scene_activation = m["scene_activation"]

    def banks(self):
        return (self.scene, self.distortion)

    def forward(self, crops: torch.Tensor, text_features: torch.Tensor | None = None) -> dict:
        pixels, b, c = self._images(crops)
        tokens = image_tokens(self.clip.visual, pixels, self.visual_prompts)
        image = tokens[:, 0] @ self.clip.visual.proj
        text = self.text_features() if text_features is None else text_features
        sims = self.clip.logit_scale.exp() * _normalize(image) @ text.T
        quality = self.fusion(text, tokens)
        n_s = len(self.scenes)
        scene, distortion, quality = (_mean_over_crops(x, b, c)
                                      for x in (sims[:, :n_s], sims[:, n_s:], quality))
        if self.scene_activation == "softmax":
            scene_probs = scene.softmax(dim=-1)
        else:
            scene_probs = torch.sigmoid(scene - scene.mean(dim=-1, keepdim=True))
        return self.outputs(quality, scene, scene_probs, distortion)


class LIQE(_IQAModel):
    """LIQE: one softmax over the (quality, scene, distortion) prompts, marginalised."""

    def __init__(self, config: dict, clip: nn.Module | None = None):
        super().__init__(config, clip)
        p = config["prompts"]["joint"]
        self.joint_prompts = config.get("liqe_prompts", "joint") == "joint"  # else quality only
        self.joint = PromptBank(p["token_ids"], num_context=p["num_context"], depth=p["depth"],
                                width=config["clip"]["text_width"])

    def banks(self):
        return (self.joint,)

    def forward(self, crops: torch.Tensor, text_features: torch.Tensor | None = None) -> dict:
        pixels, b, c = self._images(crops)
        v = self.clip.visual
        image = _normalize(image_tokens(v, pixels)[:, 0] @ v.proj)
        text = self.text_features() if text_features is None else text_features
        logits = _mean_over_crops(self.clip.logit_scale.exp() * image @ text.T, b, c)
        if self.joint_prompts:
            joint = logits.reshape(b, len(self.qualities), len(self.scenes), len(self.distortions))
            quality = joint.logsumexp(dim=(2, 3))
            scene, distortion = joint.logsumexp(dim=(1, 3)), joint.logsumexp(dim=(1, 2))
        else:  # "a photo with {q} quality": nothing of scene or distortion
            quality = logits
            scene = logits.new_zeros((b, len(self.scenes)))
            distortion = logits.new_zeros((b, len(self.distortions)))
        return {**self.outputs(quality, scene, scene.softmax(dim=-1), distortion),
                "logits": logits, "probs": logits.softmax(dim=-1)}


MODELS = {"mpiqe": MPIQE, "liqe": LIQE}


def read_config(folder) -> dict:
    """The export's `config.json`, checked for its format and model name."""
    path = os.path.join(os.fspath(folder), CONFIG_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except FileNotFoundError:
        raise ExportError(f"{path} not found: {folder} is not a folder written by "
                          "`mmpiqa export CKPT --to torch`") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ExportError(f"{path}: unreadable ({e})") from None
    if config.get("format") != FORMAT:
        raise ExportError(f"{path}: format {config.get('format')!r}, expected {FORMAT!r}")
    if config.get("version") != VERSION:
        raise ExportError(f"{path}: version {config.get('version')!r}, this code reads {VERSION}")
    if config.get("model") not in MODELS:
        raise ExportError(f"{path}: model {config.get('model')!r} is not one of {sorted(MODELS)}")
    return config


def load(folder, *, map_location: str = "cpu") -> MPIQE | LIQE:
    """The model an export folder holds, in eval mode (float32)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config = read_config(folder)
    path = os.path.join(os.fspath(folder), WEIGHTS_NAME)
    try:
        weights = load_file(path, device=map_location)
    except (SafetensorError, OSError) as e:
        raise ExportError(f"{path}: missing, truncated or corrupt ({e})") from None
    try:
        model = MODELS[config["model"]](config)
    except KeyError as e:
        raise ExportError(f"{os.path.join(folder, CONFIG_NAME)}: lacks key {e}") from None
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as e:  # a shape that differs from the config's
        raise ExportError(f"{path}: does not match {CONFIG_NAME}: {e}") from None
    if missing or unexpected:
        raise ExportError(f"{path}: does not match {CONFIG_NAME}: missing {sorted(missing)}, "
                          f"unexpected {sorted(unexpected)}")
    return model.eval()
