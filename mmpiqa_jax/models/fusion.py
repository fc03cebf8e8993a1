"""MP-IQE's fusion encoder: the prompted text features query the prompted image tokens.

Each layer: pre-LayerNorm cross-attention over the image tokens, self-attention among the
queries, an MLP; the queries are mean-pooled and mapped to the 5 quality logits.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mmpiqa_jax import labels
from mmpiqa_jax.errors import UserError


class FusionLayer(nnx.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: int, *, dtype, rngs: nnx.Rngs):
        if width % heads:
            raise UserError(f"fusion_width {width} is not divisible by fusion_heads {heads}")
        attn = lambda: nnx.MultiHeadAttention(heads, width, dtype=dtype, decode=False,
                                              keep_rngs=False, rngs=rngs)
        self.ln_q = nnx.LayerNorm(width, rngs=rngs)
        self.ln_kv = nnx.LayerNorm(width, rngs=rngs)
        self.cross_attn = attn()
        self.ln_1 = nnx.LayerNorm(width, rngs=rngs)
        self.self_attn = attn()
        self.ln_2 = nnx.LayerNorm(width, rngs=rngs)
        self.mlp_in = nnx.Linear(width, mlp_ratio * width, dtype=dtype, rngs=rngs)
        self.mlp_out = nnx.Linear(mlp_ratio * width, width, dtype=dtype, rngs=rngs)

    def __call__(self, queries: jax.Array, image_tokens: jax.Array) -> jax.Array:
        kv = self.ln_kv(image_tokens)
        x = queries + self.cross_attn(self.ln_q(queries), kv, kv)
        x = x + self.self_attn(self.ln_1(x))
        return x + self.mlp_out(jax.nn.gelu(self.mlp_in(self.ln_2(x))))


class FusionEncoder(nnx.Module):
    """`(text_features [Q, text_dim], image_tokens [B, T, image_dim]) -> quality logits [B, 5]`."""

    def __init__(self, text_dim: int, image_dim: int, *, width: int, layers: int, heads: int,
                 mlp_ratio: int = 4, dtype=jnp.float32, rngs: nnx.Rngs):
        if layers < 1:
            raise UserError(f"fusion_layers must be >= 1, got {layers}")
        self.text_in = nnx.Linear(text_dim, width, dtype=dtype, rngs=rngs)
        self.image_in = nnx.Linear(image_dim, width, dtype=dtype, rngs=rngs)
        self.layers = nnx.List([FusionLayer(width, heads, mlp_ratio, dtype=dtype, rngs=rngs)
                                for _ in range(layers)])
        self.ln_out = nnx.LayerNorm(width, rngs=rngs)
        # Zero head: every image starts at the uniform quality distribution (score 3).
        self.head = nnx.Linear(width, labels.NUM_QUALITIES, kernel_init=nnx.initializers.zeros,
                               rngs=rngs)

    def __call__(self, text_features: jax.Array, image_tokens: jax.Array) -> jax.Array:
        kv = self.image_in(image_tokens)
        q = self.text_in(text_features)
        x = jnp.broadcast_to(q, (kv.shape[0], *q.shape)).astype(kv.dtype)
        for layer in self.layers:
            x = layer(x, kv)
        pooled = jnp.mean(self.ln_out(x).astype(jnp.float32), axis=1)
        return self.head(pooled)
