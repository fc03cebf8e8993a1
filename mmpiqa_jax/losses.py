"""Training losses: LIQE's fidelity losses, optional regression terms, and task weighting.

Every loss is pure `jnp` and jit-friendly; inputs may be float32 or bfloat16, the result is a
float32 scalar. Examples without a label are masked out, and a batch with nothing to learn from
gives 0, not NaN. The fidelity loss between distributions p and g is
`1 - sum_k sqrt(p_k g_k + eps)` (Tsai et al. 2007), with LIQE's `eps`.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

EPS = 1e-8  # LIQE's `esp`.


# ---------------------------------------------------------------------------------------------
# Helpers.


def _f32(x) -> jax.Array:
    return jnp.asarray(x).astype(jnp.float32)


def _valid_mask(valid, batch: int, name: str = "valid") -> jax.Array:
    if valid is None:
        return jnp.ones((batch,), bool)
    valid = jnp.asarray(valid)
    if valid.shape != (batch,):
        raise ValueError(f"{name} must have shape ({batch},), got {valid.shape}")
    return valid.astype(bool)


def _check_vector(x, name: str) -> None:
    if jnp.ndim(x) != 1:
        raise ValueError(f"{name} must be 1-D [B], got shape {jnp.shape(x)}")


def _check_same_shape(a, b, name_a: str, name_b: str) -> None:
    if jnp.shape(a) != jnp.shape(b):
        raise ValueError(f"{name_a} and {name_b} must have the same shape, "
                         f"got {jnp.shape(a)} and {jnp.shape(b)}")


def _weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    """sum(values * weights) / sum(weights), or 0 when the weights sum to 0 (nothing to learn)."""
    total = jnp.sum(weights)
    has_any = total > 0
    # `where` rather than multiply: masked entries may hold anything, and 0 * inf is NaN.
    num = jnp.sum(jnp.where(weights > 0, values * weights, 0.0))
    return jnp.where(has_any, num / jnp.where(has_any, total, 1.0), 0.0)


def binary_fidelity(p: jax.Array, g: jax.Array, eps: float = EPS) -> jax.Array:
    """Elementwise binary fidelity loss `1 - sqrt(p g + eps) - sqrt((1 - p)(1 - g) + eps)`."""
    return 1.0 - jnp.sqrt(p * g + eps) - jnp.sqrt((1.0 - p) * (1.0 - g) + eps)


def categorical_fidelity(p: jax.Array, g: jax.Array, eps: float = EPS) -> jax.Array:
    """Fidelity loss `1 - sum_k sqrt(p_k g_k + eps)` over the last axis."""
    return 1.0 - jnp.sum(jnp.sqrt(p * g + eps), axis=-1)


# ---------------------------------------------------------------------------------------------
# The three task losses.


def quality_fidelity_loss(scores, targets, dataset_ids, valid=None) -> jax.Array:
    """LIQE's pairwise fidelity loss for quality, over pairs (i < j) from the same dataset.

    scores, targets (MOS; only their order counts), dataset_ids (int): [B]; valid: optional [B]
    bool, False drops the example from every pair. Per pair p = Phi((s_i - s_j) / sqrt(2)),
    g = 1, 0.5 or 0 as y_i >, = or < y_j, loss = `binary_fidelity(p, g)`. Returns a float32
    scalar, as LIQE's `loss_m4`: the mean over each dataset's pairs, then over the datasets
    that have a pair; 0 when none has.
    """
    _check_vector(scores, "scores")
    _check_same_shape(scores, targets, "scores", "targets")
    _check_same_shape(scores, dataset_ids, "scores", "dataset_ids")
    valid = _valid_mask(valid, jnp.shape(scores)[0])
    return _quality_core(jnp.asarray(scores), jnp.asarray(targets), jnp.asarray(dataset_ids), valid)


# Checks run in Python above; the arithmetic is one jitted function (op-by-op dispatch of its
# primitives would compile each on first use).
@jax.jit
def _quality_core(scores, targets, ids, valid):
    batch = scores.shape[0]
    # Zero out padding first so that garbage there cannot reach values or gradients.
    s = jnp.where(valid, _f32(scores), 0.0)
    y = jnp.where(valid, _f32(targets), 0.0)

    both_valid = valid[:, None] & valid[None, :]
    same = (ids[:, None] == ids[None, :]) & both_valid
    pairs = same & jnp.triu(jnp.ones((batch, batch), bool), k=1)

    p = jax.scipy.stats.norm.cdf((s[:, None] - s[None, :]) / jnp.sqrt(2.0))
    g = 0.5 * (jnp.sign(y[:, None] - y[None, :]) + 1.0)
    loss = binary_fidelity(p, g)

    # Weight each pair by 1 / (pairs in its dataset): the weights of one dataset sum to 1, so
    # the weighted mean is the mean over datasets of each dataset's mean, without a loop.
    n = jnp.sum(same, axis=1).astype(jnp.float32)  # valid examples in row i's dataset
    n_pairs = n * (n - 1.0) / 2.0
    weights = jnp.where(pairs, 1.0 / jnp.maximum(n_pairs, 1.0)[:, None], 0.0)
    return _weighted_mean(loss, weights)


def distortion_fidelity_loss(probs, labels, valid=None) -> jax.Array:
    """float32 mean `categorical_fidelity` of [B, K] class probabilities against the one-hot
    [B] int `labels` over the examples labelled (>= 0) and `valid` (optional [B] bool); 0 if
    none. Labels outside -1 .. K - 1 raise where concrete, and count as missing under jit."""
    if jnp.ndim(probs) != 2:
        raise ValueError(f"probs must be [B, K], got shape {jnp.shape(probs)}")
    batch, num_classes = jnp.shape(probs)
    if jnp.shape(labels) != (batch,):
        raise ValueError(f"labels must have shape ({batch},), got {jnp.shape(labels)}")
    if not jnp.issubdtype(jnp.asarray(labels).dtype, jnp.integer):
        raise ValueError(f"labels must be integers (-1 = missing), "
                         f"got dtype {jnp.asarray(labels).dtype}")
    if not isinstance(labels, jax.core.Tracer):  # values to check (not inside jit)
        bad = np.asarray(labels)
        bad = bad[(bad < -1) | (bad >= num_classes)]
        if bad.size:
            raise ValueError(f"distortion label {int(bad[0])} out of range: expected -1 (missing) "
                             f"or 0..{num_classes - 1}")
    return _distortion_core(jnp.asarray(probs), jnp.asarray(labels), _valid_mask(valid, batch))


@jax.jit
def _distortion_core(probs, labels, valid):
    num_classes = probs.shape[1]
    mask = valid & (labels >= 0) & (labels < num_classes)
    p = jnp.where(mask[:, None], _f32(probs), 0.0)
    g = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    return _weighted_mean(categorical_fidelity(p, g), mask.astype(jnp.float32))


def scene_fidelity_loss(probs, targets, mask=None) -> jax.Array:
    """float32 binary fidelity of [B, S] per-scene probabilities against multi-hot [B, S]
    `targets`, averaged over scenes, then over the examples with a scene and `mask` (optional
    [B] bool); 0 if none. `probs`: LIQE's scene marginal of its joint softmax, or sigmoids."""
    if jnp.ndim(probs) != 2:
        raise ValueError(f"probs must be [B, S], got shape {jnp.shape(probs)}")
    _check_same_shape(probs, targets, "probs", "targets")
    return _scene_core(jnp.asarray(probs), jnp.asarray(targets),
                       _valid_mask(mask, jnp.shape(probs)[0], "mask"))


