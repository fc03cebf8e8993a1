"""Scores image files with a model's `Scorer`: find the files, crop as at evaluation, batch
(`score_files(scorer, find_images(paths)[0])`).

Crops are the evaluation's (`transforms.eval_crops`), sent as uint8; a file that cannot be read
or decoded is skipped and reported with its reason.
"""
from __future__ import annotations

import collections
import concurrent.futures
import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from mmpiqa_jax.data import transforms as T
from mmpiqa_jax.errors import UserError

CROP_MODES = T.EVAL_CROP_MODES
# What a folder is searched for (case-insensitive); files named explicitly are always tried.
IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")

# What PIL raises on a bad file: UnidentifiedImageError and truncation are OSErrors, some plugins
# raise SyntaxError ("broken PNG file") or ValueError, and oversized images DecompressionBombError.
_READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


class UnreadableImage(UserError):
    """A file that cannot be scored; `path` and `reason` say which and why."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


def find_images(paths: Sequence[str | os.PathLike]) -> tuple[list[str], list[tuple[str, str]]]:
    """(files, missing): each file as given, each folder's image files (recursively, sorted);
    (path, reason) of the paths that do not exist."""
    files, missing = [], []
    for path in map(str, paths):
        if os.path.isdir(path):
            found = []
            for root, dirs, names in os.walk(path):
                dirs.sort()  # a stable order, independent of the file system
                found += [os.path.join(root, n) for n in names
                          if n.lower().endswith(IMAGE_EXTENSIONS)]
            files += sorted(found)
        elif os.path.exists(path):
            files.append(path)
        else:
            missing.append((path, "no such file or directory"))
    return files, missing


def image_crops(image: Image.Image, crop_mode: str = "liqe", num_crops: int = 15,
                crop_size: int = T.CROP) -> np.ndarray:
    """The evaluation crops of an RGB image, uint8 [n, s, s, 3] (`transforms.eval_crops`)."""
    return T.eval_crops(image, crop_mode, num_crops, crop_size)


def crop_setting(config, crop_mode: str | None = None) -> dict:
    """The crop keywords of `score_files` from a run's config; `crop_mode` overrides its mode."""
    mode = crop_mode or config.data.eval_crop_mode
    if mode not in CROP_MODES:
        raise UserError(f"unknown crop mode {mode!r}; expected one of {CROP_MODES}")
    return {"crop_mode": mode, "num_crops": int(config.data.eval_crops),
            "crop_size": int(config.data.crop_size)}


def load_crops(path, crop_mode: str = "liqe", num_crops: int = 15,
               crop_size: int = T.CROP) -> np.ndarray:
    """A file's evaluation crops, uint8 [n, s, s, 3]; raises `UnreadableImage` naming the file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        # decode_rgb's convert() forces the full decode, so a truncated file fails here.
        return image_crops(T.decode_rgb(data), crop_mode, num_crops, crop_size)
    except _READ_ERRORS as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        if isinstance(e, Image.UnidentifiedImageError):  # its message names a BytesIO object
            reason = "cannot identify the image format (not an image, or none pillow reads)"
        raise UnreadableImage(path, reason or type(e).__name__) from e


def _read_ahead(pool, fn, items: Iterable, ahead: int) -> Iterator:
    """`(item, future of fn(item))` in order, at most `ahead` in flight: memory stays bounded."""
    items, pending = iter(items), collections.deque()
    for item in itertools.islice(items, ahead):
        pending.append((item, pool.submit(fn, item)))
    while pending:
        yield pending.popleft()
        for item in itertools.islice(items, 1):
            pending.append((item, pool.submit(fn, item)))


class ByCropCount:
    """Images' crops (`add`), scored `batch_size` images at a time (`finish`: {key: score}),
    each batch of one crop count (`pyiqa` takes fewer from small images); a short batch is padded
    with copies (one compiled shape)."""

    def __init__(self, scorer: Callable[[np.ndarray], np.ndarray], batch_size: int):
        if batch_size < 1:
            raise UserError(f"the batch size must be >= 1, got {batch_size}")
        self.scorer, self.batch_size = scorer, batch_size
        self.pending = collections.defaultdict(list)  # count -> [(key, crops)]
        self.scores: dict = {}

    def add(self, key, crops: np.ndarray) -> bool:
        """Queues one image's crops; True when that scored a batch."""
        waiting = self.pending[len(crops)]
        waiting.append((key, crops))
        if len(waiting) < self.batch_size:
            return False
        self._flush(len(crops))
        return True

    def finish(self) -> dict:
        """Scores what is queued; every key added -> its score."""
        for count in sorted(self.pending):
            self._flush(count)
        return self.scores

    def _flush(self, count: int) -> None:
        batch = self.pending.pop(count)
        crops = np.stack([c for _, c in batch])
        if len(crops) < self.batch_size:  # pad with copies: the compiled shape stays the same
            crops = np.concatenate([crops, np.repeat(crops[-1:], self.batch_size - len(crops),
                                                     0)])
        values = np.asarray(self.scorer(crops))[:len(batch)]  # uint8: a quarter of the bytes
        self.scores.update((key, float(v)) for (key, _), v in zip(batch, values))


def score_files(scorer: Callable[[np.ndarray], np.ndarray], files: Iterable[str], *,
                crop_mode: str = "liqe", num_crops: int = 15, crop_size: int = T.CROP,
                batch_size: int = 16, workers: int = 4, progress: bool = True
                ) -> tuple[list[tuple[str, float]], list[tuple[str, str]]]:
    """Scores `files` in batches; unreadable files are skipped.

    Args:
      scorer: crops uint8 [B, C, s, s, 3] -> scores [B] (`train.inference.Scorer`).
      files: image paths, scored in this order.
      crop_mode, num_crops, crop_size: the evaluation preprocessing (see `image_crops`).
      batch_size: images per forward (see `ByCropCount`).
      workers: threads reading and cropping images.
      progress: show a tqdm bar (on stderr).
    Returns:
      (scores, skipped): [(path, score)] of the read files in order, [(path, reason)] of the rest.
    """
    from tqdm import tqdm

    files = list(files)
    batches = ByCropCount(scorer, batch_size)
    skipped = []
    load = lambda item: load_crops(item[1], crop_mode, num_crops, crop_size)
    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool, \
            tqdm(total=len(files), unit="img", desc="scoring", disable=not progress) as bar:
        for (i, path), future in _read_ahead(pool, load, enumerate(files), ahead=2 * batch_size):
            try:
                crops = future.result()
            except UnreadableImage as e:
                skipped.append((path, e.reason))
                continue
            if batches.add(i, crops):
                bar.update(len(batches.scores) + len(skipped) - bar.n)
        scored = batches.finish()
        bar.update(len(scored) + len(skipped) - bar.n)
    return [(files[i], scored[i]) for i in sorted(scored)], skipped
