"""Learnable prompts: CoOp-style text context banks (`PromptBank`, with MaPLe-style deep
context), VPT visual prompts (`VisualPrompts`), and the texts of MP-IQE's and LIQE's prompts.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mmpiqa_jax import labels
from mmpiqa_jax.errors import UserError
from mmpiqa_jax.models.clip_model import (CLIP, CLIPConfig, SharedPrefixPlan, init_visual_prompts,
                                          trim_to_longest)
from mmpiqa_jax.tokenizer import tokenize

# One word that is one token, standing in for each context vector when tokenising.
_PLACEHOLDER = "X"
CONTEXT_STD = 0.02  # CoOp's random context initialisation


def phrase_token_ids(phrase: str) -> np.ndarray:
    """The ids of a phrase's words, without start and end of text."""
    ids = tokenize([phrase])[0]
    return ids[1:int(ids.argmax())]


def init_context(key: jax.Array, token_embedding: jax.Array, num_context: int, width: int,
                 phrase: str = "") -> jax.Array:
    """[n, width] context: N(0, 0.02), with the phrase's word embeddings in the last positions
    (with n its length, the prompt starts as `phrase <text>`)."""
    ctx = CONTEXT_STD * jax.random.normal(key, (num_context, width), jnp.float32)
    if phrase:
        ids = phrase_token_ids(phrase)
        if len(ids) > num_context:
            raise UserError(f"text_context_init {phrase!r} has {len(ids)} tokens, more than "
                            f"num_text_context={num_context}")
        if len(ids):
            words = jnp.asarray(token_embedding)[jnp.asarray(ids)].astype(jnp.float32)
            ctx = ctx.at[num_context - len(ids):].set(words)
    return ctx


def shared_prefix_plan(ids: np.ndarray, min_prefix: int = 1,
                       max_ratio: float = 0.75) -> SharedPrefixPlan | None:
    """How to run texts `ids` [N, L] as shared prefixes + suffixes, or None if that saves little.

    The suffix length S with the fewest tokens to run (prefixes padded to the longest, plus N
    suffixes of S) wins if it runs at most `max_ratio` of N x L tokens; a prefix has at least
    `min_prefix` tokens.
    """
    ids = np.asarray(ids)
    n, length = ids.shape
    eot = ids.argmax(axis=-1)
    best, best_cost = None, None
    for s in range(1, int(eot.max()) + 1):
        cut = eot + 1 - s  # prefix lengths
        if cut.min() < min_prefix:
            break
        keys = {}
        groups = np.asarray([keys.setdefault(tuple(ids[i, :cut[i]]), len(keys)) for i in range(n)])
        reps = np.asarray([int(np.argmax(groups == g)) for g in range(len(keys))])
        suffix = int((eot - cut).max()) + 1
        cost = len(keys) * int(cut.max()) + n * suffix
        if best is None or cost < best_cost:
            best_cost = cost
            best = SharedPrefixPlan(
                representatives=tuple(reps.tolist()), prefix_lengths=tuple(cut[reps].tolist()),
                groups=tuple(groups.tolist()), suffix_eot=tuple((eot - cut).tolist()),
                suffix_length=suffix)
    if best is None or best_cost > max_ratio * n * length:
        return None
    return best


