"""Config loading: FILE[:ARGS] typed arguments, --set overrides, locking, sweeps, and their errors."""
import pytest

from mmpiqa_jax import config as config_lib

REQUIRED = ("num_steps", "batch_size", "seed", "log_every", "eval_every", "checkpoint_every",
            "mesh.data", "mesh.model", "model.name", "model.variant", "data.batch_sizes",
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
    assert config.mesh.data == -1


def test_arguments_are_typed():
    c = config_lib.load_config("configs/mpiqe.py:variant=ViT-B/16,depth=6,prompts=4")
    assert (c.model.variant, c.model.visual_prompt_depth, c.model.num_visual_prompts) == ("ViT-B/16", 6, 4)
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
    with pytest.raises(KeyError, match=r"unknown config key 'model.fusion_layer'"):
        config_lib.load_config("configs/mpiqe.py", ["model.fusion_layer=3"])
    with pytest.raises(KeyError, match=r"unknown config key 'modle.depth' \(no section 'modle'\)"):
        config_lib.load_config("configs/mpiqe.py", ["modle.depth=3"])
    with pytest.raises(ValueError, match=r"config key 'num_steps': expected int, got '1e3x'"):
        config_lib.load_config("configs/mpiqe.py", ["num_steps=1e3x"])
    with pytest.raises(ValueError, match=r"config key 'loss.dwa': expected a bool, got 'maybe'"):
        config_lib.load_config("configs/mpiqe.py", ["loss.dwa=maybe"])
    with pytest.raises(KeyError, match=r"config key 'model' is a section"):
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
