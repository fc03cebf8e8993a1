"""Evaluation as big_vision does it: an `Evaluator` fed a prediction function and data;
`validation_fn`, `evaluate_datasets` (written to `eval/`). `predict(batch)` takes this process's
batch of crops (numpy `pixels` [B, C, s, s, 3], `index`, `valid` [B]) and returns `score`, `index`
and `valid` of the whole step's batch on every process, e.g. `train.inference.Scorer.predict`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from mmpiqa_jax.data import pipeline
from mmpiqa_jax.data.datasets import WHOLE, Dataset, file_name
from mmpiqa_jax.evaluate import metrics as metrics_lib
from mmpiqa_jax.evaluate import report

Predict = Callable[[dict], dict]
_KEYS = ("pixels", "index", "valid")


class Evaluator:
    """Multi-crop scores of dataset parts, batched, in the order of each part's indices."""

    def __init__(self, *, batch_size: int, crop_mode: str, num_crops: int, crop_size: int = 224):
        """`batch_size`: examples per batch on this process."""
        self.batch_size, self.crop_mode = int(batch_size), crop_mode
        self.num_crops, self.crop_size = int(num_crops), int(crop_size)

    def scores(self, predict: Predict, spec: pipeline.DataSpec) -> tuple[np.ndarray, np.ndarray]:
        """`(indices, scores)` of every example of `spec`, in the order of `spec.indices`."""
        out = [predict({k: batch[k] for k in _KEYS}) for batch in pipeline.eval_iterator(
            spec, batch_size=self.batch_size, crop_mode=self.crop_mode,
            num_crops=self.num_crops, crop_size=self.crop_size,
            num_threads=pipeline.host_cores())]
        score, index, valid = (np.concatenate([np.asarray(o[k]) for o in out])
                               for k in ("score", "index", "valid"))
        order = {int(i): k for k, i in enumerate(index[valid])}
        want = np.asarray(spec.all_indices())
        missing = [int(i) for i in want if int(i) not in order]
        if missing:
            raise RuntimeError(f"{spec.name}: evaluation lost examples {missing[:5]}")
        return want, score[valid][[order[int(i)] for i in want]]

    def evaluate(self, predict: Predict, dataset: Dataset, part: str
                 ) -> tuple[dict, np.ndarray, np.ndarray]:
        """`(metrics, indices, scores)` of one part of a dataset; metrics as `compute_metrics`,
        against `quality` (higher is better, whatever the raw score's direction)."""
        indices, scores = self.scores(predict, dataset.part(part))
        quality = dataset.table["quality"][indices]
        return metrics_lib.compute_metrics(scores, quality), indices, scores


def _validation_metrics(scores: np.ndarray, quality: np.ndarray) -> dict:
    # No logistic fit: it is slow and can warn; correlations are what ranks checkpoints.
    return {"srcc": metrics_lib.srcc(scores, quality), "plcc": metrics_lib.plcc(scores, quality),
            "krcc": metrics_lib.krcc(scores, quality), "rmse": metrics_lib.rmse(scores, quality)}


def validation_fn(evaluator: Evaluator, datasets: Sequence[Dataset], part: str
                  ) -> Callable[[Predict], dict]:
    """`eval_fn(predict)`: validation correlations, averaged over datasets (`srcc`, ...), plus
    each dataset's own (`<dataset>_srcc`) when there are several."""
    specs = [(d, d.part(part)) for d in datasets]

    def eval_fn(predict: Predict) -> dict:
        results = {}
        for dataset, spec in specs:
            indices, scores = evaluator.scores(predict, spec)
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


def write_results(workdir, evaluator: Evaluator, predict: Predict, dataset: Dataset, part: str,
                  *, writer: bool = True) -> dict:
    """Evaluates one part, writes `eval/<dataset>-<part>.{json,csv,png}` (when `writer`: one
    process of several), returns its metrics."""
    metrics, indices, scores = evaluator.evaluate(predict, dataset, part)
    if writer:
        report.write_eval(workdir, file_name(dataset.name), part, dataset.table["name"][indices],
                          dataset.table["quality"][indices], scores, metrics,
                          mos=dataset.table["mos"][indices],
                          score_direction=dataset.score_direction,
                          split_source=dataset.split_source)
    return metrics


def evaluate_datasets(workdir, evaluator: Evaluator, predict: Predict, datasets: Sequence[Dataset],
                      parts: Sequence[str], *, whole: Sequence[Dataset] = (),
                      writer: bool = True) -> dict:
    """`{"<dataset>-<part>": metrics}` of `parts` of each of `datasets` and of each of `whole`
    as a whole (cross-dataset), each written as `write_results` does."""
    jobs = [(d, part) for d in datasets for part in parts] + [(d, WHOLE) for d in whole]
    return {f"{file_name(d.name)}-{part}": write_results(workdir, evaluator, predict, d, part,
                                                         writer=writer) for d, part in jobs}
