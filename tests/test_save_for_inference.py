"""`save_for_inference` (what `mmpiqa convert` writes): a workdir's checkpoints are replaced
only once the new ones are written, so a save that fails loses nothing."""
import jax
import numpy as np
import pytest
from flax import nnx
from workdirs import REPO, make_workdir

from mmpiqa_jax import config as config_lib
from mmpiqa_jax.models import iqa
from mmpiqa_jax.train import inference


def _params(model) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def _assert_same(a, b):
    for x, y in zip(_params(a), _params(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_checkpoints_are_replaced_only_by_a_complete_save(tmp_path):
    workdir = make_workdir(tmp_path / "liqe", "model=liqe", seed=0)
    before, config = inference.load_for_inference(workdir)
    with pytest.raises(FileExistsError, match="already holds checkpoints; pass overwrite"):
        inference.save_for_inference(config, before, workdir)
    entries = sorted(p.name for p in workdir.iterdir())

    # An MP-IQE under the LIQE config: its state does not fit, the save fails.
    mpiqe = config_lib.load_config(str(REPO / "configs" / "tiny.py:model=mpiqe"))
    wrong = iqa.build_model(mpiqe.model, nnx.Rngs(0))
    with pytest.raises((ValueError, TypeError, KeyError)):
        inference.save_for_inference(config, wrong, workdir, overwrite=True)
    _assert_same(inference.load_for_inference(workdir)[0], before)

    # Another LIQE's weights do replace them, and nothing of the swap is left beside.
    other = iqa.build_model(config.model, nnx.Rngs(1))
    inference.save_for_inference(config, other, workdir, overwrite=True)
    _assert_same(inference.load_for_inference(workdir)[0], other)
    assert sorted(p.name for p in workdir.iterdir()) == entries
