"""`mmpiqa demo`, `mmpiqa eval` and `mmpiqa train` from the command line: files written, tables
printed, and bad input reported in one line that names the fault."""
import json

import pytest

from mmpiqa_jax.cli.main import main

DEMO = ["demo", "--compare", "--dataset", "synthetic_iqa/small", "--set", "num_steps=3",
        "--set", "eval_every=3", "--set", "data.split=50/25/25", "--set", "data.eval_crops=2"]


@pytest.fixture(scope="module")
def demo_run(synthetic_small_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    code = main([*DEMO, "--workdir", str(workdir), "--data-dir", synthetic_small_dir])
    return code, workdir


@pytest.mark.integration
def test_demo_trains_tests_and_writes_everything(demo_run):
    code, out = demo_run
    assert code == 0
    table = (out / "results.md").read_text()
    assert "| MP-IQE |" in table and "| LIQE |" in table
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    mpiqe = json.loads((out / "mpiqe" / "eval" / "synthetic_iqa_small-test.json").read_text())
    assert f"| MP-IQE | {mpiqe['srcc']:.4f} | {mpiqe['plcc_logistic']:.4f} |" in table
    assert json.loads((out / "liqe" / "config.json").read_text())["model"]["name"] == "liqe"
    workdir = out / "mpiqe"
    stem = workdir / "eval" / "synthetic_iqa_small-test"
    record = json.loads(stem.with_suffix(".json").read_text())
    assert record["n"] == 21 and -1 <= record["srcc"] <= 1
    assert stem.with_suffix(".csv").read_text().startswith("name,mos,quality,prediction\n")
    assert stem.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert [json.loads(l)["step"] for l in (workdir / "train_log.jsonl").read_text().splitlines()
            ] == [3]  # demo.py logs every 25 steps, and always the last one
    config = json.loads((workdir / "config.json").read_text())
    assert config["model"]["variant"] == "tiny" and config["num_steps"] == 3
    assert (workdir / "checkpoints" / "3").is_dir()


@pytest.mark.integration
def test_eval_writes_json_csv_png(demo_run, capsys):
    workdir = demo_run[1] / "mpiqe"
    assert main(["eval", "--workdir", str(workdir), "--dataset", "synthetic_iqa/small",
                 "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "synthetic_iqa_small-val" in out and "SRCC" in out
    for ext in ("json", "csv", "png"):
        assert (workdir / "eval" / f"synthetic_iqa_small-val.{ext}").stat().st_size > 0
    assert json.loads((workdir / "eval" / "synthetic_iqa_small-val.json").read_text())["n"] == 21


def test_eval_of_a_folder_without_a_run(tmp_path, capsys):
    assert main(["eval", "--workdir", str(tmp_path)]) == 1
    assert "no config.json in it, so neither a training workdir nor a model folder" in \
        capsys.readouterr().err


@pytest.mark.parametrize("overrides, message", [
    (["model.no_such_key=1"], "error: unknown config key 'model.no_such_key'"),
    (["num_steps=many"], "config key 'num_steps': expected int, got 'many'"),
])
def test_train_names_a_bad_config_key(tmp_path, capsys, overrides, message):
    args = ["train", "--config", "configs/tiny.py", "--workdir", str(tmp_path)]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "config.json").exists()


def test_train_on_a_missing_dataset_says_to_prepare(tmp_path, capsys):
    assert main(["train", "--config", "configs/tiny.py", "--workdir", str(tmp_path / "w"),
                 "--set", f"data.data_dir={tmp_path}"]) == 1
    err = capsys.readouterr().err
    assert f"run: mmpiqa prepare synthetic_iqa --data-dir {tmp_path}" in err
