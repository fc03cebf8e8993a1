"""The main job on the tiny config and `synthetic_iqa/small`: exact resume, test evaluations on
disk, inference from a workdir, and bad input named (config key, dataset, checkpoint, batch)."""
import json
import shutil

import jax
import numpy as np
import pytest
from flax import nnx
from conftest import TINY, tiny_config
from workdirs import forward

from mmpiqa_jax.data import datasets, pipeline
from mmpiqa_jax.train import checkpointing, inference, run, sharding, trainer
from mmpiqa_jax.train.task import IQATask
from mmpiqa_jax.train.trainer import StopTraining

SPEC = TINY
TIMING_KEYS = {"images_per_sec"}


def read_log(workdir) -> list[dict]:
    return [json.loads(line) for line in (workdir / "train_log.jsonl").read_text().splitlines()]


def assert_close(got, want, what):
    if isinstance(want, dict):
        assert set(got) == set(want), what
        for k in want:
            assert_close(got[k], want[k], f"{what}.{k}")
    elif isinstance(want, (float, int)) and not isinstance(want, bool):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=what)
    else:
        assert got == want, what


@pytest.fixture(scope="module")
def reference(trained_run):
    """One uninterrupted 8-step run: (workdir, results, log)."""
    workdir, results = trained_run
    return workdir, results, read_log(workdir)


def test_run_logs_validates_and_writes_test_results(reference):
    workdir, results, log = reference
    assert [r["step"] for r in log] == list(range(1, 9))
    assert {"loss", "loss_quality", "loss_distortion", "loss_scene", "lr", "grad_norm",
            "weight_quality", "images_per_sec"} <= set(log[0])
    assert [r["step"] for r in log if "val_srcc" in r] == [4, 8]
    # DWA: weights are 1 for two epochs (4 steps), then move.
    assert all(r["weight_quality"] == 1.0 for r in log[:4])
    assert any(abs(r["weight_quality"] - 1.0) > 1e-6 for r in log[4:])
    assert list(results) == ["synthetic_iqa_small-test"]
    on_disk = json.loads((workdir / "eval" / "synthetic_iqa_small-test.json").read_text())
    assert on_disk["n"] == results["synthetic_iqa_small-test"]["n"] == 21  # one reference
    np.testing.assert_allclose(on_disk["srcc"], results["synthetic_iqa_small-test"]["srcc"])
    for ext in ("csv", "png"):
        assert (workdir / "eval" / f"synthetic_iqa_small-test.{ext}").stat().st_size > 0
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.integration
def test_resume_after_stop_matches_uninterrupted(synthetic_small_dir, reference, tmp_path):
    _, want_results, want_log = reference

    def preempt(step):
        if step == 6:  # two steps past the checkpoint at 4
            raise StopTraining

    config = tiny_config(synthetic_small_dir)
    assert run.train_and_evaluate(config, tmp_path, hooks=[preempt]) == {}
    assert [r["step"] for r in read_log(tmp_path)] == list(range(1, 7))
    results = run.train_and_evaluate(tiny_config(synthetic_small_dir), tmp_path)
    got_log = read_log(tmp_path)
    assert [r["step"] for r in got_log] == [r["step"] for r in want_log]
    for got, want in zip(got_log[4:], want_log[4:]):  # the second half, run after the resume
        assert_close({k: v for k, v in got.items() if k not in TIMING_KEYS},
                     {k: v for k, v in want.items() if k not in TIMING_KEYS},
                     f"step {want['step']}")
    assert_close(results, want_results, "results")


def test_load_model_scores_like_the_evaluation(reference):
    workdir, _, _ = reference
    model, config = inference.load_model(workdir / "checkpoints")
    rows = (workdir / "eval" / "synthetic_iqa_small-test.csv").read_text().splitlines()[1:4]
    names = [r.split(",")[0] for r in rows]
    dataset = datasets.open_dataset("synthetic_iqa/small", config)
    index = [list(dataset.table["name"]).index(n) for n in names]
    spec = dataset.part("all")
    spec = pipeline.DataSpec(spec.source, np.asarray(index), 1, spec.scenes, spec.name)
    batch = next(iter(pipeline.eval_iterator(spec, batch_size=3, crop_mode="liqe",
                                             num_crops=config.data.eval_crops,
                                             crop_size=config.data.crop_size)))
    scores = np.asarray(forward(model, batch["pixels"], use_text_cache=True)["score"])
    np.testing.assert_allclose(scores, [float(r.split(",")[3]) for r in rows], rtol=1e-5)


