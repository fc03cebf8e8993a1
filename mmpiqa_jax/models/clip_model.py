"""OpenAI CLIP (ViT image tower + text tower) in Flax NNX, with hooks for prompt learning.

Parameter names mirror OpenAI's `clip/model.py` (see `checkpoints.clip_conversion`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mmpiqa_jax.errors import UserError
from mmpiqa_jax.models.layers import (ACTIVATIONS, LayerNorm, Transformer, check_remat,
                                      normal, replace_tokens)

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
    """The architecture, in the terms of OpenAI's `build_model`."""
    embed_dim: int
    image_resolution: int
    vision_layers: int
    vision_width: int
    vision_patch_size: int
    vision_heads: int
    context_length: int
    vocab_size: int
    text_width: int
    text_heads: int
    text_layers: int
    dtype: str = "float32"  # compute dtype; parameters stay float32
    activation: str = "quick_gelu"  # or "gelu" (exact)
    vision_mlp_width: int | None = None  # None: 4 * vision_width
    text_mlp_width: int | None = None  # None: 4 * text_width

    def __post_init__(self):
        if self.dtype not in _DTYPES:
            raise UserError(f"CLIPConfig.dtype {self.dtype!r} is not one of {sorted(_DTYPES)}")
        if self.activation not in ACTIVATIONS:
            raise UserError(f"CLIPConfig.activation {self.activation!r} is not one of "
                            f"{sorted(ACTIVATIONS)}")
        for tower in ("vision", "text"):
            width, heads = getattr(self, f"{tower}_width"), getattr(self, f"{tower}_heads")
            # Stored explicitly, so that configs of the same architecture compare equal.
            if getattr(self, f"{tower}_mlp_width") is None:
                object.__setattr__(self, f"{tower}_mlp_width", 4 * width)
            if (mlp_width := getattr(self, f"{tower}_mlp_width")) < 1:
                raise UserError(f"{tower}_mlp_width must be >= 1, got {mlp_width}")
            if heads < 1 or width % heads:
                raise UserError(f"{tower}_width {width} does not split into {tower}_heads "
                                f"{heads}")
        if self.image_resolution % self.vision_patch_size:
            raise UserError(f"image_resolution {self.image_resolution} is not a multiple of "
                            f"vision_patch_size {self.vision_patch_size}")

    @property
    def compute_dtype(self):
        return _DTYPES[self.dtype]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> CLIPConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(d) - fields):
            raise UserError(f"unknown CLIPConfig keys {unknown}; expected {sorted(fields)}")
        return cls(**d)


