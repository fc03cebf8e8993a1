"""The training driver on the toy task: exact resume, best/last-N checkpoints, NaN stop, errors."""
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import jax
import numpy as np
import pytest

from mmpiqa_jax.checkpoints import CheckpointError
from mmpiqa_jax.errors import UserError
from mmpiqa_jax.train import checkpointing, trainer
from mmpiqa_jax.train.trainer import NonFiniteLossError, StopTraining, load_state, train
from toy_task import ToyIterator, ToyTask, make_eval_fn, toy_config

REPO = Path(__file__).resolve().parents[1]
TIMING_KEYS = {"images_per_sec"}


def read_log(workdir) -> list[dict]:
    lines = (Path(workdir) / "train_log.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def assert_logs_equal(got: list[dict], want: list[dict]):
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for g, w in zip(got, want):
        assert set(g) == set(w), g["step"]
        for key in set(w) - TIMING_KEYS:
            np.testing.assert_allclose(g[key], w[key], rtol=1e-6, atol=1e-6,
                                       err_msg=f"step {w['step']} {key}")


def run(workdir, config=None, task=None, **kwargs):
    config = config or toy_config()
    task = task or ToyTask(config.num_steps)
    kwargs.setdefault("eval_fn", make_eval_fn(task))
    return train(task, config, workdir, train_iter=ToyIterator(config.batch_size), **kwargs)


def ckpt_steps(workdir) -> list[int]:
    names = [p.name for p in (Path(workdir) / "checkpoints").iterdir()]
    return sorted(int(n) for n in names if n.isdigit())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 12-step run: its log and final params."""
    workdir = tmp_path_factory.mktemp("reference")
    state = run(workdir)
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    return read_log(workdir), jax.device_get(state.params)


def test_uninterrupted_run_logs_every_step(reference):
    log, _ = reference
    assert [r["step"] for r in log] == list(range(1, 13))
    assert {"loss", "loss_mse", "loss_l1", "lr", "grad_norm", "images_per_sec"} <= set(log[0])
    assert "finite" not in log[0]
    assert [r["step"] for r in log if "val_srcc" in r] == [4, 8, 12]
    val_mse = [r["val_mse"] for r in log if "val_mse" in r]
    assert val_mse[-1] < val_mse[0]  # the toy actually learns


def test_resume_after_stop_matches_uninterrupted(tmp_path, reference):
    want_log, want_params = reference

    def preempt(step):
        if step == 6:  # two steps past the checkpoint at 4, whose log lines must go
            raise StopTraining

    run(tmp_path, hooks=[preempt])
    assert [r["step"] for r in read_log(tmp_path)] == list(range(1, 7))
    assert ckpt_steps(tmp_path) == [4]

    seen = []
    state = run(tmp_path, hooks=[seen.append])
    assert seen[0] == 5, "resumed from the checkpoint at step 4"
    assert_logs_equal(read_log(tmp_path), want_log)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), want_params)
    assert json.loads((tmp_path / "config.json").read_text())["num_steps"] == 12


KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from toy_task import ToyIterator, ToyTask, make_eval_fn, toy_config
from mmpiqa_jax.train import checkpointing
from mmpiqa_jax.train.trainer import train

save = checkpointing.IteratorHandler.save

def dies_while_saving_8(self, directory, args):
    # The checkpoint writer of step 8, mid-save (the state item may be written already).
    if args.iterator.get_state() == {{"index": 8}}:
        os.kill(os.getpid(), signal.SIGKILL)
    return save(self, directory, args)

checkpointing.IteratorHandler.save = dies_while_saving_8
config = toy_config()
task = ToyTask(config.num_steps)
train(task, config, {workdir!r}, train_iter=ToyIterator(config.batch_size),
      eval_fn=make_eval_fn(task))
"""


@pytest.mark.integration
def test_kill_mid_save_resumes_from_previous_checkpoint(tmp_path, reference):
    want_log, want_params = reference
    script = KILLED_RUN.format(tests=str(REPO / "tests"), workdir=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == -9, proc.stderr[-2000:]
    names = [p.name for p in (tmp_path / "checkpoints").iterdir()]
    assert any(n.startswith("8.orbax-checkpoint-tmp") for n in names), names
    assert ckpt_steps(tmp_path) == [4]
    assert read_log(tmp_path)[-1]["step"] == 8

    seen = []
    state = run(tmp_path, hooks=[seen.append])
    assert seen[0] == 5
    assert_logs_equal(read_log(tmp_path), want_log)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), want_params)
    names = [p.name for p in (tmp_path / "checkpoints").iterdir()]
    assert sorted(names) == ["12", "4", "8"], names  # the partial write was cleaned up


def test_relative_workdir(tmp_path, monkeypatch, reference):
    """The command line passes workdirs as typed (`--workdir run1`); Orbax wants absolute paths."""
    monkeypatch.chdir(tmp_path)
    run("relative")
    assert ckpt_steps(tmp_path / "relative") == [4, 8, 12]
    assert_logs_equal(read_log(tmp_path / "relative"), reference[0])


