"""Training metrics out: `train_log.jsonl`, TensorBoard event files and a tqdm progress bar.

Only process 0 writes. On resume the log is cut back to the restored step.
"""
from __future__ import annotations

import contextlib
import json

import tqdm

from mmpiqa_jax import files

LOG_NAME = "train_log.jsonl"
TENSORBOARD_DIR = "tensorboard"
EVAL_PREFIX = "val_"


def truncate_log(path, last_step: int) -> None:
    """Drops the records of `path` with `step > last_step`, written after the restored step."""
    path = files.as_path(path)
    if not path.exists():
        return
    keep = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            # A line cut short by a kill mid-write: it lies after every complete line.
            break
        if record.get("step", 0) <= last_step:
            keep.append(line)
    files.write_text(path, "".join(line + "\n" for line in keep))


def _tag(key: str) -> str:
    if key.startswith(EVAL_PREFIX):
        return "val/" + key[len(EVAL_PREFIX):]
    return "train/" + key


class MetricsWriter(contextlib.AbstractContextManager):
    """Writes one record per logged step to the JSONL log and TensorBoard, drives the bar."""

    def __init__(self, workdir, *, num_steps: int, start_step: int = 0, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        workdir = files.as_path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / LOG_NAME
        truncate_log(self.log_path, start_step)
        # Object stores (gs://) cannot append: there the whole log is rewritten per record.
        self._lines = None
        if files.is_remote(workdir):
            self._lines = self.log_path.read_text() if self.log_path.exists() else ""
            self._log = None
        else:
            self._log = self.log_path.open("a")
        # Imported here so that processes other than 0 never touch it.
        from tensorboardX import SummaryWriter
        # purge_step hides the events an interrupted run wrote past the restored step.
        self._tb = SummaryWriter(str(workdir / TENSORBOARD_DIR), purge_step=start_step + 1)
        self._bar = tqdm.tqdm(total=num_steps, initial=start_step, unit="step",
                              dynamic_ncols=True, mininterval=1.0)

    def advance(self, steps: int = 1) -> None:
        if self.enabled:
            self._bar.update(steps)

    def write(self, step: int, metrics: dict[str, float]) -> None:
        """Logs `metrics` (plain floats) for `step`; keys `val_*` are evaluation results."""
        if not self.enabled:
            return
        record = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        if self._log is None:
            self._lines += json.dumps(record) + "\n"
            self.log_path.write_text(self._lines)
        else:
            try:
                self._log.write(json.dumps(record) + "\n")
                self._log.flush()  # a killed run keeps every line it logged
            except OSError as e:
                raise OSError(e.errno, e.strerror, str(self.log_path)) from e
        for key, value in metrics.items():
            self._tb.add_scalar(_tag(key), float(value), step)
        self._tb.flush()
        postfix = {k: f"{metrics[k]:.4g}" for k in ("loss", "val_srcc") if k in metrics}
        if "images_per_sec" in metrics:
            postfix["img/s"] = f"{metrics['images_per_sec']:.1f}"
        self._bar.set_postfix(postfix, refresh=False)

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self.enabled:
            self._bar.close()
            self._tb.close()
            if self._log is not None:
                self._log.close()
            self.enabled = False
