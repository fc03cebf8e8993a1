"""URL workdirs (gs://bucket/run) reach Orbax, the log writers and the evaluation files unchanged.

gs:// is served here by a local folder: fsspec's `gcs` protocol is pointed at a LocalFileSystem
that maps `gs://B/...` to `<tmp>/B/...`, which is what etils.epath uses for gs:// without
TensorFlow. Orbax's own I/O (tensorstore) is replaced by a recorder of the directory it gets.
"""
import json
import sys

import fsspec
import numpy as np
import pytest
from etils import epath
from etils.epath import backend as epath_backend
from fsspec.implementations.local import LocalFileSystem

from mmpiqa_jax.evaluate import report
from mmpiqa_jax.train import checkpointing, progress, trainer
from toy_task import ToyIterator, ToyTask, toy_config

URL = "gs://bucket/run"


class FolderGCS(LocalFileSystem):
    """gs://B/P as the local file ROOT/B/P."""
    protocol = ("gcs", "gs")
    root = ""

    @classmethod
    def _strip_protocol(cls, path):
        path = str(path)
        for prefix in ("gs://", "gcs://"):
            if path.startswith(prefix):
                path = f"{cls.root}/{path[len(prefix):]}"
        return super()._strip_protocol(path)


@pytest.fixture
def gcs(tmp_path, monkeypatch):
    """The local folder behind gs://."""
    monkeypatch.setattr(FolderGCS, "root", str(tmp_path / "gcs"))
    # fsspec.registry is the read-only view; its module holds the dict.
    registry = sys.modules["fsspec.registry"]._registry  # pylint: disable=protected-access
    monkeypatch.setitem(registry, "gcs", FolderGCS)
    epath_backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access
    yield tmp_path / "gcs"
    epath_backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access


class RecordedCheckpointer:
    """Checkpointer's interface; records the directory and the saved steps, writes nothing."""
    made = []

    def __init__(self, directory, **kwargs):
        self.directory, self.steps = directory, []
        RecordedCheckpointer.made.append(self)

    def latest_step(self):
        return None

    def best_metric(self):
        return -np.inf

    def reached_preemption(self, step):
        return False

    def save(self, step, state, **kwargs):
        self.steps.append(step)

    def wait(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


class RecordedSummaryWriter:
    logdirs = []

    def __init__(self, logdir, **kwargs):
        RecordedSummaryWriter.logdirs.append(logdir)

    def add_scalar(self, *args):
        pass

    def flush(self):
        pass

    def close(self):
        pass


def test_orbax_gets_the_url_unchanged(gcs, monkeypatch):  # pylint: disable=unused-argument
    seen = []

    class Manager:
        def __init__(self, directory, **kwargs):
            seen.append(directory)

        def best_step(self):
            return None

    monkeypatch.setattr(checkpointing.ocp, "CheckpointManager", Manager)
    ckpt = checkpointing.Checkpointer(f"{URL}/checkpoints")
    assert [str(d) for d in seen] == [f"{URL}/checkpoints"]  # not gs:/bucket/...
    assert isinstance(seen[0], epath.Path)
    checkpointing.Checkpointer("relative/checkpoints")  # local paths: absolute, as before
    assert seen[1].is_absolute() and str(seen[1]).endswith("/relative/checkpoints")
    assert ckpt.directory == seen[0]


def test_training_to_a_url_workdir_writes_there(gcs, tmp_path, monkeypatch):
    import tensorboardX
    config = toy_config(num_steps=6, eval_every=100, checkpoint_every=3)
    trainer.train(ToyTask(config.num_steps), config, tmp_path / "local",
                  train_iter=ToyIterator(config.batch_size))

    RecordedCheckpointer.made.clear()
    RecordedSummaryWriter.logdirs.clear()
    monkeypatch.setattr(trainer.checkpointing, "Checkpointer", RecordedCheckpointer)
    monkeypatch.setattr(tensorboardX, "SummaryWriter", RecordedSummaryWriter)
    trainer.train(ToyTask(config.num_steps), config, URL,
                  train_iter=ToyIterator(config.batch_size))
    [ckpt] = RecordedCheckpointer.made
    assert str(ckpt.directory) == f"{URL}/checkpoints" and ckpt.steps == [3, 6]
    assert RecordedSummaryWriter.logdirs == [f"{URL}/tensorboard"]
    # The log and the config went through epath to gs://bucket/run, i.e. the folder behind it.
    local = tmp_path / "local"
    assert json.loads((gcs / "bucket/run/config.json").read_text()) == json.loads(
        (local / "config.json").read_text())

    def losses(path):
        return [json.loads(line)["loss"] for line in path.read_text().splitlines()]

    want = losses(local / progress.LOG_NAME)
    assert len(want) == 6 and losses(gcs / "bucket/run" / progress.LOG_NAME) == want


def test_url_log_is_cut_back_on_resume_and_appended(gcs, monkeypatch):
    import tensorboardX
    monkeypatch.setattr(tensorboardX, "SummaryWriter", RecordedSummaryWriter)
    writer = progress.MetricsWriter(URL, num_steps=5)
    for step in range(1, 6):
        writer.write(step, {"loss": float(step)})
    writer.close()
    writer = progress.MetricsWriter(URL, num_steps=5, start_step=3)  # resumed at step 3
    writer.write(4, {"loss": 40.0})
    writer.close()
    lines = (gcs / "bucket/run" / progress.LOG_NAME).read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"step": 1, "loss": 1.0}, {"step": 2, "loss": 2.0}, {"step": 3, "loss": 3.0},
        {"step": 4, "loss": 40.0}]


def test_eval_files_to_a_url_workdir(gcs, tmp_path):
    names, quality, pred = ["a.png", "b.png", "c.png", "d.png"], [1, 2, 3, 4], [1.5, 2, 2.5, 5]
    remote = report.write_eval(URL, "live", "test", names, quality, pred)
    local = report.write_eval(tmp_path / "local", "live", "test", names, quality, pred)
    assert str(remote["json"]) == f"{URL}/eval/live-test.json"
    for ext in ("json", "csv"):
        assert (gcs / "bucket/run/eval" / f"live-test.{ext}").read_bytes() == \
            local[ext].read_bytes()
    assert (gcs / "bucket/run/eval/live-test.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