def _openai(embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size,
            text_width, text_layers) -> CLIPConfig:
    return CLIPConfig(embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size,
                      vision_width // 64, 77, 49408, text_width, text_width // 64, text_layers)


VARIANTS: dict[str, CLIPConfig] = {
    "ViT-B/32": _openai(512, 224, 12, 768, 32, 512, 12),
    "ViT-B/16": _openai(512, 224, 12, 768, 16, 512, 12),
    "ViT-L/14": _openai(768, 224, 24, 1024, 14, 768, 12),
    "ViT-L/14-336": _openai(768, 336, 24, 1024, 14, 768, 12),
    # For tests and demos; heads width // 64, so that `infer_config` recovers it.
    "tiny": _openai(64, 32, 2, 128, 8, 128, 2),
}


def get_variant(name: str) -> CLIPConfig:
    try:
        return VARIANTS[name]
    except KeyError:
        raise UserError(f"unknown CLIP variant {name!r}; known: {', '.join(VARIANTS)}") from None


class VisionTransformer(nnx.Module):
    """CLIP's ViT, with deep visual prompts (VPT-deep)."""

    def __init__(self, config: CLIPConfig, *, rngs: nnx.Rngs):
        width, patch, dtype = config.vision_width, config.vision_patch_size, config.compute_dtype
        grid = config.image_resolution // patch
        scale = width**-0.5
        self.conv1 = nnx.Conv(3, width, (patch, patch), strides=(patch, patch), padding="VALID",
                              use_bias=False, dtype=dtype, rngs=rngs)
        self.class_embedding = nnx.Param(normal(scale)(rngs.params(), (width,)))
        self.positional_embedding = nnx.Param(
            normal(scale)(rngs.params(), (grid * grid + 1, width)))
        self.ln_pre = LayerNorm(width, rngs=rngs)
        self.transformer = Transformer(width, config.vision_layers, config.vision_heads,
                                       mlp_width=config.vision_mlp_width,
                                       activation=config.activation, dtype=dtype, rngs=rngs)
        self.ln_post = LayerNorm(width, rngs=rngs)
        self.proj = nnx.Param(normal(scale)(rngs.params(), (width, config.embed_dim)))
        self.resolution = config.image_resolution
        self.dtype = dtype

    def __call__(self, pixels: jax.Array, visual_prompts: jax.Array | None = None) -> jax.Array:
        """Tokens after `ln_post`, [B, 1 + patches (+ prompts), width]: class, patches, prompts."""
        if pixels.ndim != 4 or pixels.shape[1:] != (self.resolution, self.resolution, 3):
            raise UserError(f"pixels must be [B, {self.resolution}, {self.resolution}, 3] (NHWC), "
                            f"got shape {tuple(pixels.shape)}")
        x = self.conv1(pixels.astype(self.dtype))
        x = x.reshape(x.shape[0], -1, x.shape[-1])  # row-major patches, as torch's flatten
        cls = jnp.broadcast_to(self.class_embedding[...].astype(self.dtype),
                               (x.shape[0], 1, x.shape[-1]))
        x = jnp.concatenate([cls, x], axis=1) + self.positional_embedding[...].astype(self.dtype)
        num_tokens = x.shape[1]
        if visual_prompts is not None:
            # Layer 0's prompts join before ln_pre and carry no position, as in MaPLe's CLIP;
            # the later layers' prompts replace the prompt outputs at their inputs.
            first = visual_prompts[0].astype(self.dtype)
            x = jnp.concatenate([x, jnp.broadcast_to(first, (x.shape[0], *first.shape))], axis=1)
            deep = visual_prompts[1:]
        else:
            deep = None
        x = self.transformer(self.ln_pre(x), deep_prompts=deep, prompt_start=num_tokens)
        return self.ln_post(x)


class CLIP(nnx.Module):
    """OpenAI CLIP: projected (not normalised) float32 features, computed in `config.dtype`."""

    def __init__(self, config: CLIPConfig, *, rngs: nnx.Rngs):
        self.config = config
        dtype, width = config.compute_dtype, config.text_width
        self.visual = VisionTransformer(config, rngs=rngs)
        self.transformer = Transformer(width, config.text_layers, config.text_heads,
                                       mlp_width=config.text_mlp_width,
                                       activation=config.activation, dtype=dtype, rngs=rngs)
        self.token_embedding = nnx.Embed(config.vocab_size, width, dtype=dtype,
                                         embedding_init=normal(0.02), rngs=rngs)
        self.positional_embedding = nnx.Param(
            normal(0.01)(rngs.params(), (config.context_length, width)))
        self.ln_final = LayerNorm(width, rngs=rngs)
        self.text_projection = nnx.Param(
            normal(width**-0.5)(rngs.params(), (width, config.embed_dim)))
        self.logit_scale = nnx.Param(jnp.asarray(math.log(1 / 0.07), jnp.float32))

    def text_tower(self) -> tuple:
        """The modules and parameters of the text features (all but `visual`, `logit_scale`)."""
        return (self.token_embedding, self.positional_embedding, self.transformer, self.ln_final,
                self.text_projection)

    def set_block_execution(self, *, scan_layers: bool = True, remat: str = "dots") -> None:
        """How both towers run their blocks (`layers.Transformer.run_blocks`); same values."""
        for tower in (self.visual.transformer, self.transformer):
            tower.scan_layers, tower.remat = bool(scan_layers), check_remat(remat)

    @contextlib.contextmanager
    def block_execution(self, *, scan_layers: bool, remat: str):
        """`set_block_execution` for the `with` block only."""
        previous = {"scan_layers": self.transformer.scan_layers, "remat": self.transformer.remat}
        self.set_block_execution(scan_layers=scan_layers, remat=remat)
        try:
            yield
        finally:
            self.set_block_execution(**previous)

    def encode_image(self, pixels: jax.Array, *, visual_prompts: jax.Array | None = None,
                     return_tokens: bool = False):
        """Image features [B, embed_dim] from CLIP-normalised NHWC pixels [B, H, W, 3].

        `visual_prompts` [depth, P, vision_width] (VPT-deep, shared over the batch): row 0 is
        appended after the class and patch tokens, row i replaces the prompt tokens at the input of
        layer i; after layer depth - 1 they travel on. None or depth 0 is plain CLIP. With
        `return_tokens`, also {"tokens": [B, T, vision_width] after ln_post, "projected_tokens":
        [B, T, embed_dim]}, T = 1 + patches + P in that order.
        """
        dtype = self.config.compute_dtype
        if visual_prompts is not None:
            expected = (self.config.vision_width,)
            if visual_prompts.ndim != 3 or visual_prompts.shape[2:] != expected:
                raise UserError(f"visual_prompts must be [depth, num_prompts, {expected[0]}], got "
                                f"shape {tuple(visual_prompts.shape)}")
            if visual_prompts.shape[0] == 0 or visual_prompts.shape[1] == 0:
                visual_prompts = None
        tokens = self.visual(pixels, visual_prompts)
        projected = tokens @ self.visual.proj[...].astype(dtype)
        features = projected[:, 0].astype(jnp.float32)
        if return_tokens:
            return features, {"tokens": tokens.astype(jnp.float32),
                              "projected_tokens": projected.astype(jnp.float32)}
        return features

    def encode_text(self, token_ids: jax.Array) -> jax.Array:
        """Text features [N, embed_dim] from token ids [N, L], L <= context_length.

        Any L that holds every end-of-text token gives the same result (`trim_to_longest`).
        """
        token_ids = jnp.asarray(token_ids)
        if token_ids.ndim != 2 or not jnp.issubdtype(token_ids.dtype, jnp.integer):
            raise UserError(f"token_ids must be integer [N, L], got {token_ids.dtype} "
                            f"{tuple(token_ids.shape)}")
        # End-of-text has the highest id, so its position is the argmax (as OpenAI pools).
        return self.encode_text_embeddings(self.token_embedding(token_ids),
                                           jnp.argmax(token_ids, axis=-1))

    def encode_text_embeddings(self, embeddings: jax.Array, eot_positions: jax.Array, *,
                               deep_prompts: jax.Array | None = None, prompt_start: int = 1,
                               return_tokens: bool = False):
        """Text features [N, embed_dim] from token embeddings [N, L, text_width] (CoOp's entry).

        The positional embedding is added here. `deep_prompts` [depth, n_ctx, text_width] replace
        positions [prompt_start, prompt_start + n_ctx) at the inputs of layers 1..depth (MaPLe);
        layer 0's context is the one in `embeddings`. With `return_tokens`, also
        {"tokens": [N, L, text_width] after ln_final}.
        """
        dtype, config = self.config.compute_dtype, self.config
        if embeddings.ndim != 3 or embeddings.shape[2] != config.text_width:
            raise UserError(f"embeddings must be [N, L, {config.text_width}], got shape "
                            f"{tuple(embeddings.shape)}")
        length = embeddings.shape[1]
        if length > config.context_length:
            raise UserError(f"text length {length} exceeds context_length {config.context_length}")
        if eot_positions.shape != embeddings.shape[:1]:
            raise UserError(f"eot_positions must be [{embeddings.shape[0]}], got shape "
                            f"{tuple(eot_positions.shape)}")
        if deep_prompts is not None:
            if deep_prompts.ndim != 3 or deep_prompts.shape[2] != config.text_width:
                raise UserError(f"deep_prompts must be [depth, n_ctx, {config.text_width}], got "
                                f"shape {tuple(deep_prompts.shape)}")
            if not 0 <= prompt_start <= length - deep_prompts.shape[1]:
                end = prompt_start + deep_prompts.shape[1]
                raise UserError(f"deep prompts at [{prompt_start}, {end}) do not fit a text of "
                                f"length {length}")
        x = embeddings.astype(dtype) + self.positional_embedding[:length].astype(dtype)
        x = self.transformer(x, causal=True, deep_prompts=deep_prompts, prompt_start=prompt_start)
        tokens = self.ln_final(x)
        pooled = tokens[jnp.arange(tokens.shape[0]), eot_positions]
        features = (pooled @ self.text_projection[...].astype(dtype)).astype(jnp.float32)
        if return_tokens:
            return features, {"tokens": tokens.astype(jnp.float32)}
        return features

    def encode_text_shared_prefix(self, prefix: jax.Array, suffix: jax.Array,
                                  plan: SharedPrefixPlan, *, deep_prompts: jax.Array | None = None,
                                  prompt_start: int = 1) -> jax.Array:
        """`encode_text_embeddings` for texts that share prefixes, each prefix run once.

        `prefix` [G, P, text_width]: the G prefixes' embeddings (P = the longest); `suffix`
        [N, S, text_width]: each text's suffix, as `plan` says. Exact under the causal mask.
        `deep_prompts` replace positions [prompt_start, prompt_start + n_ctx) of every prefix.
        """
        dtype = self.config.compute_dtype
        lengths, groups = np.asarray(plan.prefix_lengths), np.asarray(plan.groups)
        n_prefix, n_suffix = prefix.shape[1], suffix.shape[1]
        if deep_prompts is not None and prompt_start + deep_prompts.shape[1] > lengths.min():
            raise UserError("deep prompts must lie inside every shared prefix")
        positions = np.minimum(lengths[groups][:, None] + np.arange(n_suffix),
                               self.config.context_length - 1)
        pos = self.positional_embedding[...].astype(dtype)
        tokens = (prefix.astype(dtype) + pos[:n_prefix], suffix.astype(dtype) + pos[positions])
        # Suffix queries see their prefix's real positions and the suffix causally.
        mask = jnp.asarray(np.concatenate([
            np.broadcast_to((np.arange(n_prefix) < lengths[groups][:, None])[:, None],
                            (len(groups), n_suffix, n_prefix)),
            np.broadcast_to(np.tril(np.ones((n_suffix, n_suffix), bool)),
                            (len(groups), n_suffix, n_suffix))], axis=-1))
        groups = jnp.asarray(groups)

        def block_fn(block, tokens):
            return block.shared_prefix(*tokens, groups, mask)

        def insert_prompts(tokens, prompts):
            # The deep prompts sit inside every prefix, so only the prefixes take them.
            return replace_tokens(tokens[0], prompts.astype(dtype), prompt_start), tokens[1]

        _, suffix = self.transformer.run_blocks(tokens, block_fn, deep_prompts=deep_prompts,
                                                insert_prompts=insert_prompts)
        out = self.ln_final(suffix)
        pooled = out[jnp.arange(out.shape[0]), jnp.asarray(plan.suffix_eot)]
        return (pooled @ self.text_projection[...].astype(dtype)).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class SharedPrefixPlan:
    """How N texts run as G shared prefixes plus one S-token suffix per text
    (`prompts.shared_prefix_plan` makes one). Tuples of ints: static under jit.

    Text n is the first `prefix_lengths[groups[n]]` tokens of prefix `groups[n]`, then its suffix.
    """
    representatives: tuple[int, ...]  # [G]: a text that starts with prefix g
    prefix_lengths: tuple[int, ...]   # [G]: tokens in prefix g (all run padded to the longest)
    groups: tuple[int, ...]           # [N]: the prefix that text n continues
    suffix_eot: tuple[int, ...]       # [N]: position of text n's end-of-text token in its suffix
    suffix_length: int                # S: tokens per suffix (the longest text's; the others pad)


def init_visual_prompts(key: jax.Array, config: CLIPConfig, depth: int,
                        num_prompts: int) -> jax.Array:
    """VPT's initialisation: uniform in +-sqrt(6 / (3 p^2 + width)), float32 [depth, P, width]."""
    bound = math.sqrt(6.0 / (3 * config.vision_patch_size**2 + config.vision_width))
    return jax.random.uniform(key, (depth, num_prompts, config.vision_width), jnp.float32,
                              -bound, bound)


def trim_to_longest(token_ids: np.ndarray) -> np.ndarray:
    """The shortest prefix [N, L'] of `token_ids` that holds every end-of-text token (the same
    `encode_text` features: later tokens never reach them under the causal mask)."""
    token_ids = np.asarray(token_ids)
    if token_ids.ndim != 2 or token_ids.shape[0] == 0:
        raise UserError(f"token_ids must be [N, L] with N >= 1, got shape {token_ids.shape}")
    return token_ids[:, :int(token_ids.argmax(axis=-1).max()) + 1]
