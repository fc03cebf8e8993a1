"""Bad input and failing disks through the command line: one line on stderr that names the path,
key or value at fault, a non-zero exit and no traceback; a bug keeps its traceback; and inputs
that must never give a silently wrong result."""
import contextlib
import os
import shutil
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
from conftest import TINY, TINY_RUN, tiny_config
from flax import nnx
from PIL import Image
from workdirs import REPO, write_images

import fake_datasets
import mmpiqa_jax
from mmpiqa_jax.checkpoints import save_checkpoint
from mmpiqa_jax.cli.main import main
from mmpiqa_jax.errors import UserError
from mmpiqa_jax.models.clip_model import CLIP, get_variant
from mmpiqa_jax.data import registry
from mmpiqa_jax.train import checkpointing, run


def train_args(data_dir, workdir, *more) -> list[str]:
    """`mmpiqa train` of `conftest.tiny_config`."""
    sets = [*TINY_RUN, f"data.data_dir={data_dir}", *more]
    return ["train", "--config", TINY, "--workdir", str(workdir),
            *[a for s in sets for a in ("--set", s)]]


def one_line_error(capsys, args) -> str:
    """Runs `mmpiqa ARGS`; asserts a non-zero exit and a one-line error; returns that line."""
    code = main(args)
    captured = capsys.readouterr()
    assert code != 0, captured
    assert "Traceback" not in captured.out + captured.err, captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, captured.err
    return errors[0]


@pytest.fixture(scope="module")
def clip_checkpoint(tmp_path_factory):
    """What `mmpiqa convert ViT-B-32.pt` writes: a CLIP alone, no quality model."""
    path = tmp_path_factory.mktemp("clip") / "tiny"
    save_checkpoint(path, CLIP(get_variant("tiny"), rngs=nnx.Rngs(0)))
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("images"), [(48, 64)] * 2)


