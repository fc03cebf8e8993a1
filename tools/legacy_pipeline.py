"""The input pipeline as it was before per-example parallelism (commit b3e6055), kept as the
peer of `tools/benchmark_pipeline.py` and as the reference of `tests/test_pipeline_parallel.py`.

Its unit of work is a whole batch: each dataset's examples are mapped and batched as a
MapDataset, the datasets zipped, and the batches read by `num_threads` threads (or workers);
crops are CLIP-normalised float32 on the host. Not used by the package.
"""
import grain
import numpy as np
from absl import flags

from mmpiqa_jax.data import pipeline as P
from mmpiqa_jax.data import transforms as T


class TrainMap(grain.transforms.RandomMap):
    """index -> {pixels [crops, s, s, 3] float32, labels}, as before (pillow decodes)."""

    def __init__(self, example, crops, crop_size, crop_mode, flip, rot90=False):
        self.example, self.crops, self.size, self.mode, self.flip, self.rot90 = (
            example, crops, crop_size, crop_mode, flip, rot90)

    def random_map(self, index, rng):
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


class EvalMap(grain.transforms.Map):
    def __init__(self, example, crop_mode, num_crops, crop_size):
        self.example, self.mode, self.num, self.size = example, crop_mode, num_crops, crop_size

    def map(self, element):
        index, valid = element
        image, out = self.example.read(index)
        out["pixels"] = T.normalize(T.eval_crops(image, self.mode, self.num, self.size))
        out["valid"] = np.bool_(valid)
        return out


def _concat(batches):
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def train_dataset(specs, *, seed, crops_per_image=3, crop_size=T.CROP, crop_mode="grid",
                  flip=True, rot90=False, shard=None):
    shard = P._shard_options(shard, drop_remainder=True)  # pylint: disable=protected-access
    per_dataset = []
    for d, spec in enumerate(specs):
        local = spec.batch_size // shard.shard_count
        indices = P.shard_indices(spec.all_indices(), shard)
        ds = (grain.MapDataset.source(indices)
              .shuffle(seed=P._seed(seed, d, 0))  # pylint: disable=protected-access
              .repeat(None)
              .random_map(TrainMap(P._Example(spec, d, libspng=False), crops_per_image, crop_size,  # pylint: disable=protected-access
                                   crop_mode, flip, rot90),
                          seed=P._seed(seed, d, 1))  # pylint: disable=protected-access
              .batch(local, drop_remainder=True))
        per_dataset.append(ds)
    steps = min(len(ds) for ds in per_dataset)
    zipped = grain.experimental.ZipMapDataset([ds[:steps] for ds in per_dataset])
    return zipped.map(_concat)


def _iterator(ds, num_workers, num_threads, prefetch):
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                 prefetch_buffer_size=prefetch))
    if num_workers > 0:
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    return iter(it_ds)


def train_iterator(specs, *, seed, crops_per_image=3, crop_size=T.CROP, crop_mode="grid",
                   flip=True, rot90=False, shard=None, num_workers=0, num_threads=2,
                   prefetch=2):
    ds = train_dataset(specs, seed=seed, crops_per_image=crops_per_image, crop_size=crop_size,
                       crop_mode=crop_mode, flip=flip, rot90=rot90, shard=shard)
    return _iterator(ds, num_workers, num_threads, prefetch)


def eval_iterator(spec, *, batch_size, crop_mode="liqe", num_crops=15, crop_size=T.CROP,
                  dataset_id=0, shard=None, num_workers=0, num_threads=2, prefetch=2):
    shard = P._shard_options(shard, drop_remainder=False)  # pylint: disable=protected-access
    everything = spec.all_indices()
    mine = P.shard_indices(everything, shard)
    length = -(-len(everything) // shard.shard_count)
    elements = [(int(i), True) for i in mine]
    elements += [(int(everything[0]), False)] * (length - len(mine))
    ds = grain.MapDataset.source(elements).map(
        EvalMap(P._Example(spec, dataset_id, libspng=False), crop_mode, num_crops, crop_size))  # pylint: disable=protected-access
    ds = ds.batch(batch_size, batch_fn=lambda items: P._padded_batch(items, batch_size))  # pylint: disable=protected-access
    return _iterator(ds, num_workers, num_threads, prefetch)
