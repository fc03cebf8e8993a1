"""Runs the grid a config declares (`config.sweep`), one training per point, and compares them.

    points = run_sweep(config, "runs/depth")   # runs/depth/<point>/, sweep.md, sweep.png

Each point trains in `<workdir>/<point name>/`; a finished one (`sweep_point.json`) is skipped,
a half-finished one resumes.
"""
from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
from etils import epath

from mmpiqa_jax import config as config_lib
from mmpiqa_jax import files
from mmpiqa_jax.errors import UserError
from mmpiqa_jax.evaluate.sweep_report import comparison_table, plot_sweep, read_evals
from mmpiqa_jax.train import run as run_lib
from mmpiqa_jax.train import sharding
from mmpiqa_jax.train.trainer import Preemption

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
    """The dotted keys `config.sweep` varies, in `expand_sweep`'s order."""
    if "sweep" not in config or not config.sweep:
        return []
    return sorted(config_lib.flatten(config.sweep.to_dict()))


def plan(config: ml_collections.ConfigDict, workdir) -> list[Point]:
    """The points of the grid, each with its folder under `workdir`."""
    keys = sweep_keys(config)
    points, folders = [], {}
    for name, run_config in config_lib.expand_sweep(config):
        folder = _UNSAFE.sub("_", name)
        if folder in folders:
            raise UserError(f"sweep points {folders[folder]!r} and {name!r} share the folder "
                            f"{folder!r}; make the swept values differ in letters or digits")
        folders[folder] = name
        values = {k: config_lib.get_key(run_config, k) for k in keys}
        points.append(Point(name, run_config, files.as_path(workdir) / folder, values))
    return points


def _plain(config: ml_collections.ConfigDict) -> dict:
    """The config as JSON would give it back (tuples become lists), for comparing."""
    return files.json_ready(config.to_dict())


def _check_same_config(point: Point) -> None:
    path = point.workdir / POINT_FILE
    try:
        saved = files.read_json(path)["config"]
    except (UserError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not a sweep point record ({e}); remove it to rerun the point")
    old, new = config_lib.flatten(saved), config_lib.flatten(_plain(point.config))
    diff = [f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}"
            for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]
    if diff:
        raise UserError(f"{point.workdir} finished with another config ({'; '.join(diff[:6])}); "
                        "use a new --workdir, or remove the point's folder to rerun it")


def part_of(points: list[Point], part: str | None) -> list[Point]:
    """The points `part` ("I/N": points I, I + N, ...) trains; all of them for None."""
    if part is None:
        return list(points)
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(part))
    if not match or not int(match[1]) < int(match[2]):
        raise UserError(f"--part={part!r} must be I/N with 0 <= I < N, e.g. 0/4")
    return points[int(match[1])::int(match[2])]


def sub_meshes(devices_per_run: int, devices=None) -> list:
    """Meshes over consecutive groups of `devices_per_run` of `devices` (default all), which
    they must tile, on one process."""
    devices = jax.devices() if devices is None else list(devices)
    k, n = devices_per_run, len(devices)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise UserError(f"--devices-per-run={k!r} must be an integer >= 1")
    if k > n or n % k:
        raise UserError(f"--devices-per-run={k} must divide the {n} devices")
    if jax.process_count() > 1 and k < n:
        raise UserError(f"--devices-per-run={k} < {n} devices on {jax.process_count()} "
                        "processes: packed sweeps run on one process only; run the points "
                        "one at a time (no --devices-per-run), or one sweep per slice")
    return [sharding.make_mesh(devices[i:i + k]) for i in range(0, n, k)]


