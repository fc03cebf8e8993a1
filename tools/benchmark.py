"""Training and inference speed of MP-IQE and LIQE in JAX against a PyTorch reference, side by side.

    python tools/benchmark.py            # the full run; writes docs/benchmarks.md
    python tools/benchmark.py --quick    # a reduced run (6.5 minutes on 2 cores), same figures
    python tools/benchmark.py --device   # on a lent GPU: bf16 compute, larger batch, % of bf16 peak

What runs (CLIP ViT-B/32 at 224, random weights from a fixed seed, the configs' defaults):
  0. the reference check: on the same weights and a fixed batch, `tools/torch_reference.py` must
     give the JAX loss to 1e-4 (and the scores, and the gradient norm), for MP-IQE and LIQE, or
     the benchmark stops before timing anything (not in `--quick`); and in every float32 plan
     the first timed steps of each JAX/torch pair must report the same loss and gradient norm,
     or no timing is reported;
  1. training images/s (images of `crops_per_image` = 3 crops), MP-IQE (`prompt` groups, visual
     prompt depth 12) and LIQE (`full` groups); JAX's jitted, donated `make_train_step` with the
     config's optax optimiser against the reference's forward, losses, backward, clip, AdamW;
  2. inference images/s with 15 crops per image (LIQE's protocol) and with one crop;
  3. achieved FLOP/s of the JAX train step (model FLOPs: XLA's cost analysis of the step lowered
     with the blocks unrolled and nothing recomputed, `model_flops`; / median step time) as a
     percentage of the measured peak (a large fp32 matmul timed with jax, same run);
  4. peak memory: the resident-set high-water mark (VmHWM) of the process over the timed steps,
     reset just before them (`/proc/self/clear_refs`), each measurement in its own process, and
     the same less the process's RSS with its libraries loaded and no model yet;
  5. MP-IQE step time against `visual_prompt_depth` 0, 3, 6, 9, 12.
Every figure is the median of several timed runs after warm-up. Each (framework, model) runs in
a fresh worker process (this script with `--worker`), one after another, so the two frameworks
never share a thread pool or a heap; MP-IQE's worker, after its headline depth's figures, times
the other depths of the sweep (step time only) in the same process; torch uses as many threads as there are cores,
XLA's CPU client uses its own pool of one thread per core (intra-op) as it does by default.

The reference runs the text tower as the original PyTorch codes do (all prompts at 77 tokens,
every step; LIQE: 495 prompts). The JAX models run it at the longest prompt's length (exact under
the causal mask) and, for inference, from the text-feature cache. A "torch, trimmed" row gives the
reference the first of these savings too, to separate framework from algorithm.
"""
from __future__ import annotations

import argparse
import ctypes
import dataclasses
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__))]

import bench_inputs  # noqa: E402  (torch-free: the JAX workers never import torch)

# Peak dense bf16 FLOP/s of known accelerators (vendor figures, without sparsity).
BF16_PEAK = {"H100": 989e12, "H200": 989e12}


@dataclasses.dataclass
class Plan:
    images: int = 16          # training images per step
    crops: int = 3            # crops per training image (the configs' crops_per_image)
    eval_images: int = 16     # images per inference call
    eval_crops: int = 15      # LIQE's test-time crops
    warmup: int = 2
    repeats: int = 5
    liqe_repeats: int = 3     # the reference's LIQE step is slow; fewer runs
    liqe_warmup: int = 1
    check_images: int = 2     # the reference check's batch (x 2 crops)
    full_check: bool = True   # the separate check (scores too; float32 whatever `dtype`); the
                              # first timed steps are compared in every float32 plan
    trimmed: bool = True      # also time the reference with trimmed text
    depths: tuple = (0, 3, 6, 9, 12)
    dtype: str = "float32"
    variant: str = "ViT-B/32"


FULL = Plan()
QUICK = Plan(images=4, eval_images=1, warmup=1, repeats=3, liqe_repeats=1, liqe_warmup=0,
             depths=(0, 12), trimmed=False, full_check=False)
DEVICE = Plan(images=128, eval_images=64, warmup=3, repeats=10, liqe_repeats=10, dtype="bfloat16")
TINY = Plan(images=4, eval_images=2, warmup=1, repeats=2, liqe_repeats=1, depths=(0, 2),
            variant="tiny")  # for checking this script itself
PLANS = {"full": FULL, "quick": QUICK, "device": DEVICE, "tiny": TINY,
         # --device where jax sees no accelerator: the device code path at the quick sizes
         "device-quick": dataclasses.replace(QUICK, dtype="bfloat16")}


# ----------------------------------------------------------------------------------------------
# Configs and weights.

def model_config(name: str, plan: Plan, depth: int = 12):
    from mmpiqa_jax import config as config_lib

    if plan.variant == "tiny":
        config = config_lib.load_config(os.path.join(ROOT, "configs", f"tiny.py:model={name}"),
                                        ["model.num_text_context=0"] if name == "liqe" else [])
        if name == "mpiqe":
            config.model.visual_prompt_depth = min(depth, 2)
    elif name == "mpiqe":
        config = config_lib.load_config(os.path.join(ROOT, "configs", f"mpiqe.py:depth={depth}"))
    else:
        config = config_lib.load_config(os.path.join(ROOT, "configs", "liqe.py"))
    config.model.dtype = plan.dtype
    config.model.clip_checkpoint = "random"  # random weights on purpose (see the docstring)
    return config


