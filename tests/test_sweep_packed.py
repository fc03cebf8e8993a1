"""`mmpiqa sweep --devices-per-run 2` on 8 fake CPU devices: four points of a tiny MP-IQE train
side by side, each on its own 2 devices, and log what the same points log one at a time."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from train_logs import read_log, wait_all

from mmpiqa_jax.experiments import sweep

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]
# configs/tiny.py plus a grid: depth 0 and 2 (tiny CLIP has two layers) x 2 or 4 visual
# prompts, four points.
CONFIG = """
from mmpiqa_jax import config as config_lib

def get_config(arg=None):
    config = config_lib.load_config({tiny!r})
    with config.unlocked():
        config.sweep = {{"model": {{"visual_prompt_depth": (0, 2), "num_visual_prompts": (2, 4)}}}}
    return config
"""
OVERRIDES = ["num_steps=3", "log_every=1", "eval_every=3", "checkpoint_every=3",
             "steps_per_epoch=3", "data.split=50/25/25", "data.crops_per_image=1",
             "data.eval_crops=1", "eval.batch_size=8"]


def sweep_command(workdir, data_dir, *more):
    config = Path(data_dir) / "tiny_grid.py"
    if not config.exists():
        tiny = str(REPO / "configs" / "tiny.py") + ":dataset=synthetic_iqa/small"
        config.write_text(CONFIG.format(tiny=tiny))
    args = [sys.executable, "-m", "mmpiqa_jax.cli.main", "sweep", "--config", str(config),
            "--workdir", str(workdir), "--set", f"data.data_dir={data_dir}"]
    for o in OVERRIDES:
        args += ["--set", o]
    return args + list(more)


def start(args, devices: int = 8):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO),
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_packed_sweep_matches_sequential(tmp_path, synthetic_small_dir):
    packed, one_by_one = tmp_path / "packed", tmp_path / "sequential"
    # The two sweeps at once: the sequential one one point after another on 2 devices, the
    # size of each packed run's sub-mesh (another device count reduces in another order).
    procs = [start(sweep_command(packed, synthetic_small_dir, "--devices-per-run", "2")),
             start(sweep_command(one_by_one, synthetic_small_dir), devices=2)]
    out, _ = wait_all(procs, ["packed sweep", "sequential sweep"], timeout=600)

    names = sorted(p.name for p in packed.iterdir() if p.is_dir())
    assert len(names) == 4
    runs = {}
    for name in names:
        got, want = read_log(packed / name), read_log(one_by_one / name)
        assert [r["step"] for r in got] == [1, 2, 3], name
        assert set(got[0]) == set(want[0]), name
        for g, w in zip(got, want):
            for key, value in w.items():
                np.testing.assert_allclose(g[key], value, rtol=1e-6, atol=1e-6,
                                           err_msg=f"{name} step {w['step']} {key}")
        runs[name] = json.loads((packed / name / sweep.POINT_FILE).read_text())["run"]
        assert "run" not in json.loads((one_by_one / name / sweep.POINT_FILE).read_text())
    # Four disjoint pairs of devices, and the four runs overlapping in time: each started
    # before any finished.
    devices = [d for r in runs.values() for d in r["devices"]]
    assert sorted(devices) == list(range(8))
    assert sorted(r["group"] for r in runs.values()) == [0, 1, 2, 3]
    assert max(r["started"] for r in runs.values()) < min(r["finished"] for r in runs.values())
    for name in names:
        assert f"{name}: training in " in out and "on devices [" in out
    # Resumable: a second invocation finds every point done.
    again = start(sweep_command(packed, synthetic_small_dir, "--devices-per-run", "2"))
    (out,) = wait_all([again], ["packed sweep again"], timeout=300)
    assert out.count("done, skipped") == 4


@pytest.mark.parametrize("more, message", [
    (["--devices-per-run", "3"], "--devices-per-run=3 must divide the 8 devices"),
    (["--devices-per-run", "0"], "--devices-per-run=0 must be an integer >= 1"),
])
def test_packed_sweep_errors_name_both_numbers(tmp_path, more, message):
    proc = start(sweep_command(tmp_path, tmp_path, "--dry-run", *more))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and message in err, err
