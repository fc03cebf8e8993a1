"""The grain input pipeline over `tfds.data_source`: LIQE's training mix and multi-crop evaluation.

`train_iterator` is infinite, a step holding `batch_size` examples of each dataset in turn
(LIQE's scheme); `eval_iterator` gives each example once, in dataset order. The batches depend
on `seed` only, not on threads or workers; `get_state()` (JSON) restored by `set_state` on an
iterator built alike continues exactly. Each process reads its shard; batch sizes are global.

Batches (numpy):
  pixels            uint8 [B, crops, 224, 224, 3] RGB
  quality, mos      float32 [B]           (quality in [0, 1], higher is better)
  distortion_class  int32 [B]             (-1 where unknown)
  scenes            float32 [B, 9]        multi-hot, with scene_mask float32 [B] (0 where unknown)
  dataset_id        int32 [B]             position of the dataset in the list given
  ref_id, index     int32 [B]             reference image; index into the source
  valid             bool [B]              (evaluation only) False on padding
"""
import bisect
import dataclasses
import functools
import os
import sys
from collections.abc import Callable, Mapping, Sequence

import grain
import numpy as np
from absl import flags

from mmpiqa_jax import labels
from mmpiqa_jax.data import transforms as T
from mmpiqa_jax.errors import UserError

_MIN_SHM_BYTES = 1 << 16   # arrays from this size leave a worker through shared memory


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """One dataset as the pipeline reads it: `source` (random access to examples), `indices`
    (the examples to use; None: all), `batch_size` (per training step, over all processes),
    `scenes` (float32 [len(source), 9] multi-hot, zero rows or None unknown) and
    `distortion_class` (int32 [len(source)], -1 unknown; None: the records' own)."""
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
            raise UserError(f"dataset {self.name or '?'}: split indices outside [0, {n})")
        return idx


def metadata_scene_labels(metadata: Mapping, source) -> np.ndarray | None:
    """float32 [len(source), 9] multi-hot scenes from a builder's metadata `references` (name of
    ref_id i) and `scenes` (name -> scene words); None where it states neither."""
    refs, scenes = metadata.get("references"), metadata.get("scenes")
    if not refs or not scenes:
        return None
    missing = [ref for ref in refs if ref not in scenes]
    if missing:
        raise UserError(f"builder metadata: reference {missing[0]!r} has no entry in `scenes`")
    from mmpiqa_jax.data.splits import read_labels  # pylint: disable=import-outside-toplevel
    ref_ids = read_labels(source)["ref_id"].astype(int)
    return labels.scene_multi_hot([scenes[ref] for ref in refs])[ref_ids]


def open_spec(name: str, data_dir: str | None = None) -> DataSpec:
    """A `DataSpec` of every example of a prepared dataset, with the scenes its builder states."""
    from mmpiqa_jax.data import registry  # pylint: disable=import-outside-toplevel
    source = registry.load_source(name, "all", data_dir, decode_images=False)
    metadata = registry.get_builder(name, data_dir).info.metadata or {}
    return DataSpec(source, scenes=metadata_scene_labels(metadata, source), name=name)


# ------------------------------------------------------------------------------------------------
# Parallelism.

def host_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def host_workers() -> int:
    """Decoding processes by default: one per core but one (which runs the step), at least one."""
    return max(1, host_cores() - 1)


def _libspng_fits(num_workers: int, num_threads: int) -> bool:
    # libspng holds the GIL, pillow does not: threads of one process decode with pillow.
    return num_workers > 0 or num_threads <= 1


# ------------------------------------------------------------------------------------------------
# Per example.

class _Example:
    """Reads example `index` of a source: decoded image and labels (no crops yet)."""

    def __init__(self, spec: DataSpec, dataset_id: int, libspng: bool = True):
        self.source, self.scenes, self.dataset_id = spec.source, spec.scenes, dataset_id
        self.libspng = libspng
        self.classes = spec.distortion_class
        self.name = spec.name or f"dataset {dataset_id}"

    def labels(self, index: int, record: Mapping) -> dict:
        scenes = (np.zeros(labels.NUM_SCENES, np.float32) if self.scenes is None
                  else np.asarray(self.scenes[index], np.float32))
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
        """(uint8 RGB pixels [h, w, 3], labels) of example `index`."""
        record = self.source[int(index)]
        try:
            image = T.decode_array(record["image"], libspng=self.libspng)
        except Exception as e:  # a corrupt image names its dataset and example
            raise UserError(f"{self.name}: cannot decode image of example {index} "
                            f"({record.get('name')!r}): {e}") from e
        return image, self.labels(int(index), record)


