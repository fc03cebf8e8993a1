"""A trained state as a scorer: the evaluator's prediction function, and models loaded from runs.

    evaluator = make_evaluator(task, config, mesh)
    metrics = evaluator.evaluate(inference_params(task, state, mesh), dataset, "test")
    model, config = load_for_inference(workdir)        # an nnx model for `mmpiqa score`
    save_for_inference(config, model, workdir)         # a model from elsewhere, as a workdir
"""
from __future__ import annotations

import json
import math
from typing import NamedTuple

import jax
import ml_collections
from etils import epath
from flax import nnx

from mmpiqa_jax.evaluate.evaluator import Evaluator, PredictFn, Predictions
from mmpiqa_jax.train import checkpointing, sharding, trainer
from mmpiqa_jax.train.task import IQATask


class InferenceParams(NamedTuple):
    """What scoring reads: the parameters evaluated (EMA if kept) and the frozen state with a
    text cache computed from them."""
    params: object
    frozen: object


def with_fresh_text_cache(task: IQATask, params, frozen):
    """`frozen` with the text cache recomputed from `params` (pure; jit it).

    Evaluation reads text features from the cache, so they are computed once per
    evaluation even when the text path trains.
    """
    model = nnx.merge(task.graphdef, params, frozen)
    model.refresh_text_cache()
    return task.setup.split(model)[1]


_fresh_text_cache = jax.jit(with_fresh_text_cache, static_argnums=0)


def _inference_params(task: IQATask, state) -> InferenceParams:
    params = task.inference_params(state)
    return InferenceParams(params, _fresh_text_cache(task, params, state.frozen))


def inference_params(task: IQATask, state, mesh) -> InferenceParams:
    """The state's parameters to evaluate, with the text features computed once for them."""
    with jax.set_mesh(mesh):
        return _inference_params(task, state)


def predict(task: IQATask, p: InferenceParams, pixels) -> jax.Array:
    """Quality scores [B] in [1, 5] of crops [B, C, H, W, 3] (pure; `p` from `inference_params`)."""
    model = nnx.merge(task.graphdef, p.params, p.frozen)
    return model(pixels, use_text_cache=True)["score"]


def model_of(task: IQATask, state):
    """The nnx model of a state, with the parameters evaluated and a fresh text cache."""
    p = _inference_params(task, state)
    return nnx.merge(task.graphdef, p.params, p.frozen)


def make_predict_fn(task: IQATask, mesh,
                    strategy: sharding.Strategy = sharding.DEFAULT_STRATEGY) -> PredictFn:
    """`predict_fn(InferenceParams, local batch) -> Predictions` of the whole global batch.

    Each process passes its own batch; they are assembled into one array sharded over the
    strategy's data axes, scored by one jitted function per shape, and the scores come back
    replicated, so every process gets all of them. They stay on the device until the evaluator
    reads them.
    """
    jitted = jax.jit(lambda p, batch: Predictions(
        predict(task, p, batch["pixels"]), batch["index"], batch["valid"]),
        out_shardings=sharding.replicated(mesh))

    def predict_fn(p: InferenceParams, local: dict) -> Predictions:
        local = {k: local[k] for k in ("pixels", "index", "valid")}
        with jax.set_mesh(mesh):
            out = jitted(p, sharding.global_batch(mesh, local, strategy))
        # Replicated: this process's first shard holds every value (no host transfer yet).
        return Predictions(*(x.addressable_data(0) for x in out))

    return predict_fn


def make_evaluator(task: IQATask, config, mesh) -> Evaluator:
    """The evaluator of `config.eval` / `config.data`'s crops over `mesh`."""
    # The global eval batch must split evenly over the data-parallel devices and the processes.
    strategy = sharding.strategy_of(config)
    unit = math.lcm(sharding.data_parallel_size(mesh, strategy), jax.process_count())
    local_batch = -(-config.eval.batch_size // unit) * unit // jax.process_count()
    d = config.data
    return Evaluator(make_predict_fn(task, mesh, strategy), batch_size=local_batch,
                     crop_mode=d.eval_crop_mode, num_crops=d.eval_crops, crop_size=d.crop_size)


def read_config(workdir) -> ml_collections.ConfigDict:
    """The config a run in `workdir` was trained with (its `config.json`)."""
    path = checkpointing.as_path(workdir) / trainer.CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {workdir} is not a training workdir "
                                "(run mmpiqa train --workdir there first)")
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def load_for_inference(workdir_or_checkpoint):
    """`(model, config)`: the nnx model of a run's best checkpoint, ready to score crops.

    Accepts the workdir or its `checkpoints/` folder. The model takes crops
    `[B, C, s, s, 3]` with s = `config.data.crop_size`, uint8 RGB or CLIP-normalised float;
    call it with `use_text_cache=True`.
    """
    path = checkpointing.as_path(workdir_or_checkpoint)
    if path.name == trainer.CHECKPOINT_DIR and not (path / trainer.CONFIG_NAME).exists():
        path = path.parent
    config = read_config(path)
    task = IQATask(config)
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.model)
    state = trainer.load_state(task, config, path, which="best", mesh=mesh)
    with jax.set_mesh(mesh):
        model = model_of(task, state)
    return model, config


def save_for_inference(config, model, workdir, *, overwrite: bool = False) -> epath.Path:
    """Writes `model` (built from `config.model`, e.g. with converted weights) as a workdir:
    `config.json` and the step-0 state of `config`'s training setup (fresh optimiser), saved
    as the trainer saves. `load_for_inference`, `mmpiqa score` and `mmpiqa eval` read it.

    Refuses a workdir that holds checkpoints unless `overwrite`, which replaces them once the
    new checkpoint is written in full (a save that fails leaves them as they were).
    """
    workdir = checkpointing.as_path(workdir)
    directory = workdir / trainer.CHECKPOINT_DIR
    staging, old = (workdir / (trainer.CHECKPOINT_DIR + suffix) for suffix in (".new", ".old"))
    if old.exists():   # an earlier save stopped between its two renames
        if directory.exists():
            old.rmtree()
        else:
            old.rename(directory)
    if directory.exists() and any(directory.iterdir()) and not overwrite:
        raise FileExistsError(f"{directory} already holds checkpoints; pass overwrite "
                              "(--overwrite) to replace them")
    if staging.exists():   # an earlier save that did not finish
        staging.rmtree()
    task = IQATask(config)
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.model)
    rng = jax.random.key(config.seed)
    with jax.set_mesh(mesh):
        _, shardings = trainer.abstract_state(task, mesh, rng, sharding.strategy_of(config))
        state = jax.device_put(task.setup.init_state(model, rng), shardings)
        with checkpointing.Checkpointer(staging, async_save=False,
                                        model_cfg=checkpointing.model_config(config)) as ckpt:
            ckpt.save(0, state)
            ckpt.wait()
    if directory.exists():
        directory.rename(old)
    staging.rename(directory)
    if old.exists():
        old.rmtree()
    trainer.write_config(config, workdir)
    return workdir
