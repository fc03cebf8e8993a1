"""The main job: data from the config, `trainer.train`, then the test evaluations on disk.

    metrics = train_and_evaluate(config, workdir)     # `mmpiqa train`
    metrics = evaluate_workdir(workdir)               # `mmpiqa eval`
    model, config = load_for_inference(workdir)       # `mmpiqa score`

Each training dataset (`config.data.batch_sizes`) is split by reference image
(`data.split`, `data.split_seed`); training reads its `train` part, best-checkpoint tracking its
`data.val_part` (none when empty: the last checkpoint is the one tested), and the best
checkpoint is tested on its `test` part and on every dataset of
`config.eval.datasets` as a whole (cross-dataset). Evaluation is multi-crop (`data.eval_crop_mode`),
batched and jitted; every process scores its shard and the predictions are gathered.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
from pathlib import Path

import jax
import ml_collections
import numpy as np

from mmpiqa_jax.data import pipeline, registry, split_spec, splits
from mmpiqa_jax.evaluate import metrics as metrics_lib
from mmpiqa_jax.evaluate import report
from mmpiqa_jax.models import iqa
from mmpiqa_jax.train import sharding, trainer
from mmpiqa_jax.train.task import IQATask

WHOLE = "all"  # the split name of a dataset evaluated whole (cross-dataset)


# ---------------------------------------------------------------------------------------------
# Data.


def data_dir(config) -> str | None:
    return config.data.data_dir or None


def file_name(dataset: str) -> str:
    """A dataset name as used in `eval/<dataset>-<split>.*` (`synthetic_iqa/small` ->
    `synthetic_iqa_small`)."""
    return dataset.replace("/", "_")


@dataclasses.dataclass
class Dataset:
    """One prepared dataset: its spec (all examples), labels and split into parts.

    table: `splits.read_labels` of every example, with `distortion_class` and `scenes` [N, 9]
    as training uses them (the split files' labels filled in where the records have none).
    score_direction: the raw `mos`'s direction as the builder states it ("higher is better",
    "lower is better"); evaluation always compares with `quality` (higher is better).
    """
    name: str
    spec: pipeline.DataSpec
    table: dict
    parts: dict[str, np.ndarray]
    score_direction: str = ""
    split_source: str = ""

    def part(self, part: str, batch_size: int = 1) -> pipeline.DataSpec:
        if part not in self.parts:
            raise ValueError(f"dataset {self.name!r} has no part {part!r}; it has "
                             f"{', '.join(self.parts)}")
        return dataclasses.replace(self.spec, indices=self.parts[part], batch_size=batch_size)


def _score_direction(name: str, config) -> str:
    builder = registry.get_builder(name, data_dir(config))
    return str(builder.info.metadata.get("score_direction", ""))


def open_dataset(name: str, config, *, split: bool = True) -> Dataset:
    """A prepared dataset by name, split as `config.data.split` says for it (or whole)."""
    spec = pipeline.open_spec(name, data_dir=data_dir(config))
    table = splits.read_labels(spec.source)
    parts, source = {}, "whole"
    if split:
        source = split_spec.parse(config.data.split).source(name)
        imported = split_spec.resolve(
            source, name, table, seed=int(config.data.split_seed),
            official=lambda: splits.official_split(name, data_dir(config)))
        parts = dict(imported.parts)
        # The records' own class wins; files fill in the images the builder knows none for.
        if imported.distortion_class is not None:
            table["distortion_class"] = np.where(table["distortion_class"] >= 0,
                                                 table["distortion_class"],
                                                 imported.distortion_class).astype(np.int32)
            spec = dataclasses.replace(spec, distortion_class=table["distortion_class"])
        if imported.scenes is not None:
            spec = dataclasses.replace(spec, scenes=imported.scenes)
    if spec.scenes is not None:
        table["scenes"] = spec.scenes
    parts[WHOLE] = np.arange(len(table["name"]))
    return Dataset(name, spec, table, parts, _score_direction(name, config), str(source))


def training_datasets(config) -> list[Dataset]:
    # A malformed or incomplete `data.split` is named before any dataset is opened.
    split_spec.parse(config.data.split, list(config.data.batch_sizes))
    datasets = [open_dataset(name, config) for name in config.data.batch_sizes]
    for d in datasets:
        for part in ("train", config.data.val_part, "test"):
            if part:
                d.part(part)  # a missing part is named now, not after training
    return datasets


def without_unlabelled_tasks(config, datasets: list[Dataset]):
    """`config` with the weight of every classification task that no training image has a
    label for set to 0, so that DWA shares the weights among the tasks that train."""
    labelled = {
        "distortion": any((d.table["distortion_class"][d.parts["train"]] >= 0).any()
                          for d in datasets),
        "scene": any("scenes" in d.table and d.table["scenes"][d.parts["train"]].any()
                     for d in datasets),
    }
    dead = [task for task, has in labelled.items() if not has and config.loss[task] > 0]
    if not dead:
        return config
    logging.warning("no training image has a %s label (split files carry scene labels: "
                    "data.split=liqe:DIR); those losses are off", " or ".join(dead))
    config = copy.deepcopy(config)
    for task in dead:
        config.loss[task] = 0.0
    return config


def cross_datasets(config) -> list[str]:
    names = list(config.eval.datasets)
    both = sorted(set(names) & set(config.data.batch_sizes))
    if both:
        raise ValueError(f"config.eval.datasets {both} are also training datasets: a "
                         "cross-dataset test must not contain training images (their test "
                         "parts are evaluated anyway)")
    return names


def train_iterator(config, datasets: list[Dataset]):
    d = config.data
    specs = [ds.part("train", config.data.batch_sizes[ds.name]) for ds in datasets]
    # uint8 crops: the model normalises them on the device (models.preprocess).
    workers = pipeline.host_workers() if d.num_workers < 0 else d.num_workers
    return pipeline.train_iterator(specs, seed=config.seed, crops_per_image=d.crops_per_image,
                                   crop_size=d.crop_size, crop_mode=d.train_crop_mode,
                                   flip=d.random_flip, rot90=d.random_rot90, normalize=False,
                                   num_workers=workers, num_threads=d.num_threads,
                                   worker_buffer_size=d.worker_buffer_size or None)


# ---------------------------------------------------------------------------------------------
# Evaluation.


class Evaluator:
    """Multi-crop scores of dataset parts, one jitted function per shape, gathered on every host."""

    def __init__(self, task: IQATask, config, mesh):
        self.task, self.mesh, self.data = task, mesh, config.data
        # The global eval batch must split evenly over the data axis and the processes.
        unit = math.lcm(mesh.shape[sharding.DATA], jax.process_count())
        self.local_batch = -(-config.eval.batch_size // unit) * unit // jax.process_count()
        replicated = sharding.replicated(mesh)
        self._refresh = jax.jit(task.with_fresh_text_cache)
        self._predict = jax.jit(lambda params, frozen, batch: (
            task.predict(params, frozen, batch["pixels"]), batch["index"], batch["valid"]),
            out_shardings=replicated)

    def scores(self, state, spec: pipeline.DataSpec) -> tuple[np.ndarray, np.ndarray]:
        """`(indices, scores)` of every example of `spec`, in the order of `spec.indices`."""
        params = self.task.inference_params(state)
        with jax.set_mesh(self.mesh):
            frozen = self._refresh(params, state.frozen)
            out = []
            for batch in pipeline.eval_iterator(
                    spec, batch_size=self.local_batch, crop_mode=self.data.eval_crop_mode,
                    num_crops=self.data.eval_crops, crop_size=self.data.crop_size,
                    normalize=False, num_threads=pipeline.host_cores()):
                local = {k: batch[k] for k in ("pixels", "index", "valid")}
                out.append(self._predict(params, frozen,
                                         sharding.global_batch(self.mesh, local)))
            # Replicated results: every process holds all of them.
            host = [[np.asarray(x.addressable_data(0)) for x in o] for o in out]
        score, index, valid = (np.concatenate(c) for c in zip(*host))
        order = {int(i): k for k, i in enumerate(index[valid])}
        want = np.asarray(spec.all_indices())
        missing = [int(i) for i in want if int(i) not in order]
        if missing:
            raise RuntimeError(f"{spec.name}: evaluation lost examples {missing[:5]}")
        return want, score[valid][[order[int(i)] for i in want]]

    def evaluate(self, state, dataset: Dataset, part: str) -> tuple[dict, np.ndarray, np.ndarray]:
        """`(metrics, indices, scores)` of one part of a dataset; metrics as `compute_metrics`,
        against `quality` (higher is better, whatever the raw score's direction)."""
        indices, scores = self.scores(state, dataset.part(part))
        quality = dataset.table["quality"][indices]
        return metrics_lib.compute_metrics(scores, quality), indices, scores


def _validation_metrics(scores: np.ndarray, quality: np.ndarray) -> dict:
    # No logistic fit: it is slow and can warn; correlations are what ranks checkpoints.
    return {"srcc": metrics_lib.srcc(scores, quality), "plcc": metrics_lib.plcc(scores, quality),
            "krcc": metrics_lib.krcc(scores, quality), "rmse": metrics_lib.rmse(scores, quality)}


def make_eval_fn(evaluator: Evaluator, datasets: list[Dataset], part: str):
    """`eval_fn(state)` for the trainer: validation correlations, averaged over datasets
    (`srcc`, ...), plus each dataset's own (`<dataset>_srcc`) when there are several."""
    specs = [(d, d.part(part)) for d in datasets]

    def eval_fn(state) -> dict:
        results = {}
        for dataset, spec in specs:
            indices, scores = evaluator.scores(state, spec)
            results[dataset.name] = _validation_metrics(scores,
                                                        dataset.table["quality"][indices])
        out = {k: float(np.mean([r[k] for r in results.values()]))
               for k in ("srcc", "plcc", "krcc")}
        if len(results) > 1:
            for name, r in results.items():
                out.update({f"{file_name(name)}_{k}": v for k, v in r.items() if k != "rmse"})
        else:
            out["rmse"] = next(iter(results.values()))["rmse"]
        return out

    return eval_fn


def write_results(workdir, evaluator: Evaluator, state, dataset: Dataset, part: str) -> dict:
    """Evaluates one part, writes `eval/<dataset>-<part>.{json,csv,png}` (process 0), returns
    its metrics."""
    metrics, indices, scores = evaluator.evaluate(state, dataset, part)
    if jax.process_index() == 0:
        report.write_eval(workdir, file_name(dataset.name), part, dataset.table["name"][indices],
                          dataset.table["quality"][indices], scores, metrics,
                          mos=dataset.table["mos"][indices],
                          score_direction=dataset.score_direction,
                          split_source=dataset.split_source)
    return metrics


def _evaluate_all(workdir, evaluator, state, config, datasets, parts) -> dict:
    results = {}
    for d in datasets:
        for part in parts:
            results[f"{file_name(d.name)}-{part}"] = write_results(workdir, evaluator, state, d,
                                                                   part)
    for name in cross_datasets(config):
        d = open_dataset(name, config, split=False)
        results[f"{file_name(name)}-{WHOLE}"] = write_results(workdir, evaluator, state, d, WHOLE)
    return results


# ---------------------------------------------------------------------------------------------
# The three entry points.


def train_and_evaluate(config, workdir, *, hooks=(), mesh=None) -> dict:
    """Trains (resuming from `workdir` if it holds a checkpoint), then tests the best checkpoint.

    Returns `{"<dataset>-<split>": compute_metrics dict}` of every test evaluation, also
    written to `<workdir>/eval/`. `hooks` are passed to `trainer.train` (e.g. a `StopTraining`
    raiser; a stopped run returns `{}` without testing).
    """
    workdir = Path(workdir)
    if not (workdir / trainer.CONFIG_NAME).exists():  # a fresh run: no silent random CLIP
        iqa.clip_weights_path(config.model)
    datasets = training_datasets(config)
    cross_datasets(config)  # fails early on a bad list
    config = without_unlabelled_tasks(config, datasets)
    task = IQATask(config)
    mesh = mesh or sharding.make_mesh(config.mesh.data, config.mesh.model)
    evaluator = Evaluator(task, config, mesh)
    # No validation part: nothing selects a checkpoint, the last one is tested.
    eval_fn = (make_eval_fn(evaluator, datasets, config.data.val_part)
               if config.data.val_part else None)
    state = trainer.train(task, config, workdir, train_iter=train_iterator(config, datasets),
                          eval_fn=eval_fn, mesh=mesh, hooks=hooks)
    if int(state.step.addressable_data(0)) < config.num_steps:
        return {}  # stopped early, like a preemption: the next run resumes
    del state  # the best checkpoint is tested, not the last state
    best = trainer.load_state(task, config, workdir, which="best", mesh=mesh)
    return _evaluate_all(workdir, evaluator, best, config, datasets, ("test",))


def read_config(workdir) -> ml_collections.ConfigDict:
    """The config a run in `workdir` was trained with (its `config.json`)."""
    path = Path(workdir) / trainer.CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {workdir} is not a training workdir "
                                "(run mmpiqa train --workdir there first)")
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def evaluate_workdir(workdir, dataset: str | None = None, split: str | None = None) -> dict:
    """Evaluates the best checkpoint of `workdir` and writes `eval/` files.

    Without `dataset`: the `split` part (default `test`) of every training dataset, and every
    `eval.datasets` whole. With `dataset`: that dataset only, on `split` (default `test` for a
    training dataset, the whole dataset `all` for any other).
    """
    config = read_config(workdir)
    task = IQATask(config)
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.model)
    evaluator = Evaluator(task, config, mesh)
    state = trainer.load_state(task, config, workdir, which="best", mesh=mesh)
    if dataset is None:
        datasets = [open_dataset(name, config) for name in config.data.batch_sizes]
        return _evaluate_all(workdir, evaluator, state, config, datasets, (split or "test",))
    trained = dataset in config.data.batch_sizes
    d = open_dataset(dataset, config, split=trained)
    part = split or ("test" if trained else WHOLE)
    return {f"{file_name(dataset)}-{part}": write_results(workdir, evaluator, state, d, part)}


def load_for_inference(workdir_or_checkpoint):
    """`(model, config)`: the nnx model of a run's best checkpoint, ready to score crops.

    Accepts the workdir or its `checkpoints/` folder. The model takes crops
    `[B, C, s, s, 3]` with s = `config.data.crop_size`, uint8 RGB or CLIP-normalised float;
    call it with `use_text_cache=True`.
    """
    path = Path(workdir_or_checkpoint)
    if path.name == trainer.CHECKPOINT_DIR and not (path / trainer.CONFIG_NAME).exists():
        path = path.parent
    config = read_config(path)
    task = IQATask(config)
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.model)
    state = trainer.load_state(task, config, path, which="best", mesh=mesh)
    with jax.set_mesh(mesh):
        model = task.model(state)
    return model, config