def build_jax_model(config, seed: int = 0):
    import jax
    from flax import nnx

    from mmpiqa_jax.models import iqa

    model = iqa.build_model(config.model, nnx.Rngs(seed))
    if config.model.name == "mpiqe":
        # The fusion head starts at zero (score 3 everywhere); random, so that every loss bites.
        kernel = model.fusion.head.kernel
        kernel[...] = 0.1 * jax.random.normal(jax.random.key(seed + 1), kernel.shape)
    return model


def save_export(exported: dict, path: str) -> None:
    arrays = {f"clip/{k}": v for k, v in exported["clip"].items()}
    arrays.update({f"extra/{k}": v for k, v in exported["extras"].items()})
    np.savez(path, __clip_config__=np.asarray(json.dumps(exported["clip_config"])), **arrays)


def load_export(path: str) -> dict:
    with np.load(path) as f:
        out = {"clip_config": json.loads(str(f["__clip_config__"])), "clip": {}, "extras": {}}
        for k in f.files:
            if k.startswith("clip/"):
                out["clip"][k[5:]] = f[k]
            elif k.startswith("extra/"):
                out["extras"][k[6:]] = f[k]
    return out


# ----------------------------------------------------------------------------------------------
# Measuring.

def median_time(fn, warmup: int, repeats: int) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def mem_available_gib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return float("inf")


def text_backward_gib(text_prompts: int, text_length: int, width: int, layers: int) -> float:
    """Float32 activations that torch keeps for the text tower's backward: ~22 floats per
    (prompt, token, channel, layer), as measured with open_clip's ViT-B/32 text tower (19.5 GiB
    for LIQE's 495 prompts x 77 tokens)."""
    return 22 * text_prompts * text_length * width * layers * 4 / 2**30


def reset_peak_rss() -> bool:
    """Resets VmHWM to the current RSS (Linux >= 4.0); False where that is not possible.

    Heap that earlier work freed (XLA's compiler, a warm-up step) is first handed back to the
    system (glibc's `malloc_trim`), so that the peak is what the timed steps hold, in both
    frameworks alike.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def matmul_peak(dtype: str = "float32", n: int = 4096) -> float:
    """FLOP/s of a large square matmul with jax (median of 5 after warm-up)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.dtype(dtype))
    f = jax.jit(lambda x, y: x @ y)
    t, _ = median_time(lambda: f(a, a).block_until_ready(), 2, 5)
    return 2 * n**3 / t


def accelerator_peak(device) -> tuple[float, str]:
    kind = device.device_kind
    for name, peak in BF16_PEAK.items():
        if name in kind:
            return peak, f"{name} bf16 dense (datasheet)"
    return matmul_peak("bfloat16", 8192 if device.platform != "cpu" else 2048), "bf16 matmul (measured)"


# ----------------------------------------------------------------------------------------------
# Workers: one measurement each, JSON on the last line of stdout.

def worker_prepare(args, plan: Plan) -> dict:
    """The matmul peak; the reference check on every model the run times, exporting the weights
    for the torch workers (without the check, each JAX worker exports its own model's)."""
    if not plan.full_check:
        return {"check": {}, "matmul_peak": matmul_peak("float32", 2048 if plan.variant == "tiny" else 4096)}
    import jax
    import torch
    import torch_reference as tr

    # The check is about correctness, so it runs in float32 at full matmul precision whatever the
    # plan times in (bf16 compute or TF32 matmuls on a GPU would swamp the 1e-4 tolerance).
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    out = {"check": {}, "matmul_peak": matmul_peak("float32", 2048 if plan.variant == "tiny" else 4096)}
    for name, depth in [("mpiqe", d) for d in plan.depths] + [("liqe", 0)]:
        config = model_config(name, plan, depth)
        config.model.dtype = "float32"
        model = build_jax_model(config)
        exported = bench_inputs.export_jax(model)
        save_export(exported, os.path.join(args.tmp, f"{name}_{depth}.npz"))
        if depth in (0, max(plan.depths)) or name == "liqe":
            batch = tr.random_batch(np.random.default_rng(0), plan.check_images, 2,
                                    model.clip.config.image_resolution)
            ref = tr.from_export(exported, config.model.to_dict(), mode=config.optimizer.param_groups)
            if name == "liqe":
                # 495 prompts x 77 tokens keep ~20 GB of activations for the backward pass in
                # float32; recomputing each block in the backward (same values) keeps the check
                # within a small machine's memory.
                ref.clip.set_grad_checkpointing(True)
            with jax.default_matmul_precision("highest"):
                result = tr.compare(model, config.model.to_dict(), config.optimizer.param_groups,
                                    batch, ref=ref)
            result["failures"] = tr.check(result)
            out["check"][f"{name}_{depth}"] = result
        del model, exported
    return out


