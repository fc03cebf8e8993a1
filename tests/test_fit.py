"""A tiny MP-IQE (frozen random CLIP, prompts + fusion train) fits a small synthetic ranking;
its train step keeps a moving average and skips a non-finite batch."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config
from flax import nnx
from workdirs import forward

from mmpiqa_jax import config as config_lib
from mmpiqa_jax.models import iqa
from mmpiqa_jax.train import inference
from mmpiqa_jax.train import optimizer as opt_lib
from mmpiqa_jax.train import param_groups as pg
from mmpiqa_jax.train import step as step_lib
from mmpiqa_jax.train.task import IQATask


def synthetic_batch(n=12, res=32, seed=0):
    """Smooth random images degraded by noise at three levels; quality falls with the noise."""
    rng = np.random.default_rng(seed)
    levels = np.repeat([0, 1, 2], n // 3)
    base = rng.normal(size=(n, res // 4, res // 4, 3)).repeat(4, 1).repeat(4, 2)
    noisy = base + (0.8 * levels)[:, None, None, None] * rng.normal(size=base.shape)
    return {"pixels": jnp.asarray(noisy[:, None], jnp.float32),
            "quality": jnp.asarray(1.0 - levels / 2, jnp.float32),
            "dataset_id": jnp.zeros(n, jnp.int32),
            "distortion_class": jnp.full(n, -1, jnp.int32),  # no labels: these tasks give 0
            "scenes": jnp.zeros((n, 9), jnp.float32), "scene_mask": jnp.zeros(n, bool)}


@pytest.mark.integration  # an end-to-end training: 300 steps
def test_tiny_mpiqe_fits_a_ranking():
    config = config_lib.load_config("configs/tiny.py", [
        "optimizer.learning_rate=3e-3", "optimizer.warmup_steps=10", "optimizer.schedule=constant",
        "loss.distortion=0", "loss.scene=0"])
    model = iqa.build_model(config.model, nnx.Rngs(0))
    groups = pg.resolve(config.optimizer.param_groups)
    graphdef, trainable, frozen = pg.split_trainable(model, groups)
    tx = opt_lib.make_optimizer(config.optimizer, groups, trainable, num_steps=300)
    step = jax.jit(step_lib.make_train_step(graphdef, tx), donate_argnums=(0, 2))
    opt_state = tx.init(trainable)
    batch = synthetic_batch()
    weights = jnp.asarray(step_lib.task_weights(config.loss))
    losses = []
    for _ in range(300):
        trainable, opt_state, metrics = step(trainable, frozen, opt_state, batch, weights)
        assert not metrics["nonfinite"]
        losses.append(float(metrics["task_losses"][step_lib.TASKS.index("quality")]))
    first, last = losses[0], np.mean(losses[-10:])
    # All scores equal at init: 1 - sqrt(1/2) for each of the 48 unequal pairs of 66 (ties: 0).
    np.testing.assert_allclose(first, (1 - np.sqrt(0.5)) * 48 / 66, rtol=1e-3)
    assert last < 0.2 * first, (first, last, losses[::25])
    final = nnx.merge(graphdef, trainable, frozen)
    scores = np.asarray(forward(final, batch["pixels"])["score"])
    assert np.all(np.diff([scores[i * 4:(i + 1) * 4].mean() for i in range(3)]) < 0)


@functools.cache
def ema_task(decay=0.9):
    """The tiny config keeping a moving average, its jitted train step and initial state."""
    task = IQATask(tiny_config("", f"optimizer.ema_decay={decay}", "loss.distortion=0",
                               "loss.scene=0", "data.crops_per_image=1"))
    return task, jax.jit(task.train_step), jax.jit(task.init_state)(jax.random.key(0))


def test_ema_of_parameters_is_what_inference_uses():
    decay = 0.9
    task, step, state = ema_task(decay)
    batch = synthetic_batch(n=6)
    expected = jax.tree.map(np.asarray, state.params)
    for t in range(4):
        state, _ = step(state, batch)
        d = min(decay, (1 + t) / (10 + t))  # the ramp up of the decay
        expected = jax.tree.map(lambda e, p: d * e + (1 - d) * np.asarray(p), expected,
                                state.params)
    jax.tree.map(lambda e, x: np.testing.assert_allclose(x, e, rtol=1e-5, atol=1e-6),
                 expected, state.extra["ema"])
    # The average differs from the last parameters, and inference reads the average.
    leaves = zip(jax.tree.leaves(state.params), jax.tree.leaves(state.extra["ema"]))
    assert any(not np.allclose(p, e) for p, e in leaves)
    assert task.inference_params(state) is state.extra["ema"]
    scorer = inference.Scorer.of_state(task, state, inference.sharding.make_mesh())
    prompts = nnx.merge(scorer.graphdef, scorer.state).prompts["scene"].ctx[...]
    np.testing.assert_array_equal(
        prompts,
        nnx.merge(task.graphdef, state.extra["ema"], state.frozen).prompts["scene"].ctx[...])

    with pytest.raises(ValueError, match="optimizer.ema_decay=1.0 must be in"):
        IQATask(tiny_config("", "optimizer.ema_decay=1.0"))


def test_nonfinite_step_keeps_the_state():
    _, step, state = ema_task()
    batch = synthetic_batch(n=6)
    batch["pixels"] = batch["pixels"].at[0, 0, 0, 0, 0].set(jnp.nan)
    new, metrics = step(state, batch)
    assert bool(metrics["nonfinite"])
    for a, b in zip(jax.tree.leaves((new.params, new.opt_state)),
                    jax.tree.leaves((state.params, state.opt_state))):
        np.testing.assert_array_equal(a, b)
