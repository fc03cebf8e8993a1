"""Compiles one LIQE training step (default ViT-L/14, full fine-tuning, LIQE's batch of 48 x 3
crops) under each sharding strategy on fake CPU devices and prints XLA's per-device memory:
arguments (state + batch), outputs, temporaries. Nothing is allocated: state and batch are
abstract, so a ViT-L/14 fits a laptop.

    python tools/sharding_memory.py [--variant ViT-L/14] [--devices 8]

The process sets XLA_FLAGS itself (before JAX starts) to get `--devices` CPU devices.
"""
from __future__ import annotations

import argparse
import os
import sys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="ViT-L/14")
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--strategies", default="replicate,fsdp")
    args = parser.parse_args()
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.devices}")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import jax
    import numpy as np
    from bench_inputs import random_batch

    from mmpiqa_jax import config as config_lib
    from mmpiqa_jax.train import sharding, trainer
    from mmpiqa_jax.train.task import IQATask

    rows = {}
    for name in args.strategies.split(","):
        config = config_lib.load_config(
            f"configs/liqe.py:variant={args.variant},checkpoint=random",
            [f"sharding.strategy={name}"])
        config.data.crop_size = {"ViT-L/14@336px": 336}.get(args.variant, 224)
        task = IQATask(config)
        strategy = sharding.strategy_of(config)
        mesh = sharding.make_mesh(jax.devices()[:args.devices])
        with jax.set_mesh(mesh):
            state, shardings = trainer.abstract_state(task, mesh, jax.random.key(0), strategy)
            host = random_batch(np.random.default_rng(0), config.batch_size,
                                config.data.crops_per_image, config.data.crop_size)
            batch_sharding = sharding.batch_sharding(mesh)
            batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sharding)
                     for k, v in host.items()}
            step = jax.jit(task.train_step, in_shardings=(shardings, batch_sharding),
                           out_shardings=(shardings, sharding.replicated(mesh)),
                           donate_argnums=0)
            memory = step.lower(state, batch).compile().memory_analysis()
        summary = sharding.summarize(state, shardings, strategy)
        rows[name] = memory
        print(f"{args.variant} LIQE step, {name:9s} mesh {dict(mesh.shape)}: per device "
              f"arguments {memory.argument_size_in_bytes / 2**20:9.1f} MiB, outputs "
              f"{memory.output_size_in_bytes / 2**20:9.1f} MiB, temporaries "
              f"{memory.temp_size_in_bytes / 2**20:9.1f} MiB; state "
              f"{summary.bytes_per_device / 2**20:.1f} of {summary.bytes_total / 2**20:.1f} MiB; "
              f"large leaves replicated: {len(summary.replicated)}", flush=True)
    if sharding.REPLICATE in rows:
        base = rows[sharding.REPLICATE].argument_size_in_bytes
        for name, memory in rows.items():
            print(f"{name}: arguments {memory.argument_size_in_bytes / base:.3f} of replicate's")


if __name__ == "__main__":
    main()
