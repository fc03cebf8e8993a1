"""The JAX worker: the project's bare train step on fixed weights and batch, then inference."""
from __future__ import annotations

import sys
import time

import numpy as np

import bench_inputs
from bench import memory, plans, timing


def jax_batch(resolution: int, images: int, crops: int) -> dict:
    """`bench_inputs.random_batch` (seed 1, as the torch worker's) as jax arrays."""
    import jax.numpy as jnp

    batch = bench_inputs.random_batch(np.random.default_rng(1), images, crops, resolution)
    return {k: jnp.asarray(v) for k, v in batch.items()}


def jax_trainer(args, plan: plans.Plan, model_name: str, depth: int) -> dict:
    """A JAX model, its compiled train step and a `train()` that runs one step on a fixed batch.

    What trains comes from `train.state.training_setup` (as in `mmpiqa train`); the timed step is
    the bare `step.make_train_step` (DWA off, no EMA), jitted with its state donated. Without the
    separate reference check, it also exports the model's weights for the torch worker (which
    runs after this one)."""
    import jax
    import jax.numpy as jnp

    from mmpiqa_jax.checkpoints.torch_export import export_torch
    from mmpiqa_jax.train import cost as cost_lib
    from mmpiqa_jax.train import state as state_lib
    from mmpiqa_jax.train import step as step_lib

    config = plans.model_config(model_name, plan, depth)
    model = plans.build_jax_model(config)
    if not plan.full_check:
        export_torch(model, plans.export_dir(args.tmp, model_name, depth))
    res = model.clip.config.image_resolution
    setup = state_lib.training_setup(config, model)  # num_active_tasks=0: the bare step
    state = setup.init_state(model, jax.random.key(0))
    trainable, frozen, opt_state = state.params, state.frozen, state.opt_state
    del state
    batch = jax_batch(res, plan.images, plan.crops)
    loss_weights = jnp.asarray(bench_inputs.LOSS_WEIGHTS)
    step = jax.jit(step_lib.make_train_step(setup.graphdef, setup.tx,
                                            use_text_cache=setup.use_text_cache),
                   donate_argnums=(0, 2))
    t0 = time.perf_counter()
    compiled = step.lower(trainable, frozen, opt_state, batch, loss_weights).compile()
    t = {"config": config, "model": model, "graphdef": setup.graphdef, "frozen": frozen,
         "compiled": compiled, "compile_s": time.perf_counter() - t0, "resolution": res,
         "num_trainable": sum(int(np.size(x)) for x in jax.tree.leaves(trainable)),
         "trainable": trainable, "opt_state": opt_state}
    t["flops"] = lambda: cost_lib.step_model_flops(model, setup, batch, loss_weights)

    def train():
        t["trainable"], t["opt_state"], metrics = compiled(
            t["trainable"], frozen, t["opt_state"], batch, loss_weights)
        jax.block_until_ready(metrics["loss"])
        # The first step's loss and gradient norm are those of the exported weights on this
        # batch: the torch worker's first step must report the same (`check.first_step_checks`).
        if "first" not in t:  # read back once, not on every timed step
            t["first"] = (float(metrics["loss"]), float(metrics["grad_norm"]))

    t["train"] = train
    return t


def worker_jax(args, plan: plans.Plan) -> dict:
    import jax
    from flax import nnx

    jax.devices()  # the backend up, libraries loaded: what the process holds before any model
    rss_libs = memory.status_kib("VmRSS")
    t = jax_trainer(args, plan, args.model, args.depth)
    config = t["config"]
    # Model FLOPs before the first step donates the initial parameters.
    flops = float("nan") if args.skip_eval else t["flops"]()
    marks = {}
    train_s, train_all = timing.time_training(plan, args.model, t["train"],
                                              memory.reset_memory_marks(marks))
    peak_kib = memory.status_kib("VmHWM")
    mem = t["compiled"].memory_analysis()
    out = {"train_s": train_s, "train_all": train_all, "compile_s": t["compile_s"],
           "first_loss": t["first"][0], "first_grad_norm": t["first"][1],
           "rss_libs_mib": rss_libs / 1024,
           "trainable": t["num_trainable"],
           "torch_imported": "torch" in sys.modules,
           "flops": flops, "blocks": (f"scan_layers={config.model.scan_layers}, "
                                       f"remat={config.model.remat!r}"),
           "rss_before_mib": marks["rss_before"] / 1024,
           "peak_rss_mib": peak_kib / 1024 if marks["reset"] else float("nan"),
           "xla_temp_mib": getattr(mem, "temp_size_in_bytes", 0) / 2**20,
           "device": str(jax.devices()[0].device_kind), "backend": jax.default_backend()}
    if jax.default_backend() != "cpu":
        stats = jax.devices()[0].memory_stats() or {}
        out["device_peak_mib"] = stats.get("peak_bytes_in_use", float("nan")) / 2**20
        out["accel_peak"], out["accel_peak_source"] = timing.accelerator_peak(jax.devices()[0])
    if not args.skip_eval:
        # Inference: the trained model (its current parameters), text features from the cache.
        model = nnx.merge(t["graphdef"], t["trainable"], t["frozen"])
        model.refresh_text_cache()
        forward = nnx.jit(lambda m, x: m(x, use_text_cache=True)["score"])
        for key, crops in (("eval15", plan.eval_crops), ("eval1", 1)):
            images = plan.eval_images if crops > 1 else plan.eval_images * plan.eval_crops
            pixels = jax_batch(t["resolution"], images, crops)["pixels"]
            t_eval, _ = timing.median_time(lambda: forward(model, pixels).block_until_ready(),
                                           plan.warmup, plan.repeats)
            out[key + "_ips"] = images / t_eval
        del model
    del t
    out["sweep"] = timing.sweep(args, plan, lambda depth: jax_trainer(args, plan, args.model,
                                                                       depth))
    return out
