"""Runs the grid a config declares (`config.sweep`), one training per point, and compares them.

Experiment orchestration, above training: it calls `train.run.train_and_evaluate` per point;
the tables and the plot are `evaluate.sweep_report`'s.

    points = run_sweep(config, "runs/depth")   # runs/depth/<point>/, sweep.md, sweep.png

Each point trains in `<workdir>/<point name>/` (e.g. `visual_prompt_depth=6`). A finished point
has `sweep_point.json` (its config and the trainer's result), written after its final
evaluation; the next invocation skips it, and a half-finished point resumes, since the trainer
resumes from its workdir. The table shows each point's SRCC / PLCC; a grid over
`data.split_seed` (the ten-split protocol) is also aggregated over seeds: median, mean, std.
"""
from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
from etils import epath

from mmpiqa_jax import config as config_lib
from mmpiqa_jax.evaluate.sweep_report import (SPLIT_SEED_KEY, comparison_table, plot_sweep,
                                              read_evals, seed_aggregates)
from mmpiqa_jax.train import run as run_lib

__all__ = ["POINT_FILE", "SPLIT_SEED_KEY", "Point", "comparison_table", "plan", "plot_sweep",
           "read_evals", "run_sweep", "seed_aggregates", "sweep_keys"]

POINT_FILE = "sweep_point.json"
TABLE_FILE, PLOT_FILE = "sweep.md", "sweep.png"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.,=+-]")  # a point's name as one safe path component


@dataclasses.dataclass
class Point:
    """One run of the grid: its name, config, folder and swept values; `evals` once read."""
    name: str
    config: ml_collections.ConfigDict
    workdir: epath.Path
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
        points.append(Point(name, run_config, epath.Path(str(workdir)) / folder, values))
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


def _write_json(path: epath.Path, record: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")  # write then rename: never half a record
    tmp.write_text(json.dumps(record, indent=2, default=_json_default) + "\n", encoding="utf-8")
    tmp.replace(path)


def _json_default(value):
    return value.item() if hasattr(value, "item") else str(value)


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
    train_fn = train_fn or run_lib.train_and_evaluate
    workdir = epath.Path(str(workdir))  # gs://bucket/sweep stays a URL
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