class _TrainMap(grain.transforms.RandomMap):
    """index -> {pixels [crops, s, s, 3], labels}: flip, LIQE resize, random crops, turns."""

    def __init__(self, example: _Example, crops: int, crop_size: int, crop_mode: str, flip: bool,
                 rot90: bool = False):
        self.example, self.crops, self.size, self.mode, self.flip, self.rot90 = (
            example, crops, crop_size, crop_mode, flip, rot90)

    def random_map(self, index, rng: np.random.Generator):
        image, out = self.example.read(index)
        image = T.liqe_resize(image, crop=self.size)
        mirror = bool(self.flip and rng.random() < 0.5)
        h, w = image.shape[:2]
        pos = T.random_positions(h, w, self.crops, rng, self.size, self.mode)
        crops = T.take_crops(image, pos, self.size, mirror=mirror)
        if self.rot90:
            crops = T.random_rot90(crops, rng)
        out["pixels"] = np.ascontiguousarray(crops)
        return out


class _EvalMap(grain.transforms.Map):
    """(index, valid) -> {pixels [crops, s, s, 3], labels, valid}: deterministic crops."""

    def __init__(self, example: _Example, crop_mode: str, num_crops: int, crop_size: int):
        self.example, self.mode, self.num, self.size = example, crop_mode, num_crops, crop_size

    def map(self, element):
        index, valid = element
        image, out = self.example.read(index)
        try:
            crops = T.eval_crops(image, self.mode, self.num, self.size)
        except ValueError as e:  # `pyiqa` crops of an image smaller than a crop
            raise UserError(f"{self.example.name}: example {index}: {e}") from e
        if self.mode == "pyiqa" and len(crops) != self.num:
            # pyiqa takes fewer from a small image; a batch holds one number of crops
            h, w = np.shape(image)[:2]
            raise UserError(f"{self.example.name}: example {index}: {self.mode!r} crops give "
                            f"{len(crops)} crops of its {w}x{h} image, not {self.num}; "
                            "score such images with `mmpiqa score`, which batches by count")
        out["pixels"] = np.ascontiguousarray(crops)
        out["valid"] = np.bool_(valid)
        return out


# ------------------------------------------------------------------------------------------------
# Sharding.

def _shard_options(shard, drop_remainder: bool) -> grain.sharding.ShardOptions:
    if shard is None:
        return grain.sharding.ShardByJaxProcess(drop_remainder=drop_remainder)
    return shard