def _jax_batch(plan: Plan, resolution: int, images: int, crops: int):
    import jax.numpy as jnp

    batch = bench_inputs.random_batch(np.random.default_rng(1), images, crops, resolution)
    return {k: jnp.asarray(v) for k, v in batch.items()}


def model_flops(model, groups, tx, use_cache: bool, step_args) -> float:
    """FLOPs of one train step as the model defines them: XLA's cost analysis of the step lowered
    with the blocks unrolled and nothing recomputed. The compiled step's own analysis counts a
    scan's body once and rematerialised blocks twice."""
    import jax

    from mmpiqa_jax.train import param_groups as pg
    from mmpiqa_jax.train import step as step_lib

    with model.clip.block_execution(scan_layers=False, remat="none"):
        graphdef, trainable, frozen = pg.split_trainable(model, groups)
        cost = jax.jit(step_lib.make_train_step(graphdef, tx, use_text_cache=use_cache)).lower(
            trainable, frozen, *step_args[2:]).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan")))


def _jax_trainer(args, plan: Plan, model_name: str, depth: int) -> dict:
    """A JAX model, its compiled train step and a `train()` that runs one step on a fixed batch.

    Without the separate reference check, it also exports the model's weights for the torch
    worker (which runs after this one)."""
    import jax
    import jax.numpy as jnp

    from mmpiqa_jax.models import iqa
    from mmpiqa_jax.train import optimizer as optimizer_lib
    from mmpiqa_jax.train import param_groups as pg
    from mmpiqa_jax.train import step as step_lib

    config = model_config(model_name, plan, depth)
    model = build_jax_model(config)
    if not plan.full_check:
        save_export(bench_inputs.export_jax(model),
                    os.path.join(args.tmp, f"{model_name}_{depth}.npz"))
    res = model.clip.config.image_resolution
    groups = pg.resolve(config.optimizer.param_groups)
    graphdef, trainable, frozen = pg.split_trainable(model, groups)
    use_cache = not iqa.text_path_is_trainable(model, trainable)
    tx = optimizer_lib.make_optimizer(config.optimizer, groups, trainable,
                                      num_steps=config.num_steps,
                                      steps_per_epoch=config.steps_per_epoch)
    opt_state = tx.init(trainable)
    batch = _jax_batch(plan, res, plan.images, plan.crops)
    weights = jnp.asarray(bench_inputs.LOSS_WEIGHTS)
    step = jax.jit(step_lib.make_train_step(graphdef, tx, use_text_cache=use_cache),
                   donate_argnums=(0, 2))
    t0 = time.perf_counter()
    compiled = step.lower(trainable, frozen, opt_state, batch, weights).compile()
    t = {"config": config, "model": model, "graphdef": graphdef, "frozen": frozen,
         "compiled": compiled, "compile_s": time.perf_counter() - t0, "resolution": res,
         "num_trainable": sum(int(np.size(x)) for x in jax.tree.leaves(trainable)),
         "trainable": trainable, "opt_state": opt_state}
    t["flops"] = lambda: model_flops(model, groups, tx, use_cache,
                                     (trainable, frozen, opt_state, batch, weights))

    def train():
        t["trainable"], t["opt_state"], metrics = compiled(
            t["trainable"], frozen, t["opt_state"], batch, weights)
        jax.block_until_ready(metrics["loss"])
        # The first step's loss and gradient norm are those of the exported weights on this
        # batch: the torch worker's first step must report the same (`first_step_failures`).
        if "first" not in t:  # read back once, not on every timed step
            t["first"] = (float(metrics["loss"]), float(metrics["grad_norm"]))

    t["train"] = train
    return t


def _time_training(plan: Plan, model_name: str, train, before_timing=lambda: None
                   ) -> tuple[float, list[float]]:
    """Median step time of `train` after the plan's warm-up steps; `before_timing` runs between."""
    liqe = model_name == "liqe"
    for _ in range(plan.liqe_warmup if liqe else plan.warmup):
        train()
    before_timing()
    return median_time(train, 0, plan.liqe_repeats if liqe else plan.repeats)


def _reset_memory_marks(marks: dict):
    """A `before_timing` that records the RSS and resets the peak (`reset_peak_rss`)."""
    def before():
        marks["rss_before"] = _status_kib("VmRSS")
        marks["reset"] = reset_peak_rss()
    return before


def worker_jax(args, plan: Plan) -> dict:
    import jax
    from flax import nnx

    jax.devices()  # the backend up, libraries loaded: what the process holds before any model
    rss_libs = _status_kib("VmRSS")
    t = _jax_trainer(args, plan, args.model, args.depth)
    config = t["config"]
    # Model FLOPs before the first step donates the initial parameters.
    flops = float("nan") if args.skip_eval else t["flops"]()
    marks = {}
    train_s, train_all = _time_training(plan, args.model, t["train"], _reset_memory_marks(marks))
    peak_kib = _status_kib("VmHWM")
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
        out["accel_peak"], out["accel_peak_source"] = accelerator_peak(jax.devices()[0])
    if not args.skip_eval:
        # Inference: the trained model (its current parameters), text features from the cache.
        model = nnx.merge(t["graphdef"], t["trainable"], t["frozen"])
        model.refresh_text_cache()
        forward = nnx.jit(lambda m, x: m(x, use_text_cache=True)["score"])
        for key, crops in (("eval15", plan.eval_crops), ("eval1", 1)):
            images = plan.eval_images if crops > 1 else plan.eval_images * plan.eval_crops
            pixels = _jax_batch(plan, t["resolution"], images, crops)["pixels"]
            t_eval, _ = median_time(lambda: forward(model, pixels).block_until_ready(),
                                    plan.warmup, plan.repeats)
            out[key + "_ips"] = images / t_eval
        del model
    del t
    out["sweep"] = _sweep(args, plan, lambda depth: _jax_trainer(args, plan, args.model, depth))
    return out