def test_checkpoint_that_does_not_match_the_config_is_named(synthetic_small_dir, reference,
                                                           tmp_path):
    workdir = shutil.copytree(reference[0], tmp_path / "run")
    config = tiny_config(synthetic_small_dir, "model.fusion_width=64", "num_steps=12")
    with pytest.raises(checkpointing.CheckpointMismatchError,
                       match=r"model\.fusion_width: checkpoint 32, config 64"):
        run.train_and_evaluate(config, workdir)
    # The run's own config is left as it was.
    assert json.loads((workdir / "config.json").read_text())["model"]["fusion_width"] == 32


def test_bad_batch_sizes_and_splits_are_named(synthetic_small_dir):
    with pytest.raises(ValueError, match=r"batch_size=9 must equal the sum of config\.data\."
                                         r"batch_sizes \{'synthetic_iqa/small': 8\} = 8"):
        IQATask(tiny_config(synthetic_small_dir, "batch_size=9"))
    with pytest.raises(ValueError, match="data.crop_size=48 must equal the image size of CLIP "
                                         "'tiny' \\(32\\)"):
        IQATask(tiny_config(synthetic_small_dir, "data.crop_size=48"))
    with pytest.raises(ValueError, match="config.data.split='60/30': item '60/30' has percen"):
        datasets.training_datasets(tiny_config(synthetic_small_dir, "data.split=60/30"))
    with pytest.raises(ValueError, match="has no part 'val'; it has train, test"):
        datasets.training_datasets(tiny_config(synthetic_small_dir, "data.split=80/20"))
    with pytest.raises(ValueError, match=r"eval.datasets \['synthetic_iqa/small'\] are also "
                                         "training datasets"):
        datasets.cross_datasets(tiny_config(synthetic_small_dir,
                                       "eval.datasets=('synthetic_iqa/small',)"))


def test_missing_dataset_says_to_prepare(tmp_path):
    config = tiny_config(tmp_path)
    with pytest.raises(FileNotFoundError,
                       match=f"run: mmpiqa prepare synthetic_iqa/small --data-dir {tmp_path}"):
        run.train_and_evaluate(config, tmp_path / "work")


@pytest.mark.usefixtures("same_flags")  # compares runs made under the same flags
def test_load_pretrained_puts_clip_weights_in_and_refreshes_the_text_cache(tmp_path):
    from mmpiqa_jax.checkpoints.project import save_checkpoint
    from mmpiqa_jax.models.clip_model import CLIP, get_variant
    from mmpiqa_jax.models.prompts import phrase_token_ids

    clip = CLIP(get_variant("tiny"), rngs=nnx.Rngs(7))
    save_checkpoint(tmp_path / "clip", clip)
    checkpoint = f"model.clip_checkpoint={tmp_path / 'clip'}"

    def load(task):
        rng = jax.random.key(0)
        _, shardings = trainer.abstract_state(task, sharding.make_mesh(), rng)
        state = task.load_pretrained(rng, shardings)
        assert jax.tree.map(lambda x: x.sharding, state) == shardings
        return nnx.merge(task.graphdef, state.params, state.frozen)

    kernel = clip.visual.conv1.kernel[...]
    task = IQATask(tiny_config("", checkpoint))  # learnable text context: no text cache
    assert not task.use_text_cache
    after = load(task)
    np.testing.assert_array_equal(after.clip.visual.conv1.kernel[...], kernel)
    # The context starts at the loaded CLIP's embeddings of "a photo of a".
    words = clip.token_embedding.embedding[...][phrase_token_ids("a photo of a")]
    np.testing.assert_array_equal(after.prompts["scene"].ctx[...], words)

    task = IQATask(tiny_config("", checkpoint, spec=SPEC + ",ctx=0"))  # text path frozen
    assert task.use_text_cache
    after = load(task)
    np.testing.assert_allclose(after.text_cache[...], nnx.jit(lambda m: m.encode_prompts())(after),
                               atol=1e-6)
