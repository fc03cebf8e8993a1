"""The same run on meshes 8x1, 4x2 and 1x1 of 8 fake CPU devices gives the same losses: the toy
task and a tiny MP-IQE."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

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
for data, model in [(8, 1), (4, 2), (1, 1)]:
    n = data * model
    mesh = sharding.make_mesh(data, model, devices=jax.devices()[:n])
    config = toy_config(num_steps=5, checkpoint_every=5, mesh={{"data": data, "model": model}})
    workdir = f"{workdir}/mesh{{data}}x{{model}}"
    state = train(ToyTask(5), config, workdir, train_iter=ToyIterator(config.batch_size), mesh=mesh)
    kernel = state.params["mid"]["kernel"].value
    mu = state.opt_state[1][0].mu["mid"]["kernel"].value
    out[f"{{data}}x{{model}}"] = {{
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
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def test_meshes_agree_and_parameters_are_sharded(tmp_path):
    out = run_on_8_cpu_devices(SCRIPT.format(tests=str(REPO / "tests"), workdir=str(tmp_path)),
                               timeout=180)

    want = out["1x1"]["losses"]
    assert len(want) == 5
    for mesh in ("8x1", "4x2"):
        np.testing.assert_allclose(out[mesh]["losses"], want, rtol=1e-5, err_msg=mesh)

    # 4x2: the 256x256 kernel and its Adam moment are split over `model`; the bias is not.
    assert "model" in out["4x2"]["kernel_spec"]
    assert out["4x2"]["kernel_shard"] in ([128, 256], [256, 128])
    assert "model" in out["4x2"]["mu_spec"]
    assert out["4x2"]["bias_spec"] in ("P()", "PartitionSpec()")
    assert out["8x1"]["kernel_shard"] == [256, 256]


# The same on the real model: a tiny MP-IQE (IQATask, DWA off, fixed random batches).
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
for data, model in [(8, 1), (4, 2), (1, 1)]:
    mesh = sharding.make_mesh(data, model, devices=jax.devices()[:data * model])
    config = config_lib.load_config("configs/tiny.py", [
        "num_steps=5", "log_every=1", "checkpoint_every=5", "optimizer.warmup_steps=1",
        f"mesh.data={{data}}", f"mesh.model={{model}}"])
    workdir = f"{workdir}/iqa{{data}}x{{model}}"
    state = train(IQATask(config), config, workdir, train_iter=Batches(config.batch_size),
                  mesh=mesh)
    specs = [str(x.sharding.spec) for x in jax.tree.leaves(state)
             if hasattr(x, "sharding") and "model" in str(x.sharding.spec)]
    out[f"{{data}}x{{model}}"] = {{
        "losses": [json.loads(l)["loss"] for l in open(workdir + "/train_log.jsonl")],
        "sharded_over_model": len(specs)}}
print("RESULT", json.dumps(out))
"""


def test_mpiqe_meshes_agree(tmp_path):
    out = run_on_8_cpu_devices(IQA_SCRIPT.format(tools=str(REPO / "tools"),
                                                 workdir=str(tmp_path)), timeout=600)
    want = out["1x1"]["losses"]
    assert len(want) == 5 and len(set(want)) == 5  # five different batches, a moving model
    for mesh in ("8x1", "4x2"):
        np.testing.assert_allclose(out[mesh]["losses"], want, rtol=1e-5, err_msg=mesh)
    # On 4x2 the large arrays (the token embedding table and its kin) are split over `model`.
    assert out["4x2"]["sharded_over_model"] > 0 and out["1x1"]["sharded_over_model"] == 0
