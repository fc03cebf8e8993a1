"""Model folders (what `mmpiqa convert` writes for a LIQE model): the model's parameters and
config and nothing of training; read by every command that takes a model, like a workdir and a
checkpoint in one; replaced only once a new one is written in full."""
import jax
import numpy as np
import pytest
from flax import nnx
from workdirs import REPO, make_workdir

from mmpiqa_jax import config as config_lib
from mmpiqa_jax.checkpoints import CheckpointError, save_checkpoint
from mmpiqa_jax.models import iqa
from mmpiqa_jax.train import inference


def _params(model) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def _assert_same(a, b):
    for x, y in zip(_params(a), _params(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return make_workdir(tmp_path_factory.mktemp("run"), "model=mpiqe")


def test_a_model_folder_holds_the_model_of_its_workdir(workdir, tmp_path):
    model, config = inference.load_model(workdir)
    out = inference.save_model(model, config, tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["config.json", "params"]
    again, config_again = inference.load_model(out)
    _assert_same(again, model)
    assert config_again.to_dict() == config.to_dict()
    crops = np.random.default_rng(0).integers(0, 256, (3, 2, 32, 32, 3), np.uint8)
    scores = inference.Scorer.of(again)(crops)
    np.testing.assert_allclose(scores, inference.load_scorer(workdir)[0](crops), rtol=1e-6)
    assert np.ptp(scores) > 1e-3
    # One checkpoint of the run, by its folder, is the same model.
    _assert_same(inference.load_model(workdir / "checkpoints" / "0")[0], model)


def test_a_model_folder_is_replaced_only_by_a_complete_save(tmp_path):
    config = config_lib.load_config(str(REPO / "configs" / "tiny.py:model=liqe"))
    before = iqa.build_model(config.model, nnx.Rngs(0))
    out = inference.save_model(before, config, tmp_path / "liqe")
    with pytest.raises(CheckpointError, match=r"already holds a checkpoint \(--overwrite"):
        inference.save_model(before, config, out)
    entries = sorted(p.name for p in (tmp_path / "liqe").iterdir())

    # An MP-IQE under the LIQE config: it is written, but it is not what the config describes.
    mpiqe = config_lib.load_config(str(REPO / "configs" / "tiny.py:model=mpiqe"))
    inference.save_model(iqa.build_model(mpiqe.model, nnx.Rngs(0)), config, tmp_path / "bad")
    with pytest.raises(CheckpointError, match="are not those of the liqe model"):
        inference.load_model(tmp_path / "bad")

    # A save that fails half-way (here: an extra that cannot be written) leaves the old one.
    with pytest.raises(Exception):
        save_checkpoint(out, before.clip, {"x": object()}, {}, overwrite=True)
    _assert_same(inference.load_model(out)[0], before)
    assert sorted(p.name for p in (tmp_path / "liqe").iterdir()) == entries

    other = iqa.build_model(config.model, nnx.Rngs(1))
    inference.save_model(other, config, out, overwrite=True)
    _assert_same(inference.load_model(out)[0], other)
    assert sorted(p.name for p in (tmp_path / "liqe").iterdir()) == entries


def test_a_clip_checkpoint_is_named_as_such(tmp_path):
    config = config_lib.load_config(str(REPO / "configs" / "tiny.py"))
    clip = iqa.build_model(config.model, nnx.Rngs(0)).clip
    save_checkpoint(tmp_path / "clip", clip)
    with pytest.raises(inference.UserError, match="is a CLIP checkpoint, not a quality model"):
        inference.load_scorer(tmp_path / "clip")


def test_a_workdir_exported_to_hugging_face_is_a_model_and_replaced_only_whole(workdir, tmp_path,
                                                                              monkeypatch):
    transformers = pytest.importorskip("transformers")
    import safetensors.numpy

    from mmpiqa_jax.cli.main import main

    model, _ = inference.load_model(workdir)
    out = tmp_path / "hf"
    assert main(["export", str(workdir), "--to", "hf", "--out", str(out)]) == 0
    _assert_same(inference.load_model(out)[0], model)  # prompts and heads ride along
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def fails_half_way(tensors, filename, metadata=None):   # a full disk, a killed job
        with open(filename, "wb") as f:
            f.write(b"\0" * 100)
        raise OSError(28, "No space left on device", filename)

    monkeypatch.setattr(safetensors.numpy, "save_file", fails_half_way)
    assert main(["export", str(workdir), "--to", "hf", "--out", str(out)]) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    transformers.CLIPConfig.from_pretrained(out)  # still whole, and needs no PyTorch to check
    _assert_same(inference.load_model(out)[0], model)