def shard_indices(indices: np.ndarray, shard: grain.sharding.ShardOptions) -> np.ndarray:
    """Every `shard_count`-th of `indices` from `shard_index` (less the remainder if asked)."""
    indices = np.asarray(indices)
    if shard.drop_remainder:
        indices = indices[: len(indices) // shard.shard_count * shard.shard_count]
    return indices[shard.shard_index::shard.shard_count]


def process_quotas(sizes: Sequence[int], num_processes: int, process_index: int
                   ) -> list[tuple[int, ...]]:
    """Per dataset d, the positions (of 0 .. sizes[d] - 1) that `process_index` reads when a
    global step's examples are dealt out round-robin; `sum(sizes)` must divide by the count."""
    total = int(sum(sizes))
    if total % num_processes:
        raise UserError(f"the batch of {total} examples per step ({list(sizes)}) does not "
                        f"divide by the {num_processes} processes; "
                        f"{nearest_multiples(total, num_processes)}")
    quotas, offset = [], 0
    for size in sizes:
        mine = [r for r in range(size) if (offset + r) % num_processes == process_index]
        quotas.append(tuple(mine))
        offset += size
    return quotas


def nearest_multiples(value: int, multiple: int) -> str:
    """The multiples of `multiple` just below and above `value`, for an error message."""
    below, above = value // multiple * multiple, -(-value // multiple) * multiple
    sizes = [s for s in (below, above) if s > 0]
    return "the nearest sizes that do: " + " or ".join(map(str, sizes))


def quota_indices(indices: np.ndarray, size: int, slots: Sequence[int]) -> np.ndarray:
    """This process's examples of a dataset read `size` per step: positions i with `i % size`
    in `slots`, less the last incomplete step's worth (all processes' epochs equal)."""
    indices = np.asarray(indices)
    indices = indices[: len(indices) // size * size]
    return indices[np.isin(np.arange(len(indices)) % size, slots)]


def _seed(*parts: int) -> int:
    """A 32-bit seed from several integers (grain wants seeds below 2**32)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


# ------------------------------------------------------------------------------------------------
# Training.

class _StepOrder(grain.MapDataset):
    """The examples of several datasets in step order: a step of B = sum(sizes) holds `sizes[0]`
    of parent 0, then `sizes[1]` of parent 1, ...; parent d's k * sizes[d] + r is the r-th."""

    def __init__(self, parents: Sequence[grain.MapDataset], sizes: Sequence[int], steps: int):
        super().__init__(list(parents))
        self._sizes = [int(s) for s in sizes]
        self._offsets = np.cumsum([0] + self._sizes).tolist()
        self._batch = self._offsets[-1]
        self._length = int(steps) * self._batch

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        step, pos = divmod(int(index), self._batch)
        d = bisect.bisect_right(self._offsets, pos) - 1
        return self._parents[d][step * self._sizes[d] + pos - self._offsets[d]]


def _iterator(examples: grain.MapDataset, batch_size: int, *, num_workers: int,
              num_threads: int, worker_buffer_size: int | None = None,
              batch_fn: Callable | None = None, drop_remainder: bool = True):
    """Batches of `examples` in order, stacked by `num_threads` threads or in each worker."""
    if num_workers < 0 or num_threads < 0:
        raise UserError(f"num_workers={num_workers} and num_threads={num_threads} must be >= 0")
    if num_workers == 0:
        it_ds = examples.to_iter_dataset(grain.ReadOptions(
            num_threads=num_threads, prefetch_buffer_size=2 * batch_size))
        return iter(it_ds.batch(batch_size, drop_remainder=drop_remainder, batch_fn=batch_fn))
    if not flags.FLAGS.is_parsed():
        # grain's workers read absl flags, which scripts not run by absl.app never parse
        # (google/grain#1355): use their defaults.
        flags.FLAGS.mark_as_parsed()
    # Batch k is examples [k B, (k + 1) B) whoever builds it: worker w builds batches w, w + W,
    # ... and grain hands them out round-robin, so the batches do not depend on W or threads.
    batches = examples.batch(batch_size, drop_remainder=drop_remainder, batch_fn=batch_fn)
    it_ds = batches.to_iter_dataset(grain.ReadOptions(
        num_threads=num_threads, prefetch_buffer_size=max(1, num_threads)))
    buffer = worker_buffer_size or 2 * batch_size
    it_ds = grain.experimental.WithOptionsIterDataset(
        it_ds, grain.experimental.DatasetOptions(min_shm_size=_MIN_SHM_BYTES))
    return iter(it_ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=num_workers, per_worker_buffer_size=max(1, -(-buffer // batch_size)))))


def train_iterator(specs: Sequence[DataSpec], *, seed: int, crops_per_image: int = 3,
                   crop_size: int = T.CROP, crop_mode: str = "grid", flip: bool = True,
                   rot90: bool = False, shard: grain.sharding.ShardOptions | None = None,
                   num_workers: int = 0, num_threads: int = 2,
                   worker_buffer_size: int | None = None) -> grain.DatasetIterator:
    """The infinite training batches (module doc).

    crop_mode: `grid` (among LIQE's stride-grid positions, as LIQE trains) or `random`.
    flip: a random horizontal flip per image; rot90: each crop turned by k * 90 degrees, k random.
    num_workers: decoding processes (0: `num_threads` threads of this one); worker_buffer_size:
      examples each worker keeps ready (None: two batches).
    """
    if not specs:
        raise UserError("train_iterator: no datasets given")
    if crop_mode not in ("grid", "random"):
        raise UserError(f"unknown train crop mode {crop_mode!r}; expected 'grid' or 'random'")
    libspng = _libspng_fits(num_workers, num_threads)
    shard = _shard_options(shard, drop_remainder=True)
    count = shard.shard_count
    # Sizes that divide by the process count keep the plain shards, others get quotas.
    even = all(spec.batch_size % count == 0 for spec in specs)
    quotas = None if even else process_quotas([s.batch_size for s in specs], count,
                                              shard.shard_index)
    per_dataset, sizes = [], []
    for d, spec in enumerate(specs):
        if quotas is None:
            local = spec.batch_size // count
            indices = shard_indices(spec.all_indices(), shard)
        else:
            local = len(quotas[d])
            if not local:  # the other processes read this dataset's part of every step
                continue
            indices = quota_indices(spec.all_indices(), spec.batch_size, quotas[d])
        if local < 1 or len(indices) < 1:
            raise UserError(f"{spec.name or f'dataset {d}'}: nothing to read (batch size {local} "
                            f"per process, {len(indices)} examples in shard {shard.shard_index})")
        # The per-example randomness is that of the example's position in its dataset's
        # stream (seed + position), whoever reads it: threads and workers change nothing.
        ds = (grain.MapDataset.source(indices)
              .shuffle(seed=_seed(seed, d, 0))          # a new order every epoch (seed + epoch)
              .repeat(None)
              .random_map(_TrainMap(_Example(spec, d, libspng), crops_per_image, crop_size,
                                    crop_mode, flip, rot90), seed=_seed(seed, d, 1)))
        per_dataset.append(ds)
        sizes.append(local)
    # All are (practically) infinite; cut them to one number of steps.
    batch = sum(sizes)
    steps = min(min(len(ds) // b for ds, b in zip(per_dataset, sizes)), sys.maxsize // batch)
    return _iterator(_StepOrder(per_dataset, sizes, steps), batch, num_workers=num_workers,
                     num_threads=num_threads, worker_buffer_size=worker_buffer_size)


def train_element_spec(config) -> dict:
    """{key: jax.ShapeDtypeStruct} of one global training batch made from `config.data`."""
    import jax  # pylint: disable=import-outside-toplevel
    d = config.data
    b = int(sum(d.batch_sizes.values()))
    pixels = (b, int(d.crops_per_image), int(d.crop_size), int(d.crop_size), 3)
    shapes = {"pixels": (pixels, np.uint8),
              "quality": ((b,), np.float32), "mos": ((b,), np.float32),
              "distortion_class": ((b,), np.int32), "scenes": ((b, labels.NUM_SCENES), np.float32),
              "scene_mask": ((b,), np.float32), "dataset_id": ((b,), np.int32),
              "ref_id": ((b,), np.int32), "index": ((b,), np.int32)}
    return {k: jax.ShapeDtypeStruct(shape, dtype) for k, (shape, dtype) in shapes.items()}


# ------------------------------------------------------------------------------------------------
# Evaluation.

def _padded_batch(items: Sequence[dict], size: int) -> dict:
    pad = [dict(items[-1], valid=np.bool_(False))] * (size - len(items))
    items = list(items) + pad
    return {k: np.stack([it[k] for it in items]) for k in items[0]}


def eval_iterator(spec: DataSpec, *, batch_size: int, crop_mode: str = "liqe", num_crops: int = 15,
                  crop_size: int = T.CROP, shard: grain.sharding.ShardOptions | None = None,
                  num_workers: int = 0, num_threads: int = 2) -> grain.DatasetIterator:
    """Each example of this process's shard once, in dataset order; `valid` False on padding.
    crop_mode: see `transforms.eval_crops`. Every process gets as many batches."""
    if crop_mode not in T.EVAL_CROP_MODES:
        raise UserError(f"unknown eval crop mode {crop_mode!r}; expected one of "
                        f"{T.EVAL_CROP_MODES}")
    shard = _shard_options(shard, drop_remainder=False)
    everything = spec.all_indices()
    if not len(everything):
        raise UserError(f"{spec.name or 'dataset'}: no examples to evaluate")
    mine = shard_indices(everything, shard)
    length = -(-len(everything) // shard.shard_count)  # the longest shard
    elements = [(int(i), True) for i in mine]
    elements += [(int(everything[0]), False)] * (length - len(mine))
    example = _Example(spec, 0, _libspng_fits(num_workers, num_threads))
    ds = grain.MapDataset.source(elements).map(_EvalMap(example, crop_mode, num_crops, crop_size))
    return _iterator(ds, batch_size, num_workers=num_workers, num_threads=num_threads,
                     batch_fn=functools.partial(_padded_batch, size=batch_size),
                     drop_remainder=False)