def _torch_trainer(args, plan: Plan, model_name: str, depth: int, dev) -> dict:
    """The reference model on the weights the JAX worker exported, its train step and a
    `train()` that runs one step on the same fixed batch."""
    import torch

    import torch_reference as tr

    cuda = dev.type == "cuda"
    config = model_config(model_name, plan, depth)
    exported = load_export(os.path.join(args.tmp, f"{model_name}_{depth}.npz"))
    model = tr.from_export(exported, config.model.to_dict(), mode=config.optimizer.param_groups,
                           text_length=args.text_length).to(dev)
    del exported
    # LIQE's 495 x 77 text tower keeps ~20 GB of activations for its backward in float32; where
    # that (plus weights, moments and the image tower) exceeds the free memory, torch recomputes
    # each text block in the backward instead (open_clip's grad checkpointing; same values).
    recompute = False
    if model_name == "liqe" and not cuda:
        text = model.clip.transformer
        need = text_backward_gib(*model.token_ids.shape, text.width, text.layers) + 4.0
        if need > mem_available_gib():
            model.clip.set_grad_checkpointing(True)
            recompute = True
    res = model.clip.visual.image_size[0]
    batch = {k: v.to(dev) for k, v in tr.torch_batch(
        tr.random_batch(np.random.default_rng(1), plan.images, plan.crops, res)).items()}
    opt = tr.make_optimizer(model, config.optimizer.to_dict())
    step = tr.make_train_step(model, opt, clip_norm=config.optimizer.clip_norm)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cuda and plan.dtype == "bfloat16"
                else torch.autocast("cpu", enabled=False))
    t = {"model": model, "resolution": res, "autocast": autocast, "recompute": recompute,
         "num_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}

    def train():
        with autocast:
            loss, grad_norm = step(batch)
        if cuda:
            torch.cuda.synchronize()
        if "first" not in t:
            t["first"] = (loss.item(), grad_norm.item())

    t["train"] = train
    return t


def worker_torch(args, plan: Plan) -> dict:
    import torch

    import torch_reference as tr

    torch.set_num_threads(os.cpu_count())
    torch.ones(8) @ torch.ones(8)  # the libraries loaded: what the process holds before any model
    rss_libs = _status_kib("VmRSS")
    cuda = args.device and torch.cuda.is_available()
    dev = torch.device("cuda" if cuda else "cpu")
    t = _torch_trainer(args, plan, args.model, args.depth, dev)
    model, res, autocast = t["model"], t["resolution"], t["autocast"]
    sweep_trainer = lambda depth: _torch_trainer(args, plan, args.model, depth, dev)
    marks = {}

    def before_timing():
        _reset_memory_marks(marks)()
        if cuda:
            torch.cuda.reset_peak_memory_stats()

    train_s, train_all = _time_training(plan, args.model, t["train"], before_timing)
    out = {"train_s": train_s, "train_all": train_all, "rss_before_mib": marks["rss_before"] / 1024,
           "first_loss": t["first"][0], "first_grad_norm": t["first"][1],
           "rss_libs_mib": rss_libs / 1024, "text_recomputed": t["recompute"],
           "trainable": t["num_trainable"],
           "peak_rss_mib": _status_kib("VmHWM") / 1024 if marks["reset"] else float("nan"),
           "threads": torch.get_num_threads()}
    if cuda:
        out["device_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    if args.skip_eval:
        return out | {"sweep": _sweep(args, plan, sweep_trainer)}
    model.eval()

    def timed(fn, warmup, repeats, keep=None):
        def run():
            with torch.inference_mode(), autocast:
                result = fn()
            if cuda:
                torch.cuda.synchronize()
            if keep is not None:
                keep[:] = [result]
        return median_time(run, warmup, repeats)[0]

    text_s = 0.0
    if args.model == "liqe":
        # LIQE's code runs its 495 x 77 text tower on every inference call, as slow as a train
        # step here. It is timed once and added to each crop setting's time for the rest of the
        # call (the same forward, given those text features): the call runs the two one after
        # the other, so the sum is its time, and the slow part is not run twice per figure.
        text = []
        text_s = timed(model.text_features, plan.liqe_warmup, plan.liqe_repeats, keep=text)
        model.text_features = lambda: text[0]
        out["text_s"] = text_s
    for key, crops in (("eval15", plan.eval_crops), ("eval1", 1)):
        images = plan.eval_images if crops > 1 else plan.eval_images * plan.eval_crops
        pixels = tr.torch_batch(tr.random_batch(np.random.default_rng(2), images, crops,
                                                res))["pixels"].to(dev)
        out[key + "_ips"] = images / (text_s + timed(lambda: model(pixels)["score"],
                                                     plan.warmup, plan.repeats))
    model = t = None  # freed before the sweep
    return out | {"sweep": _sweep(args, plan, sweep_trainer)}


def _sweep(args, plan: Plan, trainer) -> dict:
    """The rest of the depth sweep (`--sweep`), step time only, in this worker's process;
    `trainer(depth)` builds one depth's model and step (`_jax_trainer`, `_torch_trainer`)."""
    sweep = {}
    for depth in args.sweep:
        s = trainer(depth)
        train_s, train_all = _time_training(plan, args.model, s["train"])
        sweep[depth] = {"train_s": train_s, "train_all": train_all, "first_loss": s["first"][0],
                        "first_grad_norm": s["first"][1], "trainable": s["num_trainable"]}
        del s
    return sweep


WORKERS = {"prepare": worker_prepare, "jax": worker_jax, "torch": worker_torch}


def first_step_checks(r: dict) -> dict:
    """For each timed (model, depth): the JAX and torch first steps (same exported weights, same
    batch, before any update) must give the same loss and gradient norm, as `compare` checks."""
    import torch_reference as tr

    out = {}
    for key, j in r.items():
        if not key.startswith("jax_") or f"torch_{key[4:]}" not in r:
            continue
        t = r[f"torch_{key[4:]}"]
        result = {"loss": (j["first_loss"], t["first_loss"]),
                  "grad_norm": (j["first_grad_norm"], t["first_grad_norm"]),
                  "trainable": (j["trainable"], t["trainable"])}
        result["failures"] = tr.check(result)
        out[key[4:]] = result
    return out


def run_worker(kind: str, args, **kw) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--tmp", args.tmp,
           "--plan", args.plan_name]
    for k, v in kw.items():
        if v is True:
            cmd.append(f"--{k.replace('_', '-')}")
        elif v is not None and v is not False:
            cmd += [f"--{k.replace('_', '-')}", str(v)]
    if args.device:
        cmd.append("--device")
    label = " ".join(f"{k}={v}" for k, v in kw.items() if v is not None and v is not False)
    print(f"  [{kind} {label}] ...", end="", flush=True)
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        print(" failed")
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"worker {kind} {label} failed (exit {proc.returncode})")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    compile_s = f" (compile {result['compile_s']:.0f} s)" if "compile_s" in result else ""
    print(f" {time.perf_counter() - t:.0f} s{compile_s}", flush=True)
    return result


