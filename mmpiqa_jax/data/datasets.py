"""The prepared datasets a config names, split into parts, and the training stream over them.

    datasets = training_datasets(config)          # one `Dataset` per `data.batch_sizes` entry
    it = train_iterator(config, datasets)         # LIQE's mix of their `train` parts
    spec = datasets[0].part("test")               # a `pipeline.DataSpec` to evaluate

Training datasets are split as `data.split` says; `config.eval.datasets` are evaluated whole.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from mmpiqa_jax.data import pipeline, registry, split_spec, splits
from mmpiqa_jax.errors import UserError

WHOLE = "all"  # the split name of a dataset evaluated whole (cross-dataset)


def file_name(dataset: str) -> str:
    """A dataset name as in `eval/<dataset>-<split>.*`: `synthetic_iqa/small` -> `..._small`."""
    return dataset.replace("/", "_")


@dataclasses.dataclass
class Dataset:
    """One prepared dataset: its spec (all examples), labels and parts. `table`:
    `splits.read_labels`, with `scenes` [N, 9] and the split files' `distortion_class` where the
    records have none; `score_direction`: the builder's for `mos` ("lower is better", ...)."""
    name: str
    spec: pipeline.DataSpec
    table: dict
    parts: dict[str, np.ndarray]
    score_direction: str = ""
    split_source: str = ""

    def part(self, part: str, batch_size: int = 1) -> pipeline.DataSpec:
        if part not in self.parts:
            raise UserError(f"dataset {self.name!r} has no part {part!r}; it has "
                            f"{', '.join(self.parts)}")
        return dataclasses.replace(self.spec, indices=self.parts[part], batch_size=batch_size)


def open_dataset(name: str, config, *, split: bool = True) -> Dataset:
    """A prepared dataset by name, split as `config.data.split` says for it (or whole)."""
    data_dir = config.data.data_dir or None
    spec = pipeline.open_spec(name, data_dir)
    table = splits.read_labels(spec.source)
    parts, source = {}, "whole"
    if split:
        source = split_spec.parse(config.data.split).source(name)
        imported = split_spec.resolve(
            source, name, table, seed=int(config.data.split_seed),
            official=lambda: splits.official_split(name, data_dir))
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
    direction = registry.get_builder(name, data_dir).info.metadata.get("score_direction", "")
    return Dataset(name, spec, table, parts, str(direction), str(source))


def training_datasets(config) -> list[Dataset]:
    # A malformed or incomplete `data.split` is named before any dataset is opened.
    split_spec.parse(config.data.split, list(config.data.batch_sizes))
    datasets = [open_dataset(name, config) for name in config.data.batch_sizes]
    for d in datasets:
        for part in ("train", config.data.val_part, "test"):
            if part:
                d.part(part)  # a missing part is named now, not after training
    return datasets


def cross_datasets(config) -> list[str]:
    names = list(config.eval.datasets)
    both = sorted(set(names) & set(config.data.batch_sizes))
    if both:
        raise UserError(f"config.eval.datasets {both} are also training datasets: a "
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
                                   flip=d.random_flip, rot90=d.random_rot90,
                                   num_workers=workers, num_threads=d.num_threads,
                                   worker_buffer_size=d.worker_buffer_size or None)