@jax.jit
def _scene_core(probs, targets, mask):
    g = _f32(targets)
    labelled = mask & jnp.any(g > 0, axis=-1)
    p = jnp.where(labelled[:, None], _f32(probs), 0.0)
    loss = jnp.mean(binary_fidelity(p, g), axis=-1)
    return _weighted_mean(loss, labelled.astype(jnp.float32))


# ---------------------------------------------------------------------------------------------
# Optional regression terms on normalised quality.


def _check_regression(pred, target, valid) -> jax.Array:
    _check_vector(pred, "pred")
    _check_same_shape(pred, target, "pred", "target")
    return _valid_mask(valid, jnp.shape(pred)[0])


def l1_loss(pred, target, valid=None) -> jax.Array:
    """Mean absolute error over valid examples; 0 if none."""
    valid = _check_regression(pred, target, valid)
    return _l1_core(jnp.asarray(pred), jnp.asarray(target), valid)


@jax.jit
def _l1_core(pred, target, valid):
    x, y = jnp.where(valid, _f32(pred), 0.0), jnp.where(valid, _f32(target), 0.0)
    return _weighted_mean(jnp.abs(x - y), valid.astype(jnp.float32))


def plcc_loss(pred, target, valid=None) -> jax.Array:
    """pyiqa's `PLCCLoss`: (1 - PLCC(pred, target)) / 2, in [0, 1], over valid examples; 0.5
    for a constant input (pyiqa's floor on the norm), `l1_loss` for fewer than two examples."""
    valid = _check_regression(pred, target, valid)
    return _plcc_core(jnp.asarray(pred), jnp.asarray(target), valid)


