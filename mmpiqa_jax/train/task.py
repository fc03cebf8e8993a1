"""`IQATask`: MP-IQE and LIQE as a `trainer.TrainTask` (state, one pure step, outside weights).

    task = IQATask(config)
    state = trainer.train(task, config, workdir, train_iter=it, eval_fn=evaluate)

`extra` holds DWA's loss history (`"dwa"`) and the EMA (`"ema"`) that inference then uses.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from mmpiqa_jax.checkpoints import pretrained
from mmpiqa_jax.errors import UserError
from mmpiqa_jax.models import iqa
from mmpiqa_jax.train import optimizer as optimizer_lib
from mmpiqa_jax.train import sharding
from mmpiqa_jax.train import state as state_lib
from mmpiqa_jax.train import step as step_lib
from mmpiqa_jax.train.trainer import TrainState

TASKS = step_lib.TASKS


def check_batch_sizes(config) -> None:
    """`batch_size` must be the sum of the per-dataset batch sizes of `data.batch_sizes`."""
    sizes = dict(config.data.batch_sizes)
    if not sizes:
        raise UserError("config.data.batch_sizes is empty: name at least one dataset to train on")
    bad = {k: v for k, v in sizes.items()
           if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1}
    if bad:
        raise UserError(f"config.data.batch_sizes: {bad} must be integers >= 1 (images per step)")
    if config.batch_size != sum(sizes.values()):
        raise UserError(f"config.batch_size={config.batch_size} must equal the sum of "
                        f"config.data.batch_sizes {sizes} = {sum(sizes.values())}")


class IQATask:
    """The `TrainTask` of the IQA models, built from a full training config."""

    def __init__(self, config):
        check_batch_sizes(config)
        # Read once: for `model.variant=checkpoint` it comes from the checkpoint's files.
        self.clip_config = pretrained.clip_config(config.model)
        resolution = self.clip_config.image_resolution
        if config.data.crop_size != resolution:
            raise UserError(f"config.data.crop_size={config.data.crop_size} must equal the "
                            f"image size of CLIP {config.model.variant!r} ({resolution})")
        self.config = config
        self.num_steps = int(config.num_steps)
        self.steps_per_epoch = int(config.steps_per_epoch)
        if self.steps_per_epoch < 1:
            raise UserError(f"config.steps_per_epoch={self.steps_per_epoch} must be >= 1")
        self.base_weights = step_lib.task_weights(config.loss)
        # DWA balances only the tasks that count (weight > 0), as LIQE's three.
        self.active = np.flatnonzero(self.base_weights > 0)
        if not self.active.size:
            weights = dict(zip(TASKS, self.base_weights.tolist()))
            raise UserError(f"every loss weight of config.loss is 0 ({weights}): nothing to train")
        # Shapes only: the graph definition and which parameters train, nothing allocated.
        abstract = nnx.eval_shape(lambda: iqa.build_model(config.model, nnx.Rngs(0),
                                                          clip=self.clip_config))
        self.setup = state_lib.training_setup(config, abstract,
                                              num_active_tasks=int(self.active.size))
        self.accumulation = int(config.optimizer.accumulation_steps)
        if self.accumulation < 1:
            raise UserError(f"optimizer.accumulation_steps={self.accumulation} must be >= 1")
        if config.batch_size % self.accumulation:
            raise UserError(f"config.batch_size={config.batch_size} (images per optimiser "
                            "update) must be divisible by optimizer.accumulation_steps="
                            f"{self.accumulation} (micro-batches per update)")
        # The learning rate logged: the schedule of a group with multiplier 1.
        self._lr = optimizer_lib.make_schedule(config.optimizer,
                                               peak=config.optimizer.learning_rate,
                                               num_steps=self.num_steps,
                                               steps_per_epoch=self.steps_per_epoch)
        self._step = step_lib.make_train_step(self.graphdef, self.setup.tx,
                                              use_text_cache=self.use_text_cache,
                                              accumulation_steps=self.accumulation)

    # The setup's parts, as the step and inference read them.
    graphdef = property(lambda self: self.setup.graphdef)
    dwa = property(lambda self: self.setup.dwa)
    use_text_cache = property(lambda self: self.setup.use_text_cache)
    ema_decay = property(lambda self: self.setup.ema_decay)

    # -- state --------------------------------------------------------------------------------

    def init_state(self, rng: jax.Array) -> TrainState:
        """A fresh state with a randomly initialised model (CLIP's weights: `load_pretrained`)."""
        init_rng, rng = jax.random.split(rng)
        model = iqa.build_model(self.config.model, nnx.Rngs(init_rng), clip=self.clip_config)
        return self.setup.init_state(model, rng)

    def load_pretrained(self, rng: jax.Array, shardings) -> TrainState | None:
        """A fresh state holding `model.clip_checkpoint`'s weights, laid out by `shardings` (as
        `init_state(rng)` would be), or None for a random initialisation. An empty
        `model.clip_checkpoint` raises (but for `tiny`), before anything is compiled."""
        # Built on the host with the seed's init, so that what CLIP's weights initialise (the
        # text context) follows them; each process then fills only its own devices' shards.
        with jax.default_device(jax.local_devices(backend="cpu")[0]):
            clip = pretrained.load_pretrained_clip(self.config.model)
            if clip is None:
                return None
            init_rng, rng = jax.random.split(rng)
            model = iqa.build_model(self.config.model, nnx.Rngs(init_rng), clip=clip)
            state = self.setup.init_state(model, rng)
        # A key array has no host form to copy from: it is put whole.
        placed = jax.tree.map(sharding.from_host, state.replace(rng=None),
                              shardings.replace(rng=None))
        return placed.replace(rng=jax.device_put(state.rng, shardings.rng))

    # -- one step -----------------------------------------------------------------------------

    def loss_weights(self, extra) -> jax.Array:
        """float32 [len(TASKS)]: the config's weights, times DWA's for the active tasks."""
        weights = jnp.asarray(self.base_weights)
        if self.dwa is None:
            return weights
        return weights.at[self.active].multiply(self.dwa.weights(extra["dwa"]))

    def learning_rate(self, step) -> jax.Array:
        """The logged learning rate of update `step` (one driver step is one update)."""
        return self._lr(step)

    def train_step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        weights = self.loss_weights(state.extra)
        params, opt_state, out = self._step(state.params, state.frozen, state.opt_state, batch,
                                            weights)
        task_losses = out["task_losses"]
        extra = state.extra
        if self.dwa is not None:
            dwa = self.dwa.accumulate(extra["dwa"], task_losses[self.active])
            closed = self.dwa.end_epoch(dwa)
            epoch_done = (state.step + 1) % self.steps_per_epoch == 0
            dwa = jax.tree.map(lambda a, b: jnp.where(epoch_done, a, b), closed, dwa)
            extra = {**extra, "dwa": dwa}
        if self.ema_decay:
            extra = {**extra, "ema": self._ema_update(extra["ema"], params, state.step)}
        metrics = {"loss": out["loss"],
                   **{f"loss_{name}": task_losses[i] for i, name in enumerate(TASKS)},
                   "lr": self.learning_rate(state.step),
                   "grad_norm": out["grad_norm"], "param_norm": out["param_norm"],
                   "score_mean": out["score_mean"], "nonfinite": out["nonfinite"]}
        if self.dwa is not None:
            metrics.update({f"weight_{TASKS[i]}": weights[i] for i in self.active})
        new = state.replace(step=state.step + 1, params=params, opt_state=opt_state, extra=extra)
        return new, metrics

    def _ema_update(self, ema, params, step):
        # The decay ramps up as (1 + t) / (10 + t) (tf.train.ExponentialMovingAverage's
        # num_updates), so that the average soon forgets the random initialisation.
        decay = jnp.minimum(self.ema_decay, (1.0 + step) / (10.0 + step)).astype(jnp.float32)
        return optax.incremental_update(params, ema, step_size=1.0 - decay)

    # -- inference ----------------------------------------------------------------------------

    def inference_params(self, state: TrainState):
        """The parameters to evaluate, score and export: the moving average if kept."""
        if self.ema_decay:
            return state.extra["ema"]
        return state.params
