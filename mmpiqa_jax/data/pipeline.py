"""The grain input pipeline over `tfds.data_source`: LIQE's training mix and multi-crop evaluation.

Training (`train_iterator`) is infinite. Every step takes a fixed number of examples from each
dataset (LIQE's scheme), so one batch holds, in order, `batch_size` examples of dataset 0, then
of dataset 1, ... Each dataset is reshuffled every epoch. Per example, `crops_per_image` random
224 crops of one (randomly flipped) image, after LIQE's resize. All randomness comes from
`seed`, the dataset and the example's position in the stream, never from the worker count.

Evaluation (`eval_iterator`) visits each example once in dataset order, with LIQE's 15 grid crops,
one centre crop, or the whole image resized to 224; the last batch is padded (`valid` False).

Multi-host: each process reads only its shard, `indices[process_index::process_count]`
(`grain.sharding.ShardByJaxProcess` by default; pass `shard=grain.sharding.ShardOptions(...)`
to override). Training batch sizes are global: each process takes `batch_size / process_count`.

The iterators' `get_state()` is a small JSON-serialisable dict; `set_state` on a fresh iterator
built with the same arguments continues with exactly the next batch.

Batches (numpy):
  pixels            float32 [B, crops, 224, 224, 3], CLIP-normalised
  quality, mos      float32 [B]           (quality in [0, 1], higher is better)
  distortion_class  int32 [B]             (-1 where unknown)
  scenes            float32 [B, 9]        multi-hot, with scene_mask float32 [B] (0 where unknown)
  dataset_id        int32 [B]             position of the dataset in the list given
  ref_id, index     int32 [B]             reference image; index into the source
  valid             bool [B]              (evaluation only) False on padding
"""
import dataclasses
import functools
from collections.abc import Mapping, Sequence

import grain
import numpy as np
from absl import flags

from mmpiqa_jax import labels
from mmpiqa_jax.data import transforms as T

CROP_MODES = T.EVAL_CROP_MODES


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """One dataset as the pipeline reads it.

    source: random access to examples (a `tfds.data_source`; `registry.load_source` with
      `decode_images=False` is cheapest, the pipeline decodes the images itself).
    indices: the examples to use (a part of a split); all when None.
    batch_size: examples per training step from this dataset, over all processes.
    scenes: [len(source), 9] multi-hot scene labels; a zero row means unknown. None: unknown.
    distortion_class: [len(source)] int32 classes (-1 unknown) in place of the records' own
      (split files label in-the-wild images). None: the records'.
    """
    source: Sequence[Mapping]
    indices: np.ndarray | None = None
    batch_size: int = 1
    scenes: np.ndarray | None = None
    name: str = ""
    distortion_class: np.ndarray | None = None

    def all_indices(self) -> np.ndarray:
        n = len(self.source)
        if self.indices is None:
            return np.arange(n, dtype=np.int64)
        idx = np.asarray(self.indices, np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"dataset {self.name or '?'}: split indices outside [0, {n})")
        return idx


def open_spec(name: str, indices=None, batch_size: int = 1, split: str = "all",
              data_dir: str | None = None, scenes: np.ndarray | None = None) -> DataSpec:
    """A `DataSpec` for a prepared dataset by name; `synthetic_iqa` gets its scene table."""
    from mmpiqa_jax.data import registry  # pylint: disable=import-outside-toplevel
    source = registry.load_source(name, split, data_dir, decode_images=False)
    if scenes is None and name.partition("/")[0] == "synthetic_iqa":
        from mmpiqa_jax.data.builders import synthetic_iqa  # pylint: disable=import-outside-toplevel
        from mmpiqa_jax.data.splits import read_labels  # pylint: disable=import-outside-toplevel
        refs = registry.get_builder(name, data_dir).builder_config.references
        scenes = synthetic_iqa.scene_labels(read_labels(source)["ref_id"], refs)
    return DataSpec(source, indices, batch_size, scenes, name)


# ------------------------------------------------------------------------------------------------
# Per example.