def test_keeps_last_n_and_best_by_srcc(tmp_path):
    srcc = {2: 0.5, 4: 0.4, 6: 0.9, 8: 0.3, 10: 0.2, 12: 0.1}
    config = toy_config(eval_every=2, checkpoint_every=4, keep_checkpoints=2)
    run(tmp_path, config, eval_fn=lambda state: {"srcc": srcc[int(state.step)]})
    # 2 and 6 were saved as new bests between checkpoints; 10 was neither.
    assert ckpt_steps(tmp_path) == [6, 8, 12]
    with checkpointing.Checkpointer(tmp_path / "checkpoints", keep=2) as ckpt:
        assert ckpt.best_step() == 6 and ckpt.latest_step() == 12
        assert ckpt.manager.metrics(6)["srcc"] == pytest.approx(0.9)
    assert int(load_state(ToyTask(12), config, tmp_path).step) == 6
    assert int(load_state(ToyTask(12), config, tmp_path, step=12).step) == 12


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
    config = toy_config(log_every=5, checkpoint_every=4)
    task = ToyTask(config.num_steps, nan_at_step=7)
    with pytest.raises(NonFiniteLossError, match=r"at step 7 \(.*loss=nan") as err:
        run(tmp_path, config, task, eval_fn=None)
    assert err.value.step == 7 and err.value.last_checkpoint == 4
    assert "last good checkpoint (step 4) is kept" in str(err.value)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["4"]
    assert [r["step"] for r in read_log(tmp_path)] == [5]  # 6 and 7 were never logged


def test_vector_metrics_and_nonfinite_flag_are_checked():
    ok = {"loss": np.float32(1.5), "task_losses": np.ones(3, np.float32), "nonfinite": False}
    assert trainer._fetch_finite([(1, ok)], None) == {"loss": 1.5}
    nan_task = dict(ok, task_losses=np.array([1.0, np.nan, 1.0], np.float32))
    with pytest.raises(NonFiniteLossError, match="at step 2 .*no checkpoint"):
        trainer._fetch_finite([(1, ok), (2, nan_task), (3, ok)], None)
    with pytest.raises(NonFiniteLossError, match="at step 1 .*step 0"):
        trainer._fetch_finite([(1, dict(ok, nonfinite=True))], 0)


def test_checkpoint_that_does_not_match_config(tmp_path):
    run(tmp_path, toy_config(num_steps=4), eval_fn=None)
    small = toy_config(num_steps=8, model={"hidden": 128})
    with pytest.raises(checkpointing.CheckpointMismatchError) as err:
        run(tmp_path, small, ToyTask(8, hidden=128), eval_fn=None)
    msg = str(err.value)
    assert "config key model.hidden: checkpoint 256, config 128" in msg
    assert ("state leaf .params['mid']['kernel'].value: checkpoint float32[256,256], "
            "config float32[128,128]") in msg
    # Same config, different shapes (a model the config does not describe): leaves named.
    with pytest.raises(checkpointing.CheckpointMismatchError, match=r"\.params\['inp'\]"):
        run(tmp_path, toy_config(num_steps=8), ToyTask(8, hidden=128), eval_fn=None)
    # The failed runs left the workdir as it was.
    assert json.loads((tmp_path / "config.json").read_text())["model"] == {"hidden": 256}
    assert ckpt_steps(tmp_path) == [4]


@pytest.mark.parametrize("change, error, words", [
    ({"checkpoint_every": None}, UserError, "checkpoint_every"),
    ({"batch_size": 0}, UserError, "config.batch_size=0"),
    ({"keep_checkpoints": 0}, UserError, "keep_checkpoints=0"),
])
def test_bad_config_is_named(tmp_path, change, error, words):
    config = toy_config()
    for key, value in change.items():
        if value is None:
            del config[key]
        else:
            config[key] = value
    with pytest.raises(error, match=words):
        train(ToyTask(12), config, tmp_path, train_iter=ToyIterator(16))


def test_iterator_without_state_is_refused(tmp_path):
    with pytest.raises(TypeError, match="lacks \\['get_state', 'set_state'\\]"):
        train(ToyTask(12), toy_config(), tmp_path, train_iter=iter([]))


def test_batch_that_cannot_fit_the_mesh_names_the_nearest_sizes():
    trainer.check_batch_fits(48, 16, 4)  # fits: 3 per device, 12 per process
    # LIQE's 48 on a v5p-64 (32 chips, 8 hosts).
    with pytest.raises(ValueError, match=r"batch_size=48 does not fit.*data-parallel devices \(32\).*"
                                         r"process count \(8\); the nearest sizes that do: 32 or 64"):
        trainer.check_batch_fits(48, 32, 8)
    with pytest.raises(ValueError, match="nearest sizes that do: 12$|nearest sizes that do: 12 "):
        trainer.check_batch_fits(5, 4, 3)


