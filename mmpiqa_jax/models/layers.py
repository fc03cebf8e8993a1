"""OpenAI CLIP's transformer building blocks in Flax NNX, named as in OpenAI's `clip/model.py`.

Parameters are float32; `dtype` is the compute dtype of matmuls and attention. LayerNorm and the
attention softmax always run in float32.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def quick_gelu(x: jax.Array) -> jax.Array:
    """OpenAI CLIP's GELU approximation x * sigmoid(1.702 x); its checkpoints were trained so."""
    return x * jax.nn.sigmoid(1.702 * x)


class LayerNorm(nnx.LayerNorm):
    """LayerNorm with CLIP's eps 1e-5, computed in float32 and cast back to the input dtype."""

    def __init__(self, num_features: int, *, rngs: nnx.Rngs):
        # Two-pass variance, as torch computes it, rather than E[x^2] - E[x]^2.
        super().__init__(num_features, epsilon=1e-5, dtype=jnp.float32,
                         use_fast_variance=False, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return super().__call__(x.astype(jnp.float32)).astype(x.dtype)


def _normal(stddev: float):
    return nnx.initializers.normal(stddev=stddev)


class MultiheadAttention(nnx.Module):
    """Self-attention with torch's fused query/key/value projection `in_proj` (columns q, k, v)."""

    def __init__(self, width: int, heads: int, *, proj_std: float, dtype, rngs: nnx.Rngs):
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.in_proj = nnx.Linear(width, 3 * width, dtype=dtype, kernel_init=_normal(width**-0.5),
                                  rngs=rngs)
        self.out_proj = nnx.Linear(width, width, dtype=dtype, kernel_init=_normal(proj_std),
                                   rngs=rngs)

    def __call__(self, x: jax.Array, *, causal: bool) -> jax.Array:
        batch, length, width = x.shape
        split_heads = lambda t: t.reshape(batch, length, self.heads, width // self.heads)
        q, k, v = map(split_heads, jnp.split(self.in_proj(x), 3, axis=-1))
        # Logits and softmax in float32 whatever the compute dtype (jax.nn's contract).
        out = jax.nn.dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(out.reshape(batch, length, width))

    def shared_prefix(self, prefix: jax.Array, suffix: jax.Array, groups: jax.Array,
                      suffix_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Causal self-attention of texts split into shared prefixes [G, P, W] and suffixes [N, S, W].

        Suffix n continues prefix `groups[n]`; `suffix_mask` [N, S, P + S] says which prefix and
        suffix positions each suffix query sees. Prefix keys and values are computed once per
        prefix, not once per text.
        """
        heads = lambda t: t.reshape(*t.shape[:2], self.heads, t.shape[-1] // self.heads)
        qp, kp, vp = map(heads, jnp.split(self.in_proj(prefix), 3, axis=-1))
        qs, ks, vs = map(heads, jnp.split(self.in_proj(suffix), 3, axis=-1))
        out_p = jax.nn.dot_product_attention(qp, kp, vp, is_causal=True)
        k = jnp.concatenate([kp[groups], ks], axis=1)
        v = jnp.concatenate([vp[groups], vs], axis=1)
        out_s = jax.nn.dot_product_attention(qs, k, v, mask=suffix_mask[:, None])
        flat = lambda t: t.reshape(*t.shape[:2], -1)
        return self.out_proj(flat(out_p)), self.out_proj(flat(out_s))


class MLP(nnx.Module):
    def __init__(self, width: int, *, proj_std: float, dtype, rngs: nnx.Rngs):
        self.c_fc = nnx.Linear(width, 4 * width, dtype=dtype,
                               kernel_init=_normal((2 * width)**-0.5), rngs=rngs)
        self.c_proj = nnx.Linear(4 * width, width, dtype=dtype, kernel_init=_normal(proj_std),
                                 rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.c_proj(quick_gelu(self.c_fc(x)))


class ResidualAttentionBlock(nnx.Module):
    """Pre-LayerNorm transformer block."""

    def __init__(self, width: int, heads: int, *, proj_std: float, dtype, rngs: nnx.Rngs):
        self.ln_1 = LayerNorm(width, rngs=rngs)
        self.attn = MultiheadAttention(width, heads, proj_std=proj_std, dtype=dtype, rngs=rngs)
        self.ln_2 = LayerNorm(width, rngs=rngs)
        self.mlp = MLP(width, proj_std=proj_std, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, *, causal: bool) -> jax.Array:
        x = x + self.attn(self.ln_1(x), causal=causal)
        return x + self.mlp(self.ln_2(x))

    def shared_prefix(self, prefix, suffix, groups, suffix_mask):
        """The block on causal texts split into shared prefixes and suffixes (see
        `MultiheadAttention.shared_prefix`); returns the new (prefix, suffix)."""
        attn_p, attn_s = self.attn.shared_prefix(self.ln_1(prefix), self.ln_1(suffix), groups,
                                                 suffix_mask)
        prefix, suffix = prefix + attn_p, suffix + attn_s
        return prefix + self.mlp(self.ln_2(prefix)), suffix + self.mlp(self.ln_2(suffix))


class Transformer(nnx.Module):
    """A stack of blocks with a hook for deep prompts (the same hook serves both towers).

    `deep_prompts[j]` ([n, width], shared over the batch) replaces the tokens at positions
    [prompt_start, prompt_start + n) at the input of block j + 1; block 0's prompts, if any, are
    already in `x` (appended to the image tokens, or the context vectors of the text embeddings).
    """

    def __init__(self, width: int, layers: int, heads: int, *, dtype, rngs: nnx.Rngs):
        # OpenAI's initialisation scales the residual-branch outputs with the depth.
        proj_std = width**-0.5 * (2 * layers)**-0.5
        self.resblocks = nnx.List([
            ResidualAttentionBlock(width, heads, proj_std=proj_std, dtype=dtype, rngs=rngs)
            for _ in range(layers)])

    def __call__(self, x: jax.Array, *, causal: bool = False, deep_prompts: jax.Array | None = None,
                 prompt_start: int = 0) -> jax.Array:
        depth = 0 if deep_prompts is None else deep_prompts.shape[0]
        if depth > len(self.resblocks) - 1:
            raise ValueError(f"{depth} deep prompt layers given for a {len(self.resblocks)}-layer "
                             f"transformer; at most {len(self.resblocks) - 1} (layers 1..)")
        for i, block in enumerate(self.resblocks):
            if 1 <= i <= depth:
                prompts = deep_prompts[i - 1].astype(x.dtype)
                x = x.at[:, prompt_start:prompt_start + prompts.shape[0]].set(prompts)
            x = block(x, causal=causal)
        return x
