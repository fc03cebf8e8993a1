"""Two local processes (jax.distributed, 2 CPU devices each) train like one process."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import portpicker

from mmpiqa_jax.train.trainer import train
from toy_task import ToyIterator, ToyTask, toy_config
from train_logs import wait_all

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]
CONFIG = dict(num_steps=6, checkpoint_every=2)

# Each process feeds only its half of every batch. It runs to step 3, stops as if preempted,
# and resumes from the checkpoint at step 2, which holds one iterator state per process.
SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import jax
jax.distributed.initialize(coordinator_address="localhost:{port}", num_processes=2,
                           process_id={pid}, initialization_timeout=60)
from toy_task import ToyIterator, ToyTask, toy_config
from train_logs import wait_all
from mmpiqa_jax.train.trainer import StopTraining, train

assert jax.process_count() == 2 and jax.device_count() == 4, jax.devices()
config = toy_config(**{config!r})

def stop_at_3(step):
    if step == 3:
        raise StopTraining

for hooks in ([stop_at_3], []):
    it = ToyIterator(config.batch_size, process_index=jax.process_index(), process_count=2)
    state = train(ToyTask(config.num_steps), config, {workdir!r}, train_iter=it, hooks=hooks)
assert it.index == config.num_steps, it.index
print("DONE", jax.process_index(), int(state.step), flush=True)
"""


def losses(workdir) -> list[float]:
    lines = (Path(workdir) / "train_log.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


def test_two_processes_match_one(tmp_path):
    port = portpicker.pick_unused_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    procs = [subprocess.Popen(
        [sys.executable, "-c", SCRIPT.format(tests=str(REPO / "tests"), port=port, pid=pid,
                                             config=CONFIG, workdir=str(tmp_path / "two"))],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for pid in range(2)]
    outs = wait_all(procs, ["process 0", "process 1"], timeout=240)
    for pid, out in enumerate(outs):
        assert f"DONE {pid} 6" in out

    config = toy_config(**CONFIG)
    train(ToyTask(config.num_steps), config, tmp_path / "one",
          train_iter=ToyIterator(config.batch_size))
    want = losses(tmp_path / "one")
    assert len(want) == 6
    np.testing.assert_allclose(losses(tmp_path / "two"), want, rtol=1e-5)
    data = tmp_path / "two" / "checkpoints" / "6" / "data"
    saved = sorted(p.name for p in data.iterdir() if p.suffix == ".json")
    assert saved == ["process_0-of-2.json", "process_1-of-2.json"]
    assert json.loads((data / "process_1-of-2.json").read_text()) == {"index": 6}
