"""The IQA models on CLIP: MP-IQE (multi-modal prompts + fusion encoder) and LIQE (495 joint prompts).

Both take crops `[B, C, H, W, 3]` (C crops per image, CLIP-normalised NHWC) and return a dict:
`quality_logits` [B, 5], `quality_probs`, `score` = sum_q q p(q) in [1, 5], `scene_logits` [B, 9],
`scene_probs`, `distortion_logits` [B, 11], `distortion_probs`; LIQE adds the joint `logits`
[B, 495] (index q * 99 + s * 11 + d) and `probs`. Logits are averaged over crops before any
softmax, as LIQE does.

Text features are computed once per call, for all prompts at once. When nothing in the text path
trains, `refresh_text_cache()` stores them with a checksum of the text-path parameters; calls with
`use_text_cache=True` compare checksums *inside the computation* (`lax.cond`), so a stale cache is
never used, under `jax.jit` or not: the cache's branch skips the text tower, the other recomputes.
"""
from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mmpiqa_jax import labels
from mmpiqa_jax.models import prompts as prompts_lib
from mmpiqa_jax.models.preprocess import clip_normalize
from mmpiqa_jax.models.clip_model import CLIP, get_variant
from mmpiqa_jax.models.fusion import FusionEncoder

_QUALITY_LEVELS = np.arange(1, labels.NUM_QUALITIES + 1, dtype=np.float32)


# The parameters that text features depend on: CLIP's text tower and the text prompt banks.
TEXT_PATH_REGEX = re.compile(r"clip/(transformer|token_embedding|positional_embedding|ln_final|"
                             r"text_projection)(/.*)?|prompts/(scene|distortion|joint)/.*")


def is_text_path(path) -> bool:
    """Whether the parameter at `path` (tuple or '/'-joined) feeds the text features."""
    name = path if isinstance(path, str) else "/".join(map(str, path))
    return TEXT_PATH_REGEX.fullmatch(name) is not None


def text_path_is_trainable(trainable: nnx.State) -> bool:
    """Whether any parameter of a trainable state feeds the text features (else cache them)."""
    return any(is_text_path(path) for path, _ in nnx.to_flat_state(trainable))


class TextCache(nnx.Variable):
    """Cached text features and the checksum of the parameters they were computed from."""


def params_checksum(arrays) -> jax.Array:
    """uint32 [2]: sums of the parameters' bit patterns, plain and position-weighted, modulo 2^32.

    Integer sums are exact and order-free, so any single-element change shows (a float sum could
    round a small update away), and the result is the same under any XLA reduction order.
    """
    plain = jnp.zeros((), jnp.uint32)
    weighted = jnp.zeros((), jnp.uint32)
    offset = 0
    for x in arrays:
        bits = jax.lax.bitcast_convert_type(jnp.asarray(x, jnp.float32), jnp.uint32).reshape(-1)
        # Odd multipliers (Knuth's), distinct per position, so permutations show too.
        pos = (jnp.arange(bits.size, dtype=jnp.uint32) + jnp.uint32(offset)) * jnp.uint32(2654435761)
        plain += jnp.sum(bits, dtype=jnp.uint32)
        weighted += jnp.sum(bits * (pos | jnp.uint32(1)), dtype=jnp.uint32)
        offset = (offset + bits.size) % 2**32
    return jnp.stack([plain, weighted])


def _normalize(x: jax.Array) -> jax.Array:
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def _crops_to_images(crops: jax.Array) -> tuple[jax.Array, int, int]:
    if crops.ndim != 5 or crops.shape[-1] != 3:
        raise ValueError(f"crops must be [B, C, H, W, 3] (C crops per image), got shape {tuple(crops.shape)}")
    b, c = crops.shape[:2]
    return crops.reshape(b * c, *crops.shape[2:]), b, c


def _mean_over_crops(x: jax.Array, b: int, c: int) -> jax.Array:
    return x.reshape(b, c, *x.shape[1:]).mean(axis=1)


def _quality_outputs(quality_logits: jax.Array) -> dict:
    probs = jax.nn.softmax(quality_logits, axis=-1)
    return {"quality_logits": quality_logits, "quality_probs": probs,
            "score": probs @ jnp.asarray(_QUALITY_LEVELS)}


