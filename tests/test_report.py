"""Evaluation files on disk and the results table built from them."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmpiqa_jax.evaluate import metrics, report, tables

REPO = Path(__file__).resolve().parents[1]


def test_write_eval_files(tmp_path):
    rng = np.random.default_rng(0)
    mos = rng.uniform(1, 5, 40)
    pred = 1 / (1 + np.exp(-(mos - 3))) + rng.normal(scale=0.05, size=40)
    names = [f"img_{i:03d}.png" for i in range(40)]
    # CSIQ's raw score is a DMOS: quality runs the other way.
    dmos = (5 - mos) / 4
    paths = report.write_eval(tmp_path, "csiq", "test", names, mos, pred, mos=dmos,
                              score_direction="lower is better", split_source="liqe:/x")

    assert paths["json"] == tmp_path / "eval" / "csiq-test.json"
    record = json.loads(paths["json"].read_text())
    expected = metrics.compute_metrics(pred, mos)
    for key in ("srcc", "plcc", "krcc", "rmse", "plcc_logistic", "rmse_logistic", "n", "fit"):
        assert record[key] == pytest.approx(expected[key])
    assert record["dataset"] == "csiq" and record["split"] == "test" and record["n"] == 40
    assert record["mos_direction"] == "lower is better" and record["split_source"] == "liqe:/x"
    assert record["ground_truth"] == "quality (higher is better)"

    table = pd.read_csv(paths["csv"])
    assert list(table.columns) == ["name", "mos", "quality", "prediction"]
    assert table["name"].tolist() == names
    np.testing.assert_allclose(table["mos"], dmos, rtol=1e-15)
    np.testing.assert_allclose(table["quality"], mos, rtol=1e-15)
    np.testing.assert_allclose(table["prediction"], pred, rtol=1e-15)

    png = paths["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image
    height, width, _ = matplotlib.image.imread(paths["png"]).shape
    assert width > 300 and height > 300
    assert not list((tmp_path / "eval").glob("*.tmp"))  # atomic writes leave nothing behind


def test_write_eval_bad_input(tmp_path):
    with pytest.raises(ValueError, match="3, 3, 3, 2"):
        report.write_eval(tmp_path, "live", "test", ["a", "b", "c"], [1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="'../x'"):
        report.write_eval(tmp_path, "../x", "test", ["a", "b"], [1, 2], [1, 2])
    with pytest.raises(ValueError, match=r"pred\[1\] = nan"):
        report.write_eval(tmp_path, "live", "test", ["a", "b", "c"], [1, 2, 3], [1, np.nan, 3])


def _fake_eval(run: Path, dataset: str, split: str, srcc: float, plcc: float) -> None:
    (run / "eval").mkdir(parents=True, exist_ok=True)
    (run / "eval" / f"{dataset}-{split}.json").write_text(
        json.dumps({"dataset": dataset, "split": split, "srcc": srcc, "plcc": plcc}))


def _two_runs(tmp_path):
    liqe, mine = tmp_path / "run_a", tmp_path / "mpiqe_run"
    (liqe).mkdir()
    (liqe / "config.json").write_text(json.dumps({"method": "LIQE", "lr": 5e-6}))
    _fake_eval(liqe, "csiq", "split1", 0.90, 0.91)
    _fake_eval(liqe, "csiq", "split2", 0.94, 0.93)
    _fake_eval(liqe, "koniq-10k", "split1", 0.80, 0.82)  # dataset name with a '-'
    _fake_eval(liqe, "koniq-10k", "split2", 0.86, 0.84)
    _fake_eval(liqe, "csiq", "val", 0.10, 0.10)  # validation: left out by default
    _fake_eval(mine, "csiq", "split1", 0.95, 0.96)  # no config.json: the folder names it
    _fake_eval(mine, "csiq", "split2", 0.97, 0.96)
    _fake_eval(mine, "csiq", "split3", 0.10, 0.20)  # median ignores the outlier, the mean does not
    return liqe, mine


def _splits(results):
    return {m: {d: sorted(r["split"] for r in rs) for d, rs in per.items()}
            for m, per in results.items()}


def test_collect_results_pools_splits_and_selects_them(tmp_path):
    liqe, mine = _two_runs(tmp_path)
    assert _splits(tables.collect_results([liqe, mine])) == {
        "LIQE": {"csiq": ["split1", "split2"], "koniq-10k": ["split1", "split2"]},
        "mpiqe_run": {"csiq": ["split1", "split2", "split3"]}}
    assert _splits(tables.collect_results([liqe], include="val")) == {"LIQE": {"csiq": ["val"]}}
    (liqe / "eval" / "live-test.json").write_text(json.dumps({"srcc": 0.5}))
    with pytest.raises(ValueError, match="live-test.json: not an evaluation record"):
        tables.collect_results([liqe])


def test_results_table_cli(tmp_path, capsys):
    _two_runs(tmp_path)
    spec = importlib.util.spec_from_file_location("results_table_cli",
                                                  REPO / "tools" / "results_table.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = tmp_path / "table.md"
    assert cli.main(["--runs", str(tmp_path / "*run*"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    expected, _ = tables.paper_tables([tmp_path / "mpiqe_run", tmp_path / "run_a"])
    assert printed == out.read_text() == expected
    (tmp_path / "empty").mkdir()
    assert cli.main(["--runs", str(tmp_path / "empty")]) == 1
    assert "no evaluation results" in capsys.readouterr().err
