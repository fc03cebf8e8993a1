"""`mmpiqa summary`: parameter counts per group and the compiled FLOPs of one training step.

Nothing is allocated or run: the model comes from `nnx.eval_shape`, the batch is
`jax.ShapeDtypeStruct`s, and the FLOPs are XLA's cost analysis of the compiled step.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

HELP = "Print parameter counts per group and the compiled FLOPs of one training step."


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="config as FILE[:ARGS]")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (repeatable)")
    parser.add_argument("--no-flops", action="store_true", help="skip compiling the step")


def abstract_batch(config, resolution: int) -> dict:
    """ShapeDtypeStructs of one global training batch."""
    b, c = config.batch_size, config.data.crops_per_image
    s = lambda shape, dtype=jnp.float32: jax.ShapeDtypeStruct(shape, dtype)
    return {"pixels": s((b, c, resolution, resolution, 3)), "quality": s((b,)), "mos": s((b,)),
            "distortion_class": s((b,), jnp.int32), "scenes": s((b, 9)),
            "scene_mask": s((b,), jnp.bool_), "dataset_id": s((b,), jnp.int32)}


def step_cost(config, graphdef, trainable, frozen, tx, *, use_text_cache: bool) -> dict:
    """XLA's cost analysis (flops, bytes accessed) of the compiled train step on abstract inputs."""
    from mmpiqa_jax.train.step import TASKS, make_train_step

    resolution = graphdef_resolution(frozen, trainable)
    opt_state = jax.eval_shape(tx.init, trainable)
    step = make_train_step(graphdef, tx, use_text_cache=use_text_cache)
    weights = jax.ShapeDtypeStruct((len(TASKS),), jnp.float32)
    compiled = jax.jit(step).lower(trainable, frozen, opt_state, abstract_batch(config, resolution),
                                   weights).compile()
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax returned one dict per computation
        cost = cost[0]
    return dict(cost or {})


def graphdef_resolution(*states) -> int:
    """The image resolution, from the CLIP's positional embedding and patch kernel."""
    flat = {}
    for st in states:
        flat.update({"/".join(map(str, p)): v for p, v in nnx.to_flat_state(st)})
    tokens = flat["clip/visual/positional_embedding"].shape[0] - 1
    patch = flat["clip/visual/conv1/kernel"].shape[0]
    return int(round(tokens**0.5)) * patch


def _flops(x: float) -> str:
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if x >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.0f} FLOP"


def run(args) -> int:
    from mmpiqa_jax import config as config_lib
    from mmpiqa_jax.models import iqa
    from mmpiqa_jax.train import optimizer as optimizer_lib
    from mmpiqa_jax.train import param_groups as pg

    config = config_lib.load_config(args.config, args.overrides)
    groups = pg.resolve(config.optimizer.param_groups)
    model = nnx.eval_shape(lambda: iqa.build_model(config.model, nnx.Rngs(config.seed),
                                                   load_weights=False))
    graphdef, trainable, frozen = pg.split_trainable(model, groups)
    counts = pg.count(model, groups)
    m = config.model
    print(f"config: {args.config}" + "".join(f" --set {o}" for o in args.overrides))
    print(f"model: {m.name} on CLIP {m.variant} ({m.dtype}); param groups: "
          f"{config.optimizer.param_groups if isinstance(config.optimizer.param_groups, str) else 'custom'}")
    print(pg.format_counts(counts))
    if args.no_flops:
        return 0
    use_cache = not iqa.text_path_is_trainable(model, trainable)
    tx = optimizer_lib.make_optimizer(config.optimizer, groups, trainable,
                                      num_steps=config.num_steps,
                                      steps_per_epoch=config.steps_per_epoch)
    cost = step_cost(config, graphdef, trainable, frozen, tx, use_text_cache=use_cache)
    b, c = config.batch_size, config.data.crops_per_image
    flops = float(cost.get("flops", np.nan))
    print(f"train step: batch {b} images x {c} crops; text features "
          f"{'cached (text path frozen)' if use_cache else 'recomputed (text path trains)'}")
    print(f"  compiled FLOPs per step: {_flops(flops)} ({flops:.4g}), "
          f"per crop: {_flops(flops / (b * c))}; bytes accessed: "
          f"{float(cost.get('bytes accessed', np.nan)):.4g}")
    return 0
