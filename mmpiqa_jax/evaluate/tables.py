"""Results tables like the papers': `paper_tables`.

LIQE's table (rows = methods, columns = LIVE, CSIQ, KADID-10k, BID, CLIVE, KonIQ-10k, then any
other dataset; each cell SRCC / PLCC over splits), with the papers' figures as reference rows, and
a cross-dataset table (split `all`). A run is a training workdir or a sweep's workdir, which
stands for its points (the points of a ten-split sweep pool into one method).
"""
from __future__ import annotations

import fnmatch
import math

from etils import epath

from mmpiqa_jax.errors import MissingFileError, UserError
from mmpiqa_jax.evaluate import metrics as metrics_lib
from mmpiqa_jax.evaluate import published as published_lib
from mmpiqa_jax.evaluate.report import markdown_table
from mmpiqa_jax.files import read_json

# Splits left out by default: a table of test results must not pool in training or validation.
DEFAULT_EXCLUDE = ("train*", "val*")
# The split name of a dataset evaluated whole: a cross-dataset test.
CROSS_SPLIT = "all"
# `--plcc` choice -> the eval JSON key.
PLCC_KEYS = {"raw": "plcc", "logistic": "plcc_logistic"}
STATISTICS = ("median", "mean")
# A sweep point's folder (sweep.py: `POINT_FILE`, values `key=value` joined by ",").
_POINT_FILE = "sweep_point.json"
_SEED_NAME = "split_seed"


def _config(run_dir: epath.Path) -> dict:
    path = run_dir / "config.json"
    if not path.is_file():
        return {}
    config = read_json(path)
    return config if isinstance(config, dict) else {}


def _point_values(run_dir: epath.Path) -> list[str] | None:
    """A sweep point's swept values but the split seed (`["visual_prompt_depth=6"]`); None when
    `run_dir` has no `sweep_point.json` and is no `key=value,...` folder beside a `sweep.md`."""
    parts = run_dir.resolve().name.split(",")
    named_like_one = all("=" in p for p in parts) and (run_dir.parent / "sweep.md").is_file()
    if not ((run_dir / _POINT_FILE).is_file() or named_like_one):
        return None
    return [p for p in parts if "=" in p and p.partition("=")[0] != _SEED_NAME]


def method_name(run_dir) -> str:
    """The run's `config.json` key `method` (or `name`) when present, else the folder name (a
    sweep point's: its sweep's), with a sweep point's swept values but the split seed."""
    run_dir = epath.Path(run_dir)
    config = _config(run_dir)
    name = str(config.get("method") or config.get("name") or "") or None
    values = _point_values(run_dir)
    if values is None:
        return name or run_dir.resolve().name
    name = name or run_dir.resolve().parent.name
    return f"{name} ({','.join(values)})" if values else name


def expand_runs(run_dirs) -> list[epath.Path]:
    """The run directories, each sweep workdir (no `eval/`, subfolders with one) replaced by its
    points in name order. A missing directory is an error; one without results stays as it is."""
    out = []
    for run_dir in run_dirs:
        run_dir = epath.Path(run_dir)
        if not run_dir.is_dir():
            raise MissingFileError(f"run directory {str(run_dir)!r} does not exist")
        points = [] if (run_dir / "eval").is_dir() else sorted(
            p for p in run_dir.iterdir() if p.is_dir() and (p / "eval").is_dir())
        out += points or [run_dir]
    return out


def _read_eval(path: epath.Path) -> dict:
    record = read_json(path)
    if not isinstance(record, dict) or not {"dataset", "split"} <= record.keys():
        raise UserError(f"{path}: not an evaluation record (a metrics object with its dataset "
                        "and split)")
    return record


def collect_results(run_dirs, *, include: str | None = None, exclude=None,
                    key=method_name) -> dict[str, dict[str, list[dict]]]:
    """{method: {dataset: [one metrics dict per split]}} from each run's `eval/*.json`, runs of
    one method name (`key(run_dir)`) pooled; `include`: a glob on split names, `exclude`: globs
    dropped (None: `DEFAULT_EXCLUDE` unless `include` is given)."""
    if exclude is None:
        exclude = DEFAULT_EXCLUDE if include is None else ()
    results: dict[str, dict[str, list[dict]]] = {}
    for run_dir in expand_runs(run_dirs):
        method = key(run_dir)
        per_dataset = results.setdefault(method, {})
        for path in sorted((run_dir / "eval").glob("*.json")):
            record = _read_eval(path)
            split = str(record["split"])
            if include is not None and not fnmatch.fnmatch(split, include):
                continue
            if any(fnmatch.fnmatch(split, pattern) for pattern in exclude):
                continue
            per_dataset.setdefault(str(record["dataset"]), []).append(record)
    return results


# ---- LIQE's layout: methods x datasets, median and mean +- std, published reference rows ----

