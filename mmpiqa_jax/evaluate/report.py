"""Writes one evaluation to disk (`write_eval`: metrics JSON, per-image CSV, a scatter plot with
the fit), several methods' comparison (`write_comparison`), and markdown tables.

The ground truth is always `quality`, higher is better; the raw score (`mos`) is kept in the CSV.
"""
from __future__ import annotations

import csv
import io
import math
import re
import textwrap
from collections.abc import Iterable, Sequence

import numpy as np
from etils import epath

from mmpiqa_jax import files
from mmpiqa_jax.errors import UserError
from mmpiqa_jax.evaluate import metrics as metrics_lib

_ALIGN = {"l": " --- ", "r": " ---: ", "c": " :---: ", "-": "---"}

# Dataset and split names become file names; keep them to one safe path component.
_NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")


def _check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value) or value in (".", ".."):
        raise UserError(f"{kind} name {value!r} is not usable in a file name "
                        "(letters, digits and _ . + - only)")
    return value


def markdown_table(header: Sequence[str], rows: Iterable[Sequence], align: str = "") -> str:
    """A Markdown table; `align` has a letter per column (l, r or c: left, right, centred; -:
    a bare `---` rule), by default the first column left and the others right."""
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(map(str, header)) + " |",
             "|" + "|".join(_ALIGN[a] for a in align) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def results_table(results: dict[str, dict]) -> str:
    """One row per evaluation (`{name: compute_metrics dict}`): SRCC, PLCC after the logistic
    fit and raw, KRCC, RMSE after the fit, n."""
    keys = ("srcc", "plcc_logistic", "plcc", "krcc", "rmse_logistic")
    rows = [(name, *(f"{m[k]:.4f}" for k in keys), m["n"]) for name, m in results.items()]
    return markdown_table(("evaluation", "SRCC", "PLCC (fitted)", "PLCC (raw)", "KRCC",
                           "RMSE (fitted)", "n"), rows)


def eval_paths(workdir, dataset: str, split: str) -> dict[str, epath.Path]:
    """The `json`, `csv` and `png` paths of one evaluation: `<workdir>/eval/<dataset>-<split>.*`."""
    stem = (files.as_path(workdir) / "eval"
            / f"{_check_name('dataset', dataset)}-{_check_name('split', split)}")
    return {ext: stem.with_suffix(f".{ext}") for ext in ("json", "csv", "png")}


