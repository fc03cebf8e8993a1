"""CLIP's blocks run as a `lax.scan` or unrolled, with or without rematerialisation: the same
losses and gradients for MP-IQE (deep visual and text prompts) and LIQE (shared-prefix text path
with deep text prompts), against the plain unrolled loop that keeps every activation."""
import dataclasses
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import workdirs

from mmpiqa_jax.models.clip_model import CLIP, get_variant
from mmpiqa_jax.train import param_groups as pg
from mmpiqa_jax.train import step as step_lib

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
import bench_inputs  # noqa: E402

# Each test compares runs made under the same flags.
pytestmark = pytest.mark.usefixtures("same_flags")

# Three layers per tower, so that prompts are inserted at some blocks and not at others.
CONFIG = dataclasses.replace(get_variant("tiny"), vision_layers=3, text_layers=3)
EXECUTIONS = [(True, "none"), (True, "dots"), (True, "full"), (False, "dots")]


def build(name: str):
    clip = CLIP(CONFIG, rngs=nnx.Rngs(0))
    if name == "mpiqe":
        model = workdirs.build("mpiqe", clip, visual_prompt_depth=2, num_visual_prompts=3,
                               num_text_context=2, text_context_init="", text_prompt_depth=2,
                               fusion_layers=1, fusion_width=32, fusion_heads=2,
                               rngs=nnx.Rngs(1))
        kernel = model.fusion.head.kernel
        kernel[...] = jax.random.normal(jax.random.key(0), kernel.shape)
        return model, pg.resolve("prompt")
    return workdirs.build("liqe", clip, num_text_context=2, text_context_init="",
                          text_prompt_depth=2, rngs=nnx.Rngs(2)), pg.resolve("full")


def loss_and_grads(model, groups, batch):
    graphdef, trainable, frozen = pg.split_trainable(model, groups)
    fn = jax.jit(jax.value_and_grad(step_lib.loss_fn, has_aux=True), static_argnums=1)
    (loss, _), grads = fn(trainable, graphdef, frozen, batch,
                          jnp.asarray(bench_inputs.LOSS_WEIGHTS))
    return float(loss), jax.tree.map(np.asarray, grads)


@pytest.mark.parametrize("name", ["mpiqe", "liqe"])
def test_scan_and_remat_give_the_unrolled_gradients(name):
    batch = {k: jnp.asarray(v) for k, v in bench_inputs.random_batch(
        np.random.default_rng(0), 4, 2, CONFIG.image_resolution).items()}
    model, groups = build(name)
    model.clip.set_block_execution(scan_layers=False, remat="none")
    ref_loss, ref_grads = loss_and_grads(model, groups, batch)
    assert np.isfinite(ref_loss)
    # Every block's weights get a gradient (LIQE trains all of them), so an error in which
    # block sees which parameters or prompts would show.
    for scan_layers, remat in EXECUTIONS:
        model.clip.set_block_execution(scan_layers=scan_layers, remat=remat)
        loss, grads = loss_and_grads(model, groups, batch)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, err_msg=f"{scan_layers}, {remat}")
        flat_ref, flat = nnx.to_flat_state(ref_grads), dict(nnx.to_flat_state(grads))
        for path, g in flat_ref:
            np.testing.assert_allclose(flat[path], g, rtol=2e-4, atol=1e-6,
                                       err_msg=f"{path} with scan_layers={scan_layers}, "
                                               f"remat={remat}")


def test_unknown_remat_policy_is_named():
    clip = CLIP(get_variant("tiny"), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="unknown remat policy 'some'"):
        clip.set_block_execution(remat="some")


def test_block_execution_returns_after_the_with_block():
    clip = CLIP(get_variant("tiny"), rngs=nnx.Rngs(0))
    clip.set_block_execution(scan_layers=True, remat="full")
    towers = (clip.visual.transformer, clip.transformer)
    with clip.block_execution(scan_layers=False, remat="none"):
        assert [(t.scan_layers, t.remat) for t in towers] == [(False, "none")] * 2
    assert [(t.scan_layers, t.remat) for t in towers] == [(True, "full")] * 2
