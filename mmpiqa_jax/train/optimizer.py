"""optax from the config: one AdamW or SGD per trainable group, warm-up + cosine, clipping.

Frozen groups have no transformation: their parameters are not in the trainable state. One
call is one update (the train step accumulates micro-batches itself).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import jax.numpy as jnp
import optax
from flax import nnx

from mmpiqa_jax.errors import UserError
from mmpiqa_jax.train import param_groups as pg

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "constant")


def make_schedule(config, *, peak: float, num_steps: int, steps_per_epoch: int) -> optax.Schedule:
    """Linear warm-up from 0 to `peak`, then cosine (or constant).

    `cosine_period_epochs = 0`: one half cosine from `peak` to `peak * min_lr_ratio` at `num_steps`;
    `> 0`: torch's `CosineAnnealingLR` over that many epochs, periodic past them (as LIQE's).
    """
    if config.schedule not in SCHEDULES:
        raise UserError(f"unknown optimizer.schedule {config.schedule!r}; known: {SCHEDULES}")
    warmup = int(config.warmup_steps)
    if warmup < 0:
        raise UserError(f"optimizer.warmup_steps must be >= 0, got {warmup}")
    floor = peak * config.min_lr_ratio
    if config.schedule == "constant":
        main = optax.constant_schedule(peak)
    elif config.cosine_period_epochs > 0:
        period = config.cosine_period_epochs * steps_per_epoch

        def main(step):
            return floor + (peak - floor) * 0.5 * (1 + jnp.cos(math.pi * step / period))
    else:
        main = optax.cosine_decay_schedule(peak, max(num_steps - warmup, 1),
                                           alpha=config.min_lr_ratio)
    if not warmup:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), main], [warmup])


def _base(config, learning_rate) -> optax.GradientTransformation:
    if config.name == "adamw":
        return optax.adamw(learning_rate, b1=config.b1, b2=config.b2, eps=config.eps,
                           weight_decay=config.weight_decay)
    if config.name == "sgd":
        # Decoupled decay as in AdamW, before the learning rate scales the update.
        return optax.chain(optax.add_decayed_weights(config.weight_decay),
                           optax.sgd(learning_rate, momentum=config.momentum or None))
    raise UserError(f"unknown optimizer.name {config.name!r}; known: {OPTIMIZERS}")


def make_optimizer(config, groups: Sequence[pg.Group], trainable: nnx.State, *,
                   num_steps: int, steps_per_epoch: int = 1) -> optax.GradientTransformation:
    """The optax transformation for the `optimizer` config section, over the `trainable` state.

    Each trainable group gets the base optimiser with the schedule scaled by its multiplier; the
    global-norm clip (if any) sees all groups together.
    """
    transforms = {f"g{i}": _base(config, make_schedule(
                      config, peak=config.learning_rate * g.lr_mult, num_steps=num_steps,
                      steps_per_epoch=steps_per_epoch))
                  for i, g in enumerate(groups) if g.trainable}
    if not transforms:
        raise UserError("optimizer.param_groups freezes every parameter: nothing to train")
    tx = optax.multi_transform(transforms, pg.labels_tree(trainable, groups))
    if config.clip_norm < 0:
        raise UserError(f"optimizer.clip_norm must be >= 0, got {config.clip_norm}")
    if config.clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(config.clip_norm), tx)
    return tx