class _Example:
    """Reads example `index` of a source: decoded image and labels (no crops yet)."""

    def __init__(self, spec: DataSpec, dataset_id: int):
        self.source, self.scenes, self.dataset_id = spec.source, spec.scenes, dataset_id
        self.classes = spec.distortion_class
        self.name = spec.name or f"dataset {dataset_id}"

    def labels(self, index: int, record: Mapping) -> dict:
        if self.scenes is not None:
            scenes = np.asarray(self.scenes[index], np.float32)
        else:
            scenes = np.zeros(labels.NUM_SCENES, np.float32)
        return {
            "quality": np.float32(record["quality"]),
            "mos": np.float32(record["mos"]),
            "distortion_class": np.int32(record["distortion_class"] if self.classes is None
                                         else self.classes[index]),
            "scenes": scenes,
            "scene_mask": np.float32(scenes.any()),
            "dataset_id": np.int32(self.dataset_id),
            "ref_id": np.int32(record["ref_id"]),
            "index": np.int32(index),
        }

    def read(self, index: int):
        record = self.source[int(index)]
        try:
            image = T.decode_rgb(record["image"])
        except Exception as e:  # a corrupt image names its dataset and example
            raise ValueError(f"{self.name}: cannot decode image of example {index} "
                             f"({record.get('name')!r}): {e}") from e
        return image, self.labels(int(index), record)


class _TrainMap(grain.transforms.RandomMap):
    """index -> {pixels [crops, s, s, 3], labels}: flip, LIQE resize, random crops, and (with
    `rot90`) each crop turned by a random multiple of 90 degrees."""

    def __init__(self, example: _Example, crops: int, crop_size: int, crop_mode: str, flip: bool,
                 rot90: bool = False):
        self.example, self.crops, self.size, self.mode, self.flip, self.rot90 = (
            example, crops, crop_size, crop_mode, flip, rot90)

    def random_map(self, index, rng: np.random.Generator):
        image, out = self.example.read(index)
        image = np.asarray(T.liqe_resize(image, crop=self.size))
        if self.flip and rng.random() < 0.5:
            image = image[:, ::-1]
        h, w = image.shape[:2]
        pos = T.random_positions(h, w, self.crops, rng, self.size, self.mode)
        crops = T.take_crops(image, pos, self.size)
        if self.rot90:
            crops = T.random_rot90(crops, rng)
        out["pixels"] = T.normalize(crops)
        return out


class _EvalMap(grain.transforms.Map):
    """(index, valid) -> {pixels [crops, s, s, 3], labels, valid}: deterministic crops."""

    def __init__(self, example: _Example, crop_mode: str, num_crops: int, crop_size: int):
        self.example, self.mode, self.num, self.size = example, crop_mode, num_crops, crop_size

    def map(self, element):
        index, valid = element
        image, out = self.example.read(index)
        out["pixels"] = T.normalize(T.eval_crops(image, self.mode, self.num, self.size))
        out["valid"] = np.bool_(valid)
        return out


# ------------------------------------------------------------------------------------------------
# Sharding.

def _shard_options(shard, drop_remainder: bool) -> grain.sharding.ShardOptions:
    return grain.sharding.ShardByJaxProcess(drop_remainder=drop_remainder) if shard is None else shard