def run_sweep(config: ml_collections.ConfigDict, workdir, *,
              train_fn: Callable[..., Any] | None = None,
              log: Callable[[str], None] = print,
              devices_per_run: int | None = None, devices=None,
              part: str | None = None) -> list[Point]:
    """Trains and evaluates every unfinished point, then writes `sweep.md` and `sweep.png`.

    Args:
      config: a loaded config; without a `sweep` section, the config is the one point.
      workdir: the sweep's folder; each point trains in a subfolder.
      train_fn: `(config, workdir) -> result` (default `train.run.train_and_evaluate`), empty
        when training stopped early, which stops the sweep; packed, also given `mesh=` and
        `preemption=`.
      log: where progress lines go.
      devices_per_run: K: the points run side by side on sub-meshes of K devices of `devices`
        (default `jax.devices()`); None: one after another.
      part: "I/N": train only the points I, I + N, ...; the table covers every point.
    Returns:
      the points, with their evaluations read.
    """
    train_fn = train_fn or run_lib.train_and_evaluate
    workdir = files.as_path(workdir)
    points = plan(config, workdir)
    writer = jax.process_index() == 0  # every process trains; one writes the records
    pending = []
    mine = {id(p) for p in part_of(points, part)}
    for i, point in enumerate(points, 1):
        if id(point) not in mine:
            continue
        if point.done:
            _check_same_config(point)
            log(f"[{i}/{len(points)}] {point.name}: done, skipped")
        else:
            pending.append((i, point))
    if devices_per_run is None:
        for i, point in pending:
            log(f"[{i}/{len(points)}] {point.name}: training in {point.workdir}")
            if not _train_point(point, train_fn, writer, {}):
                log(f"{point.name}: training stopped early; run the sweep again to resume it")
                break
    else:
        meshes = sub_meshes(devices_per_run, devices)
        _run_packed(pending, len(points), meshes, train_fn, writer, log)
    for point in points:
        point.evals = read_evals(point.workdir)
    if writer:
        keys = sweep_keys(config)
        (workdir / TABLE_FILE).write_text(comparison_table(points, keys), encoding="utf-8")
        plot_sweep(points, keys, workdir / PLOT_FILE)
        log(f"wrote {workdir / TABLE_FILE} and {workdir / PLOT_FILE}")
    return points


def _train_point(point: Point, train_fn, writer: bool, kwargs: dict, run: dict | None = None):
    """Trains one point and writes its record; False when training stopped early."""
    point.workdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    config = point.config
    if run is not None:  # packed: Orbax's async saves share one process-wide operation id
        config = ml_collections.ConfigDict(config.to_dict())
        config.async_checkpointing = False
    result = train_fn(config, str(point.workdir), **kwargs)
    if not result:  # the trainer stopped before num_steps (preempted): resume next time
        return False
    if writer:
        record = {"name": point.name, "values": point.values, "config": _plain(point.config),
                  "result": result}
        if run is not None:  # packed: where and when it ran (wall-clock seconds since epoch)
            record["run"] = {**run, "started": started, "finished": time.time()}
        files.write_json(point.workdir / POINT_FILE, record)
    return True


def _run_packed(pending, total: int, meshes, train_fn, writer: bool, log) -> None:
    """One thread per sub-mesh, each training the next pending point; raises the first error."""
    queue, lock = list(pending), threading.Lock()
    errors: list[BaseException] = []
    stop = threading.Event()  # a point stopped early or failed: start no other
    preemption = Preemption(multi=False)

    def worker(g: int, mesh) -> None:
        ids = [int(d.id) for d in mesh.devices.flat]
        while not stop.is_set():
            with lock:
                if not queue:
                    return
                i, point = queue.pop(0)
            log(f"[{i}/{total}] {point.name}: training in {point.workdir} on devices {ids}")
            try:
                # Eager arrays (outside jit) on this sub-mesh too, not on device 0.
                with jax.default_device(mesh.devices.flat[0]):
                    done = _train_point(point, train_fn, writer,
                                        {"mesh": mesh, "preemption": preemption},
                                        {"group": g, "devices": ids})
            except BaseException as e:  # pylint: disable=broad-except  # re-raised below
                with lock:
                    errors.append(e)
                stop.set()
                return
            if not done:
                log(f"{point.name}: training stopped early; run the sweep again to resume it")
                stop.set()
                return
            log(f"[{i}/{total}] {point.name}: done")

    threads = [threading.Thread(target=worker, args=(g, mesh), name=f"sweep-group{g}")
               for g, mesh in enumerate(meshes[:len(pending)])]
    with preemption:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
