"""Sharding strategies: the rules by parameter path and shape, and the same runs on 8 fake CPU
devices (replicate and fsdp) giving one device's losses: the toy task, a tiny MP-IQE and a tiny
LIQE."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SAME_FLAGS_ENV
from jax.sharding import PartitionSpec as P

from mmpiqa_jax.errors import UserError
from mmpiqa_jax.train import sharding

REPO = Path(__file__).resolve().parents[1]


def spec(path, shape, name, min_size=0):
    return sharding.leaf_spec(path, shape, 8, sharding.Strategy(name, min_size))


def test_fsdp_splits_large_tensors_and_keeps_small_and_layer_axes_whole():
    assert spec("params/token_embedding/embedding/value", (49408, 512), "fsdp") == P(
        "data", None)
    assert spec("params/x/kernel/value", (6, 10), "fsdp") == P(None, None)  # none divides by 8
    assert spec("params/ln/scale/value", (768,), "fsdp", min_size=2**16) == P(None)
    # Stacked blocks (a leading layer axis, no block index): the layer axis is never split.
    assert spec("params/visual/transformer/resblocks/mlp/c_fc/kernel/value", (16, 768, 3072),
                "fsdp") == P(None, None, "data")
    # An Adam moment of a parameter: the same layout.
    assert spec("opt_state/1/0/mu/clip/visual/transformer/resblocks/mlp/c_fc/kernel/value",
                (16, 768, 3072), "fsdp") == P(None, None, "data")
    assert spec("params/token_embedding/embedding/value", (49408, 512), "replicate") == P(
        None, None)


def test_unknown_strategy_is_named():
    with pytest.raises(UserError, match=r"sharding.strategy='zero3' is not one of"):
        sharding.Strategy("zero3")


# XLA_FLAGS must be set before jax initialises, hence a separate process.
SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
import jax
from toy_task import ToyIterator, ToyTask, toy_config
from mmpiqa_jax.train import sharding
from mmpiqa_jax.train.trainer import train

assert jax.device_count() == 8, jax.devices()
out = {{}}
for n, strategy in [(8, "replicate"), (8, "fsdp"), (1, "replicate")]:
    mesh = sharding.make_mesh(jax.devices()[:n])
    config = toy_config(num_steps=5, checkpoint_every=5,
                        sharding={{"strategy": strategy, "min_size": 2**16}})
    workdir = f"{workdir}/mesh{{n}}{{strategy}}"
    state = train(ToyTask(5), config, workdir, train_iter=ToyIterator(config.batch_size), mesh=mesh)
    kernel = state.params["mid"]["kernel"].value
    mu = state.opt_state[1][0].mu["mid"]["kernel"].value
    out[f"{{n}} {{strategy}}"] = {{
        "losses": [json.loads(l)["loss"] for l in open(workdir + "/train_log.jsonl")],
        "kernel_spec": str(kernel.sharding.spec),
        "kernel_shard": list(kernel.addressable_shards[0].data.shape),
        "mu_spec": str(mu.sharding.spec),
        "bias_spec": str(state.params["mid"]["bias"].value.sharding.spec),
    }}
print("RESULT", json.dumps(out))
"""


def run_on_8_cpu_devices(script: str, timeout: int) -> dict:
    """Runs `script` in a process with 8 fake CPU devices; the JSON it prints after `RESULT `."""
    # The runs compared are made under the same flags: XLA's optimisations can be off.
    env = {**os.environ, **SAME_FLAGS_ENV, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.mark.integration
def test_strategies_agree_and_parameters_are_sharded(tmp_path):
    out = run_on_8_cpu_devices(SCRIPT.format(tests=str(REPO / "tests"), workdir=str(tmp_path)),
                               timeout=240)

    want = out["1 replicate"]["losses"]
    assert len(want) == 5
    for run in ("8 replicate", "8 fsdp"):
        np.testing.assert_allclose(out[run]["losses"], want, rtol=1e-5, err_msg=run)

    # fsdp: the 256x256 kernel and its Adam moment split 8 ways; the bias (256 elements, under
    # min_size) whole.
    fsdp = out["8 fsdp"]
    assert "data" in fsdp["kernel_spec"]
    assert fsdp["kernel_shard"] in ([32, 256], [256, 32])
    assert fsdp["mu_spec"] == fsdp["kernel_spec"]
    assert "data" not in fsdp["bias_spec"]
    assert out["8 replicate"]["kernel_shard"] == [256, 256]


# The same on the real model: a tiny MP-IQE and a tiny LIQE (IQATask, DWA off, fixed random
# batches), with min_size 256 so that the tiny CLIP's matrices are split too.
IQA_SCRIPT = """
import json, sys
sys.path.insert(0, {tools!r})
import jax
import numpy as np
from bench_inputs import random_batch
from mmpiqa_jax import config as config_lib
from mmpiqa_jax.train import sharding
from mmpiqa_jax.train.task import IQATask
from mmpiqa_jax.train.trainer import train


class Batches:
    '''Batch k: a fixed random batch of seed k (resumable by its step count).'''
    def __init__(self, size):
        self.size, self.k = size, 0
    def __next__(self):
        self.k += 1
        return random_batch(np.random.default_rng(self.k), self.size, 2, 32)
    def __iter__(self):
        return self
    def get_state(self):
        return {{"k": self.k}}
    def set_state(self, state):
        self.k = state["k"]


out = {{}}
for model_name in ("mpiqe", "liqe"):
    for n, strategy in [(1, "replicate"), (8, "replicate"), (8, "fsdp")]:
        mesh = sharding.make_mesh(jax.devices()[:n])
        config = config_lib.load_config(f"configs/tiny.py:model={{model_name}}", [
            "num_steps=5", "log_every=1", "checkpoint_every=5", "optimizer.warmup_steps=1",
            f"sharding.strategy={{strategy}}", "sharding.min_size=256"])
        run = f"{{model_name}} {{n}} {{strategy}}"
        workdir = f"{workdir}/" + run.replace(" ", "_")
        state = train(IQATask(config), config, workdir, train_iter=Batches(config.batch_size),
                      mesh=mesh)
        specs = [str(x.sharding.spec) for x in jax.tree.leaves(state) if hasattr(x, "sharding")]
        out[run] = {{
            "losses": [json.loads(l)["loss"] for l in open(workdir + "/train_log.jsonl")],
            "split": sum("data" in s for s in specs)}}
print("RESULT", json.dumps(out))
"""


@pytest.mark.integration
def test_mpiqe_and_liqe_agree_under_every_strategy(tmp_path):
    out = run_on_8_cpu_devices(IQA_SCRIPT.format(tools=str(REPO / "tools"),
                                                 workdir=str(tmp_path)), timeout=900)
    for model in ("mpiqe", "liqe"):
        want = out[f"{model} 1 replicate"]["losses"]
        assert len(want) == 5 and len(set(want)) == 5  # five different batches, a moving model
        for strategy in ("replicate", "fsdp"):
            run = f"{model} 8 {strategy}"
            np.testing.assert_allclose(out[run]["losses"], want, rtol=1e-5, err_msg=run)
        # What each strategy splits: nothing; every large tensor.
        assert out[f"{model} 8 replicate"]["split"] == 0
        assert out[f"{model} 8 fsdp"]["split"] > 0
