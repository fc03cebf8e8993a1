"""`mmpiqa score`: file discovery, evaluation preprocessing, batching, and unreadable files."""
import csv
import io
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

import workdirs
from mmpiqa_jax import config as config_lib
from mmpiqa_jax.cli import main as cli
from mmpiqa_jax.data import pipeline
from mmpiqa_jax.evaluate import scoring
from mmpiqa_jax.models.preprocess import clip_normalize
from mmpiqa_jax.train.inference import Scorer

REPO = Path(__file__).resolve().parents[1]


class StandIn(nnx.Module):
    """crops (uint8, or CLIP-normalised, as the IQA models take them) -> a score in (1, 5)
    that depends on every crop's pixels and position."""

    def __init__(self, crop: int):
        key = jax.random.key(0)
        self.w = nnx.Param(jax.random.normal(key, (crop, crop, 3)) / crop)

    def __call__(self, crops):
        crops = clip_normalize(crops)
        x = jnp.mean(jnp.sum(crops * self.w[...], axis=(2, 3, 4)), axis=1)
        return {"score": 1 + 4 * jax.nn.sigmoid(x)}


def _png(path, size, seed):
    rng = np.random.default_rng(seed)
    h, w = size
    ramp = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))
    pixels = np.clip(ramp + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture()
def folder(tmp_path):
    """Two good images (one in a subfolder, one JPEG), a truncated PNG, a text file named .jpg,
    and a .txt file that a folder search must ignore."""
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    _png(root / "good.png", (260, 300), 0)
    Image.open(_png(root / "sub" / "tmp.png", (400, 250), 1)).save(root / "sub" / "good.JPG")
    (root / "sub" / "tmp.png").unlink()
    full = _png(tmp_path / "whole.png", (240, 320), 2).read_bytes()
    (root / "corrupt.png").write_bytes(full[:len(full) // 2])
    (root / "not_an_image.jpg").write_text("hello\n")
    (root / "notes.txt").write_text("not scored\n")
    return root


def eval_pipeline_crops(path, mode, num, size):
    """The crops (uint8) `data.pipeline`'s evaluation map makes of an encoded file."""
    record = {"image": Path(path).read_bytes(), "quality": 1.0, "mos": 1.0,
              "distortion_class": 0, "ref_id": 0, "name": "x"}
    spec = types.SimpleNamespace(source=[record], scenes=None, name="files",
                                 distortion_class=None)
    example = pipeline._Example(spec, 0)  # pylint: disable=protected-access
    return pipeline._EvalMap(example, mode, num, size).map((0, True))["pixels"]


def test_find_images(folder, tmp_path):
    files, missing = scoring.find_images([folder, tmp_path / "whole.png", tmp_path / "nope.png"])
    names = [str(Path(f).relative_to(tmp_path)) for f in files]
    assert names == ["images/corrupt.png", "images/good.png", "images/not_an_image.jpg",
                     "images/sub/good.JPG", "whole.png"]
    assert missing == [(str(tmp_path / "nope.png"), "no such file or directory")]


@pytest.mark.parametrize("mode,num,size", [("liqe", 15, 224), ("center", 1, 64), ("full", 1, 48)])
def test_crops_are_the_evaluation_pipelines(folder, mode, num, size):
    for name in ("good.png", "sub/good.JPG"):
        got = scoring.load_crops(folder / name, mode, num, size)  # uint8, as the pipeline's
        np.testing.assert_array_equal(got, eval_pipeline_crops(folder / name, mode, num, size))
        assert got.shape == (num, size, size, 3)


def test_score_files_skips_unreadable_and_matches_the_model(folder, tmp_path):
    model = StandIn(64)
    files, missing = scoring.find_images([folder, tmp_path / "missing.png"])
    # batch 2 over 2 readable files; batch 3 pads the single batch: both give the same scores.
    for batch_size in (1, 3):
        scores, skipped = scoring.score_files(Scorer.of(model), files, crop_mode="liqe",
                                              num_crops=4, crop_size=64, batch_size=batch_size,
                                              progress=False)
        assert [Path(p).name for p, _ in scores] == ["good.png", "good.JPG"]
        for path, score in scores:
            crops = eval_pipeline_crops(path, "liqe", 4, 64)
            assert score == pytest.approx(float(model(crops[None])["score"][0]), rel=1e-5)
        assert len({s for _, s in scores}) == 2  # the images differ, so must their scores
        assert [Path(p).name for p, _ in skipped] == ["corrupt.png", "not_an_image.jpg"]
        assert "truncated" in skipped[0][1]
        assert "cannot identify the image format" in skipped[1][1]
    assert [Path(p).name for p, _ in missing] == ["missing.png"]


@pytest.mark.usefixtures("same_flags")  # compares runs made under the same flags
def test_scorer_refreshes_the_text_cache_and_leaves_the_model(folder):
    from mmpiqa_jax.models import iqa

    config = config_lib.load_config(str(REPO / "configs" / "tiny.py"))
    model = workdirs.perturb(iqa.build_model(config.model, nnx.Rngs(0)))
    assert not np.any(model.text_cache[...])  # never refreshed
    crops = np.stack([np.asarray(clip_normalize(scoring.load_crops(folder / n, "liqe", 2, 32)))
                      for n in ("good.png", "sub/good.JPG")])
    got = Scorer.of(model)(crops)
    np.testing.assert_allclose(got, workdirs.forward(model, crops)["score"], rtol=1e-5)
    assert abs(got[0] - got[1]) > 1e-4
    assert not np.any(model.text_cache[...])  # the caller's model is unchanged


def _cli(monkeypatch, model, config):
    from mmpiqa_jax.train import inference

    monkeypatch.setattr(inference, "load_scorer", lambda path: (Scorer.of(model), config))


def test_cli_score(folder, tmp_path, monkeypatch, capsys):
    config = config_lib.load_config(str(REPO / "configs" / "tiny.py"))  # 2 crops of 32
    model = StandIn(32)
    _cli(monkeypatch, model, config)
    out = tmp_path / "scores.csv"
    rc = cli.main(["score", "--checkpoint", "run", str(folder), str(tmp_path / "missing.png"),
                   "--out", str(out), "--batch-size", "4", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    for name, reason in (("corrupt.png", "truncated"), ("not_an_image.jpg", "cannot identify"),
                         ("missing.png", "no such file")):
        line = next(l for l in err.splitlines() if name in l)
        assert line.startswith("skipped ") and reason in line
    assert "scored 2 images" in err and "skipped 3" in err
    rows = list(csv.DictReader(out.open()))
    assert [Path(r["path"]).name for r in rows] == ["good.png", "good.JPG"]
    for r in rows:
        crops = eval_pipeline_crops(r["path"], "liqe", 2, 32)
        assert float(r["score"]) == pytest.approx(float(model(crops[None])["score"][0]), rel=1e-5)

    # All readable, CSV on stdout, another crop mode: exit 0.
    rc = cli.main(["score", "--checkpoint", "run", str(folder / "good.png"), "--crops", "center",
                   "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0 and "skipped" not in captured.err
    (row,) = list(csv.DictReader(io.StringIO(captured.out)))
    crops = eval_pipeline_crops(folder / "good.png", "center", 1, 32)
    assert float(row["score"]) == pytest.approx(float(model(crops[None])["score"][0]), rel=1e-5)


def test_cli_score_errors(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["score", "--checkpoint", str(tmp_path), str(empty)]) == 1
    assert f"no image files (.bmp, .jpeg, .jpg, .png, .tif, .tiff, .webp) in {empty}" in \
        capsys.readouterr().err
    _png(tmp_path / "a.png", (240, 240), 0)
    assert cli.main(["score", "--checkpoint", str(tmp_path / "nowhere"), str(tmp_path)]) == 1
    assert f"{tmp_path / 'nowhere'}: no such file or folder" in capsys.readouterr().err