def _cross_name(run_dir: epath.Path) -> str:
    """A cross-dataset row: the method and, from `config.json` (`data.batch_sizes`), what it
    trained on, e.g. `LIQE (train: KonIQ-10k)`."""
    name = method_name(run_dir)
    data = _config(epath.Path(run_dir)).get("data")
    trained = data.get("batch_sizes") if isinstance(data, dict) else None
    if isinstance(trained, dict) and trained:
        sets = ", ".join(published_lib.paper_dataset(d) for d in trained)
        return f"{name[:-1]}; train: {sets})" if name.endswith(")") else f"{name} (train: {sets})"
    return name


def _column_key(label: str):
    base = label.split(" (", 1)[0]
    papers = published_lib.PAPER_DATASETS
    return (papers.index(base) if base in papers else len(papers), base.lower(), label)


def _labels(results: dict[str, dict[str, list]]) -> dict[str, str]:
    """Our dataset name -> column; two of one method in one paper column keep a column each,
    e.g. `KonIQ-10k (koniq10k_512x384)`."""
    labels = {raw: published_lib.paper_dataset(raw) for per in results.values() for raw in per}
    clashes = set()
    for per in results.values():
        seen = {}
        for raw in per:
            if labels[raw] in seen:
                clashes.add(labels[raw])
            seen[labels[raw]] = raw
    return {raw: f"{label} ({raw})" if label in clashes else label
            for raw, label in labels.items()}


def summarize(run_dirs, *, cross: bool = False, plcc: str = "logistic",
              include: str | None = None, exclude=None, ddof: int = 0) -> dict:
    """The numbers of one table: {"table", "plcc", "plcc_key", "ddof", "splits", "columns",
    "rows": [{"method", "published": False, "cells": {column: cell}}], "empty", "missing"}.

    A cell is {"datasets": our names, "n": number of splits, "srcc": stats, "plcc": stats}, stats
    `metrics.aggregate_splits`' (with `ddof`) or None. Within-dataset: the test splits (by default
    all but train*, val* and `all`; or `include` / `exclude`), a row per method. Cross-dataset:
    the `all` evaluations, a row per method and training sets. `empty`: methods without a result;
    `missing`: the metric keys that no evaluation file has.
    """
    if plcc not in PLCC_KEYS:
        raise UserError(f"plcc must be one of {tuple(PLCC_KEYS)}, got {plcc!r}")
    plcc_key = PLCC_KEYS[plcc]
    if cross:
        include, exclude, key = CROSS_SPLIT, (), _cross_name
        splits = f"whole datasets (split `{CROSS_SPLIT}`), not trained on"
    else:
        key = method_name
        if include is None and exclude is None:
            exclude = (*DEFAULT_EXCLUDE, CROSS_SPLIT)
        if include is not None:
            splits = f"splits matching `{include}`"
        else:
            splits = "test splits (left out: " + ", ".join(f"`{e}`" for e in exclude) + ")"
    results = collect_results(run_dirs, include=include, exclude=exclude, key=key)
    labels = _labels(results)
    columns = sorted(set(labels.values()), key=_column_key)
    if not cross:  # LIQE's six columns always, then any other dataset
        columns = sorted(set(columns) | set(published_lib.PAPER_DATASETS), key=_column_key)
    rows, empty = [], []
    for method, per_dataset in results.items():
        if not any(per_dataset.values()):
            empty.append(method)
            continue
        cells = {}
        for raw, records in per_dataset.items():
            cell = cells.setdefault(labels[raw], {"datasets": [], "records": []})
            cell["datasets"].append(raw)
            cell["records"] += records
        for cell in cells.values():
            records = cell.pop("records")
            cell["n"] = len(records)
            for out, metric in (("srcc", "srcc"), ("plcc", plcc_key)):
                present = [r for r in records if r.get(metric) is not None]
                cell[out] = (metrics_lib.aggregate_splits(present, (metric,), ddof)[metric]
                             if present else None)
        rows.append({"method": method, "published": False,
                     "cells": {c: cells[c] for c in columns if c in cells}})
    records = [r for per in results.values() for rs in per.values() for r in rs]
    missing = [m for m in ("srcc", plcc_key) if records and not any(m in r for r in records)]
    return {"table": "cross" if cross else "within", "plcc": plcc, "plcc_key": plcc_key,
            "ddof": ddof, "splits": splits, "columns": columns, "rows": rows, "empty": empty,
            "missing": missing}


