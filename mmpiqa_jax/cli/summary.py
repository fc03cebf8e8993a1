"""`mmpiqa summary`: parameter counts per group and the model FLOPs of one training step.

Nothing is allocated or run: the model and batch are abstract (`train.cost.step_model_flops`).
"""
from __future__ import annotations

from mmpiqa_jax.errors import UserError

HELP = "Print parameter counts per group and the model FLOPs of one training step."


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="config as FILE[:ARGS]")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (repeatable)")
    parser.add_argument("--no-flops", action="store_true", help="skip counting the step's FLOPs")


def format_flops(x: float) -> str:
    """`1.23 GFLOP` and the like."""
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if x >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.0f} FLOP"


def run(args) -> int:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from mmpiqa_jax import config as config_lib
    from mmpiqa_jax.checkpoints import pretrained
    from mmpiqa_jax.data import pipeline
    from mmpiqa_jax.models import iqa
    from mmpiqa_jax.train import cost as cost_lib
    from mmpiqa_jax.train import param_groups as pg
    from mmpiqa_jax.train import state as state_lib
    from mmpiqa_jax.train import step as step_lib

    config = config_lib.load_config(args.config, args.overrides)
    model = nnx.eval_shape(lambda: iqa.build_model(config.model, nnx.Rngs(config.seed),
                                                   clip=pretrained.clip_config(config.model)))
    setup = state_lib.training_setup(config, model)
    m, groups = config.model, config.optimizer.param_groups
    print(f"config: {args.config}" + "".join(f" --set {o}" for o in args.overrides))
    print(f"model: {m.name} on CLIP {m.variant} ({m.dtype}); param groups: "
          f"{groups if isinstance(groups, str) else 'custom'}")
    print(pg.format_counts(pg.count(model, setup.groups)))
    if args.no_flops:
        return 0
    resolution = model.clip.config.image_resolution
    if config.data.crop_size != resolution:
        raise UserError(f"data.crop_size={config.data.crop_size} differs from CLIP "
                        f"{m.variant}'s image resolution {resolution}")
    b, c = config.batch_size, config.data.crops_per_image
    weights = jax.ShapeDtypeStruct((len(step_lib.TASKS),), jnp.float32)
    flops = cost_lib.step_model_flops(model, setup, pipeline.train_element_spec(config), weights)
    text = ("cached (text path frozen)" if setup.use_text_cache
            else "recomputed (text path trains)")
    print(f"train step: batch {b} images x {c} crops; text features {text}")
    print(f"  model FLOPs per step: {format_flops(flops)} ({flops:.4g}), per crop: "
          f"{format_flops(flops / (b * c))} (blocks unrolled, nothing recomputed)")
    return 0
