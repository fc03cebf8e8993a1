"""Models that score: one `Scorer` for evaluation, `mmpiqa score`, `eval`, export and the API.

    scorer, config = load_scorer("runs/mpiqe")     # a workdir, checkpoints/N in it, or a model
    scores = scorer(crops)                          # uint8 [B, C, s, s, 3] -> numpy [B]
    model, config = load_model("runs/mpiqe")        # the nnx model itself (export)
    save_model(model, config, "liqe_mix/")          # a model folder: parameters and config only
"""
from __future__ import annotations

import functools
import math

import jax
import ml_collections
import numpy as np
from etils import epath
from flax import nnx
from jax.sharding import PartitionSpec as P

from mmpiqa_jax import files
from mmpiqa_jax.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from mmpiqa_jax.errors import MissingFileError, UserError
from mmpiqa_jax.evaluate.evaluator import Evaluator
from mmpiqa_jax.models import iqa
from mmpiqa_jax.train import sharding, trainer
from mmpiqa_jax.train.task import IQATask

CONFIG_KEY = "config"  # the training config, in a model folder's extra config
CLIP_PREFIX = "clip"   # the model's CLIP; its other parameters are the folder's extras


@functools.partial(jax.jit, static_argnums=0)
def _with_text_cache(graphdef, states):
    """The model's whole state, its text features computed from its parameters (once)."""
    model = nnx.merge(graphdef, *states)
    if hasattr(model, "refresh_text_cache"):
        model.refresh_text_cache()
    return nnx.state(model)


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, batch: dict) -> dict:
    """`batch` with its `pixels` [B, C, s, s, 3] replaced by their `score` [B], replicated."""
    model = nnx.merge(graphdef, state)
    cached = {"use_text_cache": True} if hasattr(model, "text_cache") else {}
    out = {k: v for k, v in batch.items() if k != "pixels"}
    out["score"] = model(batch["pixels"], **cached)["score"]
    return jax.lax.with_sharding_constraint(out, P())


class Scorer:
    """Quality scores [B] of crops [B, C, s, s, 3] (uint8 RGB, or CLIP-normalised float) by one
    jitted forward over `mesh`, the batch split over its devices."""

    def __init__(self, graphdef: nnx.GraphDef, states, mesh):
        """`states`: the model's states (e.g. trainable and frozen), placed on `mesh` already."""
        self.graphdef, self.mesh = graphdef, mesh
        with jax.set_mesh(mesh):
            self.state = _with_text_cache(graphdef, tuple(states))

    @classmethod
    def of(cls, model: nnx.Module, mesh=None) -> Scorer:
        """The scorer of a model in memory, replicated on `mesh` (default: every device)."""
        mesh = mesh or sharding.make_mesh()
        graphdef, state = nnx.split(model)
        return cls(graphdef, [jax.device_put(state, sharding.replicated(mesh))], mesh)

    @classmethod
    def of_state(cls, task: IQATask, state: trainer.TrainState, mesh) -> Scorer:
        """The scorer of a training state as it is laid out (the moving average, if kept)."""
        return cls(task.graphdef, [task.inference_params(state), state.frozen], mesh)

    def predict(self, local_batch: dict) -> dict:
        """`{"score": [N], ...other entries}` of the global batch, each process giving its part."""
        with jax.set_mesh(self.mesh):
            out = _forward(self.graphdef, self.state,
                           sharding.global_batch(self.mesh, local_batch))
        return {k: v.addressable_data(0) for k, v in out.items()}

    def __call__(self, crops) -> np.ndarray:
        """Scores of `crops`, which every process passes alike (all read the same files)."""
        crops = np.asarray(crops)
        n, unit = len(crops), self.mesh.size
        padded = np.concatenate([crops, np.repeat(crops[-1:], -n % unit, 0)])
        with jax.set_mesh(self.mesh):
            pixels = sharding.from_host(padded, sharding.batch_sharding(self.mesh))
            out = _forward(self.graphdef, self.state, {"pixels": pixels})
        return np.asarray(out["score"].addressable_data(0))[:n]


