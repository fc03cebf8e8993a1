"""A pyiqa-style metric: `create_metric(path)` gives a scorer of images, higher is better.

    metric = mmpiqa_jax.create_metric("runs/mpiqe")    # a workdir, a checkpoint, a model folder
    metric("photo.jpg")                  # 3.41 (a float for one image)
    metric(["a.jpg", "b.png"])           # np.ndarray [2]
    metric(uint8_batch)                  # [B, H, W, 3] uint8 or uint16, or float in [0, 1]
    metric.lower_better, metric.score_range          # False, (1.0, 5.0)

Images are scored as `mmpiqa score` scores them (`evaluate.scoring`), so the two agree.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from mmpiqa_jax.data import transforms as T
from mmpiqa_jax.errors import MissingFileError, UserError
from mmpiqa_jax.evaluate import scoring
from mmpiqa_jax.train import inference

__all__ = ["IQAMetric", "create_metric"]


def _as_uint8(array: np.ndarray, what: str) -> np.ndarray:
    """uint8 pixels of an image array: uint8 as is, uint16 by its high byte (as 8-bit files
    read), float [0, 1] rounded; NaN, infinite and empty images are refused."""
    if array.size == 0:
        raise UserError(f"{what}: an empty image (shape {array.shape})")
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return (array >> 8).astype(np.uint8)
    if not np.issubdtype(array.dtype, np.floating):
        raise UserError(f"{what}: images must be uint8, uint16 or float in [0, 1], got "
                        f"{array.dtype}")
    if not np.isfinite(array).all():
        raise UserError(f"{what}: {np.size(array) - np.isfinite(array).sum()} values are NaN "
                        "or infinite")
    lo, hi = float(array.min()), float(array.max())
    if lo < 0.0 or hi > 1.0:
        raise UserError(f"{what}: float images must lie in [0, 1], got values in "
                        f"[{lo:.4g}, {hi:.4g}] (pass uint8 for 0..255)")
    return np.round(array * 255.0).astype(np.uint8)


class IQAMetric:
    """Quality scores in [1, 5] of images with a trained MP-IQE or LIQE (see the module doc)."""

    lower_better = False
    score_range = (1.0, 5.0)

    def __init__(self, scorer: inference.Scorer, config, *, crop_mode: str | None = None,
                 batch_size: int = 16, workers: int = 4):
        self.scorer, self.config = scorer, config
        self.crops = scoring.crop_setting(config, crop_mode)
        self.batch_size, self.workers = batch_size, workers
        scoring.ByCropCount(scorer, batch_size)  # checks the batch size now, not at first use

    def score_paths(self, paths: Sequence[str | os.PathLike]) -> np.ndarray:
        """Scores [N] of image files; a missing or unreadable file raises, naming it."""
        paths = [os.fspath(p) for p in paths]
        for path in paths:
            if not os.path.isfile(path):
                what = "a folder, not an image file" if os.path.isdir(path) else "no such file"
                raise MissingFileError(f"{path}: {what}")
        scores, skipped = scoring.score_files(self.scorer, paths, batch_size=self.batch_size,
                                              workers=self.workers, progress=False, **self.crops)
        if skipped:
            path, reason = skipped[0]
            raise scoring.UnreadableImage(path, reason)
        return np.asarray([s for _, s in scores], np.float32)

    def score_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Scores [N] of PIL images."""
        batches = scoring.ByCropCount(self.scorer, self.batch_size)
        for i, image in enumerate(images):
            batches.add(i, scoring.image_crops(T.to_rgb(image), **self.crops))
        scores = batches.finish()
        return np.asarray([scores[i] for i in range(len(images))], np.float32)

    def __call__(self, x):
        """A float for a path, PIL image or array [H, W, 3]; [N] for a list or a [B, H, W, 3]."""
        if isinstance(x, (str, os.PathLike)):
            return float(self.score_paths([x])[0])
        if isinstance(x, Image.Image):
            return float(self.score_images([x])[0])
        if isinstance(x, np.ndarray):
            if x.ndim == 3 and x.shape[-1] == 3:
                return float(self.score_images([Image.fromarray(_as_uint8(x, "image"))])[0])
            if x.ndim == 4 and x.shape[-1] == 3:
                batch = _as_uint8(x, "batch")
                return self.score_images([Image.fromarray(im) for im in batch])
            raise UserError(f"arrays must be [H, W, 3] or [B, H, W, 3] (RGB), got shape "
                            f"{x.shape}")
        if isinstance(x, (list, tuple)):
            if all(isinstance(p, (str, os.PathLike)) for p in x):
                return self.score_paths(x)
            images = [Image.fromarray(_as_uint8(np.asarray(im), f"item {i}"))
                      if isinstance(im, np.ndarray) else im for i, im in enumerate(x)]
            if not all(isinstance(im, Image.Image) for im in images):
                raise UserError("a list must hold only paths, or only PIL images and arrays")
            return self.score_images(images)
        raise UserError(f"cannot score a {type(x).__name__}: pass a path, a PIL image, a uint8 "
                        "or [0, 1] float array [H, W, 3] / [B, H, W, 3], or a list of these")


def create_metric(path: str | os.PathLike, **kwargs) -> IQAMetric:
    """The metric of a training workdir, one checkpoint in it, or a model folder.

    Keywords: `crop_mode` (default: the run's evaluation crops), `batch_size`, `workers`.
    """
    scorer, config = inference.load_scorer(path)
    return IQAMetric(scorer, config, **kwargs)
