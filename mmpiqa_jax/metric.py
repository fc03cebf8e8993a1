"""A pyiqa-style metric: `create_metric(workdir)` gives a scorer of images, higher is better.

    metric = mmpiqa_jax.create_metric("runs/mpiqe")
    metric("photo.jpg")                  # 3.41 (a float for one image)
    metric(["a.jpg", "b.png"])           # np.ndarray [2]
    metric(uint8_batch)                  # [B, H, W, 3] uint8, or float in [0, 1]
    metric.lower_better, metric.score_range          # False, (1.0, 5.0)

The images go through `evaluate.scoring` exactly as `mmpiqa score` sends them (the run's
evaluation crops, one compiled forward per batch shape: batches are padded to `batch_size`),
so the two give the same scores. Float arrays in [0, 1] are rounded to uint8 first (what saving
them as 8-bit files would give). Names: `create_metric` takes a registered name
(`register_metric`) as well as a path; no name is registered in this package, since no trained
weights are published.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from mmpiqa_jax.evaluate import scoring
from mmpiqa_jax.train import inference

__all__ = ["IQAMetric", "create_metric", "list_metrics", "register_metric"]

_REGISTRY: dict[str, str] = {}


def register_metric(name: str, workdir: str | os.PathLike) -> None:
    """Lets `create_metric(name)` load `workdir` (a training workdir)."""
    _REGISTRY[name] = os.fspath(workdir)


def list_metrics() -> list[str]:
    """The registered names (none unless `register_metric` was called)."""
    return sorted(_REGISTRY)


def _as_uint8(array: np.ndarray, what: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"{what}: images must be uint8 or float in [0, 1], got {array.dtype}")
    lo, hi = float(array.min()), float(array.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{what}: float images must lie in [0, 1], got values in "
                         f"[{lo:.4g}, {hi:.4g}] (pass uint8 for 0..255)")
    return np.round(array * 255.0).astype(np.uint8)


class IQAMetric:
    """Quality scores in [1, 5] of images with a trained MP-IQE or LIQE (see the module doc)."""

    lower_better = False
    score_range = (1.0, 5.0)

    def __init__(self, model, config, *, crop_mode: str | None = None, batch_size: int = 16,
                 workers: int = 4):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.config = model, config
        self.crops = scoring.crop_setting(config, crop_mode)
        self.batch_size, self.workers = batch_size, workers
        self._scorer = scoring.make_scorer(model)  # one jit; compiled once per crops shape

    def score_paths(self, paths: Sequence[str | os.PathLike]) -> np.ndarray:
        """Scores [N] of image files; a missing or unreadable file raises, naming it."""
        paths = [os.fspath(p) for p in paths]
        for path in paths:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path}: no such image file")
        scores, skipped = scoring.score_files(None, paths, batch_size=self.batch_size,
                                              workers=self.workers, progress=False,
                                              scorer=self._scorer, **self.crops)
        if skipped:
            path, reason = skipped[0]
            raise scoring.UnreadableImage(path, reason)
        return np.asarray([s for _, s in scores], np.float32)

    def score_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Scores [N] of PIL images (converted to RGB), batched as `score_paths` (by crop
        count: `pyiqa` crops of small images are fewer)."""
        batches = scoring.ByCropCount(self._scorer, self.batch_size)
        for i, image in enumerate(images):
            batches.add(i, scoring.image_crops(image.convert("RGB"), **self.crops))
        scores = batches.finish()
        return np.asarray([scores[i] for i in range(len(images))], np.float32)

    def __call__(self, x):
        """Scores of a path, a PIL image or an array [H, W, 3] (a float), or of a list of
        paths / images, or an array [B, H, W, 3] (np.ndarray [N])."""
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
            raise ValueError(f"arrays must be [H, W, 3] or [B, H, W, 3] (RGB), got shape "
                             f"{x.shape}")
        if isinstance(x, (list, tuple)):
            if all(isinstance(p, (str, os.PathLike)) for p in x):
                return self.score_paths(x)
            images = [Image.fromarray(_as_uint8(np.asarray(im), f"item {i}"))
                      if isinstance(im, np.ndarray) else im for i, im in enumerate(x)]
            if not all(isinstance(im, Image.Image) for im in images):
                raise TypeError("a list must hold only paths, or only PIL images and arrays")
            return self.score_images(images)
        raise TypeError(f"cannot score a {type(x).__name__}: pass a path, a PIL image, a uint8 "
                        "or [0, 1] float array [H, W, 3] / [B, H, W, 3], or a list of these")


def create_metric(checkpoint_or_name: str | os.PathLike, **kwargs) -> IQAMetric:
    """The metric of a training workdir (or its `checkpoints/`), or of a registered name.

    Keywords: `crop_mode` (default: the run's evaluation crops), `batch_size`, `workers`.
    """
    path = os.fspath(checkpoint_or_name)
    if path in _REGISTRY:
        path = _REGISTRY[path]
    elif not os.path.exists(path):
        known = ", ".join(list_metrics()) or "none are registered"
        raise FileNotFoundError(f"{path}: neither a training workdir nor a registered metric "
                                f"name ({known})")
    model, config = inference.load_for_inference(path)
    return IQAMetric(model, config, **kwargs)
