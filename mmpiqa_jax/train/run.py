"""The training job: datasets from the config, `trainer.train`, then the test evaluations.

    metrics = train_and_evaluate(config, workdir)     # `mmpiqa train`
    metrics = evaluate_workdir(workdir)               # `mmpiqa eval`

The best checkpoint (by SRCC on `data.val_part`, else the last) is tested on each training
dataset's `test` part and on every `config.eval.datasets` whole.
"""
from __future__ import annotations

import copy
import logging

import jax

from mmpiqa_jax import files
from mmpiqa_jax.checkpoints import pretrained
from mmpiqa_jax.data import datasets as datasets_lib
from mmpiqa_jax.evaluate import evaluator as evaluator_lib
from mmpiqa_jax.train import checkpointing, inference, sharding, trainer
from mmpiqa_jax.train.task import IQATask


def without_unlabelled_tasks(config, datasets: list[datasets_lib.Dataset]):
    """`config` with the weight 0 for each classification task no training image is labelled for."""
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


def _test(workdir, scorer, config, evaluator, datasets, parts) -> dict:
    """Tests `parts` of `datasets` and, whole, `config.eval.datasets`; writes `workdir/eval/`."""
    whole = [datasets_lib.open_dataset(name, config, split=False)
             for name in datasets_lib.cross_datasets(config)]
    return evaluator_lib.evaluate_datasets(workdir, evaluator, scorer.predict, datasets, parts,
                                           whole=whole, writer=jax.process_index() == 0)


def train_and_evaluate(config, workdir, *, hooks=(), mesh=None, preemption=None) -> dict:
    """Trains (resuming from `workdir` if it holds a checkpoint), then tests the best checkpoint.

    Returns `{"<dataset>-<split>": metrics}` of every test evaluation (also in `<workdir>/eval/`),
    or `{}` when training stopped early. `hooks` and `preemption` go to `trainer.train`.
    """
    workdir = files.as_path(workdir)
    if not (workdir / trainer.CONFIG_NAME).exists():  # a fresh run: no silent random CLIP
        pretrained.clip_weights_path(config.model)
    datasets = datasets_lib.training_datasets(config)
    datasets_lib.cross_datasets(config)  # fails early on a bad list
    config = without_unlabelled_tasks(config, datasets)
    task = IQATask(config)
    mesh = mesh or sharding.make_mesh()
    evaluator = inference.make_evaluator(config, mesh)
    eval_fn = None  # no validation part: nothing selects a checkpoint, the last one is tested
    if config.data.val_part:
        validate = evaluator_lib.validation_fn(evaluator, datasets, config.data.val_part)
        eval_fn = lambda state: validate(inference.Scorer.of_state(task, state, mesh).predict)
    sizes = {d.name: len(d.table["quality"]) for d in datasets}
    state = trainer.train(task, config, workdir,
                          train_iter=datasets_lib.train_iterator(config, datasets),
                          eval_fn=eval_fn, mesh=mesh, hooks=hooks, preemption=preemption,
                          identity=checkpointing.run_identity(config, sizes))
    if int(state.step.addressable_data(0)) < config.num_steps:
        return {}  # stopped early, like a preemption: the next run resumes
    del state  # the best checkpoint is tested, not the last state
    scorer, _ = inference.load_scorer(workdir, mesh)
    return _test(workdir, scorer, config, evaluator, datasets, ("test",))


def evaluate_workdir(workdir, dataset: str | None = None, split: str | None = None) -> dict:
    """Evaluates the best checkpoint of `workdir` (or a checkpoint in it, or a model folder) into
    its `eval/`: with `dataset`, that dataset's `split` (default `test` for a training dataset,
    else `all`); without, the `split` (default `test`) of every training dataset and every
    `eval.datasets` whole."""
    scorer, config = inference.load_scorer(workdir)
    evaluator = inference.make_evaluator(config, scorer.mesh)
    workdir = inference.run_folder(workdir)
    if jax.process_index() == 0:  # before the work, not after it
        files.check_writable(workdir / "eval")
    if dataset is None:
        datasets = [datasets_lib.open_dataset(name, config) for name in config.data.batch_sizes]
        return _test(workdir, scorer, config, evaluator, datasets, (split or "test",))
    trained = dataset in config.data.batch_sizes
    d = datasets_lib.open_dataset(dataset, config, split=trained)
    part = split or ("test" if trained else datasets_lib.WHOLE)
    return {f"{datasets_lib.file_name(dataset)}-{part}": evaluator_lib.write_results(
        workdir, evaluator, scorer.predict, d, part, writer=jax.process_index() == 0)}
