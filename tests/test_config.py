"""Config loading: FILE[:ARGS] typed arguments, --set overrides, locking, sweeps, and their
errors."""
from pathlib import Path

import pytest

from mmpiqa_jax import config as config_lib
from mmpiqa_jax.errors import UserError

REQUIRED = ("num_steps", "batch_size", "seed", "log_every", "eval_every", "checkpoint_every",
            "keep_checkpoints", "async_checkpointing", "sharding.strategy", "model.name", "model.variant", "data.batch_sizes",
            "data.crops_per_image", "data.split", "data.split_seed", "optimizer.name",
            "optimizer.learning_rate", "optimizer.weight_decay", "optimizer.warmup_steps",
            "optimizer.schedule", "optimizer.clip_norm", "optimizer.accumulation_steps",
            "optimizer.param_groups", "loss.quality", "loss.distortion", "loss.scene", "loss.dwa")


@pytest.mark.parametrize("spec", ["configs/mpiqe.py", "configs/liqe.py", "configs/tiny.py",
                                  "configs/ablation_depth.py"])
def test_every_config_has_the_training_keys(spec):
    config = config_lib.load_config(spec)
    for key in REQUIRED:
        config_lib.get_key(config, key)


def test_arguments_are_typed():
    c = config_lib.load_config("configs/mpiqe.py:variant=ViT-B/16,depth=6,prompts=4")
    assert (c.model.variant, c.model.visual_prompt_depth,
            c.model.num_visual_prompts) == ("ViT-B/16", 6, 4)
    assert isinstance(c.model.visual_prompt_depth, int)
    assert config_lib.load_config("configs/liqe.py").optimizer.param_groups == "full"
    assert config_lib.load_config("configs/liqe.py:ctx=4").model.num_text_context == 4
    with pytest.raises(ValueError, match=r"unknown config argument 'dpth'"):
        config_lib.load_config("configs/mpiqe.py:dpth=3")
    with pytest.raises(ValueError, match=r"config argument 'depth': expected int, got 'deep'"):
        config_lib.load_config("configs/mpiqe.py:depth=deep")
    with pytest.raises(FileNotFoundError, match="configs/nope.py"):
        config_lib.load_config("configs/nope.py:depth=1")


def test_overrides():
    c = config_lib.load_config("configs/mpiqe.py", [
        "model.fusion_layers=3", "optimizer.learning_rate=1", "loss.dwa=false",
        "optimizer.param_groups=full", "model.text_context_init=a bad photo of a"])
    assert c.model.fusion_layers == 3 and c.optimizer.learning_rate == 1.0
    assert isinstance(c.optimizer.learning_rate, float)
    assert c.loss.dwa is False and c.optimizer.param_groups == "full"
    assert c.model.text_context_init == "a bad photo of a"
    with pytest.raises(UserError, match=r"unknown config key 'model.fusion_layer'"):
        config_lib.load_config("configs/mpiqe.py", ["model.fusion_layer=3"])
    with pytest.raises(UserError, match=r"unknown config key 'modle.depth' \(no section 'modle'\)"):
        config_lib.load_config("configs/mpiqe.py", ["modle.depth=3"])
    with pytest.raises(ValueError, match=r"config key 'num_steps': expected int, got '1e3x'"):
        config_lib.load_config("configs/mpiqe.py", ["num_steps=1e3x"])
    with pytest.raises(ValueError, match=r"config key 'loss.dwa': expected a bool, got 'maybe'"):
        config_lib.load_config("configs/mpiqe.py", ["loss.dwa=maybe"])
    with pytest.raises(UserError, match=r"config key 'model' is a section"):
        config_lib.load_config("configs/mpiqe.py", ["model=3"])
    with pytest.raises(ValueError, match=r"override 'num_steps' is not of the form key=value"):
        config_lib.load_config("configs/mpiqe.py", ["num_steps"])


def test_config_is_locked():
    c = config_lib.load_config("configs/tiny.py")
    with pytest.raises(AttributeError, match="new_key"):
        c.new_key = 1
    with pytest.raises(AttributeError, match="fusion_depth"):
        c.model.fusion_depth = 1


def test_sweep_expands_the_depth_grid():
    runs = config_lib.expand_sweep(config_lib.load_config("configs/ablation_depth.py:prompts=4"))
    assert [name for name, _ in runs] == [f"visual_prompt_depth={d}" for d in (0, 3, 6, 9, 12)]
    assert [r.model.visual_prompt_depth for _, r in runs] == [0, 3, 6, 9, 12]
    assert all(r.model.num_visual_prompts == 4 and "sweep" not in r for _, r in runs)
    with pytest.raises(AttributeError):
        runs[0][1].extra = 1  # each run is locked too
    assert config_lib.expand_sweep(config_lib.load_config("configs/tiny.py"))[0][0] == "run"


# Every shipped config, with the arguments its docstring documents.
SHIPPED = {
    "mpiqe.py": ("", "variant=ViT-B/32,depth=12,prompts=8", "train=kadid10k,test=tid2013"),
    "liqe.py": ("", "ctx=4", "train=koniq10k,test=live_iqa+csiq+kadid10k+live_challenge+bid"),
    "tiny.py": ("", "model=liqe"),
    "demo.py": ("",),
    "ablation_depth.py": ("", "prompts=4"),
    "ten_splits.py": ("", "base=mpiqe,depth=6", "base=ablation_depth",
                      "base=liqe,split=liqe:/data/IQA_Database"),
}


def check_datasets(config) -> None:
    """Every dataset a config trains or tests on is one the registry builds, and `data.split`
    gives each training dataset a source."""
    from mmpiqa_jax.data import registry, split_spec
    trained = list(config.data.batch_sizes)
    for name in (*trained, *config.eval.datasets):
        registry.builder_class(name)  # raises "unknown dataset ..." naming it
    split_spec.parse(config.data.split, trained)


def test_every_shipped_config_is_listed():
    shipped = {p.name for p in (Path(__file__).parents[1] / "configs").glob("*.py")}
    assert shipped - {"common.py"} == set(SHIPPED)


@pytest.mark.parametrize("spec", [f"configs/{f}" + (f":{a}" if a else "")
                                  for f, args in SHIPPED.items() for a in args])
def test_shipped_configs_name_datasets_the_registry_knows(spec):
    check_datasets(config_lib.load_config(spec))


def test_the_dataset_check_catches_an_unknown_name():
    config = config_lib.load_config("configs/liqe.py")
    with config.unlocked():
        config.data.batch_sizes = {"live": 4, "csiq": 4}
    with pytest.raises(ValueError, match="unknown dataset 'live'"):
        check_datasets(config)


def test_train_and_test_arguments_choose_the_datasets():
    c = config_lib.load_config("configs/liqe.py:train=koniq10k+kadid10k,test=live_iqa+csiq")
    assert dict(c.data.batch_sizes) == {"koniq10k": 16, "kadid10k": 16} and c.batch_size == 32
    assert tuple(c.eval.datasets) == ("live_iqa", "csiq")
    assert len(config_lib.load_config("configs/mpiqe.py").data.batch_sizes) == 6
