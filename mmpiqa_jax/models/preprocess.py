"""CLIP normalisation inside the jitted computation, so that the host sends uint8 crops."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# As `data.transforms`' (`models` may not import `data`; a test checks that they agree).
CLIP_MEAN = np.array((0.48145466, 0.4578275, 0.40821073), np.float32)
CLIP_STD = np.array((0.26862954, 0.26130258, 0.27577711), np.float32)

# (x / 255 - mean) / std as one multiply-add, with the host path's float32 constants.
_SCALE = (1.0 / (255.0 * CLIP_STD)).astype(np.float32)
_OFFSET = (-CLIP_MEAN / CLIP_STD).astype(np.float32)


def clip_normalize(pixels: jax.Array) -> jax.Array:
    """uint8 RGB [..., 3] -> float32 (x / 255 - mean) / std; floating input is returned as is."""
    if jnp.issubdtype(pixels.dtype, jnp.floating):
        return pixels
    if pixels.dtype != jnp.uint8:
        raise TypeError(f"pixels must be uint8 (raw RGB) or floating (CLIP-normalised), got "
                        f"{pixels.dtype}")
    return pixels.astype(jnp.float32) * jnp.asarray(_SCALE) + jnp.asarray(_OFFSET)