@contextlib.contextmanager
def read_only(folder):
    """`folder` read-only: a read-only bind mount where this process may mount (root, which
    permissions do not stop), else its permission bits."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    mount = folder.parent / (folder.name + "-ro")
    mount.mkdir()
    done = subprocess.run(f"mount --bind {folder} {mount} && mount -o remount,bind,ro {mount}",
                          shell=True, capture_output=True, check=False)
    if done.returncode:
        pytest.skip(f"cannot mount a read-only folder here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.parametrize("command", ["score", "export", "eval", "create_metric"])
def test_a_clip_checkpoint_is_no_model_to_score(command, clip_checkpoint, images, tmp_path,
                                                capsys):
    message = f"{clip_checkpoint} is a CLIP checkpoint, not a quality model"
    if command == "create_metric":
        with pytest.raises(UserError, match=message):
            mmpiqa_jax.create_metric(clip_checkpoint)
        return
    args = {"score": ["score", "--checkpoint", str(clip_checkpoint), str(images[0])],
            "export": ["export", str(clip_checkpoint), "--to", "torch", "--out",
                       str(tmp_path / "out")],
            "eval": ["eval", "--workdir", str(clip_checkpoint)]}[command]
    assert message in one_line_error(capsys, args)


def test_score_out_is_checked_before_scoring(trained_run, images, tmp_path, capsys):
    workdir = trained_run[0]
    missing = tmp_path / "no" / "scores.csv"
    line = one_line_error(capsys, ["score", "--checkpoint", str(workdir), str(images[0]),
                                   "--out", str(missing)])
    assert f"the folder {missing.parent} does not exist" in line
    line = one_line_error(capsys, ["score", "--checkpoint", str(workdir), str(images[0]),
                                   "--out", str(tmp_path)])
    assert f"--out {tmp_path} is a folder" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing left behind
    # One checkpoint of a run scores as the run's best does (checkpoints/N, as --help says).
    assert main(["score", "--checkpoint", str(workdir / "checkpoints" / "8"), str(images[0]),
                 "--no-progress"]) == 0


def test_convert_of_a_truncated_torch_file(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.zeros(4)}, tmp_path / "whole.pt")
    data = (tmp_path / "whole.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[:len(data) // 2])
    line = one_line_error(capsys, ["convert", str(tmp_path / "cut.pt"), "--out",
                                   str(tmp_path / "x")])
    assert f"{tmp_path / 'cut.pt'}: truncated or corrupt" in line


def test_prepare_names_the_folder_or_image_at_fault(synthetic_small_dir, tmp_path, capsys,
                                                    monkeypatch):
    line = one_line_error(capsys, ["prepare", "kadid", "--data-dir", str(tmp_path / "d")])
    assert "unknown dataset 'kadid'; known: " in line
    (tmp_path / "empty").mkdir()
    line = one_line_error(capsys, ["prepare", "kadid10k", "--manual-dir",
                                   str(tmp_path / "empty"), "--data-dir", str(tmp_path / "d")])
    assert f"--manual-dir {tmp_path / 'empty'} is empty" in line
    (tmp_path / "a_file").write_text("")
    line = one_line_error(capsys, ["prepare", "synthetic_iqa/small", "--data-dir",
                                   str(tmp_path / "a_file")])
    assert f"--data-dir {tmp_path / 'a_file'} is a file, not a folder" in line
    fake = fake_datasets.write_kadid10k(tmp_path / "kadid")
    # Prepared already: the folder given is not read, and the user is told.
    with mock.patch.object(registry.logging, "warning") as warning:
        assert main(["prepare", "synthetic_iqa/small", "--manual-dir", str(fake.root),
                     "--data-dir", str(synthetic_small_dir)]) == 0
    message = warning.call_args.args[0] % warning.call_args.args[1:]
    assert f"nothing was read from {fake.root}" in message

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # every image a decompression bomb
    line = one_line_error(capsys, ["prepare", "kadid10k", "--manual-dir", str(fake.root),
                                   "--data-dir", str(tmp_path / "d"), "--allow-partial"])
    assert "cannot decode image" in line and "decompression bomb" in line


def test_a_workdir_must_be_a_writable_folder(trained_run, synthetic_small_dir, tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    line = one_line_error(capsys, train_args(synthetic_small_dir, tmp_path / "a_file"))
    assert f"{tmp_path / 'a_file'} is a file, not a folder" in line
    run_copy = shutil.copytree(trained_run[0], tmp_path / "ro" / "run")
    with read_only(tmp_path / "ro") as ro:
        line = one_line_error(capsys, train_args(synthetic_small_dir, ro / "new"))
        assert str(ro / "new") in line
        # Evaluation checks its folder before it evaluates.
        line = one_line_error(capsys, ["eval", "--workdir", str(ro / "run")])
        assert f"{ro / 'run' / 'eval'}" in line
    assert run_copy.is_dir()


@pytest.mark.parametrize("bug", [KeyError("data"), ValueError("operands could not be broadcast"),
                                 AttributeError("'NoneType' object has no attribute 'shape'")])
def test_a_bug_inside_training_keeps_its_traceback(bug, synthetic_small_dir, tmp_path,
                                                   monkeypatch):
    def broken(*args, **kwargs):
        raise bug

    monkeypatch.setattr(run.datasets_lib, "train_iterator", broken)
    with pytest.raises(type(bug)) as raised:
        main(train_args(synthetic_small_dir, tmp_path))
    assert raised.value is bug  # not turned into a one-line error
    assert raised.traceback[-1].name == "broken"  # the frame that raised is kept


@pytest.mark.integration  # an end-to-end training, until its loss is not finite
def test_a_diverging_run_stops_in_one_line(synthetic_small_dir, tmp_path, capsys):
    line = one_line_error(capsys, train_args(synthetic_small_dir, tmp_path,
                                             "optimizer.learning_rate=1e30",
                                             "optimizer.clip_norm=0"))
    assert "non-finite loss or gradients at step" in line


def test_a_second_writer_is_refused_in_one_line(synthetic_small_dir, tmp_path, capsys):
    from test_trainer import HOLD_LOCK
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        line = one_line_error(capsys, train_args(synthetic_small_dir, tmp_path))
        assert f"is in use by process {holder.pid}" in line
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("changes, key", [(["data.split_seed=1"], "data.split_seed"),
                                          (["data.split=80/20", "data.val_part="], "data.split")])
def test_a_resumed_run_trains_on_what_it_did(trained_run, synthetic_small_dir, tmp_path, changes,
                                             key):
    workdir = shutil.copytree(trained_run[0], tmp_path / "run")
    config = tiny_config(synthetic_small_dir, *changes, "num_steps=12")
    with pytest.raises(checkpointing.CheckpointMismatchError,
                       match=rf"config key {key}: checkpoint .*, config"):
        run.train_and_evaluate(config, workdir)


def test_images_that_would_score_wrong_are_refused(trained_run):
    metric = mmpiqa_jax.create_metric(trained_run[0])
    with pytest.raises(UserError, match="image: 6144 values are NaN or infinite"):
        metric(np.full((32, 64, 3), np.nan, np.float32))
    with pytest.raises(UserError, match=r"batch: an empty image \(shape \(1, 0, 64, 3\)\)"):
        metric(np.zeros((1, 0, 64, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="a folder, not an image file"):
        metric(str(REPO / "configs"))
    # 16-bit images score as their high byte (what an 8-bit file of them reads as).
    wide = np.random.default_rng(0).integers(0, 65536, (48, 64), np.uint16)
    grey = Image.fromarray(wide)
    assert grey.mode == "I;16"
    eight = np.repeat((wide >> 8).astype(np.uint8)[..., None], 3, -1)
    assert metric(grey) == pytest.approx(metric(eight), rel=1e-6)
    assert metric(np.repeat(wide[..., None], 3, -1)) == pytest.approx(metric(eight), rel=1e-6)


@pytest.mark.integration
def test_a_full_disk_is_one_line_naming_the_path(synthetic_small_dir, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("a small tmpfs needs root to mount")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)],
                      capture_output=True, check=False).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "mmpiqa_jax.cli.main",
             *train_args(synthetic_small_dir, disk / "run", "num_steps=40", "checkpoint_every=1",
                         "eval_every=40")],
            cwd=REPO, capture_output=True, text=True, timeout=600,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr and "Exception" not in proc.stderr, proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and "No space left on device" in errors[0], proc.stderr
        assert str(disk / "run") in errors[0]
    finally:
        subprocess.run(["umount", str(disk)], check=False)
