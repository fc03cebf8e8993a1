"""Training workdirs without training: a tiny config's random state, perturbed, saved as the
trainer saves it (`config.json` and an Orbax step in `checkpoints/`), for `load_for_inference`."""
import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
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


def perturbed(tree, seed: int):
    """Every leaf of `tree` plus seeded N(0, 0.2) noise, drawn on the host (nothing to
    compile)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: jnp.asarray(np.asarray(x) + 0.2 * rng.normal(size=x.shape),
                                              x.dtype), tree)


def perturb(model: nnx.Module, seed: int = 1) -> nnx.Module:
    """`model` with its parameters `perturbed` in place (a fresh MP-IQE scores every image 3:
    its fusion head is zero); returns it."""
    nnx.update(model, perturbed(nnx.state(model, nnx.Param), seed))
    return model


def forward(model, pixels, **kwargs):
    """`model(pixels, **kwargs)` compiled, by one jit that every test shares (op by op, each
    op would compile on its own): [B, C, H, W, 3] -> the model's outputs."""
    return _forward(model, pixels, tuple(sorted(kwargs.items())))


@functools.partial(nnx.jit, static_argnums=2)
def _forward(model, pixels, kwargs):
    return model(pixels, **dict(kwargs))


def make_workdir(workdir, spec: str = "", overrides=(), *, seed: int = 0) -> Path:
    """A workdir of `configs/tiny.py:spec` whose trainable parameters are perturbed by seeded
    N(0, 0.2) noise (a fresh MP-IQE scores every image 3: its fusion head is zero)."""
    workdir = Path(workdir)
    config = config_lib.load_config(str(REPO / "configs" / f"tiny.py:{spec}"), list(overrides))
    task = IQATask(config)
    state = jax.jit(task.init_state)(jax.random.key(seed))
    state = state.replace(params=perturbed(state.params, seed + 1))
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