class _TextCached(nnx.Module):
    """Text features for all prompts, with the explicit cache described in the module docstring."""

    def _init_cache(self, num_prompts: int):
        dim = self.clip.config.embed_dim
        self.text_cache = TextCache(jnp.zeros((num_prompts, dim), jnp.float32))
        self.text_cache_checksum = TextCache(jnp.zeros((2,), jnp.uint32))
        self.text_cache_filled = TextCache(jnp.zeros((), jnp.bool_))

    def _text_banks(self) -> tuple[prompts_lib.PromptBank, ...]:
        raise NotImplementedError

    def _text_path_params(self) -> list[jax.Array]:
        """Every parameter that the text features depend on (see `is_text_path`)."""
        return [v[...] for path, v in nnx.to_flat_state(nnx.state(self, nnx.Param))
                if is_text_path(path)]

    def encode_prompts(self) -> jax.Array:
        """Normalised text features [num_prompts, embed_dim], all banks in order, no cache."""
        return _normalize(jnp.concatenate([bank(self.clip) for bank in self._text_banks()], axis=0))

    def text_cache_is_fresh(self) -> jax.Array:
        """bool scalar: the cache holds the features of the current text-path parameters."""
        same = jnp.all(params_checksum(self._text_path_params()) == self.text_cache_checksum[...])
        return jnp.logical_and(self.text_cache_filled[...], same)

    def refresh_text_cache(self) -> None:
        """Recomputes the cached text features (call after the text path's parameters change)."""
        self.text_cache[...] = jax.lax.stop_gradient(self.encode_prompts())
        self.text_cache_checksum[...] = params_checksum(self._text_path_params())
        self.text_cache_filled[...] = jnp.ones((), jnp.bool_)

    def text_features(self, *, use_cache: bool = False) -> jax.Array:
        """Normalised text features of all prompts; from the cache when it is fresh and allowed.

        Use the cache only where the text path is not differentiated (a frozen text path).
        """
        if not use_cache:
            return self.encode_prompts()
        return jax.lax.cond(self.text_cache_is_fresh(), lambda: self.text_cache[...],
                            self.encode_prompts)


class MPIQE(_TextCached):
    """CLIP with deep visual prompts, dual text prompt banks, and a fusion encoder for quality."""

    def __init__(self, clip: CLIP, *, num_visual_prompts: int = 8, visual_prompt_depth: int = 12,
                 num_text_context: int = 4, text_context_init: str = "a photo of a",
                 text_prompt_depth: int = 1, fusion_layers: int = 2, fusion_width: int = 256,
                 fusion_heads: int = 4, fusion_mlp_ratio: int = 4, scene_activation: str = "softmax",
                 rngs: nnx.Rngs):
        if scene_activation not in ("softmax", "sigmoid"):
            raise ValueError(f"scene_activation must be 'softmax' or 'sigmoid', got {scene_activation!r}")
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
                                    mlp_ratio=fusion_mlp_ratio, dtype=config.compute_dtype, rngs=rngs)
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
        return {**_quality_outputs(quality),
                "scene_logits": scene, "scene_probs": scene_probs,
                "distortion_logits": distortion,
                "distortion_probs": jax.nn.softmax(distortion, axis=-1)}


class LIQE(_TextCached):
    """LIQE: one softmax over the 495 (quality, scene, distortion) prompts; optional CoOp context."""

    def __init__(self, clip: CLIP, *, num_text_context: int = 0, text_context_init: str = "a photo of a",
                 text_prompt_depth: int = 1, rngs: nnx.Rngs):
        self.clip = clip
        self.prompts = nnx.Dict(joint=prompts_lib.PromptBank(
            prompts_lib.liqe_texts(with_context=num_text_context > 0), clip=clip,
            num_context=num_text_context, depth=text_prompt_depth, init_phrase=text_context_init,
            rngs=rngs))
        self._init_cache(labels.NUM_QUALITIES * labels.NUM_SCENES * labels.NUM_DISTORTIONS)

    def _text_banks(self):
        return (self.prompts["joint"],)

    def __call__(self, crops: jax.Array, *, use_text_cache: bool = False) -> dict:
        pixels, b, c = _crops_to_images(clip_normalize(crops))  # uint8 crops normalised here
        image = _normalize(self.clip.encode_image(pixels))
        text = self.text_features(use_cache=use_text_cache)
        logits = _mean_over_crops(jnp.exp(self.clip.logit_scale[...]) * image @ text.T, b, c)
        joint = logits.reshape(b, labels.NUM_QUALITIES, labels.NUM_SCENES, labels.NUM_DISTORTIONS)
        # Marginal logits: their softmax is the marginal of the joint softmax.
        marginal = lambda axes: jax.nn.logsumexp(joint, axis=axes)
        scene, distortion = marginal((1, 3)), marginal((1, 2))
        return {**_quality_outputs(marginal((2, 3))),
                "logits": logits, "probs": jax.nn.softmax(logits, axis=-1),
                "scene_logits": scene, "scene_probs": jax.nn.softmax(scene, axis=-1),
                "distortion_logits": distortion,
                "distortion_probs": jax.nn.softmax(distortion, axis=-1)}


