"""What trains and how: the one place that builds the pieces of a training state.

    setup = training_setup(config, model)          # groups, split, text-path check, optimiser
    state = setup.init_state(model, rng)           # TrainState: params, frozen, opt_state, extra

`model` may be abstract (`nnx.eval_shape`) for the setup; `init_state` needs a concrete one.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from mmpiqa_jax import losses
from mmpiqa_jax.errors import UserError
from mmpiqa_jax.models import iqa
from mmpiqa_jax.train import optimizer as optimizer_lib
from mmpiqa_jax.train import param_groups as pg
from mmpiqa_jax.train.trainer import TrainState


@dataclasses.dataclass(frozen=True)
class TrainingSetup:
    """The static side of training a model: nothing here is an array.

    use_text_cache: the text path is frozen, so its features are computed once, not every step.
    dwa: Dynamic Weight Average (None: fixed weights); ema_decay: 0 keeps no moving average.
    """
    groups: tuple[pg.Group, ...]
    graphdef: nnx.GraphDef
    use_text_cache: bool
    tx: optax.GradientTransformation
    dwa: losses.DynamicWeightAverage | None
    ema_decay: float

    def split(self, model) -> tuple[nnx.State, nnx.State]:
        """`(trainable, frozen)` states of `model` (frozen: frozen parameters, text cache)."""
        _, trainable, frozen = pg.split_trainable(model, self.groups)
        return trainable, frozen

    def init_state(self, model, rng: jax.Array) -> TrainState:
        """A step-0 state from a concrete model: fresh text cache, optimiser, DWA, EMA."""
        if self.use_text_cache:
            model.refresh_text_cache()
        trainable, frozen = self.split(model)
        extra = {"dwa": self.dwa.init()} if self.dwa else {}
        if self.ema_decay:
            extra["ema"] = jax.tree.map(jnp.copy, trainable)
        return TrainState(step=jnp.zeros((), jnp.int32), params=trainable, frozen=frozen,
                          opt_state=self.tx.init(trainable), rng=rng, extra=extra)


def training_setup(config, model, *, num_active_tasks: int = 0) -> TrainingSetup:
    """The `TrainingSetup` of `model` (concrete or abstract) under a full training config.

    `num_active_tasks`: how many tasks DWA balances; 0 turns DWA off whatever `loss.dwa` says.
    """
    groups = pg.resolve(config.optimizer.param_groups)
    graphdef, trainable, _ = pg.split_trainable(model, groups)
    tx = optimizer_lib.make_optimizer(config.optimizer, groups, trainable,
                                      num_steps=int(config.num_steps),
                                      steps_per_epoch=int(config.steps_per_epoch))
    ema_decay = float(config.optimizer.ema_decay)
    if not 0.0 <= ema_decay < 1.0:
        raise UserError(f"optimizer.ema_decay={ema_decay} must be in [0, 1)")
    dwa = (losses.DynamicWeightAverage(num_active_tasks, float(config.loss.dwa_temperature))
           if config.loss.dwa and num_active_tasks else None)
    return TrainingSetup(groups=groups, graphdef=graphdef,
                         use_text_cache=not iqa.text_path_is_trainable(model, trainable), tx=tx,
                         dwa=dwa, ema_decay=ema_decay)
