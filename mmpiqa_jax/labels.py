"""The label vocabularies shared by data, prompts and heads (LIQE's, see docs/method.md)."""
import numpy as np

from mmpiqa_jax.errors import UserError

# The 9 scene words used by LIQE's prompts; an image can have up to 3.
SCENES = (
    "animal", "cityscape", "human", "indoor", "landscape",
    "night", "plant", "still_life", "others",
)

# The 11 distortion classes used by LIQE's prompts.
DISTORTIONS = (
    "jpeg2000 compression", "jpeg compression", "noise", "blur", "color", "contrast",
    "overexposure", "underexposure", "spatial", "quantization", "other",
)

# LIVE's "fast fading" images are JPEG2000 streams sent over a lossy channel: LIQE's `dist_map`
# counts them as JPEG2000, while LIQE's released split files name them "white noise". One class
# for them, used by the LIVE builder and the split-file importers alike.
LIVE_FASTFADING_CLASS = "jpeg2000 compression"

# The 5 quality levels, worst first; level q (1-based) scores q.
QUALITIES = ("bad", "poor", "fair", "good", "perfect")

NUM_SCENES = len(SCENES)
NUM_DISTORTIONS = len(DISTORTIONS)
NUM_QUALITIES = len(QUALITIES)

# LIQE's joint prompt over all (quality, scene, distortion) triples; index = q * 99 + s * 11 + d.
LIQE_TEMPLATE = "a photo of a {scene} with {distortion} artifacts, which is of {quality} quality"


def _index(vocabulary: tuple[str, ...], name: str, what: str) -> int:
    try:
        return vocabulary.index(name)
    except ValueError:
        raise UserError(f"unknown {what} {name!r}; expected one of {vocabulary}") from None


def distortion_index(name: str) -> int:
    """Index of a distortion class name; raises naming the value when unknown."""
    return _index(DISTORTIONS, name, "distortion class")


def scene_multi_hot(scene_lists) -> np.ndarray:
    """float32 [N, NUM_SCENES]: row i is 1 at each scene name of `scene_lists[i]`."""
    table = np.zeros((len(scene_lists), NUM_SCENES), np.float32)
    for row, scenes in zip(table, scene_lists):
        row[[_index(SCENES, s, "scene") for s in scenes]] = 1.0
    return table
