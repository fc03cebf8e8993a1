"""What a benchmark run measures, and the config of each timed model."""
from __future__ import annotations

import dataclasses
import os

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


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

    @property
    def matmul_n(self) -> int:
        """The side of the square fp32 matmul whose FLOP/s is the CPU peak."""
        return 2048 if self.variant == "tiny" else 4096


FULL = Plan()
QUICK = Plan(images=4, eval_images=1, warmup=1, repeats=3, liqe_repeats=1, liqe_warmup=0,
             depths=(0, 12), trimmed=False, full_check=False)
DEVICE = Plan(images=128, eval_images=64, warmup=3, repeats=10, liqe_repeats=10, dtype="bfloat16")
TINY = Plan(images=4, eval_images=2, warmup=1, repeats=2, liqe_repeats=1, depths=(0, 2),
            variant="tiny")  # for checking the benchmark itself
PLANS = {"full": FULL, "quick": QUICK, "device": DEVICE, "tiny": TINY,
         # --device where jax sees no accelerator: the device code path at the quick sizes
         "device-quick": dataclasses.replace(QUICK, dtype="bfloat16")}


def plan_from_dict(d: dict) -> Plan:
    """A `Plan` from its saved JSON form (`dataclasses.asdict`, tuples saved as lists)."""
    unknown = set(d) - {f.name for f in dataclasses.fields(Plan)}
    if unknown:
        raise ValueError(f"unknown plan keys {sorted(unknown)} in the saved benchmark")
    return Plan(**{**d, "depths": tuple(d["depths"])})


def plan_name(plan: Plan) -> str:
    """The name of a known plan equal to `plan` ("custom" for none)."""
    return next((k for k, v in PLANS.items() if v == plan), "custom")


def model_config(name: str, plan: Plan, depth: int = 12):
    """The config of model `name` ("mpiqe" at `depth`, or "liqe") for `plan`: random weights."""
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
    config.model.clip_checkpoint = "random"  # random weights on purpose (benchmark.py docstring)
    return config


def build_jax_model(config, seed: int = 0):
    """The config's model from a fixed seed, its fusion head made random (MP-IQE)."""
    import jax
    from flax import nnx

    from mmpiqa_jax.models import iqa

    model = iqa.build_model(config.model, nnx.Rngs(seed))
    if config.model.name == "mpiqe":
        # The fusion head starts at zero (score 3 everywhere); random, so that every loss bites.
        kernel = model.fusion.head.kernel
        kernel[...] = 0.1 * jax.random.normal(jax.random.key(seed + 1), kernel.shape)
    return model


def export_dir(tmp: str, name: str, depth: int) -> str:
    """Where a model's weights are exported (`export_torch`) for the torch workers."""
    return os.path.join(tmp, f"{name}_{depth}")
