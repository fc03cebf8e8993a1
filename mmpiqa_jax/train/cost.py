"""Model FLOPs of one training step, as `mmpiqa summary` and `tools/benchmark.py` count them.

Model FLOPs are XLA's cost analysis of the step lowered with CLIP's blocks unrolled and nothing
recomputed, not what the compiled program (a rematerialised `lax.scan`) executes.
"""
from __future__ import annotations

import jax

from mmpiqa_jax.train import param_groups as pg
from mmpiqa_jax.train import state as state_lib
from mmpiqa_jax.train import step as step_lib


def _abstract(tree):
    """Arrays (or structs) as `jax.ShapeDtypeStruct`s: lowering reads shapes only."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def step_model_flops(model, setup: state_lib.TrainingSetup, batch: dict,
                     loss_weights) -> float:
    """Model FLOPs of one `step.make_train_step` step of `model` on `batch`.

    model, batch (one global training batch) and loss_weights ([len(step.TASKS)]) may be
    abstract: only shapes are read, nothing runs.
    """
    with model.clip.block_execution(scan_layers=False, remat="none"):
        # The graph definition carries the blocks' execution, so it is split inside the block.
        graphdef, trainable, frozen = pg.split_trainable(model, setup.groups)
        trainable, frozen = _abstract(trainable), _abstract(frozen)
        opt_state = jax.eval_shape(setup.tx.init, trainable)
        step = step_lib.make_train_step(graphdef, setup.tx, use_text_cache=setup.use_text_cache)
        cost = jax.jit(step).lower(trainable, frozen, opt_state, _abstract(batch),
                                   _abstract(loss_weights)).cost_analysis()
    return float((cost or {}).get("flops", float("nan")))
