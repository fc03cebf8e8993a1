"""OpenAI CLIP's transformer blocks in Flax NNX, named as in OpenAI's `clip/model.py`.

Parameters are float32; `dtype` is the compute dtype of matmuls and attention (LayerNorm and the
attention softmax run in float32).
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import jax
import jax.numpy as jnp
from flax import nnx

from mmpiqa_jax.errors import UserError

# What `Transformer.run_blocks` passes from block to block (an array, or a pytree of arrays).
Carry = TypeVar("Carry")


ACTIVATIONS = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),  # OpenAI CLIP's GELU approximation
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # exact, torch's nn.GELU()
}


class LayerNorm(nnx.LayerNorm):
    """LayerNorm with CLIP's eps 1e-5, computed in float32 and cast back to the input dtype."""

    def __init__(self, num_features: int, *, rngs: nnx.Rngs):
        # Two-pass variance, as torch computes it, rather than E[x^2] - E[x]^2.
        super().__init__(num_features, epsilon=1e-5, dtype=jnp.float32,
                         use_fast_variance=False, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return super().__call__(x.astype(jnp.float32)).astype(x.dtype)


normal = nnx.initializers.normal  # normal(stddev)


class MultiheadAttention(nnx.Module):
    """Self-attention with torch's fused query/key/value projection `in_proj` (columns q, k, v)."""

    def __init__(self, width: int, heads: int, *, proj_std: float, dtype, rngs: nnx.Rngs):
        self.heads = heads
        self.in_proj = nnx.Linear(width, 3 * width, dtype=dtype, kernel_init=normal(width**-0.5),
                                  rngs=rngs)
        self.out_proj = nnx.Linear(width, width, dtype=dtype, kernel_init=normal(proj_std),
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
        """Causal self-attention of texts split into shared prefixes [G, P, W] and suffixes
        [N, S, W]: suffix n continues prefix `groups[n]`; `suffix_mask` [N, S, P + S] says which
        positions each suffix query sees."""
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
    """width -> hidden -> width, with `activation` (`ACTIVATIONS`)."""

    def __init__(self, width: int, *, proj_std: float, dtype, rngs: nnx.Rngs, hidden: int,
                 activation: str):
        self.activation = activation
        self.c_fc = nnx.Linear(width, hidden, dtype=dtype,
                               kernel_init=normal((2 * width)**-0.5), rngs=rngs)
        self.c_proj = nnx.Linear(hidden, width, dtype=dtype, kernel_init=normal(proj_std),
                                 rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.c_proj(ACTIVATIONS[self.activation](self.c_fc(x)))


class ResidualAttentionBlock(nnx.Module):
    """Pre-LayerNorm transformer block."""

    def __init__(self, width: int, heads: int, *, proj_std: float, dtype, rngs: nnx.Rngs,
                 mlp_width: int, activation: str):
        self.ln_1 = LayerNorm(width, rngs=rngs)
        self.attn = MultiheadAttention(width, heads, proj_std=proj_std, dtype=dtype, rngs=rngs)
        self.ln_2 = LayerNorm(width, rngs=rngs)
        self.mlp = MLP(width, proj_std=proj_std, dtype=dtype, rngs=rngs, hidden=mlp_width,
                       activation=activation)

    def __call__(self, x: jax.Array, *, causal: bool) -> jax.Array:
        x = x + self.attn(self.ln_1(x), causal=causal)
        return x + self.mlp(self.ln_2(x))

    def shared_prefix(self, prefix, suffix, groups, suffix_mask):
        """The block on (prefix, suffix) texts (`MultiheadAttention.shared_prefix`)."""
        attn_p, attn_s = self.attn.shared_prefix(self.ln_1(prefix), self.ln_1(suffix), groups,
                                                 suffix_mask)
        prefix, suffix = prefix + attn_p, suffix + attn_s
        return prefix + self.mlp(self.ln_2(prefix)), suffix + self.mlp(self.ln_2(suffix))


class Transformer(nnx.Module):
    """A stack of blocks with a hook for deep prompts.

    `deep_prompts[j]` ([n, width], shared over the batch) replaces the tokens at positions
    [prompt_start, prompt_start + n) at the input of block j + 1; block 0's prompts, if any, are
    already in `x`.
    """

    def __init__(self, width: int, layers: int, heads: int, *, dtype, rngs: nnx.Rngs,
                 mlp_width: int, activation: str, scan_layers: bool = True, remat: str = "dots"):
        # OpenAI's initialisation scales the residual-branch outputs with the depth.
        proj_std = width**-0.5 * (2 * layers)**-0.5
        blocks = [ResidualAttentionBlock(width, heads, proj_std=proj_std, dtype=dtype, rngs=rngs,
                                         mlp_width=mlp_width, activation=activation)
                  for _ in range(layers)]
        # Stored stacked (a leading layer axis), so that the scan reads the weights in place;
        # initialised block by block.
        self.resblocks = nnx.merge(nnx.graphdef(blocks[0]), jax.tree.map(
            lambda *xs: jnp.stack(xs), *[nnx.state(block) for block in blocks]))
        self.layers = layers
        self.scan_layers = scan_layers
        self.remat = check_remat(remat)

    def __call__(self, x: jax.Array, *, causal: bool = False, deep_prompts: jax.Array | None = None,
                 prompt_start: int = 0) -> jax.Array:
        return self.run_blocks(
            x, lambda block, x: block(x, causal=causal), deep_prompts=deep_prompts,
            insert_prompts=lambda x, prompts: replace_tokens(x, prompts, prompt_start))

    def run_blocks(self, carry: Carry, apply: Callable[[ResidualAttentionBlock, Carry], Carry], *,
                   deep_prompts: jax.Array | None = None,
                   insert_prompts: Callable[[Carry, jax.Array], Carry] | None = None) -> Carry:
        """Every block in order, `carry = apply(block, carry)`, with deep prompts in between.

        `carry`: the tokens [B, L, W], or a pytree of them. Before block i = 1 .. depth,
        `carry = insert_prompts(carry, deep_prompts[i - 1])` (`deep_prompts` [depth, n, W]).
        With `scan_layers` the blocks run as one `jax.lax.scan` over the stacked parameters,
        else unrolled (whose XLA cost analysis counts every block). `remat` says what each block
        keeps for the backward pass (`REMAT_POLICIES`).
        """
        layers = self.layers
        depth = 0 if deep_prompts is None else deep_prompts.shape[0]
        if depth > layers - 1:
            raise UserError(f"{depth} deep prompt layers given for a {layers}-layer "
                            f"transformer; at most {layers - 1} (layers 1..)")
        if self.remat != "none":
            # Inside a scan XLA cannot merge the recomputation with the forward pass; unrolled,
            # it could, unless prevented.
            apply = _rematerialised(apply, self.remat, prevent_cse=not self.scan_layers)
        graphdef, stacked = nnx.split(self.resblocks)
        run = _scan_blocks if self.scan_layers else _loop_blocks
        return run(graphdef, stacked, layers, carry, apply, deep_prompts, insert_prompts)


def _loop_blocks(graphdef, stacked, layers, carry, apply, prompts, insert_prompts):
    """The blocks unrolled; `prompts[i - 1]` inserted before block i = 1 .. depth."""
    depth = 0 if prompts is None else prompts.shape[0]
    for i in range(layers):
        if 1 <= i <= depth:
            carry = insert_prompts(carry, prompts[i - 1])
        block = nnx.merge(graphdef, jax.tree.map(lambda x, i=i: x[i], stacked))
        carry = apply(block, carry)
    return carry


def _scan_blocks(graphdef, stacked, layers, carry, apply, prompts, insert_prompts):
    """`_loop_blocks` as one `jax.lax.scan` (the prompts padded to one row per layer)."""
    depth = 0 if prompts is None else prompts.shape[0]
    if depth:
        pad = lambda n: jnp.zeros((n, *prompts.shape[1:]), prompts.dtype)  # noqa: E731
        prompts = jnp.concatenate([pad(1), prompts, pad(layers - 1 - depth)])

    def body(carry, xs):
        state, i, prompts_i = xs
        if depth:
            carry = jax.lax.cond((i >= 1) & (i <= depth),
                                 lambda c: insert_prompts(c, prompts_i), lambda c: c, carry)
        return apply(nnx.merge(graphdef, state), carry), None

    xs = (stacked, jnp.arange(layers), prompts if depth else None)
    return jax.lax.scan(body, carry, xs)[0]


# What a block keeps for its backward pass: all, the weight matmuls' outputs, or its input.
REMAT_POLICIES = {
    "none": None,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "full": jax.checkpoint_policies.nothing_saveable,
}


def check_remat(remat: str) -> str:
    if remat not in REMAT_POLICIES:
        raise UserError(f"unknown remat policy {remat!r}; known: {sorted(REMAT_POLICIES)}")
    return remat


def _rematerialised(apply, remat: str, *, prevent_cse: bool):
    """`apply(block, carry)` recomputed in the backward pass but for what `remat` keeps."""
    def pure(graphdef, state, carry):
        return apply(nnx.merge(graphdef, state), carry)

    pure = jax.checkpoint(pure, static_argnums=(0,), prevent_cse=prevent_cse,
                          policy=REMAT_POLICIES[remat])
    return lambda block, carry: pure(*nnx.split(block), carry)


def replace_tokens(x: jax.Array, prompts: jax.Array, start: int) -> jax.Array:
    """`x` [B, L, W] with positions [start, start + n) set to `prompts` [n, W] (every batch row)."""
    n = prompts.shape[0]
    new = jnp.broadcast_to(prompts.astype(x.dtype), (x.shape[0], n, x.shape[2]))
    return x.at[:, start:start + n].set(new)