def test_resume_with_another_process_count_names_both_counts(tmp_path):
    """A step saved by 2 processes holds their 2 iterator states; one process cannot take them
    over (each is a position in its own shard) and is told both counts."""
    config = toy_config(num_steps=2, checkpoint_every=2)
    train(ToyTask(config.num_steps), config, tmp_path, train_iter=ToyIterator(config.batch_size))
    data = tmp_path / "checkpoints" / "2" / "data"
    (data / "process_0-of-1.json").rename(data / "process_0-of-2.json")
    (data / "process_1-of-2.json").write_text("{}")
    config = toy_config(num_steps=4, checkpoint_every=2)
    with pytest.raises(checkpointing.CheckpointMismatchError,
                       match=r"states of 2 processes .*but this run has 1 processes .*resume "
                             r"with 2 processes"):
        train(ToyTask(config.num_steps), config, tmp_path,
              train_iter=ToyIterator(config.batch_size))


def test_a_damaged_newest_checkpoint_is_skipped_for_the_one_before(tmp_path, reference, caplog):
    want_log, want_params = reference
    run(tmp_path)  # 12 steps, saved at 4, 8 and 12
    params = tmp_path / "checkpoints" / "12" / "params"
    victim = max((p for p in params.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[:victim.stat().st_size // 2])  # a write cut short
    with caplog.at_level(logging.WARNING):
        state = run(tmp_path)  # resumes from 8, says why, and trains 9 to 12 again
    assert f"{tmp_path / 'checkpoints' / '12'} cannot be read" in caplog.text
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "12", "12.damaged", "4", "8"]
    assert_logs_equal(read_log(tmp_path), want_log)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), want_params)
    # Nothing readable at all: one error naming every step and why.
    for step in (4, 8, 12):
        (tmp_path / "checkpoints" / str(step) / "params").rename(
            tmp_path / "checkpoints" / str(step) / "gone")
    with pytest.raises(CheckpointError, match=r"can be read: step 12: .*; step 8: .*; step 4"):
        load_state(ToyTask(12), toy_config(), tmp_path)


def _small_state(step: int, value: float) -> trainer.TrainState:
    return trainer.TrainState(step=jax.numpy.int32(step),
                              params={"w": jax.numpy.full((64, 64), value, np.float32)},
                              opt_state={"mu": jax.numpy.zeros((64, 64), np.float32)},
                              rng=jax.random.key_data(jax.random.key(0)))


def test_checkpointers_in_threads_save_side_by_side(tmp_path, monkeypatch):
    """A packed sweep trains several runs in one process, one thread each, saving
    synchronously: Orbax keys an asynchronous save's signals by a process-wide operation id, so
    asynchronous saves that overlapped across threads waited for signals sent under another id
    until Orbax's barrier timed out (a packed sweep failed so in CI)."""
    from orbax.checkpoint._src.multihost import multihost
    # Fail in seconds rather than after Orbax's 300 s (a private name: if it moves, a race
    # still fails the test, only later).
    monkeypatch.setattr(multihost, "_DEFAULT_BARRIER_TIMEOUT", 20, raising=False)
    runs, steps, errors = 4, 12, []

    def one(i):
        try:
            with checkpointing.Checkpointer(tmp_path / f"run{i}", keep=2,
                                            async_save=False) as ckpt:
                for step in range(1, steps + 1):
                    ckpt.save(step, _small_state(step, i + step), metrics={"srcc": step / steps})
                ckpt.wait()
        except BaseException as e:  # noqa: BLE001  # reported below, with the run's name
            errors.append(f"run{i}: {e!r}"[:300])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(runs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    abstract = jax.eval_shape(lambda: _small_state(0, 0.0))
    for i in range(runs):
        with checkpointing.Checkpointer(tmp_path / f"run{i}", keep=2) as ckpt:
            assert ckpt.all_steps() == [steps - 1, steps]
            state, _ = ckpt.restore(abstract, optimizer=False)
        assert int(state.step) == steps
        np.testing.assert_array_equal(state.params["w"], np.full((64, 64), i + steps, np.float32))


HOLD_LOCK = """
import sys, time
from mmpiqa_jax import files
with files.one_writer(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def test_one_workdir_has_one_writer_and_a_dead_writers_lock_is_taken_over(tmp_path, caplog):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(UserError, match=rf"{tmp_path} is in use by process {holder.pid} on "
                                            r".* one workdir has one writer"):
            run(tmp_path)
        assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "config.json").exists()
    finally:
        holder.kill()  # SIGKILL: its lock stays behind, stale
        holder.wait()
    with caplog.at_level(logging.WARNING):
        run(tmp_path, toy_config(num_steps=2, checkpoint_every=2))
    assert "taking over the lock of {'host'" in caplog.text and f"'pid': {holder.pid}" in caplog.text
    assert ckpt_steps(tmp_path) == [2] and not (tmp_path / "lock.json").exists()
