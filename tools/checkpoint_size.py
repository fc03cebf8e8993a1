"""Trains one step of a random-init prompt-learning MP-IQE (default ViT-B/32) on a synthetic
batch, saves it as the trainer does, and prints the step checkpoint's size beside the frozen
backbone's (written once per workdir), then restores it without the optimiser state.

    PYTHONPATH=. python tools/checkpoint_size.py [--variant ViT-B/32] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from mmpiqa_jax import config as config_lib
from mmpiqa_jax.train import checkpointing, inference, trainer
from mmpiqa_jax.train.task import IQATask


def du(path) -> int:
    """Bytes of the files under `path`."""
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def synthetic_batch(n: int, res: int, crops: int) -> dict:
    rng = np.random.default_rng(0)
    return {"pixels": jnp.asarray(rng.normal(size=(n, crops, res, res, 3)), jnp.float32),
            "quality": jnp.asarray(rng.random(n), jnp.float32),
            "dataset_id": jnp.zeros(n, jnp.int32),
            "distortion_class": jnp.asarray(rng.integers(0, 11, n), jnp.int32),
            "scenes": jnp.ones((n, 9), jnp.float32), "scene_mask": jnp.ones(n, bool),
            "valid": jnp.ones(n, bool)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="ViT-B/32")
    parser.add_argument("--workdir", default=None, help="default: a temporary folder")
    args = parser.parse_args()
    config = config_lib.load_config(f"configs/mpiqe.py:variant={args.variant}",
                                    ["model.clip_checkpoint=random", "data.crops_per_image=1",
                                     "mesh.data=1"])
    config.data.batch_sizes = {"synthetic": 2}
    config.batch_size = 2
    workdir = args.workdir or tempfile.mkdtemp(prefix="checkpoint_size_")
    task = IQATask(config)
    state = jax.jit(task.init_state)(jax.random.key(0))
    res = config.data.crop_size
    state, metrics = jax.jit(task.train_step)(state, synthetic_batch(2, res, 1))
    print(f"step 1 of {args.variant} MP-IQE: loss {float(metrics['loss']):.4f}")
    trainer.write_config(config, workdir)
    directory = os.path.join(workdir, trainer.CHECKPOINT_DIR)
    with checkpointing.Checkpointer(directory, async_save=False,
                                    model_cfg=checkpointing.run_identity(config)) as ckpt:
        ckpt.save(1, state)
        ckpt.wait()
    nbytes = lambda tree: sum(x.nbytes for x in jax.tree.leaves(tree))
    step_dir = os.path.join(directory, "1")
    print(f"trainable parameters: {nbytes(state.params) / 2**20:.2f} MiB in memory; "
          f"frozen state: {nbytes(state.frozen) / 2**20:.1f} MiB in memory")
    print(f"step checkpoint {step_dir}: {du(step_dir) / 2**20:.2f} MiB on disk")
    backbone = os.path.join(workdir, checkpointing.BACKBONE_DIR)
    print(f"frozen backbone {backbone} (written once per workdir): "
          f"{du(backbone) / 2**20:.1f} MiB on disk")
    restored = trainer.load_state(task, config, workdir)
    assert restored.opt_state is None
    same = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), restored.params, state.params)
    print(f"restored without optimiser state: params equal = {all(jax.tree.leaves(same))}")
    model, _ = inference.load_model(workdir)
    print("load_for_inference (eval/export path): ok,", type(model).__name__)


if __name__ == "__main__":
    main()
