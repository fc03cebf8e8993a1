"""Runs the grid a config declares (`config.sweep`), one training per point, and compares them.

    points = run_sweep(config, "runs/depth")   # runs/depth/<point>/, sweep.md, sweep.png

Each point trains in `<workdir>/<point name>/` (e.g. `visual_prompt_depth=6`). A finished point
has `sweep_point.json` (its config and the trainer's result), written after its final
evaluation; the next invocation skips it, and a half-finished point resumes, since the trainer
resumes from its workdir. The table shows each point's SRCC / PLCC; a grid over
`data.split_seed` (the ten-split protocol) is also aggregated over seeds: median, mean, std.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from mmpiqa_jax import config as config_lib
from mmpiqa_jax.evaluate import metrics as metrics_lib
from mmpiqa_jax.evaluate import tables

__all__ = ["POINT_FILE", "SPLIT_SEED_KEY", "Point", "comparison_table", "plan", "plot_sweep",
           "read_evals", "run_sweep", "seed_aggregates", "sweep_keys"]

SPLIT_SEED_KEY = "data.split_seed"
POINT_FILE = "sweep_point.json"
TABLE_FILE, PLOT_FILE = "sweep.md", "sweep.png"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.,=+-]")  # a point's name as one safe path component


@dataclasses.dataclass
class Point:
    """One run of the grid: its name, config, folder and swept values; `evals` once read."""
    name: str
    config: ml_collections.ConfigDict
    workdir: Path
    values: dict[str, Any]
    evals: dict[str, dict] = dataclasses.field(default_factory=dict)

    @property
    def done(self) -> bool:
        return (self.workdir / POINT_FILE).is_file()


def sweep_keys(config: ml_collections.ConfigDict) -> list[str]:
    """The dotted keys `config.sweep` varies, in `expand_sweep`'s order (sorted at each level)."""
    keys = []

    def walk(node, prefix):
        for name in sorted(node.keys()):
            if isinstance(node[name], ml_collections.ConfigDict):
                walk(node[name], prefix + name + ".")
            else:
                keys.append(prefix + name)

    if "sweep" in config and config.sweep:
        walk(config.sweep, "")
    return keys


def plan(config: ml_collections.ConfigDict, workdir) -> list[Point]:
    """The points of the grid, each with its folder under `workdir`."""
    keys = sweep_keys(config)
    points, folders = [], {}
    for name, run_config in config_lib.expand_sweep(config):
        folder = _UNSAFE.sub("_", name)
        if folder in folders:
            raise ValueError(f"sweep points {folders[folder]!r} and {name!r} share the folder "
                             f"{folder!r}; make the swept values differ in letters or digits")
        folders[folder] = name
        values = {k: config_lib.get_key(run_config, k) for k in keys}
        points.append(Point(name, run_config, Path(workdir) / folder, values))
    return points


def _plain(config: ml_collections.ConfigDict) -> dict:
    """The config as JSON would give it back (tuples become lists), for comparing."""
    return json.loads(json.dumps(config.to_dict(), default=str))


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _check_same_config(point: Point) -> None:
    path = point.workdir / POINT_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))["config"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a sweep point record ({e}); remove it to rerun the point")
    old, new = _flat(saved), _flat(_plain(point.config))
    diff = [f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}"
            for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]
    if diff:
        raise ValueError(f"{point.workdir} finished with another config ({'; '.join(diff[:6])}); "
                         "use a new --workdir, or remove the point's folder to rerun it")


