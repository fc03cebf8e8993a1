"""The IQA models on CLIP: MP-IQE (multi-modal prompts + fusion encoder) and LIQE (495 joint
prompts); `build_model` makes either from a config.

Both take crops `[B, C, H, W, 3]` (C crops per image, NHWC: uint8 RGB, or CLIP-normalised float)
and return a dict: `quality_logits` [B, 5], `quality_probs`, `score` = sum_q q p(q) in [1, 5],
`scene_logits` [B, 9], `scene_probs`, `distortion_logits` [B, 11], `distortion_probs`; LIQE adds
the joint `logits` [B, 495] (index q * 99 + s * 11 + d; [B, 5] with quality prompts only) and
`probs`. Logits are averaged over crops before any softmax. With `use_text_cache=True` the text
features are the last `refresh_text_cache()`'s: valid while no parameter of the text path changes
(`text_path_is_trainable`).
"""
from __future__ import annotations

import dataclasses
import inspect

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mmpiqa_jax import labels
from mmpiqa_jax.errors import UserError
from mmpiqa_jax.models import prompts as prompts_lib
from mmpiqa_jax.models.clip_model import CLIP, CLIPConfig, get_variant
from mmpiqa_jax.models.fusion import FusionEncoder
from mmpiqa_jax.models.preprocess import clip_normalize

_QUALITY_LEVELS = np.arange(1, labels.NUM_QUALITIES + 1, dtype=np.float32)


def text_path_is_trainable(model: MPIQE | LIQE, trainable: nnx.State) -> bool:
    """Whether `trainable` (a state split from `model`, or from a model of the same config)
    holds a parameter of `model.text_path()`; if not, the text cache may serve."""
    text = {id(v) for node in model.text_path() for _, v in nnx.iter_graph(node)
            if isinstance(v, nnx.Param)}
    text_paths = {path for path, v in nnx.iter_graph(model) if id(v) in text}
    return any(path in text_paths for path, _ in nnx.to_flat_state(trainable))


class TextCache(nnx.Variable):
    """Text features as of the last `refresh_text_cache()`."""


def _normalize(x: jax.Array) -> jax.Array:
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def _crops_to_images(crops: jax.Array) -> tuple[jax.Array, int, int]:
    if crops.ndim != 5 or crops.shape[-1] != 3:
        raise UserError(f"crops must be [B, C, H, W, 3] (C crops per image), "
                        f"got shape {tuple(crops.shape)}")
    b, c = crops.shape[:2]
    return crops.reshape(b * c, *crops.shape[2:]), b, c


def _mean_over_crops(x: jax.Array, b: int, c: int) -> jax.Array:
    return x.reshape(b, c, *x.shape[1:]).mean(axis=1)


def _outputs(quality: jax.Array, scene: jax.Array, scene_probs: jax.Array,
             distortion: jax.Array) -> dict:
    probs = jax.nn.softmax(quality, axis=-1)
    return {"quality_logits": quality, "quality_probs": probs,
            "score": probs @ jnp.asarray(_QUALITY_LEVELS), "scene_logits": scene,
            "scene_probs": scene_probs, "distortion_logits": distortion,
            "distortion_probs": jax.nn.softmax(distortion, axis=-1)}


class _TextCached(nnx.Module):
    """Text features of all prompts, with the text cache."""

    def _init_cache(self, num_prompts: int):
        dim = self.clip.config.embed_dim
        self.text_cache = TextCache(jnp.zeros((num_prompts, dim), jnp.float32))

    def text_path(self) -> tuple:
        """The modules and parameters of the text features: CLIP's text tower, the banks."""
        return (*self.clip.text_tower(), *self._text_banks())

    def encode_prompts(self) -> jax.Array:
        """Normalised text features [num_prompts, embed_dim], all banks in order, no cache."""
        return _normalize(jnp.concatenate([bank(self.clip) for bank in self._text_banks()], axis=0))

    def refresh_text_cache(self) -> None:
        """Recomputes the cached text features (call after the text path's parameters change)."""
        self.text_cache[...] = jax.lax.stop_gradient(self.encode_prompts())

    def text_features(self, *, use_cache: bool = False) -> jax.Array:
        """Normalised text features [num_prompts, embed_dim]; with `use_cache`, those of the last
        `refresh_text_cache()`, not differentiated."""
        return self.text_cache[...] if use_cache else self.encode_prompts()


