"""Losses against hand-computed values and an independent loop implementation of LIQE's loss."""
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from mmpiqa_jax import losses

EPS = 1e-8


def phi(x):
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def pair_loss(s_i, s_j, y_i, y_j):
    """LIQE's per-pair fidelity loss, written out by hand."""
    p = phi((s_i - s_j) / math.sqrt(2.0))
    g = 1.0 if y_i > y_j else (0.5 if y_i == y_j else 0.0)
    return 1.0 - math.sqrt(p * g + EPS) - math.sqrt((1 - p) * (1 - g) + EPS)


def reference_quality(scores, targets, ids):
    """Loops over datasets and unordered pairs, as LIQE's `loss_m4`, skipping pairless datasets."""
    per_dataset = []
    for d in sorted(set(ids)):
        idx = [k for k, i in enumerate(ids) if i == d]
        pl = [pair_loss(scores[a], scores[b], targets[a], targets[b])
              for a, b in itertools.combinations(idx, 2)]
        if pl:
            per_dataset.append(np.mean(pl))
    return float(np.mean(per_dataset)) if per_dataset else 0.0


# --- quality -----------------------------------------------------------------------------------

def test_quality_one_pair_by_hand():
    p = phi(1.0 / math.sqrt(2.0))  # s = (1, 0)
    better = 1 - math.sqrt(p + EPS) - math.sqrt(EPS)
    worse = 1 - math.sqrt(EPS) - math.sqrt(1 - p + EPS)
    got = losses.quality_fidelity_loss(jnp.array([1.0, 0.0]), jnp.array([2.0, 1.0]),
                                       jnp.array([0, 0]))
    np.testing.assert_allclose(got, better, rtol=1e-5)
    got = losses.quality_fidelity_loss(jnp.array([1.0, 0.0]), jnp.array([1.0, 2.0]),
                                       jnp.array([0, 0]))
    np.testing.assert_allclose(got, worse, rtol=1e-5)
    assert worse > better  # ranking the pair wrongly costs more


def test_quality_tie_by_hand():
    p = phi(0.5 / math.sqrt(2.0))
    expected = 1 - math.sqrt(0.5 * p + EPS) - math.sqrt(0.5 * (1 - p) + EPS)
    got = losses.quality_fidelity_loss(jnp.array([0.5, 0.0]), jnp.array([3.0, 3.0]),
                                       jnp.array([7, 7]))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_quality_matches_loop_reference_and_is_order_free():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=9).tolist()
    targets = rng.integers(0, 4, size=9).astype(float).tolist()  # integer MOS: ties present
    ids = [0, 0, 0, 0, 1, 1, 1, 2, 2]
    got = losses.quality_fidelity_loss(jnp.array(scores), jnp.array(targets), jnp.array(ids))
    np.testing.assert_allclose(got, reference_quality(scores, targets, ids), rtol=1e-5)
    perm = rng.permutation(9)
    shuffled = losses.quality_fidelity_loss(jnp.array(scores)[perm], jnp.array(targets)[perm],
                                            jnp.array(ids)[perm])
    np.testing.assert_allclose(shuffled, reference_quality(scores, targets, ids), rtol=1e-5)


def test_quality_two_datasets_do_not_pair_across():
    a_s, a_y = [0.3, -1.0, 2.0], [1.0, 2.0, 3.0]
    b_s, b_y = [5.0, -5.0], [10.0, 20.0]  # a very wrong pair, far from dataset a's scale
    loss_a = losses.quality_fidelity_loss(jnp.array(a_s), jnp.array(a_y), jnp.zeros(3, int))
    loss_b = losses.quality_fidelity_loss(jnp.array(b_s), jnp.array(b_y), jnp.zeros(2, int))
    both = dict(scores=jnp.array(a_s + b_s), targets=jnp.array(a_y + b_y),
                dataset_ids=jnp.array([4, 4, 4, 9, 9]))
    np.testing.assert_allclose(losses.quality_fidelity_loss(**both), (loss_a + loss_b) / 2,
                               rtol=1e-5)


def test_quality_single_example_datasets_give_zero_not_nan():
    s, y = jnp.array([1.0, 2.0, 3.0]), jnp.array([3.0, 1.0, 2.0])
    loss, grad = jax.value_and_grad(losses.quality_fidelity_loss)(s, y, jnp.array([0, 1, 2]))
    assert float(loss) == 0.0 and np.all(np.asarray(grad) == 0.0)
    # A one-example dataset beside a real one: only the real one counts (LIQE would give NaN).
    mixed = losses.quality_fidelity_loss(s, y, jnp.array([0, 0, 1]))
    np.testing.assert_allclose(mixed, pair_loss(1.0, 2.0, 3.0, 1.0), rtol=1e-5)


