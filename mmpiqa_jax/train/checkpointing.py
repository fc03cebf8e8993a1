"""Orbax checkpoints of a training run (`Checkpointer`): the last N and the best by SRCC.

A step holds params, opt_state, train (step, RNG, `extra`), meta (JSON) and data (each process's
iterator state); the frozen state is written once per run to `<workdir>/backbone/`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from mmpiqa_jax import config as config_lib
from mmpiqa_jax import files
from mmpiqa_jax.checkpoints import CheckpointError
from mmpiqa_jax.errors import MissingFileError

PARAMS, OPT_STATE, TRAIN, META, DATA = "params", "opt_state", "train", "meta", "data"
BACKBONE_DIR = "backbone"  # beside the checkpoints folder: the frozen state, written once
_SAVED_BY = re.compile(r"process_\d+-of-(\d+)\.json")
# The config keys that decide what a run is: its model (and so the checkpoint's contents), and
# which images it trains on, picks its checkpoint on and is tested on. Everything else (steps,
# logging, learning rates) may change between a run and its resumption.
IDENTITY_KEYS = ("model", "data.batch_sizes", "data.split", "data.split_seed", "data.val_part")
BEST_METRIC = "srcc"


class _ExpectedWarningsFilter(logging.Filter):
    """Drops Orbax's warnings of the normal case and its logs of errors raised again here."""
    EXPECTED = ("did not provide metrics", "read_only=True, setting", "directory is read only",
                "raised an exception", "in background save thread")

    def filter(self, record):
        return not any(text in record.getMessage() for text in self.EXPECTED)


logging.getLogger("absl").addFilter(_ExpectedWarningsFilter())


class CheckpointMismatchError(CheckpointError):
    """A workdir's checkpoint was written for a different model or config."""


# How a full disk, a read-only folder or a missing one reads in Orbax's and TensorStore's errors.
_STORAGE_ERRORS = ("No space left on device", "Read-only file system", "Permission denied",
                   "No such file or directory", "RESOURCE_EXHAUSTED", "PERMISSION_DENIED")


@contextlib.contextmanager
def _storage_errors(path):
    """A write failing for want of space or permission becomes a `CheckpointError` naming it."""
    try:
        yield
    except CheckpointError:
        raise
    except Exception as e:  # Orbax re-raises its threads' errors as ValueError and the like
        reason = next((r for r in _STORAGE_ERRORS if r in str(e)), None)
        if reason is None and isinstance(e, OSError):
            reason = e.strerror or str(e)
        if reason is None:
            raise
        raise CheckpointError(f"cannot write the checkpoint to {path}: {reason}") from e


# ---------------------------------------------------------------------------------------------
# Data iterator state: one JSON file per process.


class IteratorHandler(ocp.CheckpointHandler):
    """Saves `iterator.get_state()` of every process as `process_<i>-of-<n>.json`."""

    def _file(self, directory: epath.Path) -> epath.Path:
        return directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"

    def save(self, directory: epath.Path, args: IteratorArgs):
        state = args.iterator.get_state()
        try:
            text = json.dumps(state, indent=1)
        except TypeError as e:
            raise TypeError(f"the data iterator's get_state() is not JSON-serialisable: {e}") from e
        self._file(directory).write_text(text)

    def restore(self, directory: epath.Path, args: IteratorArgs):
        path = self._file(directory)
        if not path.exists():
            found = sorted(p.name for p in directory.iterdir())
            counts = sorted({m.group(1) for m in map(_SAVED_BY.fullmatch, found) if m})
            saved = (f"{' and '.join(counts)} processes" if counts
                     else "no process's state at all")
            # Each process's position is in its own shard of every dataset, and the shards
            # depend on the count: positions cannot be carried over to another count.
            raise CheckpointMismatchError(
                f"{directory} holds the data iterator states of {saved} ({found}), but this run "
                f"has {jax.process_count()} processes (this is process {jax.process_index()}): "
                f"resume with {' or '.join(counts) or 'the same number of'} processes, or "
                "train in a new workdir")
        args.iterator.set_state(json.loads(path.read_text()))
        return args.iterator

    def metadata(self, directory: epath.Path):
        return None