@jax.jit
def _plcc_core(pred, target, valid):
    x, y = jnp.where(valid, _f32(pred), 0.0), jnp.where(valid, _f32(target), 0.0)
    w = valid.astype(jnp.float32)
    n = jnp.sum(w)
    safe_n = jnp.maximum(n, 1.0)
    vx = jnp.where(valid, x - jnp.sum(x * w) / safe_n, 0.0)
    vy = jnp.where(valid, y - jnp.sum(y * w) / safe_n, 0.0)

    def unit(v):
        # max(||v||^2, 1e-24) under the sqrt: same value as F.normalize, and a finite gradient
        # at v = 0 where sqrt's derivative is infinite.
        return v / jnp.sqrt(jnp.maximum(jnp.sum(v * v), 1e-24))

    corr_loss = (1.0 - jnp.sum(unit(vx) * unit(vy))) / 2.0
    return jnp.where(n > 1, corr_loss, _l1_core(pred, target, valid))


# ---------------------------------------------------------------------------------------------
# Task weighting.


class DWAState(NamedTuple):
    """Dynamic Weight Average state: a pytree, so it lives in the train state and checkpoints."""

    epoch_sum: jax.Array  # [K] sum of this epoch's per-step task losses
    epoch_steps: jax.Array  # int32 scalar, steps accumulated in this epoch
    last: jax.Array  # [K] mean task losses of the last finished epoch
    before_last: jax.Array  # [K] mean task losses of the epoch before it
    epochs: jax.Array  # int32 scalar, finished epochs


@dataclasses.dataclass(frozen=True)
class DynamicWeightAverage:
    """Dynamic Weight Average (Liu et al., CVPR 2019), as LIQE uses it: w_k = K softmax_k(r / T),
    r_k = L_k(t - 1) / L_k(t - 2) the ratio of the mean task losses of the last two finished
    epochs (all weights 1 before). Each step: `jnp.sum(weights(state) * task_losses)` and
    `state = accumulate(state, task_losses)`; each epoch: `state = end_epoch(state)`.
    """

    num_tasks: int
    temperature: float = 2.0

    def __post_init__(self):
        if not isinstance(self.num_tasks, (int, np.integer)) or self.num_tasks < 1:
            raise ValueError(f"num_tasks must be a positive int, got {self.num_tasks!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")

    def init(self) -> DWAState:
        zeros = jnp.zeros((self.num_tasks,), jnp.float32)
        step0 = jnp.zeros((), jnp.int32)
        return DWAState(zeros, step0, zeros, zeros, step0)

    def accumulate(self, state: DWAState, task_losses) -> DWAState:
        """Adds one step's [K] task losses (gradients are stopped: weights are not trained)."""
        losses = jax.lax.stop_gradient(_f32(task_losses))
        if losses.shape != (self.num_tasks,):
            raise ValueError(f"task_losses must have shape ({self.num_tasks},), got {losses.shape}")
        return state._replace(epoch_sum=state.epoch_sum + losses, epoch_steps=state.epoch_steps + 1)

    def end_epoch(self, state: DWAState) -> DWAState:
        """Closes the epoch: its mean losses become `last`, the old `last` becomes `before_last`."""
        mean = state.epoch_sum / jnp.maximum(state.epoch_steps, 1).astype(jnp.float32)
        zeros = jnp.zeros_like(state.epoch_sum)
        return DWAState(zeros, jnp.zeros_like(state.epoch_steps), mean, state.last,
                        state.epochs + 1)

    def weights(self, state: DWAState) -> jax.Array:
        """[K] float32 task weights for the current epoch; they sum to K."""
        # A zero loss in the older epoch would divide by zero; treat that task as steady (r = 1).
        steady = jnp.abs(state.before_last) <= 1e-12
        ratio = jnp.where(steady, 1.0, state.last / jnp.where(steady, 1.0, state.before_last))
        dwa = self.num_tasks * jax.nn.softmax(ratio / self.temperature)
        return jnp.where(state.epochs >= 2, dwa, jnp.ones_like(dwa))
