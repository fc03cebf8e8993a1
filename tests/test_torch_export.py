"""`mmpiqa export WORKDIR --to torch`: the PyTorch module `mmpiqa_jax.pytorch` scores like the
JAX model to 1e-4, on the same crops and on image files through each side's own preprocessing,
for MP-IQE at visual prompt depth 0, the tiny tower's full depth (2) and a 12-layer tower at depth
12 with exact GELU, and for LIQE (with and without learned context)."""
import dataclasses
import json

import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")

from mmpiqa_jax import config as config_lib  # noqa: E402
from mmpiqa_jax import pytorch as tp  # noqa: E402
from mmpiqa_jax.checkpoints import CheckpointError  # noqa: E402
from mmpiqa_jax.checkpoints import torch_export as te  # noqa: E402
from mmpiqa_jax.cli import main as cli  # noqa: E402
from mmpiqa_jax.evaluate import scoring  # noqa: E402
from mmpiqa_jax.models import iqa  # noqa: E402
from mmpiqa_jax.models.clip_model import get_variant  # noqa: E402
from mmpiqa_jax.train import inference  # noqa: E402

from workdirs import REPO, make_workdir, perturb, write_images  # noqa: E402

TOL = 1e-4
# LIQE's resize both ways (a short side over 768, one under the 32-pixel crop), stride 48 (a side
# of 1024 or more after it) and 32, fewer grid positions than crops.
SIZES = [(60, 90), (20, 45), (800, 1100), (33, 33)]


def torch_scores(model, crops: np.ndarray) -> np.ndarray:
    """Scores of crops [B, C, H, W, 3] (the JAX layout) through the torch model."""
    with torch.no_grad():
        pixels = torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 1, 4, 2, 3)))
        return model(pixels)["score"].numpy()


def random_crops(n: int, crops: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, crops, size, size, 3), np.uint8)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("images"), SIZES)


def test_exported_workdir_scores_like_jax(tmp_path, images, capsys):
    """The workdir's path: `mmpiqa export`, its config.json, and scoring files. Each model's
    port is checked on its own by `test_exported_model_scores_like_jax`."""
    workdir = make_workdir(tmp_path / "run", "model=mpiqe,depth=2,prompts=3",
                           ["model.text_prompt_depth=2", "model.scene_activation=sigmoid"])
    out = tmp_path / "torch"
    assert cli.main(["export", str(workdir), "--to", "torch", "--out", str(out)]) == 0
    assert "wrote a PyTorch" in capsys.readouterr().out

    model, config = inference.load_model(workdir)
    ported = tp.load(out)
    exported = json.loads((out / "config.json").read_text())
    assert exported["model"] == config.model.name
    assert exported["preprocess"] == scoring.crop_setting(config)
    if config.model.name == "mpiqe":
        tokens = model.prompts["visual"].tokens
        depth = 0 if tokens is None else tokens.shape[0]
        assert exported["mpiqe"]["visual_prompt_depth"] == depth == config.model.visual_prompt_depth

    # The same crops, uint8 and CLIP-normalised float.
    crops = random_crops(3, 2, 32)
    jax_scores = inference.Scorer.of(model)(crops)
    np.testing.assert_allclose(torch_scores(ported, crops), jax_scores, atol=TOL)
    assert np.ptp(jax_scores) > 1e-3  # the images score apart: the check can tell them apart
    normalised = (crops / 255.0 - np.asarray(tp.model.CLIP_MEAN)) / np.asarray(tp.model.CLIP_STD)
    np.testing.assert_allclose(torch_scores(ported, normalised.astype(np.float32)), jax_scores,
                               atol=TOL)

    # Files: the torch module's own crops are the evaluation's, and so are the scores.
    setting = scoring.crop_setting(config)
    from PIL import Image

    for path in images:
        ours = tp.eval_crops(Image.open(path), setting["crop_mode"], setting["num_crops"],
                             setting["crop_size"])
        np.testing.assert_array_equal(ours, scoring.load_crops(path, **setting))
    want, skipped = scoring.score_files(inference.Scorer.of(model), images, batch_size=2,
                                        progress=False, **setting)
    assert not skipped
    got = tp.score_files(ported, images, batch_size=3)
    assert [p for p, _ in got] == [str(p) for p, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=TOL)


def _perturbed(config_model, clip=None):
    return perturb(iqa.build_model(config_model, nnx.Rngs(0), clip=clip))