class MPIQE(_TextCached):
    """CLIP with deep visual prompts, dual text prompt banks, and a fusion encoder for quality."""

    def __init__(self, clip: CLIP, *, num_visual_prompts: int, visual_prompt_depth: int,
                 num_text_context: int, text_context_init: str, text_prompt_depth: int,
                 fusion_layers: int, fusion_width: int, fusion_heads: int, fusion_mlp_ratio: int,
                 scene_activation: str, rngs: nnx.Rngs):
        """The keywords are the `model` section of a config (configs/common.py)."""
        if scene_activation not in ("softmax", "sigmoid"):
            raise UserError(f"scene_activation must be 'softmax' or 'sigmoid', "
                            f"got {scene_activation!r}")
        config = clip.config
        self.clip = clip
        self.scene_activation = scene_activation
        bank = lambda texts: prompts_lib.PromptBank(
            texts, clip=clip, num_context=num_text_context, depth=text_prompt_depth,
            init_phrase=text_context_init, rngs=rngs)
        self.prompts = nnx.Dict(
            visual=prompts_lib.VisualPrompts(config, depth=visual_prompt_depth,
                                             num_prompts=num_visual_prompts, rngs=rngs),
            scene=bank(prompts_lib.scene_texts()),
            distortion=bank(prompts_lib.distortion_texts()))
        self.fusion = FusionEncoder(config.embed_dim, config.vision_width, width=fusion_width,
                                    layers=fusion_layers, heads=fusion_heads,
                                    mlp_ratio=fusion_mlp_ratio, dtype=config.compute_dtype,
                                    rngs=rngs)
        self._init_cache(labels.NUM_SCENES + labels.NUM_DISTORTIONS)

    def _text_banks(self):
        return (self.prompts["scene"], self.prompts["distortion"])

    def encode_image(self, pixels: jax.Array, *, return_tokens: bool = False):
        """Prompted image features [N, embed_dim] (and tokens) from images [N, H, W, 3]."""
        return self.clip.encode_image(pixels, visual_prompts=self.prompts["visual"](),
                                      return_tokens=return_tokens)

    def __call__(self, crops: jax.Array, *, use_text_cache: bool = False) -> dict:
        pixels, b, c = _crops_to_images(clip_normalize(crops))  # uint8 crops normalised here
        image, aux = self.encode_image(pixels, return_tokens=True)
        text = self.text_features(use_cache=use_text_cache)
        sims = jnp.exp(self.clip.logit_scale[...]) * _normalize(image) @ text.T
        quality = self.fusion(text, aux["tokens"])
        n_s = labels.NUM_SCENES
        scene, distortion, quality = (_mean_over_crops(x, b, c)
                                      for x in (sims[:, :n_s], sims[:, n_s:], quality))
        if self.scene_activation == "softmax":  # LIQE's: scenes compete, rows sum to 1
            scene_probs = jax.nn.softmax(scene, axis=-1)
        else:  # independent; centred so that logit_scale * cos does not saturate the sigmoid
            scene_probs = jax.nn.sigmoid(scene - scene.mean(axis=-1, keepdims=True))
        return _outputs(quality, scene, scene_probs, distortion)


LIQE_PROMPTS = ("joint", "quality")


