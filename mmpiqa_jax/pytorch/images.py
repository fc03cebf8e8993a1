"""Scoring image files with an exported model, with the project's test-time crops.

    model = mmpiqa_jax.pytorch.load("export/")
    scores = score_files(model, ["a.jpg", "b.png"])      # [(path, score)], higher is better

The crops are those of `mmpiqa_jax.data.transforms.eval_crops`, re-written here on PIL and numpy
(PIL is imported when scoring files): `liqe` is LIQE's resize (short side to 768 when both sides
exceed it, to the crop size when below) and `num` crops spread over its stride-32 (48 from 1024
pixels) grid; `center` one centre crop after that resize; `full` the whole image resized
(bicubic). The export's `config.json` names the mode a run evaluated with.
"""
from __future__ import annotations

import numpy as np
import torch

CROP_MODES = ("liqe", "center", "full")
MAX_SHORT_SIDE = 768


def _liqe_resize(image, crop: int):
    from PIL import Image

    w, h = image.size
    short = min(w, h)
    if short > MAX_SHORT_SIDE:
        target, resample = MAX_SHORT_SIDE, Image.BILINEAR
    elif short < crop:
        target, resample = crop, Image.BICUBIC
    else:
        return image
    size = (target, int(target * h / w)) if w <= h else (int(target * w / h), target)
    return image.resize(size, resample)


def _grid(height: int, width: int, crop: int) -> np.ndarray:
    stride = 48 if max(height, width) >= 1024 else 32
    tops, lefts = np.arange(0, height - crop + 1, stride), np.arange(0, width - crop + 1, stride)
    return np.stack(np.meshgrid(tops, lefts, indexing="ij"), -1).reshape(-1, 2)


def eval_crops(image, mode: str = "liqe", num: int = 15, crop: int = 224) -> np.ndarray:
    """The test-time crops of a PIL image (converted to RGB), uint8 [n, crop, crop, 3]."""
    from PIL import Image

    if mode not in CROP_MODES:
        raise ValueError(f"unknown crop mode {mode!r}; expected one of {CROP_MODES}")
    image = image.convert("RGB")
    if mode == "full":
        return np.asarray(image.resize((crop, crop), Image.BICUBIC))[None]
    array = np.asarray(_liqe_resize(image, crop))
    h, w = array.shape[:2]
    if mode == "center":
        positions = np.array([[(h - crop) // 2, (w - crop) // 2]])
    else:
        grid = _grid(h, w, crop)
        n = len(grid)
        positions = grid[(n // num) * np.arange(num) if n >= num else (np.arange(num) * n) // num]
    return np.stack([array[t:t + crop, l:l + crop] for t, l in positions])


def crop_setting(model) -> dict:
    """The crop keywords of `score_files` that the export recorded (LIQE's 15 if none)."""
    p = model.config.get("preprocess", {})
    return {"mode": p.get("crop_mode", "liqe"), "num": int(p.get("num_crops", 15)),
            "crop": int(p.get("crop_size", model.clip.config["image_resolution"]))}


@torch.no_grad()
def score_images(model, images, *, mode: str | None = None, num: int | None = None,
                 batch_size: int = 8) -> np.ndarray:
    """Scores [N] of PIL images, `batch_size` images per forward (text features computed once)."""
    setting = crop_setting(model)
    setting.update({k: v for k, v in (("mode", mode), ("num", num)) if v is not None})
    scores = []
    images = list(images)
    text = model.text_features() if images else None
    for i in range(0, len(images), batch_size):
        crops = np.stack([eval_crops(im, **setting) for im in images[i:i + batch_size]])
        pixels = torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 1, 4, 2, 3)))
        scores.append(model(pixels, text)["score"].numpy())
    return np.concatenate(scores) if scores else np.zeros(0, np.float32)


def score_files(model, paths, **kwargs) -> list[tuple[str, float]]:
    """[(path, score)] of image files (see `score_images` for the keywords)."""
    from PIL import Image

    def read(path):
        with Image.open(path) as im:
            return im.convert("RGB")

    paths = [str(p) for p in paths]
    return list(zip(paths, map(float, score_images(model, map(read, paths), **kwargs))))
