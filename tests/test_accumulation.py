"""Gradient accumulation inside the step: k micro-batches of B / k make one update that equals
the update of the whole batch B (for losses that are means over examples), and the schedule and
the moving average count updates, not micro-batches."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmpiqa_jax import config as config_lib
from mmpiqa_jax.train import step as step_lib
from mmpiqa_jax.train.task import IQATask

# Each test compares runs made under the same flags.
pytestmark = pytest.mark.usefixtures("same_flags")

B = 8  # configs/tiny.py's batch_size
# Losses that are means over examples, every example valid and labelled: the mean of the
# micro-batch gradients is the full-batch gradient (quality pairs and plcc are not; see
# step.make_train_step).
DECOMPOSABLE = ["loss.quality=0", "loss.plcc=0", "loss.l1=1", "loss.distortion=1",
                "loss.scene=1"]


def labelled_batch(n=B, res=32, seed=0):
    rng = np.random.default_rng(seed)
    scenes = (rng.random((n, 9)) < 0.3).astype(np.float32)
    scenes[np.arange(n), rng.integers(0, 9, n)] = 1.0  # at least one scene each
    return {"pixels": jnp.asarray(rng.normal(size=(n, 1, res, res, 3)), jnp.float32),
            "quality": jnp.asarray(rng.random(n), jnp.float32),
            "dataset_id": jnp.zeros(n, jnp.int32),
            "distortion_class": jnp.asarray(rng.integers(0, 11, n), jnp.int32),
            "scenes": jnp.asarray(scenes), "scene_mask": jnp.ones(n, bool),
            "valid": jnp.ones(n, bool)}


# SGD with momentum: the update is linear in the gradient, so the comparison sees the
# accumulation alone (Adam divides by sqrt(v) and turns the float rounding of a near-zero
# gradient entry into a step of the learning rate's size).
@functools.cache
def make_task(k, *more):
    return IQATask(config_lib.load_config("configs/tiny.py", [
        f"optimizer.accumulation_steps={k}", "optimizer.warmup_steps=2",
        "optimizer.learning_rate=1e-2", "optimizer.name=sgd", "optimizer.ema_decay=0.5", "num_steps=6",
        "data.crops_per_image=1", *DECOMPOSABLE, *more]))


@functools.cache
def jitted(task):
    """`(init, step)` of `task`, compiled once for the module."""
    return jax.jit(task.init_state), jax.jit(task.train_step)


def train(task, updates=3):
    init, step = jitted(task)
    state = init(jax.random.key(0))
    logs = []
    for t in range(updates):
        state, metrics = step(state, labelled_batch(seed=t))
        logs.append(jax.device_get(metrics))
    return state, logs


def test_k4_micro_batches_equal_the_whole_batch_after_3_updates():
    full, full_logs = train(make_task(1))
    accumulated, acc_logs = train(make_task(4))
    assert int(full.step) == int(accumulated.step) == 3  # one driver step = one update
    start = jitted(make_task(1))[0](jax.random.key(0))
    moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(full.params),
                                                   jax.tree.leaves(start.params))]
    assert any(moved)
    for name, got, want in [("params", accumulated.params, full.params),
                            ("ema", accumulated.extra["ema"], full.extra["ema"]),
                            ("opt_state", accumulated.opt_state, full.opt_state)]:
        jax.tree.map(lambda g, w, n=name: np.testing.assert_allclose(
            g, w, rtol=1e-5, atol=1e-5, err_msg=n), got, want)
    for a, f in zip(acc_logs, full_logs):
        assert float(a["lr"]) == float(f["lr"])
        for key in ("loss", "loss_l1", "loss_distortion", "loss_scene", "grad_norm"):
            np.testing.assert_allclose(a[key], f[key], rtol=1e-5, err_msg=key)


def test_schedule_and_ema_count_updates():
    task = make_task(4)
    state, logs = train(task, updates=3)
    # Warm-up over 2 updates to 1e-2, then the cosine to 0 at update 6.
    peak = 1e-2
    want = [0.0, peak / 2, peak]
    np.testing.assert_allclose([float(m["lr"]) for m in logs], want, rtol=1e-6)
    np.testing.assert_allclose(float(task.learning_rate(5)),
                               peak * 0.5 * (1 + np.cos(np.pi * 3 / 4)), rtol=1e-5)
    # The EMA decay ramps up as (1 + t) / (10 + t) with t the update count (capped at 0.5):
    # replay it on the parameters of each update.
    init, step = jitted(task)
    s = init(jax.random.key(0))
    ema = jax.tree.map(np.asarray, s.params)
    for t in range(3):
        s, _ = step(s, labelled_batch(seed=t))
        d = min(0.5, (1 + t) / (10 + t))
        ema = jax.tree.map(lambda e, p, d=d: d * e + (1 - d) * np.asarray(p), ema, s.params)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6),
                 state.extra["ema"], ema)


def test_micro_batches_are_strided_and_sizes_checked():
    batch = {"x": jnp.arange(8), "y": jnp.arange(16).reshape(8, 2)}
    micro = step_lib.micro_batches(batch, 4)
    np.testing.assert_array_equal(micro["x"], [[0, 4], [1, 5], [2, 6], [3, 7]])
    assert micro["y"].shape == (4, 2, 2)
    with pytest.raises(ValueError, match=r"batch_size=8 .*accumulation_steps=3"):
        make_task(3)


def test_a_nonfinite_micro_batch_skips_the_whole_update():
    init, step = jitted(make_task(4))
    state = init(jax.random.key(0))
    batch = labelled_batch()
    batch["pixels"] = batch["pixels"].at[5].set(jnp.nan)  # in micro-batch 1 of 4
    new, metrics = step(state, batch)
    assert bool(metrics["nonfinite"])
    jax.tree.map(np.testing.assert_array_equal, new.params, state.params)
