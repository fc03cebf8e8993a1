"""Preemption: SIGTERM (or Orbax's preemption sync point) saves the step it arrives at, exactly
resumable although the device prefetch has read ahead, and the run exits cleanly (0)."""
import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mmpiqa_jax import config as config_lib
from mmpiqa_jax.train import run, trainer
from toy_task import ToyIterator, ToyTask, toy_config

from train_logs import read_log

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]
SPEC = "configs/tiny.py:dataset=synthetic_iqa/small"
# One regular checkpoint, at the end: any other step saved is the preemption's.
OVERRIDES = ["num_steps=40", "log_every=1", "eval_every=40", "checkpoint_every=40",
             "data.split=50/25/25", "data.crops_per_image=1", "data.eval_crops=2",
             "eval.batch_size=8", "data.num_workers=0"]


def saved_steps(workdir) -> list[int]:
    return sorted(int(p.name) for p in (Path(workdir) / "checkpoints").iterdir()
                  if p.name.isdigit())


def assert_logs_equal(got, want):
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for g, w in zip(got, want):
        assert set(g) == set(w)
        for k in w:
            np.testing.assert_allclose(g[k], w[k], rtol=1e-6, atol=1e-6,
                                       err_msg=f"{k} at step {w['step']}")


def test_sigterm_at_any_step_saves_it_and_resumes_exactly(tmp_path):
    """In one process: SIGTERM during step 5's hook; step 6 (no regular save point: the
    prefetch thread has read ahead of it) is saved, and the resumed run matches."""
    config = toy_config(num_steps=12, eval_every=100, checkpoint_every=100)

    def sigterm_at_5(step):
        if step == 5:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    it = ToyIterator(config.batch_size)
    state = trainer.train(ToyTask(config.num_steps), config, tmp_path / "cut", train_iter=it,
                          hooks=[sigterm_at_5])
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is the trainer's only
    assert int(state.step) == 6 and saved_steps(tmp_path / "cut") == [6]
    assert it.index > 6  # the prefetch thread read ahead of the saved step
    data = tmp_path / "cut" / "checkpoints" / "6" / "data" / "process_0-of-1.json"
    assert json.loads(data.read_text()) == {"index": 6}

    trainer.train(ToyTask(config.num_steps), config, tmp_path / "cut",
                  train_iter=ToyIterator(config.batch_size))
    trainer.train(ToyTask(config.num_steps), config, tmp_path / "whole",
                  train_iter=ToyIterator(config.batch_size))
    assert saved_steps(tmp_path / "cut") == [6, 12]
    assert_logs_equal(read_log(tmp_path / "cut"), read_log(tmp_path / "whole"))


def test_orbax_preemption_point_saves_and_stops(tmp_path, monkeypatch):
    """Several processes learn of a preemption from Orbax's `reached_preemption` (jax's
    preemption service): the step it names is saved and the run stops."""
    config = toy_config(num_steps=12, eval_every=100, checkpoint_every=100)
    asked = []

    def reached(self, step):
        asked.append(step)
        return step == 7

    monkeypatch.setattr(trainer.checkpointing.Checkpointer, "reached_preemption", reached)
    monkeypatch.setattr(trainer, "Preemption", functools.partial(trainer.Preemption, multi=True))
    state = trainer.train(ToyTask(config.num_steps), config, tmp_path,
                          train_iter=ToyIterator(config.batch_size))
    assert int(state.step) == 7 and saved_steps(tmp_path) == [7] and asked == list(range(1, 8))


def _train_command(workdir, overrides):
    return [sys.executable, "-m", "mmpiqa_jax.cli.main", "train", "--config", SPEC,
            "--workdir", str(workdir), *[a for o in overrides for a in ("--set", o)]]


def test_cli_train_sigterm_saves_exits_0_and_resumes_exactly(synthetic_small_dir, tmp_path):
    overrides = [*OVERRIDES, f"data.data_dir={synthetic_small_dir}"]
    cut, whole = tmp_path / "cut", tmp_path / "whole"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", "PYTHONPATH": str(REPO)}
    # The uninterrupted reference runs beside the one that is cut.
    procs = [subprocess.Popen(_train_command(w, overrides), cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w in (whole, cut)]
    try:
        log = cut / "train_log.jsonl"
        deadline = time.monotonic() + 240
        while not (log.exists() and len(log.read_text().splitlines()) >= 3):
            assert procs[1].poll() is None, procs[1].communicate()[1][-4000:]
            assert time.monotonic() < deadline, "no training steps logged"
            time.sleep(0.01)
        procs[1].send_signal(signal.SIGTERM)
        outs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-4000:]
    assert "training stopped before config.num_steps" in outs[1][0]
    [step] = saved_steps(cut)
    assert 3 <= step < 40, step  # the preemption's save, not the regular one at 40
    assert read_log(cut)[-1]["step"] == step

    # The same command again resumes (here in this process) and ends like the run never cut.
    run.train_and_evaluate(config_lib.load_config(SPEC, overrides), cut)
    assert saved_steps(cut) == [step, 40] and saved_steps(whole) == [40]
    assert_logs_equal(read_log(cut), read_log(whole))