def shard_indices(indices: np.ndarray, shard: grain.sharding.ShardOptions) -> np.ndarray:
    """This process's examples: every `shard_count`-th from `shard_index` (all shards disjoint;
    together they cover `indices`, less the remainder when `drop_remainder`)."""
    indices = np.asarray(indices)
    if shard.drop_remainder:
        indices = indices[: len(indices) // shard.shard_count * shard.shard_count]
    return indices[shard.shard_index::shard.shard_count]


def _seed(*parts: int) -> int:
    """A 32-bit seed from several integers (grain wants seeds below 2**32)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


# ------------------------------------------------------------------------------------------------
# Training.

def train_dataset(specs: Sequence[DataSpec], *, seed: int, crops_per_image: int = 3,
                  crop_size: int = T.CROP, crop_mode: str = "grid", flip: bool = True,
                  rot90: bool = False, shard: grain.sharding.ShardOptions | None = None
                  ) -> grain.MapDataset:
    """The infinite MapDataset of training steps (element k = batch k), see the module doc.

    crop_mode: `grid` draws crops among LIQE's stride-grid positions, as LIQE's training does;
      `random` anywhere.
    flip: a random horizontal flip of each image (LIQE's); rot90: each crop also turned by a
      random multiple of 90 degrees, so that with `flip` crops take all 8 orientations.
    """
    if not specs:
        raise ValueError("train_dataset: no datasets given")
    if crop_mode not in ("grid", "random"):
        raise ValueError(f"unknown train crop mode {crop_mode!r}; expected 'grid' or 'random'")
    shard = _shard_options(shard, drop_remainder=True)
    per_dataset = []
    for d, spec in enumerate(specs):
        name = spec.name or f"dataset {d}"
        if spec.batch_size % shard.shard_count:
            raise ValueError(f"{name}: batch size {spec.batch_size} is not divisible by the "
                             f"{shard.shard_count} processes")
        local = spec.batch_size // shard.shard_count
        indices = shard_indices(spec.all_indices(), shard)
        if local < 1 or len(indices) < 1:
            raise ValueError(f"{name}: nothing to read (batch size {local} per process, "
                             f"{len(indices)} examples in shard {shard.shard_index})")
        ds = (grain.MapDataset.source(indices)
              .shuffle(seed=_seed(seed, d, 0))          # a new order every epoch (seed + epoch)
              .repeat(None)
              .random_map(_TrainMap(_Example(spec, d), crops_per_image, crop_size, crop_mode,
                                    flip, rot90), seed=_seed(seed, d, 1))
              .batch(local, drop_remainder=True))
        per_dataset.append(ds)
    # All are (practically) infinite; cut them to one length so that they can be zipped.
    steps = min(len(ds) for ds in per_dataset)
    zipped = grain.experimental.ZipMapDataset([ds[:steps] for ds in per_dataset])
    return zipped.map(_concat)


def _concat(batches) -> dict:
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def _iterator(ds: grain.MapDataset, num_workers: int, num_threads: int, prefetch: int):
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                 prefetch_buffer_size=prefetch))
    if num_workers > 0:
        if not flags.FLAGS.is_parsed():
            # grain's workers read absl flags, which scripts not run by absl.app never parse
            # (google/grain#1355): use their defaults.
            flags.FLAGS.mark_as_parsed()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    return iter(it_ds)


def train_iterator(specs: Sequence[DataSpec], *, seed: int, crops_per_image: int = 3,
                   crop_size: int = T.CROP, crop_mode: str = "grid", flip: bool = True,
                   rot90: bool = False, shard: grain.sharding.ShardOptions | None = None,
                   num_workers: int = 0,
                   num_threads: int = 2, prefetch: int = 2) -> grain.DatasetIterator:
    """Iterator over training batches; `num_workers` > 0 decodes in that many processes,
    `num_threads` threads assemble `prefetch` batches ahead in each."""
    ds = train_dataset(specs, seed=seed, crops_per_image=crops_per_image, crop_size=crop_size,
                       crop_mode=crop_mode, flip=flip, rot90=rot90, shard=shard)
    return _iterator(ds, num_workers, num_threads, prefetch)


# ------------------------------------------------------------------------------------------------
# Evaluation.

def eval_dataset(spec: DataSpec, *, batch_size: int, crop_mode: str = "liqe", num_crops: int = 15,
                 crop_size: int = T.CROP, dataset_id: int = 0,
                 shard: grain.sharding.ShardOptions | None = None) -> grain.MapDataset:
    """Batches of every example of this process's shard once, in dataset order.

    crop_mode: `liqe` (LIQE's `num_crops` grid crops), `center` (one) or `full` (the whole image
    resized to 224, one). Every process gets the same number of batches: shards are padded to
    equal length and the last batch to `batch_size`, with `valid` False on padding.
    """
    if crop_mode not in CROP_MODES:
        raise ValueError(f"unknown eval crop mode {crop_mode!r}; expected one of {CROP_MODES}")
    shard = _shard_options(shard, drop_remainder=False)
    everything = spec.all_indices()
    if not len(everything):
        raise ValueError(f"{spec.name or 'dataset'}: no examples to evaluate")
    mine = shard_indices(everything, shard)
    length = -(-len(everything) // shard.shard_count)  # the longest shard
    elements = [(int(i), True) for i in mine]
    elements += [(int(everything[0]), False)] * (length - len(mine))
    ds = grain.MapDataset.source(elements).map(
        _EvalMap(_Example(spec, dataset_id), crop_mode, num_crops, crop_size))
    return ds.batch(batch_size, batch_fn=functools.partial(_padded_batch, size=batch_size))


def _padded_batch(items: Sequence[dict], size: int) -> dict:
    pad = [dict(items[-1], valid=np.bool_(False))] * (size - len(items))
    items = list(items) + pad
    return {k: np.stack([it[k] for it in items]) for k in items[0]}


def eval_iterator(spec: DataSpec, *, batch_size: int, crop_mode: str = "liqe", num_crops: int = 15,
                  crop_size: int = T.CROP, dataset_id: int = 0,
                  shard: grain.sharding.ShardOptions | None = None, num_workers: int = 0,
                  num_threads: int = 2, prefetch: int = 2) -> grain.DatasetIterator:
    """Iterator over `eval_dataset`'s batches."""
    ds = eval_dataset(spec, batch_size=batch_size, crop_mode=crop_mode, num_crops=num_crops,
                      crop_size=crop_size, dataset_id=dataset_id, shard=shard)
    return _iterator(ds, num_workers, num_threads, prefetch)
