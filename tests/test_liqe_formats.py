"""LIQE's and pyiqa's LIQE files in (`mmpiqa convert`), pyiqa's out (`mmpiqa export --to pyiqa`),
and the `pyiqa` crops, all against pyiqa's own `LIQE` module.

pyiqa's LIQE is built on a small random OpenAI-layout CLIP with 224 images and 32-pixel patches
(ViT-B/32's geometry; pyiqa's CLIP builder takes any shapes), its CLIP download replaced by that
model and its text-feature cache put in a fresh folder for every build. Needs
`pip install --no-deps pyiqa openai-clip` (plus opencv-python-headless, ftfy, regex, tqdm,
'setuptools<80'); skipped without pyiqa.
"""
import csv
import dataclasses

import numpy as np
import pytest
from PIL import Image

# The PyTorch references: skipped where torch is not installed (the newest-Python CI env).
torch = pytest.importorskip("torch")
liqe_arch = pytest.importorskip("pyiqa.archs.liqe_arch")
pyiqa_clip = pytest.importorskip("pyiqa.archs.clip_model")

from mmpiqa_jax.checkpoints import CheckpointError, liqe_formats  # noqa: E402
from mmpiqa_jax.cli.main import main  # noqa: E402
from mmpiqa_jax.data import transforms as T  # noqa: E402
from mmpiqa_jax.models import clip_model  # noqa: E402
from mmpiqa_jax.models.preprocess import clip_normalize  # noqa: E402
from mmpiqa_jax.train import inference  # noqa: E402

VARIANT = "liqe-test"  # registered for these tests: tiny towers on ViT-B/32's image geometry
ARCH = dataclasses.replace(clip_model.VARIANTS["tiny"], image_resolution=224,
                           vision_patch_size=32)
# (width, height): one crop, fewer than 15 (all taken), odd sizes, a step of 2, a wide strip.
SIZES = ((224, 224), (300, 256), (391, 257), (480, 320), (1030, 230))


@pytest.fixture(autouse=True)
def test_variant(monkeypatch):
    monkeypatch.setitem(clip_model.VARIANTS, VARIANT, ARCH)


def random_clip(seed: int):
    """pyiqa's (OpenAI's) CLIP module with `ARCH`'s shapes, randomly initialised."""
    torch.manual_seed(seed)
    a = ARCH
    model = pyiqa_clip.CLIP(a.embed_dim, a.image_resolution, a.vision_layers, a.vision_width,
                            a.vision_patch_size, a.context_length, a.vocab_size, a.text_width,
                            a.text_heads, a.text_layers)
    with torch.no_grad():  # OpenAI's init leaves biases and LayerNorms plain: stir them all
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.float().eval()


def pyiqa_liqe(monkeypatch, tmp_path, *, path=None, mtl=True):
    """pyiqa's LIQE (eval mode), its CLIP from `random_clip` then `path`'s weights if given."""
    monkeypatch.setattr(liqe_arch, "load", lambda name, device: random_clip(123))
    cache = tmp_path / f"pyiqa_cache_{len(list(tmp_path.glob('pyiqa_cache_*')))}"
    cache.mkdir()  # a fresh text-feature cache: pyiqa never invalidates it
    monkeypatch.setattr(liqe_arch, "DEFAULT_CACHE_DIR", str(cache))
    with torch.no_grad():
        model = liqe_arch.LIQE(pretrained=False, pretrained_model_path=path, mtl=mtl)
    assert list(cache.iterdir()), "pyiqa wrote no text-feature cache where it was put"
    return model.eval()


@pytest.fixture
def released(monkeypatch, tmp_path):
    """A random LIQE model in the three formats: pyiqa's file, LIQE.pt and a training checkpoint."""
    model = pyiqa_liqe(monkeypatch, tmp_path)
    with torch.no_grad():
        model.clip_model.load_state_dict(random_clip(7).state_dict())
    files = {"pyiqa": tmp_path / "liqe_mix.pt", "liqe": tmp_path / "LIQE.pt",
             "liqe-train": tmp_path / "avg_best_ckpt.pt"}
    torch.save({"params": model.state_dict()}, files["pyiqa"])
    torch.save(model.clip_model.state_dict(), files["liqe"])
    torch.save({"epoch": 3, "model_state_dict": model.clip_model.state_dict(),
                "optimizer_state_dict": {}, "all_results": [0.5]}, files["liqe-train"])
    return files