def make_evaluator(config, mesh) -> Evaluator:
    """The evaluator of `config.eval` / `config.data`'s crops, its batch fitted to `mesh`."""
    unit = math.lcm(mesh.size, jax.process_count())
    local_batch = -(-config.eval.batch_size // unit) * unit // jax.process_count()
    d = config.data
    return Evaluator(batch_size=local_batch, crop_mode=d.eval_crop_mode,
                     num_crops=d.eval_crops, crop_size=d.crop_size)


# ---------------------------------------------------------------------------------------------
# Where a model is read from.


def _workdir_and_step(path: epath.Path) -> tuple[epath.Path, int | None] | None:
    """(workdir, step or None) if `path` is a workdir, its `checkpoints/` or one in it; or None."""
    step = None
    if path.name.isdigit() and path.parent.name == trainer.CHECKPOINT_DIR:
        path, step = path.parent.parent, int(path.name)
    elif path.name == trainer.CHECKPOINT_DIR:
        path = path.parent
    if (path / trainer.CHECKPOINT_DIR).is_dir() and (path / trainer.CONFIG_NAME).is_file():
        return path, step
    return None


def run_folder(path) -> epath.Path:
    """Where the evaluations of `path` are written: the workdir of a checkpoint, else `path`."""
    found = _workdir_and_step(files.as_path(path))
    return files.as_path(path) if found is None else found[0]


def read_config(workdir) -> ml_collections.ConfigDict:
    """The config a run in `workdir` was trained with (its `config.json`)."""
    path = files.as_path(workdir) / trainer.CONFIG_NAME
    if not path.is_file():
        raise MissingFileError(f"{path} not found: {workdir} is not a training workdir "
                               "(run mmpiqa train --workdir there first)")
    return ml_collections.ConfigDict(files.read_json(path))


def is_run(path) -> bool:
    """Whether `path` is a training workdir, its `checkpoints/` or one checkpoint in it."""
    return _workdir_and_step(files.as_path(path)) is not None


def _from_model_folder(path) -> tuple[nnx.Module, ml_collections.ConfigDict]:
    what = ("give a training workdir, a checkpoint in one (WORKDIR/checkpoints/N), or a model "
            "folder mmpiqa convert wrote")
    folder = files.as_path(path)
    if not folder.exists():
        raise MissingFileError(f"{path}: no such file or folder ({what})")
    if folder.is_dir() and not (folder / trainer.CONFIG_NAME).exists():
        raise MissingFileError(f"{path}: no config.json in it, so neither a training workdir "
                               f"nor a model folder ({what})")
    checkpoint = load_checkpoint(folder)
    if CONFIG_KEY not in checkpoint.extra_config:
        raise UserError(
            f"{path} is a CLIP checkpoint, not a quality model: it holds no prompts, heads or "
            "training config. Train from it (--set model.clip_checkpoint=...), or give a "
            "training workdir, a checkpoint in one, or a model folder (mmpiqa convert of a "
            "released LIQE model writes one)")
    config = ml_collections.ConfigDict(checkpoint.extra_config[CONFIG_KEY])
    model = iqa.build_model(config.model, nnx.Rngs(config.seed), clip=checkpoint.clip)
    params = nnx.state(model, nnx.Param)
    flat = nnx.to_flat_state(params)
    names = {"/".join(map(str, p)): v for p, v in flat if p[0] != CLIP_PREFIX}
    extras = checkpoint.extra_params
    if set(names) != set(extras):
        raise CheckpointError(f"{path}: its parameters {sorted(extras)} are not those of the "
                              f"{config.model.name} model its config describes "
                              f"({sorted(names)})")
    for name, variable in names.items():
        if tuple(extras[name].shape) != tuple(variable.shape):
            raise CheckpointError(f"{path}: {name} has shape {extras[name].shape}, the model's "
                                  f"is {variable.shape}")
        variable.set_value(jax.numpy.asarray(extras[name], variable.dtype))
    nnx.update(model, nnx.from_flat_state(flat))
    return model, config


def load_scorer(path, mesh=None) -> tuple[Scorer, ml_collections.ConfigDict]:
    """The `Scorer` and config of a training workdir (its best checkpoint), one checkpoint of it
    (`WORKDIR/checkpoints/N`), or a model folder, over `mesh` (default: every device)."""
    found = _workdir_and_step(files.as_path(path))
    if found is None:
        model, config = _from_model_folder(path)
        return Scorer.of(model, mesh), config
    workdir, step = found
    config = read_config(workdir)
    task = IQATask(config)
    mesh = mesh or sharding.make_mesh()
    state = trainer.load_state(task, config, workdir, step=step, mesh=mesh)
    return Scorer.of_state(task, state, mesh), config


def load_model(path) -> tuple[nnx.Module, ml_collections.ConfigDict]:
    """The nnx model and config of what `load_scorer` reads, with fresh text features."""
    scorer, config = load_scorer(path)
    return nnx.merge(scorer.graphdef, scorer.state), config


def extras_of(model: nnx.Module, config) -> tuple[dict[str, np.ndarray], dict]:
    """The extras of a checkpoint of `model`'s CLIP that hold the whole model: params, config."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    extras = {"/".join(map(str, p)): np.asarray(v.get_value()) for p, v in flat
              if p[0] != CLIP_PREFIX}
    return extras, {CONFIG_KEY: config.to_dict()}


def save_model(model: nnx.Module, config, out, *, overwrite: bool = False) -> str:
    """Writes `model` (of `config.model`) as a model folder (`extras_of`); returns its path."""
    return save_checkpoint(out, model.clip, *extras_of(model, config), overwrite=overwrite)
