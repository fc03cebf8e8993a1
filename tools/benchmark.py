"""Training and inference speed of MP-IQE and LIQE in JAX against a PyTorch reference, side by side.

    python tools/benchmark.py            # the full run; writes docs/benchmarks.md
    python tools/benchmark.py --quick    # a reduced run (6.5 minutes on 2 cores), same figures
    python tools/benchmark.py --device   # on a lent GPU: bf16 compute, larger batch, % of bf16 peak
    python tools/benchmark.py --tiny     # CLIP `tiny`: checks this script (minutes on 2 cores)
    python tools/benchmark.py --report-only docs/benchmarks.json   # re-render docs/benchmarks.md

CLIP ViT-B/32 at 224, random weights from a fixed seed, the configs' defaults. Before any timing
(but in `--quick`) `tools/torch_reference.py` must give the JAX loss (to 1e-4), scores and
gradient norm on the same weights, and in every float32 plan the first timed steps of each pair
the same loss, or nothing is reported. Each (framework, model) then runs in a fresh worker
process (`--worker`): training images/s (`train.state.training_setup`'s jitted step against the
reference's forward, losses, backward, clip and AdamW), inference images/s at 15 crops and 1,
the JAX step's achieved FLOP/s against a measured matmul peak, peak memory over the timed steps,
and MP-IQE's step against visual prompt depth; medians after warm-up. The reference runs every
prompt at 77 tokens as the original codes do ("torch, trimmed": at the longest prompt's length,
as JAX). The figures are saved as JSON and the report, which states the method, is rendered
from it (`bench.report`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__))]

from bench import plans, protocol, report  # noqa: E402  (torch-free: JAX workers never import it)


def _print_checks(checks: dict) -> bool:
    """Prints each check's losses; True when one failed."""
    for k, v in checks.items():
        print(f"  {k}: loss JAX {v['loss'][0]:.6f} torch {v['loss'][1]:.6f}; "
              f"{'ok' if not v['failures'] else 'FAIL: ' + '; '.join(v['failures'])}")
    return any(v["failures"] for v in checks.values())


def measure(args, plan: plans.Plan) -> dict | None:
    """Every worker of the run, one after another; the saved run's dict (None: a check failed)."""
    run_worker = protocol.run_worker
    with tempfile.TemporaryDirectory(prefix="mmpiqa_bench_") as tmp:
        args.tmp = tmp
        print("reference check and weights:")
        prep = run_worker("prepare", args)
        if _print_checks(prep["check"]):
            print("the PyTorch reference disagrees with the JAX model: no timing counts; stopping")
            return None
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
    from bench import check

    # The first timed steps ran on the exported weights and one batch in both frameworks: in a
    # float32 plan their losses must agree, or no timing counts (bf16 ones differ by design).
    first = check.first_step_checks(r) if plan.dtype == "float32" else {}
    print("first timed steps (same weights, same batch):")
    if _print_checks(first):
        print("the PyTorch reference disagrees with the JAX model: no timing counts; stopping")
        return None
    if any(v.get("torch_imported") for k, v in r.items() if k.startswith("jax_")):
        print("warning: a JAX worker imported torch; its memory figures include torch's")
    return {"plan": dataclasses.asdict(plan), "prepare": prep, "first_steps": first, "results": r}


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
    p.add_argument("--tiny", action="store_true", help="CLIP 'tiny' (checks this script)")
    p.add_argument("--no-trimmed", action="store_true", help="skip the 'torch, trimmed text' rows")
    p.add_argument("--out", default=None, help="markdown output, its figures saved beside it as "
                   ".json (default: docs/benchmarks.md for the full run, none otherwise)")
    p.add_argument("--report-only", metavar="JSON", help="measure nothing: render the report of "
                   "a saved run (e.g. docs/benchmarks.json) to --out, or to stdout")
    # Worker mode (internal).
    p.add_argument("--worker", choices=sorted(protocol.WORKERS), help=argparse.SUPPRESS)
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
        return protocol.serve(args)
    if args.report_only:
        with open(args.report_only) as f:
            text = report.render(json.load(f))
        if args.out:
            with open(args.out, "w") as f:
                f.write(text)
            print(f"written to {args.out}")
        else:
            print(text, end="")
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
    plan = plans.PLANS[args.plan_name]
    out_path = args.out or (os.path.join(ROOT, "docs", "benchmarks.md")
                            if args.plan_name == "full" else None)
    start = time.perf_counter()
    info = report.machine()
    print(f"benchmark ({args.plan_name}): {info['cpu']}, {info['cores']} cores; jax {info['jax']}, "
          f"torch {info['torch']}")
    saved = measure(args, plan)
    if saved is None:
        return 1
    command = "python tools/benchmark.py" + "".join(
        f" --{k}" for k in ("quick", "device", "tiny") if getattr(args, k))
    saved = {**saved, "machine": info, "run": {"name": args.plan_name, "command": command,
                                               "wall_s": time.perf_counter() - start}}
    # The figures go to JSON first; the report is rendered from that file, not from memory.
    with tempfile.TemporaryDirectory(prefix="mmpiqa_bench_") as tmp:
        json_path = (os.path.splitext(out_path)[0] + ".json" if out_path
                     else os.path.join(tmp, "benchmark.json"))
        with open(json_path, "w") as f:
            json.dump(saved, f, indent=1, default=float)
        with open(json_path) as f:
            text = report.render(json.load(f))
    print()
    print(text)
    if out_path:
        with open(out_path, "w") as f:
            f.write(text)
        print(f"written to {out_path} (figures: {json_path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
