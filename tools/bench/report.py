"""The markdown report of a benchmark run, rendered from its saved JSON figures only.

    text = render(json.load(open("docs/benchmarks.json")))

The saved run (`benchmark.main` writes it before rendering): {"plan": Plan as a dict, "machine":
`machine()`, "prepare": the prepare worker's result, "first_steps": `check.first_step_checks`,
"results": {"jax_mpiqe_12": a worker's result, ...}, "run": {"name", "wall_s", "command"}}.
"""
from __future__ import annotations

import datetime
import os
import platform

import numpy as np

from bench import plans
from mmpiqa_jax.evaluate.report import markdown_table

# The CPU targets of the project (2-core CPU): (what, threshold).
TARGET_MPIQE_RATIO, TARGET_LIQE_RATIO, TARGET_PEAK_FRACTION, TARGET_QUICK_S = 1.2, 3.0, 0.5, 300


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


def _table(header: str, rows) -> str:
    """A table of `header`'s " | "-separated names, its rule unaligned (`|---|`)."""
    names = header.split(" | ")
    return markdown_table(names, rows, align="-" * len(names))


def _pairs(r: dict, top: int):
    """(model, JAX result, torch result) of MP-IQE at depth `top`, then LIQE."""
    return [(m, r[f"jax_{m}_{k}"], r[f"torch_{m}_{k}"]) for m, k in (("mpiqe", top), ("liqe", 0))]


def _check_rows(checks: dict, scores: bool):
    """Rows of a check table: model, losses and their difference, (max score difference,) grad
    norms, trainable parameters, result."""
    for key, c in checks.items():
        (jl, tl), (jg, tg) = c["loss"], c["grad_norm"]
        yield [_label(key), f"{jl:.6f}", f"{tl:.6f}", f"{abs(jl - tl):.1e}",
               *([f"{c['score_max_abs_diff']:.1e}"] if scores else []), f"{jg:.5g}", f"{tg:.5g}",
               f"{c['trainable'][0]:,}", "pass" if not c["failures"] else "FAIL"]


def _achieved_rows(r: dict, top: int, *, scale: float, step_digits: int, percent_digits: int,
                   peak_of):
    """The achieved-FLOP/s table's rows, MP-IQE at depth `top` then LIQE: model, model FLOPs,
    step seconds, achieved FLOP/s / `scale`, the cells `peak_of(result)` adds, % of its peak."""
    for m, j, _ in _pairs(r, top):
        achieved = j["flops"] / j["train_s"]
        peak, peak_cells = peak_of(j)
        yield [m, f"{j['flops']:.4g}", f"{j['train_s']:.{step_digits}f}", f"{achieved / scale:.1f}",
               *peak_cells, f"{100 * achieved / peak:.{percent_digits}f}%"]


