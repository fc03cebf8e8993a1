"""`mmpiqa summary` and `train.cost.step_model_flops`: model FLOPs of the training step, counted
with every block once and nothing recomputed, against an independent count of its matmuls."""
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmpiqa_jax import config as config_lib
from mmpiqa_jax.cli import main as cli_main
from mmpiqa_jax.data import pipeline
from mmpiqa_jax.models import iqa
from mmpiqa_jax.train import cost as cost_lib
from mmpiqa_jax.train import param_groups as pg
from mmpiqa_jax.train import state as state_lib
from mmpiqa_jax.train import step as step_lib


def _live_eqns(jaxpr) -> list:
    """The equations whose results reach the outputs (lowering drops the others)."""
    live = {v for v in jaxpr.outvars if not isinstance(v, jax.extend.core.Literal)}
    keep = []
    for eqn in reversed(jaxpr.eqns):
        if eqn.effects or any(v in live for v in eqn.outvars):
            keep.append(eqn)
            live |= {v for v in eqn.invars if not isinstance(v, jax.extend.core.Literal)}
    return keep[::-1]


def _dot_flops(jaxpr) -> int:
    """2 x multiply-adds of every live `dot_general` and convolution in a jaxpr, a scan's body
    counted `length` times, a cond's costliest branch: the independent count (jaxpr, not XLA)."""
    total = 0
    for eqn in _live_eqns(jaxpr):
        name = eqn.primitive.name
        if name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contract)
        elif name == "conv_general_dilated":
            # No dilated input (it would multiply holes): kernel size / out features MACs an output.
            assert set(eqn.params["lhs_dilation"]) == {1}, eqn.params
            rhs = eqn.invars[1].aval.shape
            per_output = math.prod(rhs) // rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
            total += 2 * math.prod(eqn.outvars[0].aval.shape) * per_output
        elif name == "while":
            raise AssertionError("a while loop's trip count is unknown to this count")
        jaxprs = (jax.extend.core.ClosedJaxpr, jax.extend.core.Jaxpr)
        subs = [v for v in eqn.params.values() if isinstance(v, jaxprs)]
        subs += [b for v in eqn.params.values() if isinstance(v, tuple) for b in v
                 if isinstance(b, jaxprs)]
        inner = [_dot_flops(getattr(s, "jaxpr", s)) for s in subs]
        if name == "cond":
            total += max(inner)
        else:
            total += sum(inner) * (eqn.params["length"] if name == "scan" else 1)
    return total


def _unrolled_step_jaxpr(model, setup, batch, weights):
    with model.clip.block_execution(scan_layers=False, remat="none"):
        graphdef, trainable, frozen = pg.split_trainable(model, setup.groups)
        opt_state = jax.eval_shape(setup.tx.init, trainable)
        step = step_lib.make_train_step(graphdef, setup.tx, use_text_cache=setup.use_text_cache)
        return jax.make_jaxpr(step)(trainable, frozen, opt_state, batch, weights).jaxpr


@pytest.fixture(scope="module", params=["mpiqe", "liqe"])
def tiny(request):
    overrides = ["model.num_text_context=0"] if request.param == "liqe" else []
    # MP-IQE without deep prompts: its vision blocks then run as one scan, as LIQE's do (with
    # prompts, block 0 runs apart and tiny's second block is a scan of one).
    arg = "model=mpiqe,depth=0" if request.param == "mpiqe" else "model=liqe"
    config = config_lib.load_config(f"configs/tiny.py:{arg}", overrides)
    model = nnx.eval_shape(lambda: iqa.build_model(config.model, nnx.Rngs(0)))
    setup = state_lib.training_setup(config, model)
    weights = jax.ShapeDtypeStruct((len(step_lib.TASKS),), jnp.float32)
    return config, model, setup, pipeline.train_element_spec(config), weights


def test_model_flops_count_every_block_once(tiny):
    """XLA's count of the unrolled step is its matmuls plus a little element-wise work; the scanned
    program's own analysis (what `summary` printed before) misses all blocks but one a tower."""
    config, model, setup, batch, weights = tiny
    assert model.clip.transformer.scan_layers  # the configs' default, which the count undoes
    flops = cost_lib.step_model_flops(model, setup, batch, weights)
    dots = _dot_flops(_unrolled_step_jaxpr(model, setup, batch, weights))
    # XLA also counts element-wise ops (1 FLOP an element: layer norms, softmax, GELU, AdamW on
    # every trainable parameter): 1-5% on top of the matmuls on CLIP tiny, while one of tiny's two
    # blocks a tower is a quarter of its tower's matmuls or more; 10% tells the two apart.
    assert dots <= flops <= 1.1 * dots, (flops, dots)
    # However the config runs the blocks, the count is the same.
    with model.clip.block_execution(scan_layers=False, remat="none"):
        assert cost_lib.step_model_flops(model, setup, batch, weights) == flops
    graphdef, trainable, frozen = pg.split_trainable(model, setup.groups)
    step = step_lib.make_train_step(graphdef, setup.tx, use_text_cache=setup.use_text_cache)
    scanned = jax.jit(step).lower(trainable, frozen, jax.eval_shape(setup.tx.init, trainable),
                                  batch, weights).cost_analysis()
    scanned = (scanned[0] if isinstance(scanned, (list, tuple)) else scanned)["flops"]
    assert scanned < 0.8 * dots, (scanned, dots)


def test_summary_prints_counts_and_model_flops(tiny, capsys):
    config, model, setup, batch, weights = tiny
    name = config.model.name
    args = ["summary", "--config", f"configs/tiny.py:model={name}"]
    if name == "liqe":
        args += ["--set", "model.num_text_context=0"]
    else:
        args += ["--set", f"model.visual_prompt_depth={config.model.visual_prompt_depth}"]
    assert cli_main.main(args) == 0
    out = capsys.readouterr().out
    assert f"model: {name} on CLIP tiny (float32)" in out
    trainable = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(setup.split(model)[0]))
    assert re.search(rf"^total .* {trainable:,}$", out, re.M), out
    printed = float(re.search(r"model FLOPs per step: .* \(([0-9.e+]+)\)", out).group(1))
    expected = cost_lib.step_model_flops(model, setup, batch, weights)
    np.testing.assert_allclose(printed, expected, rtol=1e-3)  # printed to 4 significant digits
    b, c = config.batch_size, config.data.crops_per_image
    assert f"batch {b} images x {c} crops" in out


def test_summary_rejects_a_crop_size_the_model_cannot_take(capsys):
    assert cli_main.main(["summary", "--config", "configs/tiny.py", "--set",
                          "data.crop_size=64"]) == 1
    assert "data.crop_size=64 differs" in capsys.readouterr().err