@pytest.fixture
def images(tmp_path):
    """PNG files of `SIZES` (smooth fields plus noise, so that scores differ) and their arrays."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    arrays = {}
    for i, (w, h) in enumerate(SIZES):
        y, x = np.mgrid[0:h, 0:w]
        base = 127 + 100 * np.sin(x[..., None] / (7 + 9 * i) + y[..., None] / 23 + np.arange(3) * i)
        array = np.clip(base + rng.normal(0, 10 + 20 * i, (h, w, 3)), 0, 255).astype(np.uint8)
        path = folder / f"img{i}_{w}x{h}.png"
        Image.fromarray(array).save(path)
        arrays[str(path)] = array
    return arrays


def pyiqa_scores(model, arrays) -> dict:
    """pyiqa's LIQE on each image as ToTensor gives it ([0, 1] float, NCHW)."""
    out = {}
    with torch.no_grad():
        for path, array in arrays.items():
            x = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255.0
            out[path] = float(model(x)[0, 0])
    return out


def our_scores(workdir, folder, tmp_path) -> dict:
    out = tmp_path / "scores.csv"
    assert main(["score", "--checkpoint", str(workdir), "--crops", "pyiqa", "--no-progress",
                 "--out", str(out), str(folder)]) == 0
    with open(out, newline="") as f:
        return {row["path"]: float(row["score"]) for row in csv.DictReader(f)}


def assert_same_scores(ours: dict, reference: dict):
    assert sorted(ours) == sorted(reference)
    values = np.array([reference[p] for p in sorted(reference)])
    assert values.std() > 5e-3, f"the reference scores hardly differ ({values}): a weak test"
    np.testing.assert_allclose([ours[p] for p in sorted(reference)], values, atol=1e-4, rtol=0)


# -- crops ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES + ((224, 700), (255, 255)))
def test_pyiqa_crops_are_those_pyiqa_feeds_its_clip(size, monkeypatch, tmp_path):
    model = pyiqa_liqe(monkeypatch, tmp_path)
    seen = []

    def encode_image(x, pos_embedding=False):
        seen.append(x.numpy())
        return torch.ones(len(x), ARCH.embed_dim)

    monkeypatch.setattr(model.clip_model, "encode_image", encode_image)
    w, h = size
    array = np.random.default_rng(w * h).integers(0, 256, (h, w, 3), dtype=np.uint8)
    with torch.no_grad():
        model(torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255.0)
    theirs = seen[0].transpose(0, 2, 3, 1)  # [n, 224, 224, 3], CLIP-normalised
    ours = T.eval_crops(Image.fromarray(array), "pyiqa", 15)
    assert ours.dtype == np.uint8 and len(ours) == len(theirs) <= 15
    np.testing.assert_allclose(np.asarray(clip_normalize(ours)), theirs, atol=2e-6)


def test_pyiqa_crops_refuse_an_image_smaller_than_a_crop():
    with pytest.raises(ValueError, match=r"both sides >= 224.*300x200"):
        T.eval_crops(Image.new("RGB", (300, 200)), "pyiqa", 15)


# -- in: LIQE's and pyiqa's files ---------------------------------------------------------------


def test_formats_are_recognised_and_read_alike(released):
    assert liqe_formats.detect(released["pyiqa"]) == "pyiqa"
    assert liqe_formats.detect(released["liqe-train"]) == "liqe-train"
    assert liqe_formats.detect(released["liqe"]) is None  # a bare CLIP state dict
    with pytest.raises(CheckpointError, match="--as liqe"):
        liqe_formats.read_liqe(released["liqe"])
    sources = {fmt: liqe_formats.read_liqe(path, bare_state_dict=True)
               for fmt, path in released.items()}
    assert {fmt: s.format for fmt, s in sources.items()} == {f: f for f in released}
    reference = sources["pyiqa"].state_dict
    assert sources["pyiqa"].config == ARCH
    for source in sources.values():
        assert source.state_dict.keys() == reference.keys()
        for key, value in reference.items():
            np.testing.assert_array_equal(source.state_dict[key], value, err_msg=key)


