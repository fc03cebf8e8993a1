"""Scoring image files with an exported model, with the evaluation's test-time crops.

The crops are `mmpiqa_jax.data.transforms.eval_crops`'s, in the mode that the export's
`config.json` names.
"""
from __future__ import annotations

import numpy as np
import torch

from mmpiqa_jax.data import transforms as T


def eval_crops(image, mode: str = "liqe", num: int = 15, crop: int = 224) -> np.ndarray:
    """The test-time crops of a PIL image (converted to RGB), uint8 [n, crop, crop, 3]."""
    return T.eval_crops(image.convert("RGB"), mode, num, crop)


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
