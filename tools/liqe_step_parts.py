"""LIQE's train-step parts timed apart (ViT-B/32, float32): the text path and the image tower, each
forward + backward with respect to every trainable parameter, jitted; model FLOPs from XLA (the
unrolled program, nothing recomputed).

    python tools/liqe_step_parts.py

The step itself is timed by `tools/benchmark.py`; this says which part of it is slow.
"""
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]
from bench import plans, weights  # noqa: E402
from mmpiqa_jax.train import param_groups as pg  # noqa: E402

config = plans.model_config("liqe", plans.QUICK)
model = weights.build_jax_model(config)
groups = pg.resolve(config.optimizer.param_groups)
graphdef, trainable, frozen = pg.split_trainable(model, groups)
pixels = jnp.asarray(np.random.default_rng(0).normal(size=(48, 224, 224, 3)), jnp.float32)

def text_loss(t):
    m = nnx.merge(graphdef, t, frozen)
    return jnp.sum(jnp.sin(m.text_features()))

def image_loss(t):
    m = nnx.merge(graphdef, t, frozen)
    return jnp.sum(jnp.sin(m.clip.encode_image(pixels)))

for name, fn in (("text path (495 prompts, shared prefixes)", text_loss),
                 ("image tower (48 crops)", image_loss)):
    # Model FLOPs from the unrolled program (a compiled scan's analysis counts its body once);
    # the timed program runs the blocks as the config does (scan, remat).
    with model.clip.block_execution(scan_layers=False, remat="none"):
        graphdef = pg.split_trainable(model, groups)[0]
        cost = jax.jit(jax.value_and_grad(fn)).lower(trainable).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    graphdef = pg.split_trainable(model, groups)[0]
    f = jax.jit(jax.value_and_grad(fn)).lower(trainable).compile()
    jax.block_until_ready(f(trainable))
    ts = []
    for _ in range(3):
        t = time.perf_counter()
        jax.block_until_ready(f(trainable))
        ts.append(time.perf_counter() - t)
    s = statistics.median(ts)
    print(f"{name}: {s:.2f} s, {cost['flops']/1e12:.3f} TFLOP, {cost['flops']/s/1e9:.0f} GFLOP/s")