class PromptBank(nnx.Module):
    """Prompts `[SOS] ctx_1 .. ctx_n <text> [EOS]` for `texts`, sharing `num_context` vectors.

    `depth`: the text layers with their own context, from the input; d > 1 adds `deep_ctx`
    [d - 1, n, width] for layers 1 .. d - 1 (MaPLe). Without context the bank has no parameters.
    """

    def __init__(self, texts: Sequence[str], *, clip: CLIP, num_context: int = 0, depth: int = 1,
                 init_phrase: str = "", share_prefixes: bool = True, rngs: nnx.Rngs):
        config: CLIPConfig = clip.config
        if num_context < 0:
            raise UserError(f"num_text_context must be >= 0, got {num_context}")
        if num_context and not 1 <= depth <= config.text_layers:
            raise UserError(f"text_prompt_depth must be in [1, {config.text_layers}] "
                            f"(text layers), got {depth}")
        prefix = " ".join([_PLACEHOLDER] * num_context)
        ids = tokenize([f"{prefix} {t}" if num_context else t for t in texts],
                       context_length=config.context_length)
        if num_context:
            placeholder = phrase_token_ids(_PLACEHOLDER)
            if not (ids[:, 1:1 + num_context] == placeholder[0]).all():
                raise AssertionError("context placeholder did not tokenise to one token per vector")
        ids = trim_to_longest(ids)
        self.texts = tuple(texts)
        self.num_context = num_context
        # Static (trimmed to the longest prompt): constants under jit.
        self.token_ids = tuple(map(tuple, ids.tolist()))
        self.eot_positions = tuple(ids.argmax(axis=-1).tolist())
        # Texts that share prefixes (LIQE's 495) run each prefix once.
        self.prefix_plan = (shared_prefix_plan(ids, min_prefix=1 + num_context)
                            if share_prefixes else None)
        if num_context:
            self.ctx = nnx.Param(init_context(rngs.params(), clip.token_embedding.embedding[...],
                                              num_context, config.text_width, init_phrase))
        else:
            self.ctx = None
        if num_context and depth > 1:
            self.deep_ctx = nnx.Param(CONTEXT_STD * jax.random.normal(
                rngs.params(), (depth - 1, num_context, config.text_width), jnp.float32))
        else:
            self.deep_ctx = None

    def embeddings(self, clip: CLIP) -> jax.Array:
        """[N, L, text_width] word embeddings with the context vectors at positions 1 .. n."""
        emb = clip.token_embedding(jnp.asarray(self.token_ids, jnp.int32))
        if self.ctx is None:
            return emb
        ctx = jnp.broadcast_to(self.ctx[...].astype(emb.dtype), (emb.shape[0], *self.ctx.shape))
        return jnp.concatenate([emb[:, :1], ctx, emb[:, 1 + self.num_context:]], axis=1)

    def __call__(self, clip: CLIP) -> jax.Array:
        """Projected text features [N, embed_dim] (not normalised)."""
        deep = None if self.deep_ctx is None else self.deep_ctx[...]
        emb = self.embeddings(clip)
        if self.prefix_plan is None:
            return clip.encode_text_embeddings(emb, jnp.asarray(self.eot_positions),
                                               deep_prompts=deep, prompt_start=1)
        plan = self.prefix_plan
        lengths, groups = np.asarray(plan.prefix_lengths), np.asarray(plan.groups)
        # Text n's suffix: its positions from its prefix's end; windows past the end of the ids
        # only hold positions after end-of-text.
        window = np.minimum(lengths[groups][:, None] + np.arange(plan.suffix_length),
                            emb.shape[1] - 1)
        return clip.encode_text_shared_prefix(
            emb[np.asarray(plan.representatives), :int(lengths.max())],
            emb[np.arange(len(groups))[:, None], window], plan, deep_prompts=deep,
            prompt_start=1)


def scene_texts() -> tuple[str, ...]:
    """MP-IQE's scene prompts after the context: `<scene>.`"""
    return tuple(f"{s.replace('_', ' ')}." for s in labels.SCENES)


def distortion_texts() -> tuple[str, ...]:
    """MP-IQE's distortion prompts after the context: `<distortion>.`"""
    return tuple(f"{d}." for d in labels.DISTORTIONS)


LIQE_PREFIX = "a photo of a "


def liqe_texts(with_context: bool = False) -> tuple[str, ...]:
    """LIQE's 495 prompts, index q * 99 + s * 11 + d; `with_context`: without the leading
    "a photo of a", left to the context."""
    texts = []
    for q in labels.QUALITIES:
        for s in labels.SCENES:
            for d in labels.DISTORTIONS:
                texts.append(labels.LIQE_TEMPLATE.format(scene=s, distortion=d, quality=q))
    if with_context:
        assert all(t.startswith(LIQE_PREFIX) for t in texts)
        texts = [t[len(LIQE_PREFIX):] for t in texts]
    return tuple(texts)


LIQE_QUALITY_TEMPLATE = "a photo with {quality} quality"


def liqe_quality_texts() -> tuple[str, ...]:
    """The 5 quality-only prompts of LIQE's single-dataset training (`train_liqe_single.py`,
    pyiqa's `liqe` on KonIQ), worst first."""
    return tuple(LIQE_QUALITY_TEMPLATE.format(quality=q) for q in labels.QUALITIES)


class VisualPrompts(nnx.Module):
    """VPT-deep prompts [depth, num_prompts, vision_width], shared over the batch."""

    def __init__(self, config: CLIPConfig, *, depth: int, num_prompts: int, rngs: nnx.Rngs):
        if not 0 <= depth <= config.vision_layers:
            raise UserError(f"visual_prompt_depth must be in [0, {config.vision_layers}] "
                            f"(vision layers), got {depth}")
        if num_prompts < 0:
            raise UserError(f"num_visual_prompts must be >= 0, got {num_prompts}")
        if depth and num_prompts:
            self.tokens = nnx.Param(init_visual_prompts(rngs.params(), config, depth, num_prompts))
        else:
            self.tokens = None

    def __call__(self) -> jax.Array | None:
        return None if self.tokens is None else self.tokens[...]