def render(saved: dict) -> str:
    """The markdown report of a saved run (`docs/benchmarks.json`'s structure): every figure in it
    is read from `saved`, none is typed here."""
    plan = plans.plan_from_dict(saved["plan"])
    run = saved.get("run", {})
    name = run.get("name") or plans.plan_name(plan)
    device = name == "device"
    info, prep, r = saved["machine"], saved["prepare"], saved["results"]
    first = saved["first_steps"]
    ips = lambda m: plan.images / m["train_s"]
    top = max(plan.depths)  # the headline MP-IQE depth (12 for ViT-B/32)
    L = []
    L.append(f"# Benchmarks: JAX against the PyTorch reference ({name} run)\n")
    L.append(f"- Machine: {info['cpu']}, {info['cores']} cores ({info['platform']}); "
             f"{r[f'jax_mpiqe_{top}'].get('device', '')} backend "
             f"`{r[f'jax_mpiqe_{top}'].get('backend', '')}`")
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
             f"process; torch threads = {r[f'torch_mpiqe_{top}'].get('threads', '?')} (cores), "
             "XLA: "
             f"its default CPU pool (one intra-op thread per core)")
    L.append("")
    L.append("## Reference check\n")
    if prep["check"]:
        L.append(f"Before any timing: float32 at full matmul precision, the same weights, a fixed "
                 f"batch of {plan.check_images} images x 2 crops (`torch_reference.compare`).\n")
        L.append(_table("model | loss JAX | loss torch | abs diff | max score diff | grad norm JAX "
                        "| grad norm torch | trainable params | result",
                        _check_rows(prep["check"], scores=True)))
        L.append("")
    if first:
        L.append(f"The first timed step of each worker pair: the same exported weights and batch "
                 f"({plan.images} images x {plan.crops} crops), loss and gradient norm before the "
                 "update; a failure discards every timing.\n")
        L.append(_table("model | loss JAX | loss torch | abs diff | grad norm JAX | grad norm "
                        "torch | trainable params | result", _check_rows(first, scores=False)))
        L.append("")
    L.append("## Training (images/s; an image is " + f"{plan.crops} crops)\n")
    rows = []
    for m, j, t in _pairs(r, top):
        tt = r.get(f"torch_trim_{m}")
        rows.append([f"MP-IQE (prompt, depth {top})" if m == "mpiqe" else "LIQE (full)",
                     f"{ips(j):.3f}", f"{ips(t):.3f}", f"**{ips(j) / ips(t):.2f}x**",
                     *([f"{ips(tt):.3f}", f"{ips(j) / ips(tt):.2f}x"] if tt else ["not run", ""])])
    L.append(_table("model | JAX | torch (77-token text, as the original codes) | ratio | torch, "
                    "trimmed text | ratio", rows))
    if r["torch_liqe_0"].get("text_recomputed"):
        gib = r["torch_liqe_0"].get("text_backward_gib")
        size = f" (~{gib:.0f} GiB in float32, estimated)" if gib else ""
        L.append("\nThe torch LIQE step recomputed its text blocks in the backward pass "
                 "(open_clip's "
                 f"grad checkpointing): storing their activations{size} does not fit in this "
                 "machine's free memory.")
    L.append("")
    L.append("## Inference (images/s)\n")
    text_s = r["torch_liqe_0"].get("text_s")
    if text_s:
        L.append(f"Torch's LIQE runs its text tower (495 prompts x 77 tokens) on every call, as "
                 f"LIQE's code does: {text_s:.2f} s here, timed apart and added to each crop "
                 f"setting's time for the rest of the call. JAX's models use their text-feature "
                 f"cache.\n")
    L.append(_table("model | crops | JAX | torch | ratio", [
        ["MP-IQE" if m == "mpiqe" else "LIQE", c, f"{j[e + '_ips']:.3f}", f"{t[e + '_ips']:.3f}",
         f"{j[e + '_ips'] / t[e + '_ips']:.2f}x"]
        for m, j, t in _pairs(r, top) for e, c in (("eval15", plan.eval_crops), ("eval1", 1))]))
    L.append("")
    if device:
        L.append("## Achieved FLOP/s of the JAX train step\n")
        L.append(_table("model | model FLOPs / step (XLA) | step (s) | achieved TFLOP/s | peak "
                        "TFLOP/s | % of peak", _achieved_rows(
                            r, top, scale=1e12, step_digits=4, percent_digits=1,
                            peak_of=lambda j: (j["accel_peak"], [
                                f"{j['accel_peak'] / 1e12:.0f} ({j['accel_peak_source']})"]))))
    else:
        peak, n = prep["matmul_peak"], prep.get("matmul_n", plan.matmul_n)
        L.append(f"## Achieved FLOP/s of the JAX train step (peak: {peak / 1e9:.1f} GFLOP/s, "
                 f"a {n}^2 fp32 matmul with jax, this run)\n")
        L.append("Model FLOPs: XLA's cost analysis of the step lowered with CLIP's blocks unrolled "
                 "and nothing recomputed; the compiled step runs them as a `lax.scan` with "
                 "rematerialisation (`model.scan_layers`, `model.remat`), whose recomputed FLOPs "
                 "are not counted.\n")
        L.append(_table("model | model FLOPs / step (XLA) | step (s) | achieved GFLOP/s | % of "
                        "matmul peak", _achieved_rows(r, top, scale=1e9, step_digits=3,
                                                      percent_digits=0,
                                                      peak_of=lambda j: (peak, []))))
    L.append("")
    L.append("## Peak memory during the training step (MiB)\n")
    if device:
        L.append("Device memory: JAX `memory_stats()['peak_bytes_in_use']`, torch "
                 "`max_memory_allocated()`.\n")
        L.append(_table("model | JAX | torch | ratio", [
            [m, _fmt(j.get("device_peak_mib"), ".0f"), _fmt(t.get("device_peak_mib"), ".0f"),
             _fmt(j.get("device_peak_mib", np.nan) / t.get("device_peak_mib", np.nan))]
            for m, j, t in _pairs(r, top)]))
    else:
        L.append("Resident-set high-water mark of the worker process over the timed steps (VmHWM, "
                 "reset right before them, so model load and compilation do not count), and the "
                 "same less the process's RSS once its libraries were loaded and before any model "
                 "existed (`libs`): JAX's and torch's own libraries differ in size, the model's "
                 "memory is what lies above them. XLA's own buffer plan for the step "
                 "(`memory_analysis().temp_size_in_bytes`) is given for JAX.\n")
        rows = []
        for m, j, t in _pairs(r, top):
            ja, ta = j["peak_rss_mib"] - j["rss_libs_mib"], t["peak_rss_mib"] - t["rss_libs_mib"]
            rows.append([m, *(f"{x:.0f}" for x in (j["peak_rss_mib"], j["rss_libs_mib"], ja,
                                                   j["xla_temp_mib"], t["peak_rss_mib"],
                                                   t["rss_libs_mib"], ta)), f"**{ja / ta:.2f}**"])
        L.append(_table("model | JAX peak | JAX libs | JAX above libs | XLA temp | torch peak | "
                        "torch libs | torch above libs | ratio above libs", rows))
    L.append("")
    L.append("## MP-IQE training step against visual prompt depth\n")
    L.append(_table("depth | JAX step (s) | torch step (s) | ratio", [
        [d, f"{j['train_s']:.3f}", f"{t['train_s']:.3f}", f"{t['train_s'] / j['train_s']:.2f}x"]
        for d, j, t in ((d, r[f"jax_mpiqe_{d}"], r[f"torch_mpiqe_{d}"]) for d in plan.depths)]))
    L.append("")
    if not device:
        L += targets(plan, name, prep, r, run)
    L.append("Where the time goes and what was changed because of it: `docs/profile.md`. The input "
             "pipeline's figures (`tools/benchmark_pipeline.py`): `docs/benchmarks_pipeline.md`.\n")
    if "wall_s" in run:
        L.append(f"Total wall time of this run: {run['wall_s']:.0f} s (`{run['command']}`).")
    return "\n".join(L) + "\n"


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def targets(plan: plans.Plan, name: str, prep: dict, r: dict, run: dict) -> list[str]:
    """The table of the CPU targets, each judged from this run's figures."""
    top = max(plan.depths)
    ips = lambda m: plan.images / m["train_s"]
    L = ["## Against the targets (CPU)\n", "| target | measured | |", "|---|---|---|"]
    pairs = list(zip(_pairs(r, top), ("MP-IQE", "LIQE")))
    for ((m, j, t), label), goal in zip(pairs, (TARGET_MPIQE_RATIO, TARGET_LIQE_RATIO)):
        ratio, trim = ips(j) / ips(t), r.get(f"torch_trim_{m}")
        extra = (f" ({ips(j) / ips(trim):.2f}x against the reference with trimmed text)"
                 if trim else "")
        L.append(f"| {label} train step >= {goal:g}x the reference's images/s | "
                 f"{ratio:.2f}x{extra} | {_met(ratio >= goal)} |")
    peak = prep["matmul_peak"]
    frac = {m: j["flops"] / j["train_s"] / peak for (m, j, _), _ in pairs}
    L.append(f"| train step >= {100 * TARGET_PEAK_FRACTION:.0f}% of the measured matmul peak | "
             f"MP-IQE {100 * frac['mpiqe']:.0f}%, LIQE {100 * frac['liqe']:.0f}% of this run's "
             f"{peak / 1e9:.1f} GFLOP/s | {_met(min(frac.values()) >= TARGET_PEAK_FRACTION)} |")
    mem, ok = [], True
    for (m, j, t), label in pairs:
        above = (j["peak_rss_mib"] - j["rss_libs_mib"]) / (t["peak_rss_mib"] - t["rss_libs_mib"])
        mem.append(f"{label} {j['peak_rss_mib']:.0f} vs {t['peak_rss_mib']:.0f} MiB "
                   f"({above:.2f} above the libraries)")
        if t.get("text_recomputed"):
            mem[-1] = mem[-1][:-1] + ", the reference recomputing its text blocks)"
        ok &= j["peak_rss_mib"] <= t["peak_rss_mib"]
    L.append(f"| peak memory no higher than the reference's | {'; '.join(mem)} | {_met(ok)} |")
    if name == "quick" and "wall_s" in run:
        L.append(f"| `--quick` under {TARGET_QUICK_S / 60:.0f} minutes | {run['wall_s']:.0f} s | "
                 f"{_met(run['wall_s'] < TARGET_QUICK_S)} |")
    L.append("")
    return L
