"""Times a jitted forward + backward of MP-IQE and LIQE with CLIP's blocks run each way
(`model.scan_layers`, `model.remat`); median of several runs after compiling.

    python tools/time_block_execution.py --variants tiny ViT-B/32 --repeats 5

Random weights and a fixed synthetic batch (`bench_inputs`); the loss and trainable parameters
of training (MP-IQE: the `prompt` groups, depth-12 visual prompts or all layers of a smaller
tower; LIQE: `full`). Prints one line per run and a markdown table at the end.
"""
import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]
import bench_inputs  # noqa: E402
from mmpiqa_jax import config as config_lib
from mmpiqa_jax.models import iqa  # noqa: E402
from mmpiqa_jax.models.clip_model import CLIP, get_variant  # noqa: E402
from mmpiqa_jax.train import param_groups as pg  # noqa: E402
from mmpiqa_jax.train import step as step_lib  # noqa: E402

EXECUTIONS = {"scan+dots": (True, "dots"), "scan+none": (True, "none"),
              "unrolled+none": (False, "none"), "unrolled+dots": (False, "dots")}


def build(name: str, variant: str):
    clip = CLIP(get_variant(variant), rngs=nnx.Rngs(0))
    if name == "mpiqe":
        depth = min(12, clip.config.vision_layers)
        return (iqa.build_model(config_lib.load_config("configs/mpiqe.py", [
            f"model.visual_prompt_depth={depth}"]).model, nnx.Rngs(1), clip=clip),
            pg.resolve("prompt"))
    return (iqa.build_model(config_lib.load_config("configs/liqe.py").model, nnx.Rngs(1),
                            clip=clip), pg.resolve("full"))


def time_one(name, variant, execution, images, crops, repeats):
    model, groups = build(name, variant)
    scan_layers, remat = EXECUTIONS[execution]
    model.clip.set_block_execution(scan_layers=scan_layers, remat=remat)
    graphdef, trainable, frozen = pg.split_trainable(model, groups)
    batch = {k: jnp.asarray(v) for k, v in bench_inputs.random_batch(
        np.random.default_rng(0), images, crops, model.clip.config.image_resolution).items()}
    weights = jnp.asarray(bench_inputs.LOSS_WEIGHTS)
    fn = lambda t, f, b: jax.value_and_grad(step_lib.loss_fn, has_aux=True)(t, graphdef, f, b,
                                                                            weights)
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(trainable, frozen, batch).compile()
    jax.block_until_ready(compiled(trainable, frozen, batch))
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(trainable, frozen, batch))
        times.append(time.perf_counter() - start)
    return compile_s, times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["tiny"])
    parser.add_argument("--models", nargs="+", default=["mpiqe", "liqe"])
    parser.add_argument("--executions", nargs="+", default=["scan+dots", "unrolled+none"],
                        choices=sorted(EXECUTIONS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1,
                        help="interleaved rounds over the executions (the CPU is shared)")
    parser.add_argument("--batch", type=int, nargs=2, default=None, metavar=("IMAGES", "CROPS"),
                        help="default: 16 x 3 for tiny, 4 x 3 otherwise")
    args = parser.parse_args()
    rows = []
    for variant in args.variants:
        images, crops = args.batch or ((16, 3) if variant == "tiny" else (4, 3))
        for name in args.models:
            results = {e: ([], []) for e in args.executions}
            for _ in range(args.rounds):
                for execution in args.executions:
                    compile_s, times = time_one(name, variant, execution, images, crops,
                                                args.repeats)
                    results[execution][0].append(compile_s)
                    results[execution][1].extend(times)
                    print(f"{name} {variant} {images}x{crops} {execution}: compile "
                          f"{compile_s:.2f} s, runs {' '.join(f'{t:.3f}' for t in times)}",
                          flush=True)
            for execution, (compiles, times) in results.items():
                rows.append((name, variant, f"{images}x{crops}", execution,
                             statistics.median(times), statistics.median(compiles), len(times)))
    print("\n| model | CLIP | images x crops | blocks | fwd+bwd (median) | compile | runs |")
    print("|---|---|---|---|---|---|---|")
    for name, variant, batch, execution, t, c, n in rows:
        print(f"| {name} | {variant} | {batch} | {execution} | {t * 1e3:.1f} ms | {c:.1f} s "
              f"| {n} |")


if __name__ == "__main__":
    main()