def _write_json(path: Path, record: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")  # write then rename: never half a record
    tmp.write_text(json.dumps(record, indent=2, default=_json_default) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _json_default(value):
    return value.item() if hasattr(value, "item") else str(value)


def _default_train_fn(config, workdir):
    # Imported when a sweep runs, so that tables and plots need no trainer.
    return importlib.import_module("mmpiqa_jax.train.run").train_and_evaluate(config, workdir)


def run_sweep(config: ml_collections.ConfigDict, workdir, *,
              train_fn: Callable[[ml_collections.ConfigDict, str], Any] | None = None,
              log: Callable[[str], None] = print) -> list[Point]:
    """Trains and evaluates every unfinished point, then writes `sweep.md` and `sweep.png`.

    Args:
      config: a loaded config with a `sweep` section (without one, the config is the one point).
      workdir: the sweep's folder; each point trains in a subfolder.
      train_fn: `(config, workdir) -> result`, empty when training stopped early (the sweep
        stops there too); default `train.run.train_and_evaluate`.
      log: where progress lines go.
    Returns:
      the points, with their evaluations read.
    """
    train_fn = train_fn or _default_train_fn
    workdir = Path(workdir)
    points = plan(config, workdir)
    writer = jax.process_index() == 0  # every process trains; one writes the records
    for i, point in enumerate(points, 1):
        if point.done:
            _check_same_config(point)
            log(f"[{i}/{len(points)}] {point.name}: done, skipped")
            continue
        log(f"[{i}/{len(points)}] {point.name}: training in {point.workdir}")
        point.workdir.mkdir(parents=True, exist_ok=True)
        result = train_fn(point.config, str(point.workdir))
        if not result:  # the trainer stopped before num_steps (preempted): resume next time
            log(f"{point.name}: training stopped early; run the sweep again to resume it")
            break
        if writer:
            _write_json(point.workdir / POINT_FILE, {"name": point.name, "values": point.values,
                                                     "config": _plain(point.config),
                                                     "result": result})
    for point in points:
        point.evals = read_evals(point.workdir)
    if writer:
        keys = sweep_keys(config)
        (workdir / TABLE_FILE).write_text(comparison_table(points, keys), encoding="utf-8")
        plot_sweep(points, keys, workdir / PLOT_FILE)
        log(f"wrote {workdir / TABLE_FILE} and {workdir / PLOT_FILE}")
    return points


def read_evals(run_dir) -> dict[str, dict]:
    """{"<dataset>-<split>": metrics} of a run's `eval/*.json`: its test evaluations, or, when it
    has none, all but the training ones (a run evaluated on its validation split only)."""
    run_dir = Path(run_dir)
    if not (run_dir / "eval").is_dir():
        return {}
    results = tables.collect_results([run_dir], exclude=("train*",))
    records = [r for per_dataset in results.values() for rs in per_dataset.values() for r in rs]
    tests = [r for r in records if not str(r["split"]).startswith("val")]
    return {f"{r['dataset']}-{r['split']}": r for r in (tests or records)}


def _label(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _num(value) -> float:
    return math.nan if value is None else float(value)


def _fmt(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def _eval_names(points: Sequence[Point]) -> list[str]:
    return sorted({name for p in points for name in p.evals})


def seed_aggregates(points: Sequence[Point], keys: Sequence[str], metrics=("srcc", "plcc")
                    ) -> list[tuple[dict, int, dict[str, dict]]]:
    """Points grouped by their swept values other than the split seed, each group's evaluations
    aggregated over seeds (`aggregate_splits`). [(values, points in group, {eval: aggregate})]."""
    others = [k for k in keys if k != SPLIT_SEED_KEY]
    groups: dict[tuple, list[Point]] = {}
    for p in points:
        groups.setdefault(tuple(p.values[k] for k in others), []).append(p)
    out = []
    for group_values, members in groups.items():
        per_eval = {}
        for name in _eval_names(members):
            records = [{m: _num(p.evals[name].get(m)) for m in metrics}
                       for p in members if name in p.evals]
            per_eval[name] = metrics_lib.aggregate_splits(records, keys=metrics)
        out.append((dict(zip(others, group_values)), len(members), per_eval))
    return out


def comparison_table(points: Sequence[Point], keys: Sequence[str],
                     metrics=("srcc", "plcc")) -> str:
    """Markdown: one row per point (swept values, each evaluation's metrics; `-` where a point has
    no result), then, for a grid over split seeds, one row per group aggregated over the seeds."""
    names = _eval_names(points)
    heads = [f"{n} {m.upper()}" for n in names for m in metrics]
    lines = ["# Sweep", "",
             f"{len(points)} points, {sum(bool(p.evals) for p in points)} with results; "
             "each point's `eval/*.json`.", "",
             "| " + " | ".join([*map(_label, keys), *heads]) + " |",
             "|" + "|".join([" --- "] * len(keys) + [" ---: "] * len(heads)) + "|"]
    for p in points:
        cells = [_fmt(_num(p.evals[n].get(m))) if n in p.evals else "-"
                 for n in names for m in metrics]
        lines.append("| " + " | ".join([*(str(p.values[k]) for k in keys), *cells]) + " |")
    if SPLIT_SEED_KEY in keys:
        others = [k for k in keys if k != SPLIT_SEED_KEY]
        lines += ["", "## Over split seeds", "",
                  "Median (mean ± std, population) over the seeds with results.", "",
                  "| " + " | ".join([*map(_label, others), "splits", *heads]) + " |",
                  "|" + "|".join([" --- "] * len(others) + [" ---: "] * (1 + len(heads))) + "|"]
        for values, _, per_eval in seed_aggregates(points, keys, metrics):
            n = max((agg[m]["n"] for agg in per_eval.values() for m in metrics), default=0)
            cells = []
            for name in names:
                for m in metrics:
                    a = per_eval.get(name, {}).get(m)
                    cells.append("-" if a is None else
                                 f"{_fmt(a['median'])} ({_fmt(a['mean'])} ± {_fmt(a['std'])})")
            lines.append("| " + " | ".join([*(str(values[k]) for k in others), str(n), *cells])
                         + " |")
    return "\n".join(lines) + "\n"


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _plot_rows(points, keys, metric) -> list[tuple[dict, dict[str, tuple[float, float]]]]:
    """[(swept values, {eval: (value, std)})]: per point, or per group aggregated over seeds."""
    if SPLIT_SEED_KEY in keys and len(keys) > 1:
        return [(values, {n: (a[metric]["median"], a[metric]["std"]) for n, a in per_eval.items()})
                for values, _, per_eval in seed_aggregates(points, keys, (metric,))]
    return [(p.values, {n: (_num(r.get(metric)), 0.0) for n, r in p.evals.items()})
            for p in points]


def plot_sweep(points: Sequence[Point], keys: Sequence[str], path, metric: str = "srcc") -> None:
    """`metric` against the swept value with the most values, one line per value of the other
    swept keys, one panel per evaluation; over split seeds, the median with std bars (a grid of
    seeds alone: each seed's value and their median)."""
    from matplotlib.figure import Figure  # no pyplot: no display, no global state

    rows = _plot_rows(points, keys, metric)
    others = [k for k in keys if k != SPLIT_SEED_KEY] or list(keys)
    # x: the key with the most distinct values (ties: grid order), e.g. depth rather than prompts.
    x_key = max(others, key=lambda k: len({repr(v[k]) for v, _ in rows})) if others else None
    x_of = lambda values: values[x_key] if x_key else "run"  # a config without a grid: one x
    xs = list(dict.fromkeys(repr(x_of(v)) for v, _ in rows))
    numeric = all(_is_number(x_of(v)) for v, _ in rows)
    position = lambda values: float(x_of(values)) if numeric else xs.index(repr(x_of(values)))

    names = _eval_names(points) or ["(no results)"]
    fig = Figure(figsize=(5.0 * len(names), 4.0), dpi=110)
    for ax, name in zip(np.atleast_1d(fig.subplots(1, len(names))), names):
        lines: dict[str, list] = {}
        for values, per_eval in rows:
            if name in per_eval:
                label = ", ".join(f"{_label(k)}={v}" for k, v in values.items() if k != x_key)
                lines.setdefault(label, []).append((position(values), *per_eval[name]))
        for label, pts in lines.items():
            x, y, err = map(np.asarray, zip(*sorted(pts)))
            ax.errorbar(x, y, yerr=err if err.any() else None, marker="o", capsize=3,
                        ls="none" if x_key == SPLIT_SEED_KEY else "-", label=label or None)
        if x_key == SPLIT_SEED_KEY and lines:  # the protocol's number: the median over splits
            median = float(np.nanmedian([y for pts in lines.values() for _, y, _ in pts]))
            ax.axhline(median, color="C3", ls="--", label=f"median {median:.3f}")
        if numeric:
            ax.set_xticks(sorted({position(v) for v, _ in rows}))
        else:
            ax.set_xticks(range(len(xs)), [x.strip("'") for x in xs])
        ax.set_xlabel(_label(x_key) if x_key else "")
        aggregated = SPLIT_SEED_KEY in keys and x_key != SPLIT_SEED_KEY
        ax.set_ylabel(metric.upper() + (" (median ± std over seeds)" if aggregated else ""))
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[1]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
