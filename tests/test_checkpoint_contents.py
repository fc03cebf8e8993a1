"""Checkpoints hold what trains: the frozen backbone is written once per workdir (not in the
step directories), referenced by checksum, checked on restore; evaluation and export restore
without the optimiser state."""
import os

import jax
import numpy as np
import pytest
from workdirs import forward, make_workdir

from mmpiqa_jax.cli import main as cli
from mmpiqa_jax.train import checkpointing, inference, trainer
from mmpiqa_jax.train.task import IQATask


def du(path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def nbytes(tree) -> int:
    return sum(x.nbytes for x in jax.tree.leaves(tree))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return make_workdir(tmp_path_factory.mktemp("run"))


def test_step_holds_no_frozen_arrays_and_the_backbone_is_written_once(workdir):
    config = inference.read_config(workdir)
    task = IQATask(config)
    state = jax.jit(task.init_state)(jax.random.key(0))
    step_dir = workdir / trainer.CHECKPOINT_DIR / "0"
    assert sorted(p.name for p in step_dir.iterdir() if p.is_dir()) == [
        "meta", "opt_state", "params", "train"]
    backbone = workdir / checkpointing.BACKBONE_DIR
    # The frozen arrays are on disk in backbone/ only.
    assert du(backbone) > 0.9 * nbytes(state.frozen)
    trainable = nbytes(state.params) + nbytes(state.opt_state) + nbytes(state.extra)
    assert du(step_dir) < trainable + 0.2 * nbytes(state.frozen)
    with checkpointing.Checkpointer(workdir / trainer.CHECKPOINT_DIR) as ckpt:
        ref = ckpt.read_meta(0)["frozen"]
    assert ref["path"] == str(backbone) and ref["sha256"]


def test_eval_restores_without_optimiser_state_and_export_runs(workdir, tmp_path):
    config = inference.read_config(workdir)
    task = IQATask(config)
    state = trainer.load_state(task, config, workdir, step=0)
    assert state.opt_state is None
    full = trainer.load_state(task, config, workdir, step=0, optimizer=True)
    assert full.opt_state is not None
    jax.tree.map(np.testing.assert_array_equal, state.params, full.params)
    jax.tree.map(np.testing.assert_array_equal, state.frozen, full.frozen)
    model, _ = inference.load_model(workdir)
    pixels = np.random.default_rng(0).normal(size=(2, 2, 32, 32, 3)).astype(np.float32)
    scores = forward(model, pixels, use_text_cache=True)["score"]
    assert np.all(np.isfinite(scores))
    out = tmp_path / "torch"
    assert cli.main(["export", str(workdir), "--to", "torch", "--out", str(out)]) == 0
    assert (out / "model.safetensors").stat().st_size > 0


def test_changed_backbone_is_named_on_restore(tmp_path):
    workdir = make_workdir(tmp_path / "run")
    backbone = workdir / checkpointing.BACKBONE_DIR
    victim = max((p for p in backbone.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    config = inference.read_config(workdir)
    with pytest.raises(checkpointing.CheckpointMismatchError,
                       match=rf"does not match the checksums .*{victim.name}"):
        trainer.load_state(IQATask(config), config, workdir)