MODELS = {  # name: (tiny.py's arguments, overrides)
    "mpiqe-depth0": ("model=mpiqe,depth=0", []),
    "mpiqe-depth12-gelu": ("model=mpiqe,depth=12", ["model.text_prompt_depth=2"]),
    "liqe": ("model=liqe,ctx=0", []),
    "liqe-ctx": ("model=liqe,ctx=4", ["model.text_prompt_depth=2"]),
    "liqe-quality": ("model=liqe,ctx=0", ["model.liqe_prompts=quality"]),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_exported_model_scores_like_jax(name, tmp_path):
    """MP-IQE without visual prompts, and at depth 12 on a 12-layer (narrow) vision tower with
    exact GELU; LIQE with its fixed context, with learned deep context, and on its 5 quality-only
    prompts. Exported from the model (`export_torch`), scored on the same crops."""
    spec, overrides = MODELS[name]
    config = config_lib.load_config(str(REPO / "configs" / f"tiny.py:{spec}"), overrides)
    clip = None
    if name == "mpiqe-depth12-gelu":
        clip = dataclasses.replace(get_variant("tiny"), vision_layers=12, vision_width=64,
                                   vision_heads=2, activation="gelu")
    model = _perturbed(config.model, clip)
    te.export_torch(model, tmp_path, preprocess={"crop_mode": "center", "num_crops": 1})
    ported = tp.load(tmp_path)
    if clip is not None:
        assert len(ported.clip.visual.transformer.resblocks) == 12
        assert tuple(ported.visual_prompts.shape) == (12, 4, 64)
    crops = random_crops(2, 3, 32, seed=1)
    jax_scores = inference.Scorer.of(model)(crops)
    np.testing.assert_allclose(torch_scores(ported, crops), jax_scores, atol=TOL)
    assert np.ptp(jax_scores) > 1e-3
    # QuickGELU in place of the exact GELU moves the scores: the activation is honoured.
    if clip is not None:
        from mmpiqa_jax.pytorch import model as tm

        for block in ported.clip.visual.transformer.resblocks:
            block.activation = tm.ACTIVATIONS["quick_gelu"]
        assert np.abs(torch_scores(ported, crops) - jax_scores).max() > 10 * TOL


def test_the_format_names_agree_and_bad_folders_are_named(tmp_path):
    for key in ("FORMAT", "VERSION", "CONFIG_NAME", "WEIGHTS_NAME"):
        assert getattr(te, key) == getattr(tp.model, key)
    from mmpiqa_jax.models.preprocess import CLIP_MEAN, CLIP_STD

    np.testing.assert_array_equal(np.float32(tp.model.CLIP_MEAN), CLIP_MEAN)
    np.testing.assert_array_equal(np.float32(tp.model.CLIP_STD), CLIP_STD)

    with pytest.raises(tp.ExportError, match="config.json not found"):
        tp.load(tmp_path)
    config = config_lib.load_config(str(REPO / "configs" / "tiny.py:model=mpiqe,depth=1"))
    model = iqa.build_model(config.model, nnx.Rngs(0))
    te.export_torch(model, tmp_path / "a")
    meta = json.loads((tmp_path / "a" / "config.json").read_text())
    meta["mpiqe"]["fusion_width"] = 48  # no longer the weights' shape
    (tmp_path / "a" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(tp.ExportError, match=r"model.safetensors: does not match config.json"):
        tp.load(tmp_path / "a")
    meta["format"] = "something"
    (tmp_path / "a" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(tp.ExportError, match="format 'something'"):
        tp.load(tmp_path / "a")
    with pytest.raises(CheckpointError, match="crop_size 64 differs"):
        te.export_torch(model, tmp_path / "b", preprocess={"crop_size": 64})
    with pytest.raises(CheckpointError, match="not CLIP"):
        te.export_torch(model.clip, tmp_path / "c")


def test_export_of_a_folder_that_is_no_workdir_is_named(tmp_path, capsys):
    assert cli.main(["export", str(tmp_path), "--to", "torch", "--out", str(tmp_path / "o")]) == 1
    assert "no config.json in it, so neither a training workdir nor a model folder" in \
        capsys.readouterr().err


def test_an_export_that_fails_half_way_leaves_the_earlier_one(tmp_path, monkeypatch):
    config = config_lib.load_config(str(REPO / "configs" / "tiny.py:model=liqe,ctx=0"))
    te.export_torch(iqa.build_model(config.model, nnx.Rngs(0)), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def fails_half_way(tensors, filename, metadata=None):   # a full disk, a killed job
        with open(filename, "wb") as f:
            f.write(b"\0" * 100)
        raise OSError("No space left on device")

    import safetensors.numpy
    monkeypatch.setattr(safetensors.numpy, "save_file", fails_half_way)
    with pytest.raises(OSError, match="No space left"):
        te.export_torch(iqa.build_model(config.model, nnx.Rngs(1)), tmp_path)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if not p.name.endswith(".tmp")}
    assert after == before
    tp.load(tmp_path)