def _scatter_with_fit(ax, pred: np.ndarray, quality: np.ndarray, metrics: dict) -> None:
    """Prediction against quality on `ax`, with the metrics' fitted curve when they have one."""
    ax.scatter(pred, quality, s=12, alpha=0.6, edgecolors="none", label="images")
    if "fit" in metrics and "fit_params" in metrics:
        fit = metrics_lib.LogisticFit(metrics["fit"], tuple(metrics["fit_params"]))
        xs = np.linspace(pred.min(), pred.max(), 200)
        ax.plot(xs, fit(xs), color="C3", lw=2, label=f"{fit.method} fit")
    ax.set_xlabel("prediction (higher is better)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)


def save_png(fig, path) -> None:
    """A matplotlib figure as a PNG, written whole (`files.write_bytes`)."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    files.write_bytes(path, buffer.getvalue())


def _plot(path: epath.Path, dataset: str, split: str, quality: np.ndarray, pred: np.ndarray,
          metrics: dict) -> None:
    from matplotlib.figure import Figure  # no pyplot: no display, no global state

    fig = Figure(figsize=(5.0, 4.2), dpi=120)
    ax = fig.subplots()
    _scatter_with_fit(ax, pred, quality, metrics)
    ax.set_ylabel("quality (higher is better)")
    ax.set_title(f"{dataset} / {split}  (n = {len(quality)})")
    summary = (f"SRCC {metrics.get('srcc', float('nan')):.3f}\n"
               f"PLCC {metrics.get('plcc_logistic', float('nan')):.3f} (fitted)")
    ax.text(0.03, 0.97, summary, transform=ax.transAxes, va="top", ha="left", fontsize=9,
            bbox=dict(boxstyle="round", facecolor="white", alpha=0.8, edgecolor="0.8"))
    save_png(fig, path)


def write_eval(workdir, dataset: str, split: str, names, quality, predictions,
               metrics: dict | None = None, *, mos=None, score_direction: str = "",
               split_source: str = "") -> dict[str, epath.Path]:
    """Writes `<workdir>/eval/<dataset>-<split>.{json,csv,png}` (`workdir`: the run directory).

    Args:
      dataset, split: names used in the file names and stored in the JSON.
      names: [N] image names (CSV column `name`).
      quality, predictions: [N] ground truth (higher is better) and model scores.
      metrics: a `compute_metrics(predictions, quality)` dict; computed here when None.
      mos: [N] the raw published scores (CSV column `mos`; empty when None).
      score_direction: the raw score's direction ("lower is better" for a DMOS), for the JSON.
      split_source: where the split came from (`data.split`'s source), for the JSON.
    Returns:
      the written paths, keyed "json", "csv", "png".
    """
    paths = eval_paths(workdir, dataset, split)
    names = [str(n) for n in names]
    quality = np.asarray(quality, dtype=np.float64)
    predictions = np.asarray(predictions, dtype=np.float64)
    raw = np.full(quality.shape, np.nan) if mos is None else np.asarray(mos, dtype=np.float64)
    if not (len(names) == quality.size == predictions.size == raw.size):
        raise UserError(f"names, quality, mos and predictions differ in length: "
                        f"{len(names)}, {quality.size}, {raw.size}, {predictions.size}")
    if metrics is None:
        metrics = metrics_lib.compute_metrics(predictions, quality)
    missing = [k for k in (*metrics_lib.METRIC_KEYS, "n") if k not in metrics]
    if missing:
        raise UserError(f"metrics lack {missing}; pass a compute_metrics() dict")

    paths["json"].parent.mkdir(parents=True, exist_ok=True)
    record = {"dataset": dataset, "split": split, "ground_truth": "quality (higher is better)",
              "mos_direction": score_direction or "unknown", "split_source": split_source,
              **metrics}
    files.write_json(paths["json"], record)

    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["name", "mos", "quality", "prediction"])
    writer.writerows((n, "" if not math.isfinite(m) else m, q, p) for n, m, q, p in
                     zip(names, raw.tolist(), quality.tolist(), predictions.tolist()))
    files.write_text(paths["csv"], text.getvalue())

    _plot(paths["png"], dataset, split, quality, predictions, metrics)
    return paths


def write_comparison(path, rows: dict[str, dict], title: str = "") -> dict[str, epath.Path]:
    """Writes `<path>.md` (a table) and `<path>.png` (prediction against quality, a panel per
    method, with its fit) of `rows`, {method: {"metrics": compute_metrics dict, "quality": [N],
    "predictions": [N]}}, headed `title`; returns the paths keyed "md", "png"."""
    from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

    path = files.as_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = results_table({method: row["metrics"] for method, row in rows.items()})
    lines = [f"# {title}" if title else "", "", table.replace("| evaluation |", "| method |"),
             "", "Against `quality` (higher is better); PLCC and RMSE fitted with the "
             "4-parameter logistic."]
    out = {"md": path.with_suffix(".md"), "png": path.with_suffix(".png")}
    files.write_text(out["md"], "\n".join(lines).lstrip("\n") + "\n")

    fig = Figure(figsize=(4.6 * len(rows), 4.2), dpi=120)
    axes = np.atleast_1d(fig.subplots(1, len(rows), sharey=True))
    for ax, (method, row) in zip(axes, rows.items()):
        _scatter_with_fit(ax, np.asarray(row["predictions"], np.float64),
                          np.asarray(row["quality"], np.float64), row["metrics"])
        ax.set_title(f"{method}: SRCC {row['metrics']['srcc']:.3f}, "
                     f"PLCC {row['metrics']['plcc_logistic']:.3f}", fontsize=9)
    axes[0].set_ylabel("quality (higher is better)")
    if title:  # wrapped to the figure's width: one panel is narrow
        fig.suptitle("\n".join(textwrap.wrap(title, 45 * len(rows))), fontsize=9)
    save_png(fig, out["png"])
    return out
