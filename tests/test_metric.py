"""`mmpiqa_jax.create_metric` gives the scores `mmpiqa score` writes (its JSON and CSV files), on
paths, on a batch array (uint8 and [0, 1] float), on one PIL image; bad input is named."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

import mmpiqa_jax
from mmpiqa_jax import metric as metric_lib
from mmpiqa_jax.errors import UserError
from mmpiqa_jax.cli import main as cli

from workdirs import make_workdir, write_images

RTOL = 1e-6


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(workdir, five 48 x 64 PNGs) of a tiny MP-IQE (2 evaluation crops of 32)."""
    root = tmp_path_factory.mktemp("metric")
    workdir = make_workdir(root / "run", "model=mpiqe,depth=2")
    return workdir, write_images(root / "images", [(48, 64)] * 5)


@pytest.fixture(scope="module")
def metric(run):
    return mmpiqa_jax.create_metric(run[0], batch_size=2)


def test_create_metric_gives_the_scores_of_mmpiqa_score(run, metric, tmp_path, capsys):
    workdir, paths = run
    out = tmp_path / "scores.json"
    assert cli.main(["score", "--checkpoint", str(workdir), *map(str, paths), "--out", str(out),
                     "--no-progress"]) == 0
    doc = json.loads(out.read_text())
    want = np.asarray([r["score"] for r in doc["scores"]])
    assert [r["path"] for r in doc["scores"]] == list(map(str, paths))
    assert doc["count"] == 5 and doc["skipped"] == []
    assert doc["mean"] == pytest.approx(want.mean(), rel=1e-12)
    assert np.ptp(want) > 1e-4  # the five images score apart
    # stdout: a line per image and the mean; stderr's summary has the mean too.
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert [line.split()[1] for line in lines[:5]] == list(map(str, paths))
    np.testing.assert_allclose([float(line.split()[0]) for line in lines[:5]], want, atol=1e-4)
    assert lines[5] == f"{want.mean():.4f}  mean of 5 images"
    assert f"mean score {want.mean():.4f}" in captured.err

    assert metric.lower_better is False and metric.score_range == (1.0, 5.0)
    got = metric(paths)
    assert isinstance(got, np.ndarray) and got.shape == (5,)
    np.testing.assert_allclose(got, want, rtol=RTOL)
    batch = np.stack([np.asarray(Image.open(p)) for p in paths])
    assert batch.dtype == np.uint8 and batch.shape == (5, 48, 64, 3)
    np.testing.assert_allclose(metric(batch), want, rtol=RTOL)
    np.testing.assert_allclose(metric(batch.astype(np.float32) / 255.0), want, rtol=RTOL)
    one = metric(Image.open(paths[3]))
    assert isinstance(one, float) and one == pytest.approx(want[3], rel=RTOL)
    assert metric(str(paths[1])) == pytest.approx(want[1], rel=RTOL)
    assert metric(batch[2]) == pytest.approx(want[2], rel=RTOL)
    np.testing.assert_allclose(metric([Image.open(paths[0]), batch[4]]), want[[0, 4]], rtol=RTOL)


def test_cli_score_formats(run, tmp_path, capsys):
    workdir, paths = run
    out = tmp_path / "scores.json"  # --format wins over the suffix
    assert cli.main(["score", "--checkpoint", str(workdir), str(paths[0]), str(paths[1]),
                     "--out", str(out), "--format", "csv", "--no-progress"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["path"] for r in rows] == [str(paths[0]), str(paths[1])]
    capsys.readouterr()
    # No --out: JSON on stdout, nothing else there.
    assert cli.main(["score", "--checkpoint", str(workdir), str(paths[0]), "--format", "json",
                     "--no-progress"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["count"] == 1 and doc["mean"] == doc["scores"][0]["score"]
    assert doc["mean"] == pytest.approx(float(rows[0]["score"]), rel=1e-12)


def test_bad_input_is_named(run, metric, tmp_path):
    _, paths = run
    with pytest.raises(ValueError, match=r"float images must lie in \[0, 1\]"):
        metric(np.full((48, 64, 3), 2.0, np.float32))
    with pytest.raises(ValueError, match=r"must be \[H, W, 3\] or \[B, H, W, 3\].*\(48, 64\)"):
        metric(np.zeros((48, 64), np.uint8))
    with pytest.raises(UserError, match="uint8, uint16 or float"):
        metric(np.zeros((48, 64, 3), np.int32))
    with pytest.raises(FileNotFoundError, match="nope.png: no such file"):
        metric([paths[0], tmp_path / "nope.png"])
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(metric_lib.scoring.UnreadableImage, match="bad.png: cannot identify"):
        metric(tmp_path / "bad.png")
    with pytest.raises(UserError, match="cannot score a int"):
        metric(3)
    with pytest.raises(FileNotFoundError, match="mpiqe-koniq: no such file or folder"):
        mmpiqa_jax.create_metric("mpiqe-koniq")


def test_images_of_different_crop_counts_score_as_each_alone(run):
    # pyiqa's crops of a 40 x 40 image are one 32-pixel crop, of 48 x 64 two: one list, two
    # batches, each image's score that of scoring it by itself.
    workdir, paths = run
    metric = mmpiqa_jax.create_metric(workdir, crop_mode="pyiqa", batch_size=2)
    small = Image.fromarray(np.asarray(Image.open(paths[0]))[:40, :40])
    images = [Image.open(paths[1]), small, Image.open(paths[2]), Image.open(paths[3]), small]
    alone = [metric(im) for im in images]
    np.testing.assert_allclose(metric(images), alone, rtol=RTOL)
    assert alone[1] == pytest.approx(alone[4], rel=RTOL) and alone[1] != alone[0]
