"""The loss and the pure train step over `(graphdef, trainable, frozen)` states.

Only the trainable state is differentiated; the frozen one enters as constants.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from mmpiqa_jax import losses
from mmpiqa_jax.errors import UserError

# The task losses, in the order of `loss_weights` and `metrics["task_losses"]`.
TASKS = ("quality", "distortion", "scene", "l1", "plcc")


def task_weights(loss_config) -> np.ndarray:
    """float32 [len(TASKS)]: the fixed weights of the `loss` config section."""
    weights = []
    for name in TASKS:
        w = float(loss_config[name])
        if not (np.isfinite(w) and w >= 0):
            raise UserError(f"loss.{name} must be a finite weight >= 0, got {loss_config[name]!r}")
        weights.append(w)
    return np.asarray(weights, np.float32)


def compute_task_losses(outputs: dict, batch: dict) -> jax.Array:
    """float32 [len(TASKS)] from the model's outputs and a batch (missing labels masked out)."""
    valid = batch.get("valid")
    score = outputs["score"]
    normalised = (score - 1.0) / 4.0  # [1, 5] -> [0, 1], the scale of batch["quality"]
    scene_mask = batch["scene_mask"].astype(bool)
    if valid is not None:
        scene_mask = scene_mask & valid.astype(bool)
    return jnp.stack([
        losses.quality_fidelity_loss(score, batch["quality"], batch["dataset_id"], valid),
        losses.distortion_fidelity_loss(outputs["distortion_probs"], batch["distortion_class"],
                                        valid),
        losses.scene_fidelity_loss(outputs["scene_probs"], batch["scenes"], scene_mask),
        losses.l1_loss(normalised, batch["quality"], valid),
        losses.plcc_loss(normalised, batch["quality"], valid),
    ])


def loss_fn(trainable: nnx.State, graphdef: nnx.GraphDef, frozen: nnx.State, batch: dict,
            loss_weights: jax.Array, *, use_text_cache: bool = False):
    """`(loss, (task_losses, outputs))`; loss = sum_k loss_weights[k] * task_losses[k]."""
    model = nnx.merge(graphdef, trainable, frozen)
    outputs = model(batch["pixels"], use_text_cache=use_text_cache)
    task_losses = compute_task_losses(outputs, batch)
    weights = jnp.asarray(loss_weights, jnp.float32)
    # A zero weight must silence its task even when that task's loss is not finite.
    loss = jnp.sum(jnp.where(weights > 0, weights * task_losses, 0.0))
    return loss, (task_losses, outputs)


def _where(pred, new, old):
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def micro_batches(batch: dict, k: int) -> dict:
    """The batch [B, ...] as k micro-batches [k, B / k, ...], j holding examples j, j + k, ..."""
    # Strided: each device keeps its rows of the sharded batch, each micro-batch its mix.
    return jax.tree.map(
        lambda x: jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1), batch)


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, *,
                    use_text_cache: bool = False, accumulation_steps: int = 1):
    """`train_step(trainable, frozen, opt_state, batch, loss_weights)
    -> (trainable, opt_state, metrics)`: one optimiser update from the whole batch.

    `use_text_cache=True` is for a frozen text path only. `accumulation_steps = k > 1` (B
    divisible by k): a `lax.scan` over the k `micro_batches` sums their gradients and the
    update uses the mean (the full-batch gradient for losses that are means over examples,
    not for `quality` pairs nor `plcc`); metrics are means over the micro-batches. A step
    whose loss or gradient is not finite leaves the state unchanged and sets
    `metrics["nonfinite"]`.
    """
    k = int(accumulation_steps)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def grads_of(trainable, frozen, batch, loss_weights):
        (loss, (task_losses, outputs)), grads = grad_fn(
            trainable, graphdef, frozen, batch, loss_weights, use_text_cache=use_text_cache)
        return grads, {"loss": loss, "task_losses": task_losses,
                       "score_mean": jnp.mean(outputs["score"])}

    def accumulated(trainable, frozen, batch, loss_weights):
        def body(total, micro):
            grads, out = grads_of(trainable, frozen, micro, loss_weights)
            return jax.tree.map(jnp.add, total, (grads, out)), None

        zeros = jax.eval_shape(grads_of, trainable, frozen,
                               jax.tree.map(lambda x: x[0], micro_batches(batch, k)),
                               loss_weights)
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zeros)
        total, _ = jax.lax.scan(body, zeros, micro_batches(batch, k))
        return jax.tree.map(lambda x: x / k, total)

    def train_step(trainable, frozen, opt_state, batch, loss_weights):
        if k == 1:
            grads, out = grads_of(trainable, frozen, batch, loss_weights)
        else:
            grads, out = accumulated(trainable, frozen, batch, loss_weights)
        grad_norm = optax.tree.norm(grads)
        updates, new_opt_state = tx.update(grads, opt_state, trainable)
        new_trainable = optax.apply_updates(trainable, updates)
        # A non-finite micro-batch makes the sums, and so the whole update, non-finite.
        finite = jnp.isfinite(out["loss"]) & jnp.isfinite(grad_norm)
        # Per-task losses stay one array here; `task.IQATask` names them for the log.
        metrics = {**out, "grad_norm": grad_norm, "param_norm": optax.tree.norm(new_trainable),
                   "nonfinite": ~finite}
        return (_where(finite, new_trainable, trainable),
                _where(finite, new_opt_state, opt_state), metrics)

    return train_step
