"""Medians of timed runs, the matmul peaks, the training timer and the depth sweep."""
from __future__ import annotations

import statistics
import time

# Peak dense bf16 FLOP/s of known accelerators (vendor figures, without sparsity).
BF16_PEAK = {"H100": 989e12, "H200": 989e12}


def median_time(fn, warmup: int, repeats: int) -> tuple[float, list[float]]:
    """`(median, all times)` in seconds of `repeats` calls of `fn` after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def matmul_peak(dtype: str = "float32", n: int = 4096) -> float:
    """FLOP/s of a large square matmul with jax (median of 5 after warm-up)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.dtype(dtype))
    f = jax.jit(lambda x, y: x @ y)
    t, _ = median_time(lambda: f(a, a).block_until_ready(), 2, 5)
    return 2 * n**3 / t


def accelerator_peak(device) -> tuple[float, str]:
    """`(bf16 FLOP/s, where the figure comes from)` of a jax device."""
    kind = device.device_kind
    for name, peak in BF16_PEAK.items():
        if name in kind:
            return peak, f"{name} bf16 dense (datasheet)"
    n = 8192 if device.platform != "cpu" else 2048
    return matmul_peak("bfloat16", n), "bf16 matmul (measured)"


def time_training(plan, model_name: str, train, before_timing=lambda: None
                  ) -> tuple[float, list[float]]:
    """Median step time of `train` after the plan's warm-up steps; `before_timing` runs between."""
    liqe = model_name == "liqe"
    for _ in range(plan.liqe_warmup if liqe else plan.warmup):
        train()
    before_timing()
    return median_time(train, 0, plan.liqe_repeats if liqe else plan.repeats)


def sweep(args, plan, trainer) -> dict:
    """The rest of the depth sweep (`--sweep`), step time only, in this worker's process;
    `trainer(depth)` builds one depth's model and step (a worker's `trainer`)."""
    out = {}
    for depth in args.sweep:
        s = trainer(depth)
        train_s, train_all = time_training(plan, args.model, s["train"])
        out[depth] = {"train_s": train_s, "train_all": train_all, "first_loss": s["first"][0],
                      "first_grad_norm": s["first"][1], "trainable": s["num_trainable"]}
        del s
    return out