def test_quality_valid_mask_ignores_garbage_padding():
    s = jnp.array([0.2, 1.5, jnp.nan, jnp.inf])
    y = jnp.array([1.0, 2.0, jnp.nan, 0.0])
    valid = jnp.array([True, True, False, False])
    loss, grad = jax.value_and_grad(losses.quality_fidelity_loss)(s, y, jnp.zeros(4, int), valid)
    np.testing.assert_allclose(loss, pair_loss(0.2, 1.5, 1.0, 2.0), rtol=1e-5)
    assert np.all(np.isfinite(np.asarray(grad)))
    assert np.all(np.asarray(grad)[2:] == 0.0)


def test_quality_bad_input_raises():
    with pytest.raises(ValueError, match="same shape"):
        losses.quality_fidelity_loss(jnp.zeros(3), jnp.zeros(2), jnp.zeros(3, int))


# --- distortion and scene ----------------------------------------------------------------------

def test_distortion_by_hand_with_missing_labels():
    probs = jnp.array([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4], [0.1, 0.1, 0.8]])
    labels = jnp.array([0, -1, 2])
    row0 = 1 - math.sqrt(0.7 + EPS) - 2 * math.sqrt(EPS)
    row2 = 1 - math.sqrt(0.8 + EPS) - 2 * math.sqrt(EPS)
    np.testing.assert_allclose(losses.distortion_fidelity_loss(probs, labels), (row0 + row2) / 2,
                               rtol=1e-5)
    np.testing.assert_allclose(  # `valid` drops row 2 as well
        losses.distortion_fidelity_loss(probs, labels, jnp.array([True, True, False])), row0,
        rtol=1e-5)
    assert float(losses.distortion_fidelity_loss(probs, jnp.array([-1, -1, -1]))) == 0.0


def test_distortion_bad_labels():
    probs = jnp.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match="label 3 out of range"):
        losses.distortion_fidelity_loss(probs, jnp.array([0, 3]))
    with pytest.raises(ValueError, match="integers"):
        losses.distortion_fidelity_loss(probs, jnp.array([0.0, 1.0]))
    # Under jit the value cannot be checked; it counts as missing rather than as a wrong class.
    jitted = jax.jit(losses.distortion_fidelity_loss)(probs, jnp.array([0, 3]))
    np.testing.assert_allclose(jitted, losses.distortion_fidelity_loss(probs, jnp.array([0, -1])))


def test_scene_binary_fidelity_by_hand():
    probs = jnp.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.5, 0.5, 0.0]])
    targets = jnp.array([[1, 1, 0], [0, 0, 0], [0, 1, 0]])  # row 1 has no scene: masked

    def binary(p, g):
        return 1 - math.sqrt(p * g + EPS) - math.sqrt((1 - p) * (1 - g) + EPS)

    row0 = np.mean([binary(0.6, 1), binary(0.3, 1), binary(0.1, 0)])
    row2 = np.mean([binary(0.5, 0), binary(0.5, 1), binary(0.0, 0)])
    np.testing.assert_allclose(losses.scene_fidelity_loss(probs, targets), (row0 + row2) / 2,
                               rtol=1e-5)
    np.testing.assert_allclose(losses.scene_fidelity_loss(probs, targets, jnp.array([1, 1, 0])),
                               row0, rtol=1e-5)
    assert float(losses.scene_fidelity_loss(probs, jnp.zeros((3, 3)))) == 0.0


# --- regression terms --------------------------------------------------------------------------

def test_l1_and_plcc_against_scipy():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=8), rng.normal(size=8)
    valid = np.array([1, 1, 1, 1, 1, 1, 0, 0], bool)
    np.testing.assert_allclose(losses.l1_loss(x, y, valid), np.mean(np.abs(x - y)[valid]),
                               rtol=1e-5)
    r = scipy.stats.pearsonr(x[valid], y[valid]).statistic
    np.testing.assert_allclose(losses.plcc_loss(x, y, valid), (1 - r) / 2, rtol=1e-5)


def test_plcc_constant_and_single_example():
    loss, grad = jax.value_and_grad(losses.plcc_loss)(jnp.full(5, 2.0), jnp.arange(5.0))
    np.testing.assert_allclose(loss, 0.5)  # correlation 0, as pyiqa's F.normalize gives
    assert np.all(np.isfinite(np.asarray(grad)))
    one = jnp.array([True, False, False])
    np.testing.assert_allclose(  # one example: pyiqa falls back to L1
        losses.plcc_loss(jnp.array([3.0, 0.0, 0.0]), jnp.array([1.0, 5.0, 5.0]), one), 2.0)
    assert float(losses.l1_loss(jnp.zeros(2), jnp.ones(2), jnp.zeros(2, bool))) == 0.0