# ----------------------------------------------------------------------------------------------
# The report.

def machine() -> dict:
    import flax
    import jax
    import open_clip
    import torch

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "jax": jax.__version__, "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__")
            else jax.__version__, "flax": flax.__version__, "torch": torch.__version__,
            "open_clip": open_clip.__version__,
            "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "platform": platform.platform()}


def _label(key: str) -> str:
    """`mpiqe_12` -> `MP-IQE depth 12`, `liqe_0` -> `LIQE`."""
    name, depth = key.rsplit("_", 1)
    return f"MP-IQE depth {depth}" if name == "mpiqe" else "LIQE"


def _fmt(x, spec=".2f"):
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else format(x, spec)


NOTES = """\
## What is compared

- **JAX**: the project's models and train step (`make_train_step`, jitted with the state donated,
  the config's optax optimiser with its warm-up/cosine schedule and clipping, the non-finite guard).
  The text tower runs at the longest prompt's length (exact under the causal mask), and texts that
  share a prefix run it once (`PromptBank.prefix_plan`: LIQE's 495 prompts are 99 prefixes
  "a photo of a {scene} with {distortion} artifacts, which is of" and 495 three-token suffixes
  "{quality} quality <eot>"; exact, as the reference check shows). At inference the text features
  come from the model's text cache (computed once).
- **torch**: `tools/torch_reference.py`, the same models on open_clip's `CLIP` (QuickGELU) with
  the same weights (the project's converter to an OpenAI state dict, `load_state_dict(strict=True)`,
  plus a table for the prompts and the fusion encoder), the same trainable set (frozen parameters
  `requires_grad_(False)`, so no weight gradients for them), the same three fidelity losses, AdamW
  with the same hyper-parameters (constant learning rate) and the same gradient clipping. The text
  tower runs as LIQE's and CoOp's code run it: every prompt at 77 tokens, every call (inference too).
  "torch, trimmed text" gives it the longest-prompt length as well (not the shared prefixes).
- Both: float32 on the CPU, one training step = forward over images x crops, the quality,
  distortion and scene losses, backward, optimiser update; batches are random tensors already in
  memory (no input pipeline).
"""