@ocp.args.register_with_handler(IteratorHandler, for_save=True, for_restore=True)
@dataclasses.dataclass
class IteratorArgs(ocp.args.CheckpointArgs):
    iterator: Any


# ---------------------------------------------------------------------------------------------
# What a checkpoint must agree with.


def run_identity(config, datasets: dict | None = None) -> dict:
    """The `IDENTITY_KEYS` of `config` by dotted key, and `datasets` (e.g. their image counts)."""
    out = {}
    for key in IDENTITY_KEYS:
        node = config
        for part in key.split("."):
            node = node[part] if node is not None and part in node else None
        if node is not None:
            out[key] = node.to_dict() if hasattr(node, "to_dict") else node
    if datasets:
        out["datasets"] = dict(datasets)
    return files.json_ready(out)


def fingerprint(model_cfg: dict) -> str:
    return hashlib.sha256(json.dumps(model_cfg, sort_keys=True).encode()).hexdigest()[:16]


def leaf_shapes(tree) -> dict[str, str]:
    """`{path: "float32[256,256]"}` for every leaf of an array or `ShapeDtypeStruct` tree."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(p): f"{x.dtype}[{','.join(map(str, np.shape(x)))}]"
            for p, x in leaves}


def _diff(saved: dict, current: dict, what: str, limit: int = 8) -> list[str]:
    lines = []
    # The current tree's order first (params before optimiser state), then saved-only keys.
    for key in list(current) + [k for k in saved if k not in current]:
        if key not in current:
            lines.append(f"{what} {key}: only in the checkpoint ({saved[key]})")
        elif key not in saved:
            lines.append(f"{what} {key}: not in the checkpoint (config has {current[key]})")
        elif saved[key] != current[key]:
            lines.append(f"{what} {key}: checkpoint {saved[key]}, config {current[key]}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more {what} differences"]
    return lines


# ---------------------------------------------------------------------------------------------


def _best_value(metrics) -> float:
    # NaN would poison Orbax's sort of checkpoints by metric; rank it last instead.
    value = float(metrics[BEST_METRIC])
    return -math.inf if math.isnan(value) else value


def file_checksums(directory: epath.Path) -> dict[str, str]:
    """`{relative path: sha256}` of every file under `directory`."""
    out = {}
    stack = [directory]
    while stack:
        for p in stack.pop().iterdir():
            if p.is_dir():
                stack.append(p)
            else:
                out[os.fspath(p)[len(os.fspath(directory)) + 1:]] = hashlib.sha256(
                    p.read_bytes()).hexdigest()
    return dict(sorted(out.items()))


def _train_item(state) -> dict:
    """The small carried part of a state: step, RNG, extra (EMA, DWA)."""
    return {"step": state.step, "rng": state.rng, "extra": state.extra}


class Checkpointer(contextlib.AbstractContextManager):
    """Orbax `CheckpointManager` for train states: the last `keep`, plus the best by `srcc` of
    the steps saved with `metrics`."""

    def __init__(self, directory, *, keep: int = 3, async_save: bool = True,
                 model_cfg: dict | None = None, read_only: bool = False):
        """`model_cfg` (`run_identity`) is stored with every step and checked on restore."""
        directory = os.fspath(directory)
        # Orbax writes only to absolute paths; URLs pass unchanged.
        self.directory = files.as_path(directory if files.is_remote(directory)
                                       else os.path.abspath(directory))
        self.model_cfg = model_cfg
        self.backbone_dir = self.directory.parent / BACKBONE_DIR
        self._frozen_ref = None  # the reference of the frozen state written or restored
        if not read_only and self.directory.is_dir():
            # What a save killed half-way left (Orbax's clean-up thread may not finish).
            for path in self.directory.glob("*.orbax-checkpoint-tmp*"):
                path.rmtree()
        policy = ocp.checkpoint_managers
        options = ocp.CheckpointManagerOptions(
            # best_fn makes the manager record metrics; the policy alone decides what is kept.
            best_fn=_best_value,
            best_mode="max",
            preservation_policy=policy.AnyPreservationPolicy([
                policy.LatestN(n=keep),
                policy.BestN(get_metric_fn=_best_value, reverse=False, n=1,
                             keep_checkpoints_without_metrics=False),
            ]),
            enable_async_checkpointing=async_save,
            read_only=read_only,
        )
        self.manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={PARAMS: ocp.StandardCheckpointHandler(),
                           OPT_STATE: ocp.StandardCheckpointHandler(),
                           TRAIN: ocp.StandardCheckpointHandler(),
                           META: ocp.JsonCheckpointHandler(),
                           DATA: IteratorHandler()})
        step = self.manager.best_step()
        self._best = (step, -math.inf if step is None else _best_value(self.manager.metrics(step)))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def reached_preemption(self, step: int) -> bool:
        """Orbax's preemption sync point: True on every process at the same step once any
        received a preemption notice."""
        return self.manager.reached_preemption(step)

    def best_step(self) -> int | None:
        """The step with the highest saved `srcc`; None if no step was saved with metrics."""
        return self._best[0]

    def best_metric(self) -> float:
        """The best saved `srcc` (-inf if none), known without waiting for saves in flight."""
        return self._best[1]

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state, *, data_iter=None, metrics: dict | None = None) -> None:
        """Saves `state` (and the iterator's position) as `step`; `metrics` enter best tracking."""
        if metrics is not None and BEST_METRIC not in metrics:
            raise KeyError(f"evaluation metrics {sorted(metrics)} lack {BEST_METRIC!r}, "
                           "needed to track the best checkpoint")
        meta = dict(step=int(step), state_shapes=leaf_shapes(state),
                    frozen=self._frozen_reference(state.frozen))
        if self.model_cfg is not None:
            meta.update(model_config=self.model_cfg, config_fingerprint=fingerprint(self.model_cfg))
        items = {PARAMS: ocp.args.StandardSave(state.params),
                 OPT_STATE: ocp.args.StandardSave(state.opt_state),
                 TRAIN: ocp.args.StandardSave(_train_item(state)),
                 META: ocp.args.JsonSave(meta)}
        if data_iter is not None:
            items[DATA] = IteratorArgs(data_iter)
        if metrics is not None:
            metrics = {k: float(v) for k, v in metrics.items()}
            # >= as Orbax ranks a later step above an equal earlier one.
            if _best_value(metrics) >= self._best[1]:
                self._best = (step, _best_value(metrics))
        with _storage_errors(self.directory):
            self.manager.save(step, args=ocp.args.Composite(**items), metrics=metrics,
                              force=True)

    def _frozen_reference(self, frozen) -> dict | None:
        """The frozen state's reference; written to `backbone_dir` at a fresh run's first save."""
        if not jax.tree.leaves(frozen):
            return None
        if self._frozen_ref is None:
            latest = self.latest_step()
            ref = self.read_meta(latest).get("frozen") if latest is not None else None
            if ref is None:
                # Synchronous and collective: every process writes its shards, then the
                # checksums are read back from storage.
                with _storage_errors(self.backbone_dir), ocp.StandardCheckpointer() as writer:
                    writer.save(self.backbone_dir, frozen, force=True)
                    writer.wait_until_finished()
                ref = {"path": os.fspath(self.backbone_dir),
                       "sha256": file_checksums(self.backbone_dir)}
            self._frozen_ref = ref
        return self._frozen_ref

    def restore_frozen(self, ref: dict, abstract_frozen):
        """The frozen state of `ref` (a step's `meta["frozen"]`), after checking its files."""
        path = files.as_path(ref["path"])
        if not path.exists():
            raise CheckpointMismatchError(
                f"the frozen state {path} that the checkpoints in {self.directory} refer to is "
                "missing (it is written once per run, beside the checkpoints)")
        found = file_checksums(path)
        want = ref["sha256"]
        bad = sorted(k for k in set(want) | set(found) if want.get(k) != found.get(k))
        if bad:
            shown = ", ".join(str(path / k) for k in bad[:8])
            raise CheckpointMismatchError(
                f"the frozen state {path} does not match the checksums recorded in "
                f"{self.directory}: {len(bad)} files differ or are missing ({shown})")
        with ocp.StandardCheckpointer() as reader:
            frozen = reader.restore(path, abstract_frozen)
        self._frozen_ref = ref
        return frozen

    def read_meta(self, step: int) -> dict:
        args = ocp.args.Composite(**{META: ocp.args.JsonRestore()})
        return self.manager.restore(step, args=args)[META]

    def check(self, step: int, abstract_state) -> dict:
        """Raises `CheckpointMismatchError` naming every config key and state leaf that differs."""
        meta = self.read_meta(step)
        problems = []
        saved = meta.get("model_config")
        if (self.model_cfg is not None and saved is not None
                and meta.get("config_fingerprint") != fingerprint(self.model_cfg)):
            # What the config names is compared (evaluation names no dataset sizes).
            saved = {k: v for k, v in saved.items() if k in self.model_cfg}
            problems += _diff(config_lib.flatten(saved), config_lib.flatten(self.model_cfg),
                              "config key")
        problems += _diff(meta["state_shapes"], leaf_shapes(abstract_state), "state leaf")
        if problems:
            raise CheckpointMismatchError(
                f"the checkpoint {self.directory / str(step)} does not match the config "
                "(use a fresh --workdir, or the config it was trained with):\n  "
                + "\n  ".join(problems))
        return meta

    def restore(self, abstract_state, *, steps=None, data_iter=None, optimizer: bool = True,
                set_aside_damaged: bool = False):
        """`(state, meta)` of the first of `steps` (default: all, newest first) that can be read,
        into `abstract_state`'s shapes and shardings (`jax.ShapeDtypeStruct`s).

        `optimizer=False` leaves `opt_state` None. A step that cannot be read is skipped with a
        warning (with `set_aside_damaged`, renamed `<step>.damaged`); a mismatched one raises.
        """
        steps = sorted(self.all_steps(), reverse=True) if steps is None else list(steps)
        if not steps:
            raise MissingFileError(f"no checkpoint in {self.directory}")
        damaged = []
        for step in steps:
            try:
                restored = self._restore(step, abstract_state, data_iter, optimizer)
            except CheckpointMismatchError:
                raise
            except Exception as e:  # pylint: disable=broad-except  # TensorStore, JSON, missing items
                reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
                damaged.append((step, reason))
                logging.warning("checkpoint %s cannot be read (%s); trying the one before",
                                self.directory / str(step), reason)
                continue
            if set_aside_damaged and damaged:
                for bad, _ in damaged:
                    (self.directory / str(bad)).rename(self.directory / f"{bad}.damaged")
                self.manager.reload()
            return restored
        raise CheckpointError(f"no checkpoint in {self.directory} can be read: "
                              + "; ".join(f"step {s}: {r}" for s, r in damaged))

    def _restore(self, step: int, abstract_state, data_iter, optimizer: bool):
        meta = self.check(step, abstract_state)
        items = {PARAMS: ocp.args.StandardRestore(abstract_state.params),
                 TRAIN: ocp.args.StandardRestore(_train_item(abstract_state))}
        if optimizer:
            items[OPT_STATE] = ocp.args.StandardRestore(abstract_state.opt_state)
        if data_iter is not None:
            if not (self.directory / str(step) / DATA).exists():
                raise CheckpointMismatchError(
                    f"the checkpoint {self.directory / str(step)} holds no data iterator state")
            items[DATA] = IteratorArgs(data_iter)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        frozen = abstract_state.frozen
        if meta.get("frozen") is not None:
            frozen = self.restore_frozen(meta["frozen"], abstract_state.frozen)
        elif jax.tree.leaves(frozen):
            raise CheckpointMismatchError(
                f"the checkpoint {self.directory / str(step)} has no frozen state, which the "
                "config's model has")
        train = restored[TRAIN]
        state = abstract_state.replace(
            params=restored[PARAMS], opt_state=restored[OPT_STATE] if optimizer else None,
            step=train["step"], rng=train["rng"], extra=train["extra"], frozen=frozen)
        return state, meta

    def wait(self) -> None:
        """Blocks until every started save is finalised (renamed into place)."""
        with _storage_errors(self.directory):
            self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()

    def __exit__(self, *exc):
        self.close()
