"""The comparison of a sweep's points (`comparison_table`, `plot_sweep`), aggregated over split
seeds, from the points' `eval/*.json`."""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from etils import epath

from mmpiqa_jax.evaluate import metrics as metrics_lib
from mmpiqa_jax.evaluate import tables
from mmpiqa_jax.evaluate.report import markdown_table, save_png

SPLIT_SEED_KEY = "data.split_seed"


class Point(Protocol):
    """What the report reads of a sweep point (e.g. `experiments.sweep.Point`)."""
    name: str
    values: dict[str, Any]
    evals: dict[str, dict]


def read_evals(run_dir) -> dict[str, dict]:
    """{"<dataset>-<split>": metrics} of a run's `eval/*.json`: its test evaluations, or, when it
    has none, all but the training ones (a run evaluated on its validation split only)."""
    run_dir = epath.Path(str(run_dir))
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


_fmt = functools.partial(tables.number, digits=4)


def _eval_names(points: Sequence[Point]) -> list[str]:
    return sorted({name for p in points for name in p.evals})


def seed_aggregates(points: Sequence[Point], keys: Sequence[str], metrics=("srcc", "plcc")
                    ) -> list[tuple[dict, int, dict[str, dict]]]:
    """[(swept values but the seed, points in group, {eval: `aggregate_splits`})]."""
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
    rows = [[*(p.values[k] for k in keys),
             *(_fmt(p.evals[n].get(m)) if n in p.evals else "-"
               for n in names for m in metrics)] for p in points]
    lines = ["# Sweep", "",
             f"{len(points)} points, {sum(bool(p.evals) for p in points)} with results; "
             "each point's `eval/*.json`.", "",
             markdown_table([*map(_label, keys), *heads], rows,
                            "l" * len(keys) + "r" * len(heads))]
    if SPLIT_SEED_KEY in keys:
        others = [k for k in keys if k != SPLIT_SEED_KEY]
        rows = []
        for values, _, per_eval in seed_aggregates(points, keys, metrics):
            n = max((agg[m]["n"] for agg in per_eval.values() for m in metrics), default=0)
            cells = []
            for name in names:
                for m in metrics:
                    a = per_eval.get(name, {}).get(m)
                    cells.append("-" if a is None else
                                 f"{_fmt(a['median'])} ({_fmt(a['mean'])} ± {_fmt(a['std'])})")
            rows.append([*(values[k] for k in others), n, *cells])
        lines += ["", "## Over split seeds", "",
                  "Median (mean ± std, population) over the seeds with results.", "",
                  markdown_table([*map(_label, others), "splits", *heads], rows,
                                 "l" * len(others) + "r" * (1 + len(heads)))]
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
    """`metric` against the swept key with the most values, a line per value of the others, a
    panel per evaluation; over split seeds, the median with std bars."""
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
    save_png(fig, path)