MODELS = {"mpiqe": MPIQE, "liqe": LIQE}

# The config keys each model takes, besides `name`, `variant`, `clip_checkpoint` and `dtype`.
_MODEL_KEYS = {
    "mpiqe": ("num_visual_prompts", "visual_prompt_depth", "num_text_context", "text_context_init",
              "text_prompt_depth", "fusion_layers", "fusion_width", "fusion_heads",
              "fusion_mlp_ratio", "scene_activation"),
    "liqe": ("num_text_context", "text_context_init", "text_prompt_depth"),
}


RANDOM_CLIP = "random"  # `model.clip_checkpoint` asking for a random initialisation of `variant`


def clip_weights_path(config) -> str | None:
    """The checkpoint `build_clip` loads for `config` (the `model` section), or None: random init.

    `clip_checkpoint` "random" asks for a random initialisation of `variant` on purpose; empty is
    allowed for the `tiny` variant only (tests, demo). Empty with any other variant raises: a
    randomly initialised ViT-B/32 trains to meaningless numbers on real data, so it must be asked
    for, not fallen into. (A checkpoint file literally named `random`: write `./random`.)
    """
    path = config.clip_checkpoint
    if path == RANDOM_CLIP:
        return None
    if not path:
        if config.variant == "tiny":
            return None
        raise ValueError(
            f"model.clip_checkpoint is empty for model.variant {config.variant!r}: that would "
            f"train a randomly initialised CLIP, whose scores on real data mean nothing. Set "
            f"model.clip_checkpoint to pretrained {config.variant} weights, i.e. anything "
            "clip.load reads: an OpenAI .pt (the `clip` package's download, e.g. ViT-B-32.pt), "
            "an open_clip .pt/.bin/.safetensors (a QuickGELU model, pretrained 'openai'), a "
            "Hugging Face folder (e.g. openai/clip-vit-base-patch32), or the folder "
            "`mmpiqa convert SRC --out DIR` writes from any of these (then "
            "--set model.clip_checkpoint=DIR). To train from a random initialisation on "
            f"purpose, set model.clip_checkpoint={RANDOM_CLIP}.")
    return path


def build_clip(config, rngs: nnx.Rngs, *, load_weights: bool = True) -> CLIP:
    """CLIP of `config.variant`: with `config.clip_checkpoint`'s weights when asked, else random.

    With `load_weights` (the weights training starts from), `clip_weights_path` decides, and
    raises for an empty checkpoint with a variant other than `tiny`. Without it (shapes only:
    `nnx.eval_shape`, the init a restored checkpoint overwrites) nothing is read or checked.
    """
    expected = dataclasses.replace(get_variant(config.variant), dtype=config.dtype)
    path = clip_weights_path(config) if load_weights else None
    if path:
        from mmpiqa_jax import clip as clip_api

        clip = clip_api.load(path, dtype=config.dtype)
        if clip.config != expected:
            raise ValueError(f"model.clip_checkpoint {path!r} holds a CLIP of "
                             f"{clip.config}, not model.variant {config.variant!r} ({expected})")
        return clip
    return CLIP(expected, rngs=rngs)


def build_model(config, rngs: nnx.Rngs, *, load_weights: bool = True) -> MPIQE | LIQE:
    """The model that `config` (the `model` section of a training config) describes.

    `load_weights=False` skips `clip_checkpoint` (for shape-only uses such as `nnx.eval_shape`).
    """
    if config.name not in MODELS:
        raise ValueError(f"unknown model.name {config.name!r}; known: {sorted(MODELS)}")
    kwargs = {}
    for key in _MODEL_KEYS[config.name]:
        if key not in config:
            raise KeyError(f"model config lacks key model.{key} needed by {config.name!r}")
        kwargs[key] = config[key]
    clip = build_clip(config, rngs, load_weights=load_weights)
    # Execution keys a config leaves out keep `set_block_execution`'s defaults.
    clip.set_block_execution(**{k: config[k] for k in ("scan_layers", "remat") if k in config})
    return MODELS[config.name](clip, rngs=rngs, **kwargs)
