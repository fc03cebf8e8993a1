"""Parameter groups (presets, exactly-one matching, counts), gradients only for trainable groups,
the FLOPs saved by freezing, and the optimiser's schedules and per-group multipliers."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from mmpiqa_jax import config as config_lib
from mmpiqa_jax.data import pipeline
from mmpiqa_jax.models import iqa
from mmpiqa_jax.train import optimizer as opt_lib
from mmpiqa_jax.train import cost as cost_lib
from mmpiqa_jax.train import param_groups as pg
from mmpiqa_jax.train import state as state_lib
from mmpiqa_jax.train import step as step_lib


@pytest.fixture(scope="module")
def config():
    return config_lib.load_config("configs/tiny.py")


@pytest.fixture(scope="module")
def abstract(config):
    return nnx.eval_shape(lambda: iqa.build_model(config.model, nnx.Rngs(0)))


def paths(state):
    return {pg.path_str(p) for p, _ in nnx.to_flat_state(state)}


def test_presets_split_and_count(abstract):
    params = {pg.path_str(p): v.size for p, v in nnx.to_flat_state(nnx.state(abstract, nnx.Param))}
    for preset, is_trainable in (
            ("prompt", lambda n: n.startswith(("prompts/", "fusion/"))),
            ("full", lambda n: n != "clip/logit_scale")):
        groups = pg.resolve(preset)
        _, trainable, frozen = pg.split_trainable(abstract, groups)
        want = {n for n in params if is_trainable(n)}
        assert paths(trainable) == want, preset
        assert paths(frozen) >= set(params) - want  # plus the text cache, which is not a Param
        counts = pg.count(abstract, groups)
        assert sum(c.total for c in counts) == sum(params.values())
        assert sum(c.trainable for c in counts) == sum(params[n] for n in want)
        assert "total" in pg.format_counts(counts)
    assert "prompts/visual/tokens" in params and "fusion/head/kernel" in params


def test_every_parameter_must_match_exactly_one_group(abstract):
    with pytest.raises(ValueError, match=r"parameter 'fusion/head/bias' matches no group"):
        pg.split_trainable(abstract, pg.resolve(((r"clip/.*", None), (r"prompts/.*", 1.0))))
    with pytest.raises(ValueError, match=r"parameter 'clip/logit_scale' matches several groups "
                                         r"'clip/.\*', '.\*logit_scale'"):
        pg.split_trainable(abstract, pg.resolve(((r"clip/.*", None), (r".*logit_scale", None),
                                                 (r"(prompts|fusion)/.*", 1.0))))
    with pytest.raises(ValueError, match="unknown optimizer.param_groups preset 'partial'"):
        pg.resolve("partial")
    with pytest.raises(ValueError, match="param group 'clip/.*': lr multiplier must be"):
        pg.resolve(((r"clip/.*", -1.0),))
    with pytest.raises(ValueError, match=r"param group regex '\(' is invalid"):
        pg.resolve((("(", 1.0),))


@pytest.mark.parametrize("preset", ["prompt", "full"])
def test_gradients_reach_exactly_the_trainable_groups(preset):
    config = config_lib.load_config("configs/tiny.py:ctx=2,groups=" + preset,
                                    ["model.text_prompt_depth=2", "model.text_context_init="])
    model = iqa.build_model(config.model, nnx.Rngs(0))
    head = model.fusion.head.kernel  # zero at init, which would hide the gradient upstream
    head[...] = jax.random.normal(jax.random.key(1), head.shape)
    graphdef, trainable, frozen = pg.split_trainable(model, pg.resolve(preset))
    rng = np.random.default_rng(0)
    batch = {"pixels": jnp.asarray(rng.normal(size=(4, 1, 32, 32, 3)), jnp.float32),
             "quality": jnp.asarray([0.1, 0.9, 0.4, 0.6]), "dataset_id": jnp.zeros(4, jnp.int32),
             "distortion_class": jnp.asarray([0, 3, -1, 5]),
             "scenes": jnp.asarray(np.eye(9)[[0, 1, 2, 3]], jnp.float32),
             "scene_mask": jnp.asarray([True, True, False, True])}
    weights = step_lib.task_weights(config.loss)
    grads = jax.jit(jax.grad(
        lambda t: step_lib.loss_fn(t, graphdef, frozen, batch, weights)[0]))(trainable)
    assert paths(grads) == paths(trainable)  # no frozen parameter has a gradient at all
    zero = [pg.path_str(p) for p, g in nnx.to_flat_state(grads) if not np.any(np.asarray(g[...]))]
    assert zero == [], zero
    if preset == "prompt":
        assert {"prompts/visual/tokens", "prompts/scene/ctx", "prompts/scene/deep_ctx",
                "prompts/distortion/ctx", "fusion/head/kernel"} <= paths(grads)
        assert not any(n.startswith("clip/") for n in paths(grads))


def test_freezing_skips_weight_gradients(config, abstract):
    """The step of `prompt` costs clearly fewer model FLOPs than `full` (no CLIP weight
    gradients)."""
    flops = {}
    weights = jax.ShapeDtypeStruct((len(step_lib.TASKS),), jnp.float32)
    for preset in ("prompt", "full"):
        c = config.copy_and_resolve_references()
        c.optimizer.param_groups = preset
        setup = state_lib.training_setup(c, abstract)
        flops[preset] = cost_lib.step_model_flops(abstract, setup, pipeline.train_element_spec(c),
                                                  weights)
    assert 0 < flops["prompt"] < 0.85 * flops["full"], flops


def _opt_config(**kw):
    c = config_lib.load_config("configs/tiny.py").optimizer.to_dict()
    c.update(kw)
    return ml_collections.ConfigDict(c)


def test_schedules():
    c = _opt_config(learning_rate=1.0, warmup_steps=10, schedule="cosine", cosine_period_epochs=0,
                    min_lr_ratio=0.1)
    s = opt_lib.make_schedule(c, peak=2.0, num_steps=110, steps_per_epoch=1)
    np.testing.assert_allclose([s(0), s(5), s(10)], [0.0, 1.0, 2.0], atol=1e-6)
    # Half-way through the cosine: floor + (peak - floor) / 2.
    np.testing.assert_allclose(s(60), 0.2 + 1.8 * 0.5, atol=1e-5)
    np.testing.assert_allclose(s(110), 0.2, atol=1e-6)
    # LIQE: torch CosineAnnealingLR, T_max = 5 epochs, continuing with period 2 T_max.
    c = _opt_config(warmup_steps=0, cosine_period_epochs=5, min_lr_ratio=0.0)
    s = opt_lib.make_schedule(c, peak=5e-6, num_steps=16000, steps_per_epoch=200)
    t = 300
    np.testing.assert_allclose(s(t), 5e-6 * 0.5 * (1 + math.cos(math.pi * t / 1000)), rtol=1e-5)
    np.testing.assert_allclose([s(1000), s(2000)], [0.0, 5e-6], atol=1e-12)
    with pytest.raises(ValueError, match="unknown optimizer.schedule 'linear'"):
        opt_lib.make_schedule(_opt_config(schedule="linear"), peak=1.0, num_steps=10,
                              steps_per_epoch=1)


def test_group_multipliers_and_clipping():
    """SGD without momentum: each group's step is lr * multiplier * grad, by hand."""
    state = nnx.State({"a": nnx.Param(jnp.ones(2)), "b": nnx.Param(jnp.ones(2))})
    groups = pg.resolve(((r"a", 1.0), (r"b", 0.25)))
    c = _opt_config(name="sgd", learning_rate=0.1, momentum=0.0, weight_decay=0.0, warmup_steps=0,
                    schedule="constant", clip_norm=0.0, accumulation_steps=1)
    tx = opt_lib.make_optimizer(c, groups, state, num_steps=10)
    grads = nnx.State({"a": nnx.Param(jnp.asarray([1.0, 2.0])),
                       "b": nnx.Param(jnp.asarray([4.0, 0.0]))})
    updates, _ = tx.update(grads, tx.init(state), state)
    np.testing.assert_allclose(updates["a"][...], [-0.1, -0.2], rtol=1e-6)
    np.testing.assert_allclose(updates["b"][...], [-0.1, 0.0], rtol=1e-6)
    # Global-norm clip over both groups: |g| = sqrt(21) -> scaled to 1.
    tx = opt_lib.make_optimizer(_opt_config(**{**c.to_dict(), "clip_norm": 1.0}), groups, state,
                                num_steps=10)
    updates, _ = tx.update(grads, tx.init(state), state)
    np.testing.assert_allclose(updates["a"][...], np.asarray([-0.1, -0.2]) / math.sqrt(21),
                               rtol=1e-5)
    with pytest.raises(ValueError, match="unknown optimizer.name 'lamb'"):
        opt_lib.make_optimizer(_opt_config(name="lamb"), groups, state, num_steps=10)
    with pytest.raises(ValueError, match="freezes every parameter"):
        opt_lib.make_optimizer(c, pg.resolve(((r".*", None),)), state, num_steps=10)
