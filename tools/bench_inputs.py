"""The fixed synthetic batch and loss weights that the benchmark and the reference check share.

Free of torch, so that the JAX side of `tools/benchmark.py` runs (and is measured) without it.
"""
import numpy as np

from mmpiqa_jax import labels


def random_batch(rng: np.random.Generator, images: int, crops: int, resolution: int) -> dict:
    """A fixed synthetic batch in the JAX layout: two datasets, every label present."""
    scenes = (rng.random((images, labels.NUM_SCENES)) < 0.3).astype(np.float32)
    scenes[np.arange(images), rng.integers(0, labels.NUM_SCENES, images)] = 1.0
    return {
        "pixels": rng.normal(size=(images, crops, resolution, resolution, 3)).astype(np.float32),
        "quality": rng.random(images).astype(np.float32),
        "mos": rng.random(images).astype(np.float32),
        "distortion_class": rng.integers(0, labels.NUM_DISTORTIONS, images).astype(np.int32),
        "scenes": scenes,
        "scene_mask": np.ones(images, bool),
        "dataset_id": ((np.arange(images) // 2) % 2).astype(np.int32),  # pairs in each
    }


LOSS_WEIGHTS = np.asarray([1.0, 1.0, 1.0, 0.0, 0.0], np.float32)  # step.TASKS order