class LIQE(_TextCached):
    """LIQE: one softmax over the 495 (quality, scene, distortion) prompts; optional CoOp
    context. `liqe_prompts="quality"`: the 5 prompts "a photo with {q} quality" (pyiqa's
    `liqe` on KonIQ); `logits` [B, 5], scene and distortion outputs uniform (zero logits).
    """

    def __init__(self, clip: CLIP, *, num_text_context: int, text_context_init: str,
                 text_prompt_depth: int, liqe_prompts: str, rngs: nnx.Rngs):
        if liqe_prompts not in LIQE_PROMPTS:
            raise UserError(f"model.liqe_prompts must be one of {LIQE_PROMPTS}, "
                            f"got {liqe_prompts!r}")
        if liqe_prompts == "quality" and num_text_context:
            raise UserError("model.liqe_prompts='quality' takes LIQE's fixed prompts: "
                            f"model.num_text_context must be 0, got {num_text_context}")
        self.clip = clip
        self.joint = liqe_prompts == "joint"
        texts = (prompts_lib.liqe_texts(with_context=num_text_context > 0) if self.joint
                 else prompts_lib.liqe_quality_texts())
        self.prompts = nnx.Dict(joint=prompts_lib.PromptBank(
            texts, clip=clip, num_context=num_text_context, depth=text_prompt_depth,
            init_phrase=text_context_init, rngs=rngs))
        self._init_cache(len(texts))

    def _text_banks(self):
        return (self.prompts["joint"],)

    def __call__(self, crops: jax.Array, *, use_text_cache: bool = False) -> dict:
        pixels, b, c = _crops_to_images(clip_normalize(crops))  # uint8 crops normalised here
        image = _normalize(self.clip.encode_image(pixels))
        text = self.text_features(use_cache=use_text_cache)
        logits = _mean_over_crops(jnp.exp(self.clip.logit_scale[...]) * image @ text.T, b, c)
        if self.joint:
            joint = logits.reshape(b, labels.NUM_QUALITIES, labels.NUM_SCENES,
                                   labels.NUM_DISTORTIONS)
            # Marginal logits: their softmax is the marginal of the joint softmax.
            marginal = lambda axes: jax.nn.logsumexp(joint, axis=axes)
            quality, scene, distortion = marginal((2, 3)), marginal((1, 3)), marginal((1, 2))
        else:  # quality prompts only: no scene or distortion information
            quality = logits
            scene = jnp.zeros((b, labels.NUM_SCENES), logits.dtype)
            distortion = jnp.zeros((b, labels.NUM_DISTORTIONS), logits.dtype)
        return {**_outputs(quality, scene, jax.nn.softmax(scene, axis=-1), distortion),
                "logits": logits, "probs": jax.nn.softmax(logits, axis=-1)}


MODELS = {"mpiqe": MPIQE, "liqe": LIQE}
# The `model` section's keys of the CLIP itself; the others are the model class's keywords.
CLIP_KEYS = ("name", "variant", "clip_checkpoint", "dtype", "scan_layers", "remat")


def build_model(config, rngs: nnx.Rngs, *,
                clip: CLIP | CLIPConfig | None = None) -> MPIQE | LIQE:
    """The model that `config` (the `model` section of a training config) describes, on `clip`.

    `clip`: a built CLIP (`checkpoints.pretrained.load_pretrained_clip`), a `CLIPConfig`
    (randomly initialised), or None: a random initialisation of `config.variant`.
    """
    if config.name not in MODELS:
        raise UserError(f"unknown model.name {config.name!r}; known: {sorted(MODELS)}")
    cls = MODELS[config.name]
    kwargs = {k: v for k, v in config.items() if k not in CLIP_KEYS}
    try:
        inspect.signature(cls).bind(None, rngs=rngs, **kwargs)
    except TypeError as e:  # e.g. "got an unexpected keyword argument 'fusion_width'"
        raise UserError(f"the model section of the config does not fit {cls.__name__}: "
                        f"{e}") from None
    if clip is None:
        clip = dataclasses.replace(get_variant(config.variant), dtype=config.dtype)
    if isinstance(clip, CLIPConfig):
        clip = CLIP(clip, rngs=rngs)
    clip.set_block_execution(scan_layers=config.scan_layers, remat=config.remat)
    return cls(clip, rngs=rngs, **kwargs)
