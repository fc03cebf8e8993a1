"""Training workdirs without training: a tiny config's random state, perturbed, saved as the
trainer saves it (`config.json` and an Orbax step in `checkpoints/`), for `load_for_inference`."""
import json
from pathlib import Path

import jax
import numpy as np
from PIL import Image

from mmpiqa_jax import config as config_lib
from mmpiqa_jax.train import checkpointing, trainer
from mmpiqa_jax.train.task import IQATask

REPO = Path(__file__).resolve().parents[1]
COMMON = config_lib.load_sibling(str(REPO / "configs" / "tiny.py"), "common")


def build(name: str, clip, **changes):
    """`iqa.MPIQE` or `iqa.LIQE` (`name`) on `clip`: configs/common.py's keywords for it, with
    `changes` (`rngs` among them)."""
    from mmpiqa_jax.models import iqa

    defaults = {k: v for k, v in COMMON.model_config(name).items() if k not in iqa.CLIP_KEYS}
    return iqa.MODELS[name](clip, **{**defaults, **changes})


def make_workdir(workdir, spec: str = "", overrides=(), *, seed: int = 0) -> Path:
    """A workdir of `configs/tiny.py:spec` whose trainable parameters are perturbed by seeded
    N(0, 0.2) noise (a fresh MP-IQE scores every image 3: its fusion head is zero)."""
    workdir = Path(workdir)
    config = config_lib.load_config(str(REPO / "configs" / f"tiny.py:{spec}"), list(overrides))
    task = IQATask(config)
    state = jax.jit(task.init_state)(jax.random.key(seed))
    leaves, tree = jax.tree.flatten(state.params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    noisy = [x + 0.2 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    state = state.replace(params=jax.tree.unflatten(tree, noisy))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / trainer.CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=1))
    with checkpointing.Checkpointer(workdir / trainer.CHECKPOINT_DIR, async_save=False,
                                    model_cfg=checkpointing.run_identity(config)) as ckpt:
        ckpt.save(0, state)
        ckpt.wait()
    return workdir


def write_images(folder, sizes, seed: int = 0) -> list[Path]:
    """PNGs of the given (h, w), a ramp plus noise each (so that crops differ)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i, (h, w) in enumerate(sizes):
        ramp = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))
        pixels = np.clip(ramp + rng.normal(0, 50, (h, w, 3)), 0, 255).astype(np.uint8)
        paths.append(folder / f"img{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths
