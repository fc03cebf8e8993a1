"""The generic training driver: sharded state, one jitted donated step, logs, evals, checkpoints.

    state = train(task, config, workdir, train_iter=it, eval_fn=evaluate)

A model family plugs in as a `TrainTask`. One driver step is one call of `task.train_step` on
the whole `batch_size` batch: one optimiser update (any accumulation happens in the task's step).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import math
import signal
import time
from typing import Any, Callable, Iterator, Protocol, Sequence

import flax.struct
import jax
import numpy as np

from mmpiqa_jax import files
from mmpiqa_jax.data import pipeline
from mmpiqa_jax.data.prefetch import DevicePrefetch
from mmpiqa_jax.errors import MissingFileError, UserError
from mmpiqa_jax.train import checkpointing, progress, sharding

CONFIG_NAME = "config.json"
CHECKPOINT_DIR = "checkpoints"
# Integer config keys every training config has, and their lower bounds.
REQUIRED_KEYS = {"num_steps": 1, "batch_size": 1, "log_every": 1, "eval_every": 1,
                 "checkpoint_every": 1, "keep_checkpoints": 1}
# Step metrics that flag the step rather than measure it; either spelling is accepted.
FLAG_KEYS = ("finite", "nonfinite")
DEVICE_PREFETCH = 2  # global batches put on the device ahead of the step


@flax.struct.dataclass
class TrainState:
    """Everything a step reads and writes; a pytree.

    step counts completed steps; params are what the optimiser updates, frozen what the model
    reads but never updates (a frozen CLIP tower), extra any other carried state (DWA, EMA).
    """
    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    frozen: Any = None
    extra: Any = None


class TrainTask(Protocol):
    """What a model family provides to the driver."""

    def init_state(self, rng: jax.Array) -> TrainState:
        """A fresh state from a PRNG key; pure, traced under `jax.jit` with sharded outputs."""

    def train_step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        """One optimiser step; pure. Scalar metrics are logged; `finite` False (or `nonfinite`
        True) flags a NaN/Inf loss or gradient."""

    # Optional: `load_pretrained(rng, shardings) -> state or None`, a fresh state with outside
    # weights, called for fresh runs only (not on resume); None: `init_state`.


class NonFiniteLossError(UserError):
    """The loss or a gradient became NaN/Inf; the run stopped without saving that state."""

    def __init__(self, step: int, metrics: dict, last_checkpoint: int | None):
        self.step, self.metrics, self.last_checkpoint = step, metrics, last_checkpoint
        losses = ", ".join(f"{k}={v:.6g}" for k, v in metrics.items() if k not in FLAG_KEYS)
        kept = (f"the last good checkpoint (step {last_checkpoint}) is kept"
                if last_checkpoint is not None else "no checkpoint had been saved yet")
        super().__init__(f"non-finite loss or gradients at step {step} ({losses}); "
                         f"training stopped and {kept}")


class StopTraining(Exception):
    """Raised by a hook to end the run early, like a preemption (the next run resumes)."""


class Preemption:
    """Whether the run is preempted: SIGTERM (one process, within `with` in the main thread), or
    Orbax's preemption sync point (several processes)."""

    def __init__(self, ckpt: checkpointing.Checkpointer | None = None, *,
                 multi: bool | None = None):
        """ckpt: asked for Orbax's sync point; multi: several processes (default: from jax)."""
        self.ckpt, self.signalled = ckpt, False
        self._multi = jax.process_count() > 1 if multi is None else multi
        self._previous = None

    def _handle(self, signum, frame):  # pylint: disable=unused-argument
        if self.signalled:  # a second SIGTERM (e.g. a run stuck in a step): die as asked
            self.__exit__()
            signal.raise_signal(signal.SIGTERM)
        self.signalled = True

    def __enter__(self):
        if not self._multi:  # several processes: SIGTERM is jax's preemption notifier's
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def reached(self, step: int) -> bool:
        """True at the step to save and stop at (the same step on every process)."""
        return self.signalled or (self._multi and self.ckpt is not None
                                  and self.ckpt.reached_preemption(step))


# ---------------------------------------------------------------------------------------------


def check_config(config) -> None:
    """Clear errors for missing or invalid driver keys in `config`."""
    for key, low in REQUIRED_KEYS.items():
        if key not in config:
            raise UserError(f"training config lacks the key {key!r}")
        value = config[key]
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise UserError(f"config.{key}={value!r} must be an integer >= {low}")
    if "seed" not in config or not isinstance(config.seed, (int, np.integer)):
        raise UserError(f"training config needs an integer 'seed', got {config.get('seed')!r}")
    sharding.strategy_of(config)  # raises on an unknown sharding.strategy


def check_batch_fits(batch_size: int, data_size: int, num_processes: int) -> None:
    """Raises unless the batch splits over devices and processes, naming sizes that would."""
    multiple = math.lcm(data_size, num_processes)
    if batch_size % multiple:
        raise UserError(f"config.batch_size={batch_size} does not fit the mesh: it must divide "
                        f"by the data-parallel devices ({data_size}) and the process count "
                        f"({num_processes}); {pipeline.nearest_multiples(batch_size, multiple)} "
                        "(scale data.batch_sizes to match; per-dataset sizes need not divide)")


def _is_finite(metrics: dict) -> bool:
    """False if the step flagged itself (`finite` False, `nonfinite` True) or a value is NaN/Inf."""
    if not metrics.get("finite", True) or metrics.get("nonfinite", False):
        return False
    return all(np.all(np.isfinite(v)) for k, v in metrics.items()
               if k not in FLAG_KEYS and np.issubdtype(np.asarray(v).dtype, np.number))


def abstract_state(task: TrainTask, mesh, rng=None,
                   strategy: sharding.Strategy = sharding.Strategy()):
    """The state's shapes carrying their shardings (`strategy`), and the shardings: the target
    of a restore, and the `out_shardings` of a fresh state's init."""
    rng = jax.random.key(0) if rng is None else rng
    shapes = jax.eval_shape(task.init_state, rng)
    shardings = sharding.tree_shardings(mesh, shapes, strategy)
    return sharding.with_shardings(shapes, shardings), shardings


def fresh_state(task: TrainTask, rng, shardings) -> TrainState:
    """Step 0 laid out by `shardings`: the task's outside weights (`load_pretrained`) if it has
    them, else `init_state` compiled with those shardings (every leaf its own buffer)."""
    state = task.load_pretrained(rng, shardings) if hasattr(task, "load_pretrained") else None
    if state is None:
        state = jax.jit(task.init_state, out_shardings=shardings)(rng)
    return state


def load_state(task: TrainTask, config, workdir, *, step: int | None = None, mesh=None,
               optimizer: bool = False) -> TrainState:
    """The state of `step` of a run (default: its best, else its latest) over `mesh` (default: all
    devices); `opt_state` is None unless `optimizer`."""
    mesh = mesh or sharding.make_mesh()
    directory = files.as_path(workdir) / CHECKPOINT_DIR
    with checkpointing.Checkpointer(directory, async_save=False, read_only=True,
                                    model_cfg=checkpointing.run_identity(config)) as ckpt:
        steps = sorted(ckpt.all_steps(), reverse=True)
        if not steps:
            raise MissingFileError(f"no checkpoint in {directory}: train a model there first")
        if step is not None:
            steps = [step]
        elif ckpt.best_step() is not None:  # the best first, the newest if it cannot be read
            steps.insert(0, steps.pop(steps.index(ckpt.best_step())))
        with jax.set_mesh(mesh):
            target = abstract_state(task, mesh, strategy=sharding.strategy_of(config))[0]
            state, _ = ckpt.restore(target, steps=steps, optimizer=optimizer)
    return state


def train(task: TrainTask, config, workdir, *, train_iter: Iterator[dict],
          eval_fn: Callable[[TrainState], dict] | None = None, mesh=None,
          hooks: Sequence[Callable[[int], None]] = (), preemption: Preemption | None = None,
          identity: dict | None = None) -> TrainState:
    """Trains `task` to `config.num_steps`, resuming from `workdir`'s latest checkpoint if any.

    train_iter yields this process's share of each batch (leading size `batch_size /
    process_count`) and has JSON `get_state()`/`set_state()`. eval_fn(state) returns metrics
    holding `srcc`, every `eval_every` steps and at the end, on every process. mesh defaults to
    every device. Each hook gets the step number after its logging and checkpointing; raising
    `StopTraining` ends the run there. A preemption saves the step it arrives at and ends the
    run; `preemption` is a notice entered by its owner (default: the run's own). `identity` is
    compared on resume (default `checkpointing.run_identity(config)`). Returns the final state
    (its step below `num_steps` when the run stopped early).
    """
    check_config(config)
    missing = [m for m in ("__next__", "get_state", "set_state") if not hasattr(train_iter, m)]
    if missing:
        raise TypeError(f"train_iter {type(train_iter).__name__} lacks {missing}: exact resume "
                        "needs an iterator whose position can be saved and restored")
    workdir = files.as_path(workdir)
    main_process = jax.process_index() == 0
    mesh = mesh or sharding.make_mesh()
    strategy = sharding.strategy_of(config)
    check_batch_fits(config.batch_size, mesh.size, jax.process_count())

    with contextlib.ExitStack() as stack:
        if main_process:  # one writer per workdir: process 0 holds the lock for all
            stack.enter_context(files.one_writer(workdir))
        ckpt = stack.enter_context(checkpointing.Checkpointer(
            workdir / CHECKPOINT_DIR, keep=config.keep_checkpoints,
            async_save=config.async_checkpointing,
            model_cfg=identity or checkpointing.run_identity(config)))
        # Whatever ends the run, started saves finish first: they hold finite states only.
        stack.callback(ckpt.wait)
        stack.enter_context(jax.set_mesh(mesh))  # the ambient mesh, for bare PartitionSpecs
        rng = jax.random.key(config.seed)
        abstract, state_shardings = abstract_state(task, mesh, rng, strategy)
        sharding.log_layout(abstract, state_shardings, strategy)
        if ckpt.latest_step() is not None:
            state, _ = ckpt.restore(abstract, data_iter=train_iter, set_aside_damaged=True)
        else:
            state = fresh_state(task, rng, state_shardings)
        if main_process:  # only now: a mismatched run must not overwrite the old config
            plain = config.to_dict() if hasattr(config, "to_dict") else dict(config)
            files.write_json(workdir / CONFIG_NAME, plain, sort_keys=True)
        start = int(jax.device_get(state.step))
        writer = stack.enter_context(progress.MetricsWriter(
            workdir, num_steps=config.num_steps, start_step=start, enabled=main_process))
        step_fn = jax.jit(task.train_step,
                          in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
                          out_shardings=(state_shardings, sharding.replicated(mesh)),
                          donate_argnums=0)
        # Global device batches, assembled by a thread ahead of the step; its `get_state` is
        # the position after the batches taken.
        feed = DevicePrefetch(train_iter, functools.partial(sharding.global_batch, mesh),
                              size=DEVICE_PREFETCH, limit=config.num_steps - start)
        stack.callback(feed.close)
        if preemption is None:
            preemption = stack.enter_context(Preemption(ckpt))
        state = _loop(state, step_fn, start, config, feed, eval_fn, hooks, ckpt, writer,
                      preemption)
    return state


