"""No silent random backbone: training a non-tiny CLIP needs `model.clip_checkpoint` (or
`random`)."""
import jax
import pytest
from flax import nnx

from mmpiqa_jax import config as config_lib
from mmpiqa_jax.checkpoints import pretrained
from mmpiqa_jax.models import iqa
from mmpiqa_jax.train import trainer
from mmpiqa_jax.train.task import IQATask

# What the error must say: the key, how to get weights, how to ask for random on purpose.
MESSAGE = (r"model\.clip_checkpoint.*'ViT-B/32'(?s:.*)mmpiqa convert"
           r"(?s:.*)model\.clip_checkpoint=random")


def b32_config(*overrides):
    return config_lib.load_config("configs/mpiqe.py:variant=ViT-B/32", list(overrides))


class NoBatches:
    """A train iterator that fails the test if a batch is ever asked for."""

    def __next__(self):
        raise AssertionError("a batch was read before the clip_checkpoint check")

    def __iter__(self):
        return self

    def get_state(self):
        return {}

    def set_state(self, state):
        del state


def test_empty_checkpoint_with_b32_raises_naming_the_key_convert_and_random():
    config = b32_config()
    assert config.model.clip_checkpoint == ""
    with pytest.raises(ValueError, match=MESSAGE):
        pretrained.clip_weights_path(config.model)
    with pytest.raises(ValueError, match=MESSAGE):  # before anything is built
        pretrained.load_pretrained_clip(config.model)
    # Shapes only (IQATask, `mmpiqa summary`, restoring a trained run) need no weights.
    abstract = nnx.eval_shape(lambda: iqa.build_model(config.model, nnx.Rngs(0)))
    assert abstract.clip.config.vision_width == 768


def test_training_b32_without_checkpoint_stops_before_any_batch_or_step(tmp_path):
    config = b32_config("num_steps=1")
    task = IQATask(config)  # builds (restores and evaluation build the task the same way)
    with pytest.raises(ValueError, match=MESSAGE):
        task.load_pretrained(jax.random.key(0), None)
    compiled = []
    task.train_step = lambda *a: compiled.append(a)  # never traced: the check comes first
    with pytest.raises(ValueError, match=MESSAGE):
        trainer.train(task, config, tmp_path, train_iter=NoBatches())
    assert not compiled
    assert not (tmp_path / trainer.CONFIG_NAME).exists()  # nothing of a run written
    # `random` asks for the random initialisation explicitly: load_pretrained has none to give.
    with config.unlocked():
        config.model.clip_checkpoint = "random"
    assert task.load_pretrained(jax.random.key(0), None) is None


def test_random_checkpoint_with_b32_builds():
    config = b32_config("model.clip_checkpoint=random")
    assert pretrained.clip_weights_path(config.model) is None
    assert pretrained.load_pretrained_clip(config.model) is None
    model = nnx.eval_shape(lambda: iqa.build_model(config.model, nnx.Rngs(0)))
    assert model.clip.config.vision_width == 768
    assert model.clip.config.vision_layers == iqa.get_variant("ViT-B/32").vision_layers


def test_tiny_with_empty_checkpoint_builds():
    config = config_lib.load_config("configs/tiny.py")
    assert config.model.variant == "tiny" and config.model.clip_checkpoint == ""
    assert pretrained.clip_weights_path(config.model) is None
    clip = pretrained.load_pretrained_clip(config.model)  # weights asked for: random, allowed
    assert clip is None
    model = iqa.build_model(config.model, nnx.Rngs(0), clip=clip)
    assert model.clip.config.vision_layers == iqa.get_variant("tiny").vision_layers