def report(plan: Plan, name: str, info: dict, prep: dict, r: dict, first: dict,
           device: bool) -> str:
    ips = lambda m: plan.images / m["train_s"]
    top = max(plan.depths)  # the headline MP-IQE depth (12 for ViT-B/32)
    L = []
    L.append(f"# Benchmarks: JAX against the PyTorch reference ({name} run)\n")
    L.append(f"- Machine: {info['cpu']}, {info['cores']} cores ({info['platform']}); "
             f"{r[f'jax_mpiqe_{top}'].get('device', '')} backend `{r[f'jax_mpiqe_{top}'].get('backend', '')}`")
    L.append(f"- Versions: Python {info['python']}, jax {info['jax']}, flax {info['flax']}, "
             f"torch {info['torch']}, open_clip {info['open_clip']}")
    L.append(f"- Date: {info['date']}")
    L.append(f"- Model: CLIP {plan.variant}, compute dtype {plan.dtype}; training batch "
             f"{plan.images} images x {plan.crops} crops; inference {plan.eval_images} images x "
             f"{plan.eval_crops} crops, and {plan.eval_images * plan.eval_crops} images x 1 crop; "
             f"JAX blocks: {r[f'jax_mpiqe_{top}'].get('blocks', '?')} (the configs' defaults)")
    L.append(f"- Each figure: median of {plan.repeats} timed runs after {plan.warmup} warm-up "
             f"runs (LIQE training, and the text tower of torch's LIQE inference: "
             f"{plan.liqe_repeats} after {plan.liqe_warmup}); each framework and model in a fresh "
             f"process; torch threads = {r[f'torch_mpiqe_{top}'].get('threads', '?')} (cores), XLA: "
             f"its default CPU pool (one intra-op thread per core)")
    L.append("")
    L.append("## Reference check\n")
    if prep["check"]:
        L.append(f"Before any timing: float32 at full matmul precision, the same weights, a fixed "
                 f"batch of {plan.check_images} images x 2 crops (`torch_reference.compare`).\n")
        L.append("| model | loss JAX | loss torch | abs diff | max score diff | grad norm JAX | grad norm torch | trainable params | result |")
        L.append("|---|---|---|---|---|---|---|---|---|")
        for key, c in prep["check"].items():
            (jl, tl), (jg, tg) = c["loss"], c["grad_norm"]
            L.append(f"| {_label(key)} | {jl:.6f} | {tl:.6f} | {abs(jl - tl):.1e} | "
                     f"{c['score_max_abs_diff']:.1e} | {jg:.5g} | {tg:.5g} | {c['trainable'][0]:,} | "
                     f"{'pass' if not c['failures'] else 'FAIL'} |")
        L.append("")
    if first:
        L.append(f"The first timed step of each worker pair: the same exported weights and batch "
                 f"({plan.images} images x {plan.crops} crops), loss and gradient norm before the "
                 "update; a failure discards every timing.\n")
        L.append("| model | loss JAX | loss torch | abs diff | grad norm JAX | grad norm torch | trainable params | result |")
        L.append("|---|---|---|---|---|---|---|---|")
        for key, c in first.items():
            (jl, tl), (jg, tg) = c["loss"], c["grad_norm"]
            L.append(f"| {_label(key)} | {jl:.6f} | {tl:.6f} | {abs(jl - tl):.1e} | {jg:.5g} | "
                     f"{tg:.5g} | {c['trainable'][0]:,} | {'pass' if not c['failures'] else 'FAIL'} |")
        L.append("")
    L.append("## Training (images/s; an image is " + f"{plan.crops} crops)\n")
    L.append("| model | JAX | torch (77-token text, as the original codes) | ratio | torch, trimmed text | ratio |")
    L.append("|---|---|---|---|---|---|")
    for m in ("mpiqe", "liqe"):
        j, t = r[f"jax_{m}_{top}" if m == "mpiqe" else "jax_liqe_0"], r[f"torch_{m}_{top}" if m == "mpiqe" else "torch_liqe_0"]
        tt = r.get(f"torch_trim_{m}")
        label = f"MP-IQE (prompt, depth {top})" if m == "mpiqe" else "LIQE (full)"
        L.append(f"| {label} | {ips(j):.3f} | {ips(t):.3f} | **{ips(j) / ips(t):.2f}x** | "
                 + (f"{ips(tt):.3f} | {ips(j) / ips(tt):.2f}x |" if tt else "not run | |"))
    if r["torch_liqe_0"].get("text_recomputed"):
        L.append("\nThe torch LIQE step recomputed its text blocks in the backward pass (open_clip's "
                 "grad checkpointing): storing their activations (~20 GB in float32) does not fit "
                 "in this machine's free memory. On the text tower alone (495 x 77, forward and "
                 "backward) it cost nothing here: 82 s with recomputing, 83 s without.")
    L.append("")
    L.append("## Inference (images/s)\n")
    text_s = r["torch_liqe_0"].get("text_s")
    if text_s:
        L.append(f"Torch's LIQE runs its text tower (495 prompts x 77 tokens) on every call, as "
                 f"LIQE's code does: {text_s:.2f} s here, timed apart and added to each crop "
                 f"setting's time for the rest of the call. JAX's models use their text-feature "
                 f"cache.\n")
    L.append("| model | crops | JAX | torch | ratio |")
    L.append("|---|---|---|---|---|")
    for m, key in (("mpiqe", top), ("liqe", 0)):
        j, t = r[f"jax_{m}_{key}"], r[f"torch_{m}_{key}"]
        for e, c in (("eval15", plan.eval_crops), ("eval1", 1)):
            L.append(f"| {'MP-IQE' if m == 'mpiqe' else 'LIQE'} | {c} | {j[e + '_ips']:.3f} | "
                     f"{t[e + '_ips']:.3f} | {j[e + '_ips'] / t[e + '_ips']:.2f}x |")
    L.append("")
    if device:
        L.append("## Achieved FLOP/s of the JAX train step\n")
        L.append("| model | model FLOPs / step (XLA) | step (s) | achieved TFLOP/s | peak TFLOP/s | % of peak |")
        L.append("|---|---|---|---|---|---|")
        for m, key in (("mpiqe", top), ("liqe", 0)):
            j = r[f"jax_{m}_{key}"]
            ach = j["flops"] / j["train_s"]
            L.append(f"| {m} | {j['flops']:.4g} | {j['train_s']:.4f} | {ach / 1e12:.1f} | "
                     f"{j['accel_peak'] / 1e12:.0f} ({j['accel_peak_source']}) | {100 * ach / j['accel_peak']:.1f}% |")
    else:
        peak = prep["matmul_peak"]
        L.append(f"## Achieved FLOP/s of the JAX train step (peak: {peak / 1e9:.1f} GFLOP/s, "
                 "a 4096^2 fp32 matmul with jax, this run)\n")
        L.append("Model FLOPs: XLA's cost analysis of the step lowered with CLIP's blocks unrolled "
                 "and nothing recomputed; the compiled step runs them as a `lax.scan` with "
                 "rematerialisation (`model.scan_layers`, `model.remat`), whose recomputed FLOPs "
                 "are not counted.\n")
        L.append("| model | model FLOPs / step (XLA) | step (s) | achieved GFLOP/s | % of matmul peak |")
        L.append("|---|---|---|---|---|")
        for m, key in (("mpiqe", top), ("liqe", 0)):
            j = r[f"jax_{m}_{key}"]
            ach = j["flops"] / j["train_s"]
            L.append(f"| {m} | {j['flops']:.4g} | {j['train_s']:.3f} | {ach / 1e9:.1f} | "
                     f"{100 * ach / peak:.0f}% |")
    L.append("")
    L.append("## Peak memory during the training step (MiB)\n")
    if device:
        L.append("Device memory: JAX `memory_stats()['peak_bytes_in_use']`, torch "
                 "`max_memory_allocated()`.\n")
        L.append("| model | JAX | torch | ratio |")
        L.append("|---|---|---|---|")
        for m, key in (("mpiqe", top), ("liqe", 0)):
            j, t = r[f"jax_{m}_{key}"], r[f"torch_{m}_{key}"]
            L.append(f"| {m} | {_fmt(j.get('device_peak_mib'), '.0f')} | "
                     f"{_fmt(t.get('device_peak_mib'), '.0f')} | "
                     f"{_fmt(j.get('device_peak_mib', np.nan) / t.get('device_peak_mib', np.nan))} |")
    else:
        L.append("Resident-set high-water mark of the worker process over the timed steps (VmHWM, "
                 "reset right before them, so model load and compilation do not count), and the "
                 "same less the process's RSS once its libraries were loaded and before any model "
                 "existed (`libs`): JAX's and torch's own libraries differ in size, the model's "
                 "memory is what lies above them. XLA's own buffer plan for the step "
                 "(`memory_analysis().temp_size_in_bytes`) is given for JAX.\n")
        L.append("| model | JAX peak | JAX libs | JAX above libs | XLA temp | torch peak | torch libs | torch above libs | ratio above libs |")
        L.append("|---|---|---|---|---|---|---|---|---|")
        for m, key in (("mpiqe", top), ("liqe", 0)):
            j, t = r[f"jax_{m}_{key}"], r[f"torch_{m}_{key}"]
            ja, ta = j["peak_rss_mib"] - j["rss_libs_mib"], t["peak_rss_mib"] - t["rss_libs_mib"]
            L.append(f"| {m} | {j['peak_rss_mib']:.0f} | {j['rss_libs_mib']:.0f} | {ja:.0f} | "
                     f"{j['xla_temp_mib']:.0f} | {t['peak_rss_mib']:.0f} | {t['rss_libs_mib']:.0f} | "
                     f"{ta:.0f} | **{ja / ta:.2f}** |")
    L.append("")
    L.append("## MP-IQE training step against visual prompt depth\n")
    L.append("| depth | JAX step (s) | torch step (s) | ratio |")
    L.append("|---|---|---|---|")
    for d in plan.depths:
        j, t = r[f"jax_mpiqe_{d}"], r[f"torch_mpiqe_{d}"]
        L.append(f"| {d} | {j['train_s']:.3f} | {t['train_s']:.3f} | {t['train_s'] / j['train_s']:.2f}x |")
    L.append("")
    return "\n".join(L)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=(
        "reduced run: 4 training images (x 3 crops), 1 image x 15 crops for inference, 1 warm-up "
        "+ 3 timed runs (LIQE training and torch's LIQE text tower: no warm-up, 1 run), depths 0 "
        "and 12 only, no 'torch, trimmed' rows; the reference check is on the first timed steps "
        "only; does not write the docs"))
    p.add_argument("--device", action="store_true", help=(
        "accelerator run: bf16 compute, 128 images per step; reports the fraction of the card's "
        "bf16 peak; torch on CUDA when available"))
    p.add_argument("--tiny", action="store_true", help="CLIP 'tiny' (checks this script, seconds)")
    p.add_argument("--no-trimmed", action="store_true", help="skip the 'torch, trimmed text' rows")
    p.add_argument("--out", default=None, help="markdown output (default: docs/benchmarks.md for "
                   "the full run, none otherwise)")
    # Worker mode (internal).
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    p.add_argument("--plan", dest="plan_name", default="full", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--depth", type=int, default=12, help=argparse.SUPPRESS)
    p.add_argument("--text-length", default="full", help=argparse.SUPPRESS)
    p.add_argument("--skip-eval", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--sweep", default="", help=argparse.SUPPRESS,
                   type=lambda v: [int(d) for d in v.split(",") if d])
    args = p.parse_args(argv)

    if args.worker:
        plan = PLANS[args.plan_name]
        if args.plan_name.startswith("device"):
            os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        result = WORKERS[args.worker](args, plan)
        print(json.dumps(result, default=float))
        return 0

    if args.device:
        import jax

        if jax.default_backend() == "cpu":
            print("--device: no accelerator visible to jax; running the device plan's code path "
                  "on the CPU with the quick sizes (figures are CPU figures)")
            args.plan_name = "device-quick"
        else:
            args.plan_name = "device"
    else:
        args.plan_name = "tiny" if args.tiny else "quick" if args.quick else "full"
    plan = PLANS[args.plan_name]
    out_path = args.out or (os.path.join(ROOT, "docs", "benchmarks.md")
                            if args.plan_name == "full" else None)
    start = time.perf_counter()
    info = machine()
    print(f"benchmark ({args.plan_name}): {info['cpu']}, {info['cores']} cores; jax {info['jax']}, "
          f"torch {info['torch']}")
    with tempfile.TemporaryDirectory(prefix="mmpiqa_bench_") as tmp:
        args.tmp = tmp
        print("reference check and weights:")
        prep = run_worker("prepare", args)
        failed = {k: v["failures"] for k, v in prep["check"].items() if v["failures"]}
        for k, v in prep["check"].items():
            print(f"  {k}: loss JAX {v['loss'][0]:.6f} torch {v['loss'][1]:.6f}; "
                  f"{'ok' if not v['failures'] else 'FAIL: ' + '; '.join(v['failures'])}")
        if failed:
            print("the PyTorch reference disagrees with the JAX model: no timing counts; stopping")
            return 1
        print("timing:")
        r = {}
        for m, depths in (("mpiqe", plan.depths), ("liqe", (0,))):
            # The headline depth (12) in a fresh process per framework; that process then times
            # the rest of the depth sweep (step time only).
            top, rest = max(depths), sorted(set(depths) - {max(depths)}, reverse=True)
            for fw in ("jax", "torch"):
                result = run_worker(fw, args, model=m, depth=top,
                                    sweep=",".join(map(str, rest)) or None)
                for d, v in result.pop("sweep", {}).items():
                    r[f"{fw}_{m}_{int(d)}"] = v
                r[f"{fw}_{m}_{top}"] = result
            if plan.trimmed and not args.no_trimmed:
                r[f"torch_trim_{m}"] = run_worker("torch", args, model=m, depth=max(depths),
                                                  text_length="trimmed", skip_eval=True)
    # The first timed steps ran on the exported weights and one batch in both frameworks: in a
    # float32 plan their losses must agree, or no timing counts (bf16 ones differ by design).
    first = first_step_checks(r) if plan.dtype == "float32" else {}
    print("first timed steps (same weights, same batch):")
    for k, v in first.items():
        print(f"  {k}: loss JAX {v['loss'][0]:.6f} torch {v['loss'][1]:.6f}; "
              f"{'ok' if not v['failures'] else 'FAIL: ' + '; '.join(v['failures'])}")
    if any(v["failures"] for v in first.values()):
        print("the PyTorch reference disagrees with the JAX model: no timing counts; stopping")
        return 1
    if any(v.get("torch_imported") for k, v in r.items() if k.startswith("jax_")):
        print("warning: a JAX worker imported torch; its memory figures include torch's")
    text = report(plan, args.plan_name, info, prep, r, first, device=args.plan_name == "device")
    text += ("\nWhere the time goes and what was changed because of it: `docs/profile.md`.\n")
    text += (f"\nTotal wall time of this run: {time.perf_counter() - start:.0f} s "
             f"(`python tools/benchmark.py{' --quick' if args.quick else ''}"
             f"{' --device' if args.device else ''}{' --tiny' if args.tiny else ''}`).\n")
    print()
    print(text)
    if out_path:
        with open(os.path.splitext(out_path)[0] + ".json", "w") as f:
            json.dump({"plan": dataclasses.asdict(plan), "machine": info, "prepare": prep,
                       "first_steps": first, "results": r}, f, indent=1, default=float)
        with open(out_path, "w") as f:
            f.write(text)
        print(f"written to {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
