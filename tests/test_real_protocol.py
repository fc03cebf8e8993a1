"""The real protocol end to end: LIQE's six datasets from download folders in their published
layouts, LIQE's split files with scene labels, the shipped `configs/liqe.py` and
`configs/mpiqe.py` trained through `mmpiqa train` on all six at once, and the results checked
against the files: each test part is the split file's, each SRCC is Spearman(prediction,
higher-is-better quality) of the per-image CSV, and the DMOS datasets rank the right way up.

Overrides are for size and steps only (a tiny CLIP on 32 px crops, fewer images per step, fewer
steps), plus LIQE's learning rate: 5e-6 fine-tunes a pretrained CLIP, a random tiny one learns
nothing at it in 100 steps.
"""
import json

import numpy as np
import pandas as pd
import pytest
import scipy.stats

import protocol_fixtures as pf
from mmpiqa_jax.cli import main as cli
from mmpiqa_jax.data import registry

STEPS = 100


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """(data dir, IQA_Database dir, {dataset: {part: [paths]}}) for the six datasets."""
    root = tmp_path_factory.mktemp("protocol")
    data_dir, database = root / "data", root / "IQA_Database"
    parts = {}
    for name, (writer, *_rest) in pf.DATASETS.items():
        folder = root / "downloads" / name
        images = writer(folder)
        parts[name] = pf.write_liqe_files(database, name, images)
        registry.prepare(name, str(folder), str(data_dir), allow_partial=True)
    return data_dir, database, parts


def overrides(data_dir, database, steps=STEPS):
    sizes = [f"data.batch_sizes.{name}=4" for name in pf.DATASETS]
    return [
        # size
        "model.variant=tiny", "data.crop_size=32", "data.crops_per_image=2", "data.eval_crops=4",
        *sizes, f"batch_size={4 * len(sizes)}", "eval.batch_size=16",
        # steps
        f"num_steps={steps}", "steps_per_epoch=10", "log_every=10", f"eval_every={steps // 2}",
        f"checkpoint_every={steps // 2}", "optimizer.warmup_steps=5",
        # where
        f"data.data_dir={data_dir}", f"data.split=liqe:{database}",
    ]


def train(config, workdir, *more):
    args = ["train", "--config", config, "--workdir", str(workdir)]
    for item in more:
        args += ["--set", item]
    assert cli.main(args) == 0


CONFIGS = {
    "liqe": ("configs/liqe.py", ["optimizer.learning_rate=1e-3"]),
    "mpiqe": ("configs/mpiqe.py", ["model.visual_prompt_depth=2", "model.fusion_layers=1",
                                   "model.fusion_width=32", "model.fusion_heads=2"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("method", list(CONFIGS))
def test_shipped_config_trains_on_the_six_datasets_with_liqes_splits(prepared, tmp_path, method):
    data_dir, database, parts = prepared
    spec, sized = CONFIGS[method]
    train(spec, tmp_path, *overrides(data_dir, database), *sized)

    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert all(r["loss_scene"] > 0 for r in log if "loss_scene" in r)  # scenes reach training
    assert all(r["loss_distortion"] > 0 for r in log if "loss_distortion" in r)
    assert log[-1]["step"] == STEPS

    srcc = {}
    for name in pf.DATASETS:
        stem = tmp_path / "eval" / f"{name}-test"
        table = pd.read_csv(stem.with_suffix(".csv"))
        record = json.loads(stem.with_suffix(".json").read_text())
        # The test part is exactly the split file's.
        assert sorted(table["name"]) == sorted(parts[name]["test"]), name
        assert list(table.columns) == ["name", "mos", "quality", "prediction"]
        want = scipy.stats.spearmanr(table["prediction"], table["quality"]).statistic
        assert record["srcc"] == pytest.approx(want, abs=1e-9), name
        srcc[name] = record["srcc"]
    for name in ("live_iqa", "csiq"):
        record = json.loads((tmp_path / "eval" / f"{name}-test.json").read_text())
        assert record["mos_direction"] == "lower is better"
        table = pd.read_csv(tmp_path / "eval" / f"{name}-test.csv")
        # A DMOS: the raw score runs against the quality the metrics use.
        assert scipy.stats.spearmanr(table["mos"], table["quality"]).statistic < -0.99
    print(method, {k: round(v, 3) for k, v in srcc.items()})
    assert srcc["live_iqa"] > 0.3 and srcc["csiq"] > 0.3, srcc
    assert np.median(list(srcc.values())) > 0.3, srcc


def test_a_task_no_training_image_has_labels_for_is_switched_off():
    from mmpiqa_jax import config as config_lib
    from mmpiqa_jax.data import datasets
    from mmpiqa_jax.train import run

    config = config_lib.load_config("configs/tiny.py", ["loss.dwa=true"])
    n = 6
    table = {"distortion_class": np.full(n, -1), "scenes": np.zeros((n, 9), np.float32)}
    parts = {"train": np.arange(4), "test": np.arange(4, 6)}
    table["distortion_class"][5] = 2  # a label in the test part only does not count
    data = datasets.Dataset("wild", None, table, parts)
    off = run.without_unlabelled_tasks(config, [data])
    assert (off.loss.distortion, off.loss.scene, off.loss.quality) == (0.0, 0.0, 1.0)
    assert (config.loss.distortion, config.loss.scene) == (1.0, 1.0)  # the caller's is kept
    table["scenes"][1, 3] = 1.0
    table["distortion_class"][0] = 4
    assert run.without_unlabelled_tasks(config, [data]) is config
