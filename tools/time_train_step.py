"""Seconds per training step of a config, as `mmpiqa train` runs it (no data needed).

    python tools/time_train_step.py --config configs/liqe.py:checkpoint=random
    python tools/time_train_step.py --config configs/mpiqe.py:checkpoint=random --steps 5

The config's own batch (`batch_size` images of `data.crops_per_image` crops, one block per
dataset of `data.batch_sizes`) of random pixels and labels goes through `IQATask.train_step`,
jitted with the state donated as the trainer does; CLIP's weights are random (`random`), which
costs the same as pretrained ones. Prints the compile time and the median of the timed steps.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import numpy as np

sys.path[:0] = [os.path.abspath(os.path.join(os.path.dirname(__file__), "..")),
                os.path.dirname(os.path.abspath(__file__))]

import bench_inputs  # noqa: E402
from mmpiqa_jax import config as config_lib  # noqa: E402
from mmpiqa_jax.train import sharding, trainer  # noqa: E402
from mmpiqa_jax.train.task import IQATask  # noqa: E402


def config_batch(config, rng: np.random.Generator) -> dict:
    """Random pixels and labels in the config's batch layout (dataset blocks in order)."""
    d = config.data
    batch = bench_inputs.random_batch(rng, config.batch_size, d.crops_per_image, d.crop_size)
    batch["dataset_id"] = np.repeat(np.arange(len(d.batch_sizes)),
                                    list(d.batch_sizes.values())).astype(np.int32)
    batch["scene_mask"] = batch["scene_mask"].astype(np.float32)
    return batch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="FILE[:ARGS], as for mmpiqa train")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up)")
    args = p.parse_args(argv)
    config = config_lib.load_config(args.config, args.overrides)
    task = IQATask(config)
    # Born as the trainer makes it: every leaf its own buffer, so all can be donated.
    rng = jax.random.key(config.seed)
    shardings = trainer.abstract_state(task, sharding.make_mesh(), rng)[1]
    state = trainer.fresh_state(task, rng, shardings)
    batch = config_batch(config, np.random.default_rng(0))
    step = jax.jit(task.train_step, donate_argnums=0)
    start = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(args.steps + 1):
        start = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics["loss"])
        times.append(time.perf_counter() - start)
    median = statistics.median(times[1:])
    print(f"{args.config} {' '.join(args.overrides)}: {config.model.name} on "
          f"{config.model.variant}, {config.batch_size} images x {config.data.crops_per_image} "
          f"crops of {config.data.crop_size} px, {config.model.dtype}; {jax.device_count()} "
          f"{jax.devices()[0].platform} device(s)")
    print(f"compile {compile_s:.1f} s; step {median:.2f} s (median of {args.steps}, "
          f"{config.batch_size / median:.2f} images/s); loss {float(metrics['loss']):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
