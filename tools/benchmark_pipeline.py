"""Training throughput of the input pipeline: images/s for 3 random 224 crops from 512x384 JPEGs.

Writes a temporary tfds dataset of JPEGs (scikit-image's photographs, resized to 512x384 and
varied by seeded noise) through a tiny builder, exactly as `mmpiqa prepare` writes real ones,
then times `pipeline.train_iterator` reading it through `tfds.data_source`.

    python tools/benchmark_pipeline.py [--images 256] [--batch 32] [--steps 20] [--workers 0]
"""
import argparse
import io
import os
import sys
import tempfile
import time

import grain
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from mmpiqa_jax.data import pipeline  # noqa: E402  pylint: disable=wrong-import-position
from mmpiqa_jax.data.builders import synthetic_iqa  # noqa: E402  pylint: disable=wrong-import-position
from mmpiqa_jax.data.features import FULL_SPLIT, iqa_features  # noqa: E402  pylint: disable=wrong-import-position


class BenchJpegs(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """`num_images` 512x384 JPEGs (quality 90) with random scores."""

    VERSION = tfds.core.Version("1.0.0")
    num_images = 256

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=iqa_features(),
                                     metadata=tfds.core.MetadataDict())

    def _split_generators(self, dl_manager):
        return {FULL_SPLIT: self._generate_examples()}

    def _generate_examples(self):
        rng = np.random.default_rng(0)
        refs = [synthetic_iqa.load_reference(r, (512, 384)) for r in synthetic_iqa.REFERENCES]
        for i in range(self.num_images):
            noisy = refs[i % len(refs)] + rng.normal(0, 3 + i % 7, refs[0].shape)
            buf = io.BytesIO()
            Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
            mos = float(rng.uniform(1, 5))
            yield i, {"image": buf.getvalue(), "name": f"{i:05d}.jpg", "mos": mos,
                      "mos_std": np.nan, "quality": (mos - 1) / 4, "ref_id": i,
                      "distortion_type": "", "distortion_class": -1, "level": 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        BenchJpegs.num_images = args.images
        builder = BenchJpegs(data_dir=tmp, file_format="array_record")
        builder.download_and_prepare()
        source = builder.as_data_source(split="all", decoders={"image": tfds.decode.SkipDecoding()})
        spec = pipeline.DataSpec(source, batch_size=args.batch, name="bench_jpegs")
        it = pipeline.train_iterator([spec], seed=0, crops_per_image=3,
                                     shard=grain.sharding.NoSharding(),
                                     num_workers=args.workers, num_threads=args.threads)
        for _ in range(2):  # warm up: threads, first reads
            next(it)
        start = time.perf_counter()
        for _ in range(args.steps):
            batch = next(it)
        seconds = time.perf_counter() - start
        it.close()  # stop threads / worker processes before the data disappear
    images = args.steps * args.batch
    print(f"pixels {batch['pixels'].shape} {batch['pixels'].dtype}; {os.cpu_count()} CPUs, "
          f"{args.workers} workers, {args.threads} threads")
    print(f"training pipeline: {images / seconds:.1f} images/s "
          f"({3 * images / seconds:.1f} crops/s of 224x224, 512x384 JPEG, 3 crops per image)")


if __name__ == "__main__":
    main()
