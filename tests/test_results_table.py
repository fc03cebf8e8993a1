"""LIQE's results table (methods x datasets, median and mean +- std, published rows,
cross-dataset)."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from mmpiqa_jax.evaluate import published, tables

REPO = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2)
DATASETS = ("live_iqa", "csiq", "kadid10k", "bid", "live_challenge", "koniq10k_512x384")
COLUMN = {"live_iqa": "LIVE", "csiq": "CSIQ", "kadid10k": "KADID-10k", "bid": "BID",
          "live_challenge": "CLIVE", "koniq10k_512x384": "KonIQ-10k"}
CROSS = ("kadid10k", "live_challenge")


def _write_eval(run: Path, dataset: str, split: str, srcc: float, plcc: float,
                plcc_logistic: float) -> None:
    (run / "eval").mkdir(parents=True, exist_ok=True)
    record = {"dataset": dataset, "split": split, "n": 100, "srcc": srcc, "plcc": plcc,
              "krcc": srcc - 0.1, "rmse": 0.3, "plcc_logistic": plcc_logistic,
              "rmse_logistic": 0.2, "fit": "logistic4", "fit_params": [1, 0, 1, 0]}
    (run / "eval" / f"{dataset}-{split}.json").write_text(json.dumps(record))


@pytest.fixture
def runs(tmp_path):
    """LIQE: three run workdirs (one per split seed). MP-IQE: a sweep workdir with three points;
    its BID result is missing in seed 2. Both also tested whole on two datasets (split `all`).
    Returns (run dirs, {method: {dataset: {metric: [values]}}}, same for the cross tests)."""
    rng = np.random.default_rng(0)
    within, cross, dirs = {}, {}, []
    for method in ("LIQE", "MP-IQE"):
        within[method], cross[method] = {}, {}
        sweep = tmp_path / "mpiqe_sweep"
        if method == "MP-IQE":
            sweep.mkdir()
            (sweep / "sweep.md").write_text("# Sweep\n")
            dirs.append(sweep)
        for seed in SEEDS:
            if method == "LIQE":
                run = tmp_path / f"liqe_seed{seed}"
                dirs.append(run)
            else:
                run = sweep / f"split_seed={seed}"
            run.mkdir()
            config = {"method": method, "data": {"split_seed": seed,
                                                 "batch_sizes": {"koniq10k": 16, "csiq": 4}}}
            if method == "MP-IQE":
                config["method"] = ""  # unnamed: the sweep's folder names it
                (run / "sweep_point.json").write_text(json.dumps({"name": run.name}))
            (run / "config.json").write_text(json.dumps(config))
            for dataset in DATASETS:
                if method == "MP-IQE" and dataset == "bid" and seed == 2:
                    continue
                srcc, plcc = rng.uniform(0.6, 0.95, 2)
                plcc_logistic = plcc + rng.uniform(0.01, 0.04)  # differs from the raw PLCC
                _write_eval(run, dataset, "test", srcc, plcc, plcc_logistic)
                values = within[method].setdefault(dataset, {"srcc": [], "plcc": [],
                                                             "plcc_logistic": []})
                for key, value in (("srcc", srcc), ("plcc", plcc),
                                   ("plcc_logistic", plcc_logistic)):
                    values[key].append(value)
            _write_eval(run, "csiq", "val", 0.1, 0.1, 0.1)  # validation: never in the tables
            _write_eval(run, "csiq", "train", 0.99, 0.99, 0.99)
            for dataset in CROSS:
                srcc, plcc = rng.uniform(0.4, 0.8, 2)
                plcc_logistic = plcc + 0.03
                _write_eval(run, dataset, "all", srcc, plcc, plcc_logistic)
                values = cross[method].setdefault(dataset, {"srcc": [], "plcc": [],
                                                            "plcc_logistic": []})
                values["srcc"].append(srcc)
                values["plcc"].append(plcc)
                values["plcc_logistic"].append(plcc_logistic)
    within["mpiqe_sweep"] = within.pop("MP-IQE")
    cross["mpiqe_sweep"] = cross.pop("MP-IQE")
    return dirs, within, cross


def _sections(text: str) -> dict[str, str]:
    """{"## heading": body} of the markdown."""
    out, heading = {}, None
    for line in text.splitlines():
        if line.startswith("## "):
            heading = line
            out[heading] = ""
        elif heading:
            out[heading] += line + "\n"
    return out


def _rows(body: str) -> dict[str, dict[str, str]]:
    """{method: {column: cell}} of the table in `body`."""
    lines = [line for line in body.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].split("|")[1:-1]]
    rows = {}
    for line in lines[2:]:  # after the header and the |---| line
        cells = [c.strip() for c in line.split("|")[1:-1]]
        rows[cells[0]] = dict(zip(header[1:], cells[1:]))
    return rows


def _median_cell(values, plcc_key):
    n = len(values["srcc"])
    return f"{np.median(values['srcc']):.3f} / {np.median(values[plcc_key]):.3f} ({n})"


def _mean_cell(values, plcc_key):
    n = len(values["srcc"])
    s, p = np.asarray(values["srcc"]), np.asarray(values[plcc_key])
    return f"{s.mean():.3f} ± {s.std():.3f} / {p.mean():.3f} ± {p.std():.3f} ({n})"


def _section(text, start):
    [(heading, body)] = [(h, b) for h, b in _sections(text).items() if h.startswith(start)]
    return heading, body


def test_medians_and_means_are_numpys(runs):
    dirs, within, _ = runs
    text, numbers = tables.paper_tables(dirs)
    heading, body = _section(text, "## Within-dataset: median")
    rows = _rows(body)
    assert list(rows)[:2] == ["LIQE", "mpiqe_sweep"]  # ours first, in the order given
    lines = [line for line in body.splitlines() if line.startswith("| ")]
    assert lines[0] == "| Method | LIVE | CSIQ | KADID-10k | BID | CLIVE | KonIQ-10k |"
    for method, per_dataset in within.items():
        for dataset, values in per_dataset.items():
            assert rows[method][COLUMN[dataset]] == _median_cell(values, "plcc_logistic")
    _, body = _section(text, "## Within-dataset: mean")
    assert "ddof=0" in _section(text, "## Within-dataset: mean")[0]
    rows = _rows(body)
    for method, per_dataset in within.items():
        for dataset, values in per_dataset.items():
            assert rows[method][COLUMN[dataset]] == _mean_cell(values, "plcc_logistic")
    # The JSON numbers are numpy's, unrounded.
    cell = {r["method"]: r for r in numbers["within"]["rows"]}["LIQE"]["cells"]["CSIQ"]
    values = within["LIQE"]["csiq"]
    assert cell["n"] == 3 and cell["datasets"] == ["csiq"]
    assert cell["srcc"]["median"] == pytest.approx(np.median(values["srcc"]), abs=1e-15)
    assert cell["plcc"]["mean"] == pytest.approx(np.mean(values["plcc_logistic"]), abs=1e-15)
    assert cell["plcc"]["std"] == pytest.approx(np.std(values["plcc_logistic"]), abs=1e-15)
    # ddof=1: the sample std.
    text1, _ = tables.paper_tables(dirs, statistic="mean", ddof=1, published=False)
    s = np.asarray(values["srcc"])
    assert (f"{s.mean():.3f} ± {s.std(ddof=1):.3f} / "
            in _rows(_section(text1, "## Within")[1])["LIQE"]["CSIQ"])


def test_plcc_raw_or_logistic_as_the_header_says(runs):
    dirs, within, _ = runs
    for choice, key in (("raw", "plcc"), ("logistic", "plcc_logistic")):
        text, numbers = tables.paper_tables(dirs, statistic="median", plcc=choice)
        heading, body = _section(text, "## Within-dataset: median")
        assert f"({choice} PLCC)" in heading and f"(`{key}`)" in body
        rows = _rows(body)
        for dataset, values in within["LIQE"].items():
            assert rows["LIQE"][COLUMN[dataset]] == _median_cell(values, key)
        assert numbers["plcc_key"] == key
    raw, _ = tables.paper_tables(dirs, statistic="median", plcc="raw")
    logistic, _ = tables.paper_tables(dirs, statistic="median", plcc="logistic")
    assert _rows(_section(raw, "## Within")[1])["LIQE"]["LIVE"] \
        != _rows(_section(logistic, "## Within")[1])["LIQE"]["LIVE"]
    with pytest.raises(ValueError, match="'fitted'"):
        tables.paper_tables(dirs, plcc="fitted")
    with pytest.raises(ValueError, match="'max'"):
        tables.paper_tables(dirs, statistic="max")


def test_published_rows_are_marked_with_their_sources(runs):
    dirs, _, _ = runs
    text, numbers = tables.paper_tables(dirs)
    for heading, body in _sections(text).items():
        rows = _rows(body)
        assert rows["LIQE [published]"] == {
            "LIVE": "0.970 / 0.951", "CSIQ": "0.936 / 0.939", "KADID-10k": "0.930 / 0.931",
            "BID": "0.875 / 0.900", "CLIVE": "0.904 / 0.910", "KonIQ-10k": "0.919 / 0.908"}
        assert rows["MP-IQE [published]"] == {
            "LIVE": "-", "CSIQ": "0.961 / -", "KADID-10k": "0.941 / -", "BID": "-", "CLIVE": "-",
            "KonIQ-10k": "0.898 / -"}
        assert list(rows)[-2:] == ["LIQE [published]", "MP-IQE [published]"]  # beside ours
        assert "not reproduced" in body
        assert "- [published] LIQE: Zhang et al., CVPR 2023" in body and "unconfirmed here" in body
        assert "- [published] MP-IQE: Pan et al., 2024" in body and "third-party" in body
    assert [p["method"] for p in numbers["published"]] == ["LIQE", "MP-IQE"]
    assert numbers["published"][1]["results"]["CSIQ"] == {"srcc": 0.961, "plcc": None}
    assert all(p["published"] for p in numbers["published"])

    text, numbers = tables.paper_tables(dirs, published=False)
    assert "[published]" not in text and numbers["published"] == []


def test_published_figures_as_data():
    assert published.LIQE_PAPER.results["BID"] == (0.875, 0.900)
    assert published.MPIQE_PAPER.results == {"CSIQ": (0.961, None), "KADID-10k": (0.941, None),
                                             "KonIQ-10k": (0.898, None)}
    assert "unconfirmed here" in published.LIQE_PAPER.source
    for row in published.PUBLISHED:
        assert row.statistic in ("median", "mean", "unstated")
        assert set(row.results) <= set(published.PAPER_DATASETS), row.method


@pytest.mark.parametrize("name, column", [
    ("live_iqa", "LIVE"), ("csiq", "CSIQ"), ("kadid10k", "KADID-10k"), ("bid", "BID"),
    ("live_challenge", "CLIVE"), ("koniq10k", "KonIQ-10k"), ("koniq10k_512x384", "KonIQ-10k"),
    ("koniq-10k", "KonIQ-10k"), ("koniq", "KonIQ-10k"), ("live", "LIVE"), ("clive", "CLIVE"),
    ("tid2013", "TID2013"), ("live_vqc", "live_vqc"), ("synthetic_iqa", "synthetic_iqa")])
def test_paper_dataset_names(name, column):
    assert published.paper_dataset(name) == column


def test_missing_dataset_counted_with_its_n(runs):
    dirs, within, _ = runs
    text, numbers = tables.paper_tables(dirs, statistic="median")
    rows = _rows(_section(text, "## Within")[1])
    assert rows["mpiqe_sweep"]["BID"].endswith(" (2)")
    assert rows["mpiqe_sweep"]["BID"] == _median_cell(within["mpiqe_sweep"]["bid"], "plcc_logistic")
    assert rows["mpiqe_sweep"]["CSIQ"].endswith(" (3)")  # val and train splits left out
    cells = {r["method"]: r for r in numbers["within"]["rows"]}["mpiqe_sweep"]["cells"]
    assert cells["BID"]["n"] == 2 and len(cells["BID"]["srcc"]["values"]) == 2


def test_other_datasets_after_the_six(runs, tmp_path):
    dirs, _, _ = runs
    extra = tmp_path / "extra"
    (extra / "eval").mkdir(parents=True)
    _write_eval(extra, "synthetic_iqa", "test", 0.5, 0.5, 0.6)
    _write_eval(extra, "aaa", "test", 0.5, 0.5, 0.6)
    text, _ = tables.paper_tables([*dirs, extra], statistic="median", published=False)
    header = [line for line in text.splitlines() if line.startswith("| Method")][0]
    assert header == ("| Method | LIVE | CSIQ | KADID-10k | BID | CLIVE | KonIQ-10k | aaa "
                      "| synthetic_iqa |")
    assert _rows(_section(text, "## Within")[1])["extra"]["synthetic_iqa"] == "0.500 / 0.600 (1)"


def test_cross_dataset_table(runs):
    dirs, _, cross = runs
    text, numbers = tables.paper_tables(dirs, cross=True)
    assert "## Cross-dataset" not in tables.paper_tables(dirs)[0]
    for statistic, fmt in (("median", _median_cell), ("mean", _mean_cell)):
        heading, body = _section(text, f"## Cross-dataset: {statistic}")
        assert "split `all`" in body and "[published]" not in body
        rows = _rows(body)
        header = [line for line in body.splitlines() if line.startswith("| Method")][0]
        assert header == "| Method | KADID-10k | CLIVE |"
        labels = {"LIQE": "LIQE (train: KonIQ-10k, CSIQ)",
                  "mpiqe_sweep": "mpiqe_sweep (train: KonIQ-10k, CSIQ)"}
        assert list(rows) == list(labels.values())
        for method, per_dataset in cross.items():
            for dataset, values in per_dataset.items():
                assert rows[labels[method]][COLUMN[dataset]] == fmt(values, "plcc_logistic")
    # The within-dataset tables do not pool the cross-dataset tests in.
    within_rows = _rows(_section(text, "## Within-dataset: median")[1])
    assert within_rows["LIQE"]["KADID-10k"] != _rows(
        _section(text, "## Cross-dataset: median")[1])["LIQE (train: KonIQ-10k, CSIQ)"]["KADID-10k"]
    assert numbers["cross"]["table"] == "cross" and len(numbers["cross"]["rows"]) == 2


def test_only_cross_results(tmp_path):
    run = tmp_path / "koniq_only"
    _write_eval(run, "csiq", "all", 0.7, 0.6, 0.65)
    with pytest.raises(ValueError, match="needs --cross"):
        tables.paper_tables([run])
    text, _ = tables.paper_tables([run], cross=True, statistic="median")
    assert "No within-dataset results" in text
    assert _rows(_section(text, "## Cross")[1])["koniq_only"] == {"CSIQ": "0.700 / 0.650 (1)"}


def test_sweep_points_pool_by_setting(tmp_path):
    """A grid over depth x seeds: one method per depth, the seeds pooled."""
    sweep = tmp_path / "ablation"
    sweep.mkdir()
    (sweep / "sweep.md").write_text("# Sweep\n")
    for depth in (0, 6):
        for seed in (0, 1):
            _write_eval(sweep / f"visual_prompt_depth={depth},split_seed={seed}", "csiq", "test",
                        0.5 + depth / 10 + seed / 100, 0.5, 0.5)
    results = tables.collect_results([sweep])
    assert {m: len(r["csiq"]) for m, r in results.items()} == {
        "ablation (visual_prompt_depth=0)": 2, "ablation (visual_prompt_depth=6)": 2}
    # The points given one by one (a shell glob) name the same methods.
    assert set(tables.collect_results(sorted(sweep.glob("*=*")))) == set(results)


def test_cli(runs, tmp_path, capsys):
    dirs, within, cross = runs
    spec = importlib.util.spec_from_file_location("results_table_cli",
                                                  REPO / "tools" / "results_table.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out, numbers_path = tmp_path / "table.md", tmp_path / "table.json"
    args = ["--runs", *map(str, dirs), "--cross", "--out", str(out), "--json", str(numbers_path)]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert printed == out.read_text(encoding="utf-8")
    assert printed == tables.paper_tables(dirs, cross=True)[0]
    assert len(_sections(printed)) == 4  # median and mean, within and cross
    numbers = json.loads(numbers_path.read_text())
    assert numbers["plcc_key"] == "plcc_logistic" and numbers["statistics"] == ["median", "mean"]
    cell = {r["method"]: r for r in numbers["within"]["rows"]}["LIQE"]["cells"]["KonIQ-10k"]
    assert cell["srcc"]["values"] == pytest.approx(within["LIQE"]["koniq10k_512x384"]["srcc"])
    assert cell["datasets"] == ["koniq10k_512x384"]

    assert cli.main(["--runs", *map(str, dirs), "--statistic", "median", "--plcc", "raw",
                     "--no-published", "--no-n"]) == 0
    printed = capsys.readouterr().out
    assert list(_sections(printed)) == [
        "## Within-dataset: median over splits, SRCC / PLCC (raw PLCC)"]
    values = within["LIQE"]["csiq"]
    assert _rows(printed)["LIQE"]["CSIQ"] == \
        f"{np.median(values['srcc']):.3f} / {np.median(values['plcc']):.3f}"
    assert "[published]" not in printed

    assert cli.main(["--runs", str(tmp_path / "nope")]) == 1
    assert "nope" in capsys.readouterr().err
