"""Results tables like the papers': datasets x methods, median SRCC / PLCC over splits."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import numpy as np

__all__ = ["DEFAULT_EXCLUDE", "collect_results", "method_name", "results_table"]

# Splits left out by default: a table of test results must not pool in training or validation.
DEFAULT_EXCLUDE = ("train*", "val*")


def method_name(run_dir) -> str:
    """The run's `config.json` key `method` (or `name`) when present, else the folder name."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{config_path} is not valid JSON: {e}") from None
        for key in ("method", "name"):
            if isinstance(config, dict) and config.get(key):
                return str(config[key])
    return run_dir.resolve().name


def _read_eval(path: Path) -> dict:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    # Older files may lack the names: `<dataset>-<split>.json`, split after the last '-'.
    dataset, _, split = path.stem.rpartition("-")
    record.setdefault("dataset", dataset or path.stem)
    record.setdefault("split", split)
    return record


def collect_results(run_dirs, *, include: str | None = None,
                    exclude=None) -> dict[str, dict[str, list[dict]]]:
    """{method: {dataset: [one metrics dict per split]}} from each run's `eval/*.json`.

    Runs with the same method name are pooled (for example one run per split seed).
    `include` is a glob on split names; splits matching a glob in `exclude` are dropped. By default
    (both None) every split but `DEFAULT_EXCLUDE` (train*, val*) counts; an explicit `include`
    alone drops nothing else, so `include="val"` selects the validation results.
    """
    if exclude is None:
        exclude = DEFAULT_EXCLUDE if include is None else ()
    results: dict[str, dict[str, list[dict]]] = {}
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"run directory {str(run_dir)!r} does not exist")
        method = method_name(run_dir)
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


def _cell(records: list[dict], metrics, stat, show_n: bool) -> str:
    if not records:
        return "-"
    parts = []
    for key in metrics:
        values = [r[key] for r in records if r.get(key) is not None]
        parts.append(f"{stat(np.asarray(values, float)):.3f}" if values else "-")
    text = " / ".join(parts)
    return f"{text} ({len(records)})" if show_n else text


def results_table(run_dirs, *, metrics=("srcc", "plcc"), statistic: str = "median",
                  include: str | None = None, exclude=None,
                  show_n: bool = True) -> str:
    """A markdown table, one row per dataset and one column per method.

    Each cell is the `statistic` ("median" as most papers, or "mean" as LIQE's code) over splits of
    the `metrics`, joined by " / ", followed by the number of splits in parentheses when `show_n`.
    `include` and `exclude` select splits as in `collect_results`.
    """
    stats = {"median": np.median, "mean": np.mean}
    if statistic not in stats:
        raise ValueError(f"statistic must be one of {tuple(stats)}, got {statistic!r}")
    run_dirs = list(run_dirs)
    if not run_dirs:
        raise ValueError("results_table needs at least one run directory, got none")
    results = collect_results(run_dirs, include=include, exclude=exclude)
    methods = list(results)
    datasets = sorted({d for per_dataset in results.values() for d in per_dataset})
    if not datasets:
        raise ValueError(f"no evaluation results (eval/*.json) found in {[str(d) for d in run_dirs]}")
    records = [r for per_dataset in results.values() for rs in per_dataset.values() for r in rs]
    for key in metrics:
        if not any(key in r for r in records):
            raise ValueError(f"metric {key!r} is in no evaluation file; "
                             f"available: {sorted({k for r in records for k in r})}")

    header = ["Dataset", *methods]
    rows = [[d, *(_cell(results[m].get(d, []), metrics, stats[statistic], show_n)
                   for m in methods)] for d in datasets]
    what = " / ".join(m.upper().replace("_LOGISTIC", " (logistic)") for m in metrics)
    lines = [f"{statistic.capitalize()} {what} over splits"
             + (" (number of splits in parentheses)." if show_n else "."), "",
             "| " + " | ".join(header) + " |",
             "|" + "|".join([" --- "] + [" :---: "] * len(methods)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