# --- dtype robustness --------------------------------------------------------------------------

def _all_losses(s, y, ids, probs, labels, scene_p, scene_t):
    return (losses.quality_fidelity_loss(s, y, ids) + losses.distortion_fidelity_loss(probs, labels)
            + losses.scene_fidelity_loss(scene_p, scene_t)
            + losses.plcc_loss(s, y) + losses.l1_loss(s, y))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_no_nan_in_values_or_gradients(dtype):
    # Saturating cases on purpose: huge score gaps (p = 0 or 1 exactly), one-hot probabilities,
    # constant targets in a dataset, a one-example dataset.
    s = jnp.array([40.0, -40.0, 0.0, 0.0, 3.0], dtype)
    y = jnp.array([1.0, 2.0, 2.0, 2.0, 5.0], dtype)
    ids = jnp.array([0, 0, 1, 1, 2])
    probs = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [1.0, 0.0], [0.0, 1.0]], dtype)
    labels = jnp.array([0, 0, -1, 1, 1])
    scene_p = jnp.array([[1.0, 0.0, 0.0]] * 5, dtype)
    scene_t = jnp.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 1, 1], [0, 0, 1]], dtype)
    args = (s, y, ids, probs, labels, scene_p, scene_t)
    value = jax.jit(_all_losses)(*args)
    assert value.dtype == jnp.float32 and np.isfinite(float(value))
    grads = jax.jit(jax.grad(_all_losses, argnums=(0, 3, 5)))(*args)
    for g in grads:
        assert g.dtype == dtype
        assert np.all(np.isfinite(np.asarray(g, np.float32)))


def test_bfloat16_matches_float32_on_the_same_values():
    s = jnp.array([0.3, 1.7, -0.4, 2.2], jnp.bfloat16)
    y = jnp.array([1.0, 3.0, 2.0, 2.0], jnp.bfloat16)
    ids = jnp.array([0, 0, 0, 1])
    np.testing.assert_allclose(losses.quality_fidelity_loss(s, y, ids),
                               losses.quality_fidelity_loss(s.astype(jnp.float32),
                                                            y.astype(jnp.float32), ids),
                               rtol=1e-6)


# --- task weights ------------------------------------------------------------------------------

def test_dwa_against_hand_computation():
    dwa = losses.DynamicWeightAverage(num_tasks=3)
    # Jitted, as a train step would use them.
    step, end_epoch, weights = jax.jit(dwa.accumulate), jax.jit(dwa.end_epoch), jax.jit(dwa.weights)
    state = dwa.init()
    np.testing.assert_array_equal(weights(state), [1, 1, 1])
    # Epoch 0: steps (1, 2, 4) and (3, 2, 2): mean (2, 2, 3).
    state = end_epoch(step(step(state, jnp.array([1.0, 2.0, 4.0])), jnp.array([3.0, 2.0, 2.0])))
    np.testing.assert_array_equal(weights(state), [1, 1, 1])  # only one epoch seen
    # Epoch 1: mean (1, 2, 1.5).
    state = end_epoch(step(state, jnp.array([1.0, 2.0, 1.5])))
    ratio = np.array([1 / 2, 2 / 2, 1.5 / 3])
    expected = 3 * np.exp(ratio / 2) / np.sum(np.exp(ratio / 2))
    np.testing.assert_allclose(weights(state), expected, rtol=1e-6)
    np.testing.assert_allclose(np.sum(weights(state)), 3.0, rtol=1e-6)
    assert int(state.epochs) == 2 and int(state.epoch_steps) == 0
    # The state is a pytree of arrays: it jits and round-trips through flatten/unflatten.
    leaves, treedef = jax.tree.flatten(state)
    np.testing.assert_allclose(weights(jax.tree.unflatten(treedef, leaves)), expected, rtol=1e-6)


def test_dwa_zero_loss_and_bad_config():
    dwa = losses.DynamicWeightAverage(num_tasks=2)
    state = dwa.end_epoch(dwa.accumulate(dwa.init(), jnp.array([0.0, 1.0])))
    state = dwa.end_epoch(dwa.accumulate(state, jnp.array([0.0, 0.5])))
    w = np.asarray(dwa.weights(state))
    assert np.all(np.isfinite(w)) and w[0] > w[1]  # task 0 "steady" (r = 1) vs task 1 (r = 0.5)
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        losses.DynamicWeightAverage(num_tasks=3, temperature=0)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        dwa.accumulate(dwa.init(), jnp.ones(3))