def number(value, digits: int = 3) -> str:
    """`value` with `digits` decimals; "-" for None or NaN."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.{digits}f}"


def _ours(cell: dict | None, statistic: str, show_n: bool) -> str:
    if not cell:
        return "-"
    parts = []
    for metric in ("srcc", "plcc"):
        stats = cell[metric]
        if stats is None:
            parts.append("-")
        elif statistic == "median":
            parts.append(number(stats["median"]))
        else:
            parts.append(f"{number(stats['mean'])} ± {number(stats['std'])}")
    text = " / ".join(parts)
    return f"{text} ({cell['n']})" if show_n else text


_PLCC_TEXT = {"logistic": "PLCC after the 4-parameter logistic fit (`plcc_logistic`)",
              "raw": "PLCC of the raw predictions, no fit (`plcc`)"}


def format_table(summary: dict, *, statistic: str = "median", published=(),
                 show_n: bool = True) -> str:
    """Markdown of one `summarize` table as `statistic` ("median", or "mean": mean ± std) over
    splits; `published` (`published.PublishedResult`s) add reference rows below ours, marked
    `[published]`, with their sources under the table."""
    if statistic not in STATISTICS:
        raise UserError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    columns = summary["columns"]
    kind = "Cross-dataset" if summary["table"] == "cross" else "Within-dataset"
    what = ("median over splits" if statistic == "median"
            else f"mean ± std over splits (std with ddof={summary['ddof']})")
    plcc = summary["plcc"]
    lines = [f"## {kind}: {what}, SRCC / PLCC ({plcc} PLCC)", "",
             f"Each cell: SRCC / PLCC, {what}; {_PLCC_TEXT[plcc]}"
             + ("; (n) = number of splits" if show_n else "") + "; `-` = no result. "
             f"Tested on {summary['splits']}."]
    if summary["table"] == "cross":
        lines[-1] += " Rows: the trained model (and its training sets)."
    if published:
        lines[-1] += (" Rows marked [published] are the papers' figures, copied, not reproduced"
                      " here (sources below).")
    for metric in summary["missing"]:
        lines.append(f"Note: no evaluation file has `{metric}`"
                     + (" (try `--plcc raw`)." if metric == "plcc_logistic" else "."))
    rows = [[row["method"], *(_ours(row["cells"].get(c), statistic, show_n) for c in columns)]
            for row in summary["rows"]]
    for ref in published:
        cells = []
        for c in columns:
            srcc, plcc_value = ref.results.get(c, (None, None))
            cells.append("-" if srcc is None and plcc_value is None
                         else f"{number(srcc)} / {number(plcc_value)}")
        rows.append([f"{ref.method} [published]", *cells])
    lines += ["", markdown_table(["Method", *columns], rows, "l" + "c" * len(columns))]
    if published:
        lines.append("")
        for ref in published:
            lines.append(f"- [published] {ref.method}: {ref.source}; statistic over splits: "
                         f"{ref.statistic}" + (f"; {ref.note}" if ref.note else "") + ".")
    if summary["empty"]:
        lines += ["", "No results here: " + ", ".join(summary["empty"]) + "."]
    return "\n".join(lines) + "\n"


def paper_tables(run_dirs, *, statistic: str = "both", plcc: str = "logistic",
                 published: bool = True, cross: bool = False, include: str | None = None,
                 exclude=None, show_n: bool = True, ddof: int = 0) -> tuple[str, dict]:
    """LIQE's table of the runs: (markdown, numbers as JSON-ready dict).

    statistic: "median", "mean" (mean ± std) or "both". plcc: "logistic" or "raw". published:
    add `published.PUBLISHED` to the within-dataset tables. cross: add the cross-dataset tables.
    `include` / `exclude` select the within-dataset splits (`summarize`).
    """
    statistics = STATISTICS if statistic == "both" else (statistic,)
    if statistic != "both" and statistic not in STATISTICS:
        raise UserError(f"statistic must be one of {(*STATISTICS, 'both')}, got {statistic!r}")
    run_dirs = list(run_dirs)
    if not run_dirs:
        raise UserError("paper_tables needs at least one run directory, got none")
    refs = tuple(published_lib.PUBLISHED) if published else ()
    summaries = [summarize(run_dirs, plcc=plcc, include=include, exclude=exclude, ddof=ddof)]
    if cross:
        summaries.append(summarize(run_dirs, cross=True, plcc=plcc, ddof=ddof))
    if not any(s["rows"] for s in summaries):
        raise UserError("no evaluation results (eval/*.json) found in "
                        f"{[str(d) for d in run_dirs]}"
                        + ("" if cross else f" (split `{CROSS_SPLIT}` needs --cross)"))
    parts = []
    for summary in summaries:
        if not summary["rows"]:
            parts.append(f"No {summary['table']}-dataset results in these runs.\n")
            continue
        for stat in statistics:
            parts.append(format_table(summary, statistic=stat, show_n=show_n,
                                      published=refs if summary["table"] == "within" else ()))
    numbers = {"statistics": list(statistics), "plcc": plcc, "plcc_key": PLCC_KEYS[plcc],
               "ddof": ddof, "within": summaries[0],
               "cross": summaries[1] if cross else None,
               "published": [ref.to_json() for ref in refs]}
    return "\n".join(parts), numbers
