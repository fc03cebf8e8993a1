"""Multi-process start-up from the command line: `mmpiqa train --coordinator ... --process-id I`
in two local processes (1 CPU device each, nothing initialised by the test) trains and
checkpoints like one process fed the same global batches."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import portpicker
import pytest

from mmpiqa_jax.train import distributed
from train_logs import read_log, wait_all

REPO = Path(__file__).resolve().parents[1]
SPEC = "configs/tiny.py:dataset=synthetic_iqa/small"
OVERRIDES = ["num_steps=6", "log_every=1", "eval_every=6", "checkpoint_every=3",
             "data.split=50/25/25", "data.crops_per_image=1", "data.eval_crops=2",
             "eval.batch_size=8", "data.num_workers=0"]


# The reference: one process with 2 CPU devices (the same mesh), fed both processes' shards of
# the data, each cut as the pipeline cuts it, process 0's local batch first, as
# `make_array_from_process_local_data` lays them out.
REFERENCE = """
import grain
import numpy as np
from mmpiqa_jax import config as config_lib
from mmpiqa_jax.data import pipeline
from mmpiqa_jax.train import run

class BothShards:
    def __init__(self, iterators):
        self.iterators = iterators
    def __next__(self):
        parts = [next(it) for it in self.iterators]
        return {{k: np.concatenate([p[k] for p in parts]) for k in parts[0]}}
    def get_state(self):
        return [it.get_state() for it in self.iterators]
    def set_state(self, state):
        for it, s in zip(self.iterators, state):
            it.set_state(s)

original = pipeline.train_iterator
pipeline.train_iterator = lambda specs, **kw: BothShards([original(
    specs, **kw, shard=grain.sharding.ShardOptions(shard_index=i, shard_count=2,
                                                   drop_remainder=True)) for i in range(2)])
import jax
assert jax.device_count() == 2 and jax.process_count() == 1
run.train_and_evaluate(config_lib.load_config({spec!r}, {overrides!r}), {workdir!r})
"""


@pytest.mark.integration
def test_two_cli_processes_train_like_one(synthetic_small_dir, tmp_path):
    overrides = [*OVERRIDES, f"data.data_dir={synthetic_small_dir}"]
    sets = [a for o in overrides for a in ("--set", o)]
    port = portpicker.pick_unused_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", "PYTHONPATH": str(REPO)}
    for var in (distributed.ENV_COORDINATOR, distributed.ENV_NUM, distributed.ENV_ID):
        env.pop(var, None)
    two, one = tmp_path / "two", tmp_path / "one"
    procs = [subprocess.Popen(
        [sys.executable, "-m", "mmpiqa_jax.cli.main", "train", "--config", SPEC,
         "--workdir", str(two), *sets, "--coordinator", f"localhost:{port}",
         "--num-processes", "2", "--process-id", str(pid)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for pid in range(2)]
    procs.append(subprocess.Popen(
        [sys.executable, "-c", REFERENCE.format(spec=SPEC, overrides=overrides,
                                                workdir=str(one))],
        cwd=REPO, env={**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = wait_all(procs, ["process 0", "process 1", "the one-process reference"], timeout=300)
    assert all("synthetic_iqa_small-test" in out for out in outs[:2])

    want, got = read_log(one), read_log(two)
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(1, 7))
    for g, w in zip(got, want):
        assert set(g) == set(w)
        for k in w:
            np.testing.assert_allclose(g[k], w[k], rtol=1e-6, atol=1e-6,
                                       err_msg=f"{k} at step {w['step']}")
    # Orbax's (async) checkpoints of both processes, each with its own iterator position.
    ckpts = two / "checkpoints"
    assert sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) == [3, 6]
    data = sorted(p.name for p in (ckpts / "6" / "data").iterdir() if p.suffix == ".json")
    assert data == ["process_0-of-2.json", "process_1-of-2.json"]


def test_start_up_is_explicit_or_detected(monkeypatch):
    for var in (distributed.ENV_COORDINATOR, distributed.ENV_NUM, distributed.ENV_ID,
                *distributed.SLURM_VARS, *distributed.TPU_HOST_VARS):
        monkeypatch.delenv(var, raising=False)
    calls = []
    monkeypatch.setattr(distributed.jax.distributed, "initialize",
                        lambda **kw: calls.append(kw))
    assert distributed.initialize() == distributed.Startup("single") and not calls
    with pytest.raises(ValueError, match="--coordinator given without --num-processes, "
                                         "--process-id"):
        distributed.initialize("localhost:1234")
    monkeypatch.setenv(distributed.ENV_NUM, "4")
    with pytest.raises(ValueError, match="need 0 <= id < N"):
        distributed.initialize("localhost:1234", process_id=4)
    monkeypatch.setenv(distributed.ENV_ID, "3")
    monkeypatch.setenv(distributed.ENV_COORDINATOR, "host0:1234")
    assert distributed.initialize() == distributed.Startup("explicit", 3, 4)
    assert calls[-1] == dict(coordinator_address="host0:1234", num_processes=4, process_id=3,
                             initialization_timeout=300)
    for var in (distributed.ENV_COORDINATOR, distributed.ENV_NUM, distributed.ENV_ID):
        monkeypatch.delenv(var)
    # SLURM as jax detects it; one task is a single process.
    slurm = dict(SLURM_JOB_ID="7", SLURM_STEP_NODELIST="node[1-2]", SLURM_NTASKS="1",
                 SLURM_PROCID="0", SLURM_LOCALID="0")
    for k, v in slurm.items():
        monkeypatch.setenv(k, v)
    n = len(calls)
    assert distributed.initialize().method == "single" and len(calls) == n
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setattr(distributed.jax, "process_index", lambda: 0)
    monkeypatch.setattr(distributed.jax, "process_count", lambda: 2)
    assert distributed.initialize() == distributed.Startup("slurm", 0, 2)
    assert calls[-1] == dict(initialization_timeout=300)  # jax reads SLURM's variables
    # A Cloud TPU slice of several hosts, as jax detects it (GKE names the hosts).
    monkeypatch.setenv("SLURM_NTASKS", "1")
    from jax._src import cloud_tpu_init  # pylint: disable=import-outside-toplevel
    monkeypatch.setattr(cloud_tpu_init, "running_in_cloud_tpu_vm", True)
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "host-a")
    monkeypatch.setenv("TPU_SKIP_MDS_QUERY", "1")
    n = len(calls)
    assert distributed.initialize().method == "single" and len(calls) == n
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "host-a,host-b")
    assert distributed.initialize() == distributed.Startup("tpu", 0, 2)
    assert calls[-1] == dict(initialization_timeout=300)