def _fetch_finite(pending: list, last_saved: int | None) -> dict[str, float]:
    """The last pending step's scalar metrics on the host, after checking every pending step."""
    host_metrics = jax.device_get([m for _, m in pending])  # one transfer for all
    for (step, _), host in zip(pending, host_metrics):
        if not _is_finite(host):
            scalars = {k: float(v) for k, v in host.items() if np.ndim(v) == 0}
            raise NonFiniteLossError(step, scalars, last_saved)
    # Vector metrics (e.g. all task losses in one array) are checked but not logged.
    return {k: float(v) for k, v in host.items() if k not in FLAG_KEYS and np.ndim(v) == 0}


def _loop(state, step_fn, start, config, train_iter, eval_fn, hooks, ckpt, writer,
          preemption: Preemption):
    """Runs steps `start + 1 .. num_steps`; host syncs only at log, eval and save points."""
    num_steps = config.num_steps
    pending = []  # (step, device metrics) not yet checked for finiteness
    last_saved = ckpt.latest_step()
    tick, tick_step = time.perf_counter(), start
    for step in range(start + 1, num_steps + 1):
        try:
            batch = next(train_iter)
        except StopIteration:
            raise RuntimeError(f"train_iter ran out at step {step} of {num_steps}; the data "
                               "pipeline must repeat for the whole run") from None
        state, metrics = step_fn(state, batch)
        pending.append((step, metrics))
        writer.advance()

        do_log = step % config.log_every == 0 or step == num_steps
        preempted = preemption.reached(step)
        # A preempted run saves at once, before the grace period ends; it does not evaluate
        # first (the resumed run evaluates at its next evaluation step and at the end).
        do_eval = (eval_fn is not None and not preempted
                   and (step % config.eval_every == 0 or step == num_steps))
        do_save = step % config.checkpoint_every == 0 or step == num_steps or preempted
        if do_log or do_eval or do_save:
            # Every step since the last check must be finite before anything is saved.
            record = _fetch_finite(pending, last_saved)
            pending = []
            now = time.perf_counter()
            record["images_per_sec"] = (step - tick_step) * config.batch_size / (now - tick)
            tick, tick_step = now, step
            eval_metrics = None
            if do_eval:
                eval_metrics = {k: float(v) for k, v in eval_fn(state).items()}
                if checkpointing.BEST_METRIC not in eval_metrics:
                    raise KeyError(f"eval_fn returned {sorted(eval_metrics)}, which lacks "
                                   f"{checkpointing.BEST_METRIC!r}")
                record.update({progress.EVAL_PREFIX + k: v for k, v in eval_metrics.items()})
                # A new best is saved even between regular checkpoints.
                do_save |= eval_metrics[checkpointing.BEST_METRIC] > ckpt.best_metric()
            if do_log or do_eval:
                writer.write(step, record)
            if do_save:
                ckpt.save(step, state, data_iter=train_iter, metrics=eval_metrics)
                last_saved = step
        if preempted:
            logging.warning("preempted: saved step %d of %d and stopping; run the same "
                            "command again to resume", step, num_steps)
            break
        try:
            for hook in hooks:
                hook(step)
        except StopTraining:
            break  # as a preemption, but nothing extra is saved
    return state
