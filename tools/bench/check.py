"""The reference check before any timing, and the check on each worker pair's first timed step."""
from __future__ import annotations

import numpy as np

from bench import plans, timing


def worker_prepare(args, plan: plans.Plan) -> dict:
    """The matmul peak; the reference check on every model the run times, exporting the weights
    for the torch workers (without the check, each JAX worker exports its own model's)."""
    out = {"check": {}, "matmul_n": plan.matmul_n,
           "matmul_peak": timing.matmul_peak("float32", plan.matmul_n)}
    if not plan.full_check:
        return out
    import jax
    import torch

    import torch_reference as tr
    from mmpiqa_jax.checkpoints.torch_export import export_torch

    # The check is about correctness, so it runs in float32 at full matmul precision whatever the
    # plan times in (bf16 compute or TF32 matmuls on a GPU would swamp the 1e-4 tolerance).
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    for name, depth in [("mpiqe", d) for d in plan.depths] + [("liqe", 0)]:
        config = plans.model_config(name, plan, depth)
        config.model.dtype = "float32"
        model = plans.build_jax_model(config)
        folder = export_torch(model, plans.export_dir(args.tmp, name, depth))
        if depth in (0, max(plan.depths)) or name == "liqe":
            batch = tr.random_batch(np.random.default_rng(0), plan.check_images, 2,
                                    model.clip.config.image_resolution)
            ref = tr.load(folder, mode=config.optimizer.param_groups)
            if name == "liqe":
                # 495 prompts x 77 tokens keep ~20 GB of activations for the backward pass in
                # float32; recomputing each block in the backward (same values) keeps the check
                # within a small machine's memory.
                ref.clip.set_grad_checkpointing(True)
            with jax.default_matmul_precision("highest"):
                result = tr.compare(model, config.optimizer.param_groups, batch, ref=ref)
            result["failures"] = tr.check(result)
            out["check"][f"{name}_{depth}"] = result
        del model
    return out


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
