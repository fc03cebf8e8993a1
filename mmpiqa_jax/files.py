"""Files written whole or not at all, paths that may be URLs, and values made JSON-ready.

    write_json(path, record)                # written beside, then renamed over the old file
    with replacing(folder) as staging: ...  # staged entries replace the folder's at the end
    with one_writer(workdir): ...           # refused while another process writes there

Paths go through `etils.epath`, so `gs://bucket/run` works too (not atomically there).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import time
from collections.abc import Iterator

import numpy as np
from etils import epath

from mmpiqa_jax.errors import UserError


def as_path(path) -> epath.Path:
    """`path` as an `epath.Path`, `~` expanded; a URL stays one (pathlib would make gs://b/r
    into gs:/b/r)."""
    return path if isinstance(path, epath.Path) else epath.Path(os.path.expanduser(path))


def is_remote(path) -> bool:
    """Whether `path` is a URL (gs://, s3://, ...) rather than a local path."""
    return "://" in os.fspath(path)


def json_ready(value):
    """`value` with numpy scalars and arrays as Python values, tuples as lists, non-finite floats
    as None (JSON has no NaN) and anything else JSON cannot hold as its `repr`."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def read_json(path, *, object_only: bool = False):
    """The JSON in `path`; not JSON (or with `object_only`, not an object) is a `UserError`."""
    try:
        value = json.loads(as_path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if object_only and not isinstance(value, dict):
        raise UserError(f"{path}: holds a JSON {type(value).__name__}, expected an object")
    return value


def write_bytes(path, data: bytes) -> None:
    """Writes `data` to a file beside `path`, then renames it over `path`."""
    path = as_path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as e:  # epath's errors do not always name the file
        raise OSError(e.errno, e.strerror or str(e), os.fspath(path)) from e
    finally:
        if tmp.exists():
            tmp.unlink()


def check_writable(folder) -> None:
    """Creates `folder` and writes a probe there: an unwritable one is an `OSError` naming it."""
    folder = as_path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), os.fspath(folder)) from e


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path, value, **kwargs) -> None:
    """`value` (made `json_ready`) as indented JSON, written as `write_text` does."""
    write_text(path, json.dumps(json_ready(value), indent=2, **kwargs) + "\n")


@contextlib.contextmanager
def replacing(folder, *, last: str | None = None, stale: tuple[str, ...] = ()
              ) -> Iterator[epath.Path]:
    """A staging folder whose entries, once the block has run, replace those of their names in
    `folder` (`last` at the very end); the names in `stale` not written are removed. If the
    block raises, `folder` is left as it was."""
    folder = as_path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".staging-{os.getpid()}"
    if staging.exists():
        staging.rmtree()
    staging.mkdir()
    try:
        yield staging
        entries = sorted(staging.iterdir(),
                         key=lambda p: (p.name == last, not p.is_dir(), p.name))
        for entry in entries:
            target = folder / entry.name
            if target.is_dir():
                old = folder / f".old-{entry.name}-{os.getpid()}"
                target.rename(old)
                entry.rename(target)
                old.rmtree()
            else:
                entry.replace(target)
        written = {p.name for p in entries}
        for name in stale:
            if name not in written and (folder / name).exists():
                (folder / name).unlink()
    finally:
        if staging.exists():
            staging.rmtree()


LOCK_NAME = "lock.json"


def _started(pid: int) -> str | None:
    """When process `pid` started (Linux: clock ticks after boot), which tells a reused pid."""
    try:
        return open(f"/proc/{pid}/stat", encoding="ascii").read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(holder: dict) -> bool | None:
    """Whether the lock's holder still runs; None where this host cannot tell (another host)."""
    if holder.get("host") != socket.gethostname():
        return None
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return holder.get("started") in (None, _started(holder["pid"]))


def _create(path: epath.Path, record: dict) -> bool:
    """Writes `record` to `path` unless it exists (atomically on a local disk only)."""
    text = json.dumps(record, indent=1)
    if is_remote(path):
        if path.exists():
            return False
        path.write_text(text)
        return True
    try:
        fd = os.open(os.fspath(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return True


@contextlib.contextmanager
def one_writer(folder) -> Iterator[None]:
    """Holds `folder/lock.json` (this process, host and start time) while the block runs.

    Another live holder (or one on another host) is a `UserError` naming it; a holder gone from
    this host is replaced, with a warning.
    """
    folder = as_path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started": _started(os.getpid()),
          "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    while not _create(path, me):
        try:
            holder = json.loads(path.read_text())
        except (OSError, ValueError):  # written half by a process killed in between: stale
            holder = {}
        if holder and _alive(holder) is not False:
            where = f"process {holder.get('pid')} on {holder.get('host')}"
            raise UserError(f"{folder} is in use by {where} (since {holder.get('since')}): one "
                            "workdir has one writer. Wait for it to end, or use another "
                            f"--workdir; if that process is gone, remove {path}")
        logging.warning("%s: taking over the lock of %s, which no longer runs", folder, holder)
        path.unlink()
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()) == me:
                path.unlink()
