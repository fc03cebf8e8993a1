"""One worker per subprocess: `tools/benchmark.py --worker KIND ...`, whose result is one JSON
object on the last line of its stdout. Each (framework, model) runs in a fresh process, so the two
frameworks never share a thread pool or a heap, and a JAX worker never imports torch."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time

from bench import plans

ENTRY = os.path.join(plans.ROOT, "tools", "benchmark.py")
# Imported in the worker's process only: the JAX worker's module does not import torch.
WORKERS = {"prepare": ("bench.check", "worker_prepare"), "jax": ("bench.jax_worker", "worker_jax"),
           "torch": ("bench.torch_worker", "worker_torch")}


def serve(args) -> int:
    """Worker mode: run `args.worker` under `args.plan_name`, print its result as JSON."""
    plan = plans.PLANS[args.plan_name]
    if args.plan_name.startswith("device"):
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    module, name = WORKERS[args.worker]
    result = getattr(importlib.import_module(module), name)(args, plan)
    print(json.dumps(result, default=float))
    return 0


def run_worker(kind: str, args, **kw) -> dict:
    """Runs one worker in a fresh process; its JSON result. `kw`: its options (True: a flag)."""
    cmd = [sys.executable, ENTRY, "--worker", kind, "--tmp", args.tmp, "--plan", args.plan_name]
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
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=plans.ROOT)
    if proc.returncode != 0:
        print(" failed")
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"worker {kind} {label} failed (exit {proc.returncode})")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    compile_s = f" (compile {result['compile_s']:.0f} s)" if "compile_s" in result else ""
    print(f" {time.perf_counter() - t:.0f} s{compile_s}", flush=True)
    return result
