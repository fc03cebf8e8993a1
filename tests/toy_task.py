"""A toy `TrainTask` for the trainer's tests: an nnx MLP regressing a fixed function.

It has what the real tasks have (two task losses, an optax chain with a schedule and clipping,
an RNG consumed every step, a deterministic resumable iterator) at a size that trains in
milliseconds. Its hidden matrix is 256 x 256 so that `sharding.param_spec` splits it over
`model`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from mmpiqa_jax.train.trainer import TrainState

IN_DIM = 8


class MLP(nnx.Module):
    def __init__(self, hidden: int, *, rngs: nnx.Rngs):
        self.inp = nnx.Linear(IN_DIM, hidden, rngs=rngs)
        self.mid = nnx.Linear(hidden, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, 1, rngs=rngs)

    def __call__(self, x):
        x = jax.nn.gelu(self.inp(x))
        x = jax.nn.gelu(self.mid(x))
        return self.out(x)[:, 0]


def target(x: np.ndarray) -> np.ndarray:
    return np.sin(x[:, 0] * 2.0) + 0.5 * x[:, 1] * x[:, 2]


class ToyTask:
    """Regression with two 'task' losses (mse, l1) and input noise drawn from the state's RNG."""

    def __init__(self, num_steps: int, *, hidden: int = 256, lr: float = 1e-2,
                 nan_at_step: int | None = None):
        self.hidden = hidden
        self.nan_at_step = nan_at_step
        self.schedule = optax.warmup_cosine_decay_schedule(
            0.0, lr, warmup_steps=max(1, num_steps // 10), decay_steps=num_steps)
        self.tx = optax.chain(optax.clip_by_global_norm(1.0),
                              optax.adamw(self.schedule, weight_decay=1e-4))
        self.graphdef = nnx.graphdef(nnx.eval_shape(lambda: MLP(hidden, rngs=nnx.Rngs(0))))

    def init_state(self, rng) -> TrainState:
        init_rng, rng = jax.random.split(rng)
        _, params = nnx.split(MLP(self.hidden, rngs=nnx.Rngs(init_rng)))
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=self.tx.init(params), rng=rng,
                          extra={"loss_ema": jnp.zeros(())})

    def predict(self, params, x):
        return nnx.merge(self.graphdef, params)(x)

    def train_step(self, state: TrainState, batch: dict):
        rng, noise_rng = jax.random.split(state.rng)
        x = batch["x"] + 0.01 * jax.random.normal(noise_rng, batch["x"].shape)

        def loss_fn(params):
            err = self.predict(params, x) - batch["y"]
            losses = {"loss_mse": jnp.mean(err**2), "loss_l1": jnp.mean(jnp.abs(err))}
            loss = losses["loss_mse"] + 0.5 * losses["loss_l1"]
            if self.nan_at_step is not None:  # a deliberate blow-up for the NaN-stop test
                loss = loss * jnp.where(state.step + 1 == self.nan_at_step, jnp.nan, 1.0)
            return loss, losses

        (loss, losses), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        grad_norm = optax.tree.norm(grads)
        metrics = {"loss": loss, **losses, "lr": self.schedule(state.step),
                   "grad_norm": grad_norm,
                   "finite": jnp.isfinite(loss) & jnp.isfinite(grad_norm)}
        extra = {"loss_ema": 0.9 * state.extra["loss_ema"] + 0.1 * loss}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state, rng=rng,
                             extra=extra), metrics


class ToyIterator:
    """Deterministic batches; process `p` of `n` yields rows `[p*b/n, (p+1)*b/n)` of each one."""

    def __init__(self, batch_size: int, *, seed: int = 0, process_index: int = 0,
                 process_count: int = 1):
        if batch_size % process_count:
            raise ValueError(f"batch_size={batch_size} not divisible by {process_count} processes")
        self.batch_size, self.seed = batch_size, seed
        self.local = batch_size // process_count
        self.offset = process_index * self.local
        self.index = 0

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        rng = np.random.default_rng([self.seed, self.index])
        x = rng.normal(size=(self.batch_size, IN_DIM)).astype(np.float32)
        y = target(x).astype(np.float32)
        self.index += 1
        rows = slice(self.offset, self.offset + self.local)
        return {"x": x[rows], "y": y[rows]}

    def get_state(self) -> dict:
        return {"index": self.index}

    def set_state(self, state: dict) -> None:
        self.index = int(state["index"])


def toy_config(**overrides) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict({
        "num_steps": 12, "batch_size": 16, "seed": 0, "log_every": 1, "eval_every": 4,
        "checkpoint_every": 4, "keep_checkpoints": 3, "async_checkpointing": True,
        "sharding": {"strategy": "replicate", "min_size": 2**16},
        "model": {"hidden": 256},
    })
    config.update(overrides)
    return config


def make_eval_fn(task: ToyTask, n: int = 64):
    """Spearman correlation of predictions against targets on a fixed validation set."""
    rng = np.random.default_rng(12345)
    x = rng.normal(size=(n, IN_DIM)).astype(np.float32)
    y = target(x)
    predict = jax.jit(task.predict)

    def ranks(v):
        return np.argsort(np.argsort(v)).astype(np.float64)

    def eval_fn(state) -> dict:
        pred = np.asarray(jax.device_get(predict(state.params, x)))
        return {"srcc": float(np.corrcoef(ranks(pred), ranks(y))[0, 1]),
                "mse": float(np.mean((pred - y) ** 2))}

    return eval_fn
