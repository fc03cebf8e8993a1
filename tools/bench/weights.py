"""The JAX models the benchmark times, and their weights saved for the torch workers."""
from __future__ import annotations

import json

import numpy as np


def build_jax_model(config, seed: int = 0):
    """The config's model from a fixed seed, its fusion head made random (MP-IQE)."""
    import jax
    from flax import nnx

    from mmpiqa_jax.models import iqa

    model = iqa.build_model(config.model, nnx.Rngs(seed))
    if config.model.name == "mpiqe":
        # The fusion head starts at zero (score 3 everywhere); random, so that every loss bites.
        kernel = model.fusion.head.kernel
        kernel[...] = 0.1 * jax.random.normal(jax.random.key(seed + 1), kernel.shape)
    return model


def save_export(exported: dict, path: str) -> None:
    """`bench_inputs.export_jax`'s dict as one .npz (the CLIP config as JSON inside)."""
    arrays = {f"clip/{k}": v for k, v in exported["clip"].items()}
    arrays.update({f"extra/{k}": v for k, v in exported["extras"].items()})
    np.savez(path, __clip_config__=np.asarray(json.dumps(exported["clip_config"])), **arrays)


def load_export(path: str) -> dict:
    """The dict that `save_export` saved."""
    with np.load(path) as f:
        out = {"clip_config": json.loads(str(f["__clip_config__"])), "clip": {}, "extras": {}}
        for k in f.files:
            if k.startswith("clip/"):
                out["clip"][k[5:]] = f[k]
            elif k.startswith("extra/"):
                out["extras"][k[6:]] = f[k]
    return out