def test_pyiqa_file_converts_and_scores_like_pyiqa(released, images, monkeypatch, tmp_path,
                                                   capsys):
    workdir = tmp_path / "converted"
    assert main(["convert", str(released["pyiqa"]), "--out", str(workdir)]) == 0
    printed = capsys.readouterr().out
    assert "format: pyiqa" in printed and f"variant: {VARIANT}" in printed
    _, config = inference.load_model(workdir)
    assert config.model.name == "liqe" and config.model.variant == VARIANT
    assert config.converted_from.format == "pyiqa"

    reference = pyiqa_liqe(monkeypatch, tmp_path, path=str(released["pyiqa"]), mtl=True)
    assert_same_scores(our_scores(workdir, tmp_path / "images", tmp_path),
                       pyiqa_scores(reference, images))


def test_liqe_pt_converts_and_scores_like_pyiqa(released, images, monkeypatch, tmp_path):
    workdir = tmp_path / "converted"
    assert main(["convert", str(released["liqe"]), "--out", str(workdir)]) == 1  # needs --as
    assert main(["convert", str(released["liqe"]), "--as", "liqe", "--out", str(workdir)]) == 0
    # pyiqa loads LIQE.pt's weights as its own file's: the same model, as pyiqa scores it.
    reference = pyiqa_liqe(monkeypatch, tmp_path, path=str(released["pyiqa"]), mtl=True)
    small = dict(list(images.items())[:3])
    folder = tmp_path / "small"
    folder.mkdir()
    for path in small:
        (folder / path.rsplit("/", 1)[-1]).write_bytes(open(path, "rb").read())
    ours = {str(tmp_path / "images" / p.rsplit("/", 1)[-1]): s
            for p, s in our_scores(workdir, folder, tmp_path).items()}
    assert_same_scores(ours, pyiqa_scores(reference, small))


def test_quality_prompts_score_like_pyiqa_without_mtl(released, images, monkeypatch, tmp_path):
    workdir = tmp_path / "converted"
    assert main(["convert", str(released["liqe-train"]), "--prompts", "quality",
                 "--out", str(workdir)]) == 0
    reference = pyiqa_liqe(monkeypatch, tmp_path, path=str(released["pyiqa"]), mtl=False)
    assert reference.text_features.shape[0] == 5
    assert_same_scores(our_scores(workdir, tmp_path / "images", tmp_path),
                       pyiqa_scores(reference, images))


# -- out: pyiqa's file ----------------------------------------------------------------------------


def test_export_is_loaded_by_pyiqa_and_scores_like_ours(released, images, monkeypatch, tmp_path):
    workdir = tmp_path / "converted"
    assert main(["convert", str(released["pyiqa"]), "--out", str(workdir)]) == 0
    exported = tmp_path / "exported.pt"
    assert main(["export", str(workdir), "--to", "pyiqa", "--out", str(exported)]) == 0
    # The same tensors as the file converted, under pyiqa's names.
    original = torch.load(released["pyiqa"], weights_only=True)["params"]
    written = torch.load(exported, weights_only=True)["params"]
    assert written.keys() == original.keys()
    for key, value in original.items():
        torch.testing.assert_close(written[key], value, rtol=0, atol=0, msg=key)

    model = pyiqa_liqe(monkeypatch, tmp_path, path=str(exported), mtl=True)  # strict load
    assert_same_scores(pyiqa_scores(model, images),
                       our_scores(workdir, tmp_path / "images", tmp_path))


def test_export_refuses_a_model_pyiqa_cannot_hold(tmp_path, capsys):
    from workdirs import make_workdir

    workdir = make_workdir(tmp_path / "mpiqe", "model=mpiqe")
    assert main(["export", str(workdir), "--to", "pyiqa", "--out", str(tmp_path / "x.pt")]) == 1
    assert "fixed prompts only" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()
