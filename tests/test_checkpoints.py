"""Checkpoints in and out, against the references: transformers' torch CLIPModel and open_clip.

Every reference model is seeded random with all weights perturbed (LayerNorms start at 1/0,
biases at 0: a mis-mapped bias or norm would otherwise go unseen).
"""
import dataclasses
import json
import os
import sys

import jax
import numpy as np
import pytest
from hf_configs import Tower, hf_clip_config
from safetensors.numpy import load_file, save_file

# The PyTorch references: skipped where torch is not installed (the newest-Python CI env).
open_clip = pytest.importorskip("open_clip")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from mmpiqa_jax import clip  # noqa: E402
from mmpiqa_jax.checkpoints import (CheckpointError, export_hf, load_checkpoint, load_clip,  # noqa: E402
                                    read_state_dict, save_checkpoint)
from mmpiqa_jax.checkpoints.hf import hf_to_openai, openai_to_hf  # noqa: E402
from mmpiqa_jax.checkpoints.load import read_clip_config  # noqa: E402
from mmpiqa_jax.checkpoints.open_clip_arch import (OPEN_CLIP_CONFIGS, config_from_open_clip,  # noqa: E402
                                                   resolve_arch)
from mmpiqa_jax.checkpoints.clip_conversion import (check_state_dict,  # noqa: E402
                                                   to_openai_state_dict)
from mmpiqa_jax.models.clip_model import VARIANTS  # noqa: E402

TOLERANCE = 1e-4  # max |diff| relative to the feature norm
TEXTS = ["a photo of a cat.",
         "a blurry photo of a street with motion blur, which is of bad quality", "x"]
# OpenAI's ids: EOT 49407 is the highest
TOKEN_IDS = open_clip.tokenize(TEXTS).numpy().astype(np.int32)

transformers.utils.logging.disable_progress_bar()


def relative_difference(ours, reference):
    ours, reference = np.asarray(ours), np.asarray(reference)
    assert ours.shape == reference.shape
    return float((np.abs(ours - reference).max(-1) / np.linalg.norm(reference, axis=-1)).max())


def perturb_(model, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.02 * torch.randn(param.shape, generator=generator))
    return model.eval()


def random_pixels(n, resolution, seed=0):
    return np.random.default_rng(seed).standard_normal((n, resolution, resolution, 3),
                                                       dtype=np.float32)


def hf_features(model, pixels, token_ids):
    with torch.no_grad():
        image = model.get_image_features(pixel_values=torch.from_numpy(pixels).permute(0, 3, 1, 2))
        text = model.get_text_features(input_ids=torch.from_numpy(token_ids).long())
    return tuple(getattr(f, "pooler_output", f).numpy() for f in (image, text))


def open_clip_features(model, pixels, token_ids):
    with torch.no_grad():
        image = model.encode_image(torch.from_numpy(pixels).permute(0, 3, 1, 2))
        text = model.encode_text(torch.from_numpy(token_ids).long())
    return image.numpy(), text.numpy()


def assert_same_features(model, reference_features, pixels, token_ids=TOKEN_IDS):
    image_ref, text_ref = reference_features
    assert relative_difference(model.encode_image(pixels), image_ref) <= TOLERANCE
    assert relative_difference(model.encode_text(token_ids), text_ref) <= TOLERANCE


def hf_tiny_config(**vision_overrides):
    """A tiny HF CLIP whose heads are not width // 64, so they must come from config.json."""
    return hf_clip_config(Tower(48, 192, 2, 4), Tower(64, 256, 3, 4), image_size=32, patch_size=8,
                          projection_dim=24, **vision_overrides)


@pytest.fixture(scope="module")
def hf_tiny():
    torch.manual_seed(0)
    return perturb_(transformers.CLIPModel(hf_tiny_config()), seed=1)


@pytest.fixture(scope="module")
def hf_tiny_folder(hf_tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf_tiny")
    hf_tiny.save_pretrained(folder)
    return folder


# open_clip's model config (as in open_clip/model_configs/*.json) of the "tiny" variant's shape.
OPEN_CLIP_TINY_CFG = {"embed_dim": 64, "quick_gelu": True,
                      "vision_cfg": {"layers": 2, "width": 128, "patch_size": 8, "image_size": 32},
                      "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128,
                                   "heads": 2, "layers": 2}}


def write_open_clip_config(folder, model_cfg):
    """`open_clip_config.json` as Hugging Face Hub open_clip repositories hold it."""
    path = folder / "open_clip_config.json"
    path.write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {}}))
    return path


@pytest.fixture(scope="module")
def open_clip_tiny():
    """open_clip's CLIP of the "tiny" variant shape (heads = width // 64, as OpenAI infers them)."""
    torch.manual_seed(0)
    return perturb_(open_clip.CLIP(**OPEN_CLIP_TINY_CFG), seed=2)


# --- Hugging Face folders -------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["safetensors", "bin", "sharded"])
def test_hf_folder_matches_transformers(hf_tiny, tmp_path, layout):
    if layout == "sharded":
        hf_tiny.save_pretrained(tmp_path, max_shard_size="2MB")
        assert (tmp_path / "model.safetensors.index.json").exists()
    elif layout == "bin":
        # transformers 5 writes safetensors only; older Hub folders hold this pickle instead.
        hf_tiny.config.save_pretrained(tmp_path)
        torch.save(hf_tiny.state_dict(), tmp_path / "pytorch_model.bin")
    else:
        hf_tiny.save_pretrained(tmp_path)
        assert (tmp_path / "model.safetensors").exists()
    state_dict, fmt = read_state_dict(tmp_path)
    assert (fmt == "huggingface"
            and "visual.transformer.resblocks.2.attn.in_proj_weight" in state_dict)
    model = clip.load(tmp_path)
    assert (model.config.vision_heads, model.config.text_heads,
            model.config.embed_dim) == (4, 4, 24)
    pixels = random_pixels(2, 32)
    assert_same_features(model, hf_features(hf_tiny, pixels, TOKEN_IDS), pixels)


def test_hf_key_table_in_torch_alone(hf_tiny):
    """The renames, independently of the Flax model: open_clip loads them and gives HF's
    features."""
    hf_state = {k: v.numpy() for k, v in hf_tiny.state_dict().items()}
    openai_state, _ = hf_to_openai(hf_state, source="<test>")
    reference = open_clip.CLIP(
        embed_dim=24, quick_gelu=True,
        vision_cfg=dict(layers=3, width=64, head_width=16, patch_size=8, image_size=32),
        text_cfg=dict(context_length=77, vocab_size=49408, width=48, heads=4, layers=2))
    reference.load_state_dict({k: torch.from_numpy(np.asarray(v, order="C"))
                               for k, v in openai_state.items()})
    pixels = random_pixels(2, 32)
    for ours, ref in zip(open_clip_features(reference.eval(), pixels, TOKEN_IDS),
                         hf_features(hf_tiny, pixels, TOKEN_IDS)):
        assert relative_difference(ours, ref) <= TOLERANCE
    back = openai_to_hf(openai_state)
    assert back.keys() == hf_state.keys()
    assert all(np.array_equal(back[k], hf_state[k]) for k in back)


# --- OpenAI and open_clip files -------------------------------------------------------------


def _write_openai_pt(model, path):
    state = dict(model.state_dict())
    # What OpenAI's files carry besides the parameters.
    state.update(input_resolution=torch.tensor(32), context_length=torch.tensor(77),
                 vocab_size=torch.tensor(49408))
    torch.save(state, path)


def _write_torchscript(model, path):
    torch.jit.save(torch.jit.script(model), path)


def _write_safetensors(model, path):
    save_file({k: v.numpy() for k, v in model.state_dict().items()}, path)


def _write_ddp_checkpoint(model, path):
    torch.save({"epoch": 3, "name": "run",
                "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)


# torch.jit is deprecated, OpenAI's files are not
@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("write, name, fmt", [
    (_write_openai_pt, "ViT-tiny.pt", "openai"),
    (_write_torchscript, "ViT-tiny-jit.pt", "openai-torchscript"),
    (_write_safetensors, "open_clip_model.safetensors", "open_clip"),
    (_write_ddp_checkpoint, "epoch_3.pt", "open_clip"),
])
def test_openai_and_open_clip_files_match_open_clip(open_clip_tiny, tmp_path, write, name, fmt):
    path = tmp_path / name
    write(open_clip_tiny, path)
    state_dict, found = read_state_dict(path)
    assert found == fmt
    assert not {"input_resolution", "context_length", "vocab_size", "attn_mask"} & state_dict.keys()
    if fmt == "open_clip":  # heads and activation are not in the file: asked for, not guessed
        with pytest.raises(CheckpointError, match=r"open_clip state dict.*--arch") as e:
            load_clip(path)
        assert str(path) in str(e.value) and "ViT-B-32-quickgelu" in str(e.value)
        write_open_clip_config(tmp_path, OPEN_CLIP_TINY_CFG)
    model = load_clip(path)
    assert model.config == VARIANTS["tiny"]
    pixels = random_pixels(2, 32)
    assert_same_features(model, open_clip_features(open_clip_tiny, pixels, TOKEN_IDS), pixels)


def test_bfloat16_safetensors_read_as_float32(open_clip_tiny, tmp_path):
    from safetensors.torch import save_file as save_torch_file

    path = tmp_path / "bf16.safetensors"
    state = {k: v.to(torch.bfloat16).contiguous() for k, v in open_clip_tiny.state_dict().items()}
    save_torch_file(state, path)
    state_dict, fmt = read_state_dict(path)
    assert fmt == "open_clip"
    for key in ("visual.proj", "logit_scale"):
        assert state_dict[key].dtype == np.float32
        assert np.array_equal(state_dict[key], state[key].float().numpy())


# --- Full size ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_vit_b32(tmp_path_factory):
    """A random transformers CLIPModel of OpenAI's ViT-B/32 shape, saved as a folder."""
    config = hf_clip_config(Tower(512, 2048, 12, 8), Tower(768, 3072, 12, 12), image_size=224,
                            patch_size=32, projection_dim=512)
    torch.manual_seed(0)
    model = perturb_(transformers.CLIPModel(config), seed=3)
    folder = tmp_path_factory.mktemp("hf_vit_b32")
    model.save_pretrained(folder)
    return model, folder


@pytest.mark.slow
def test_vit_b32_matches_transformers_and_open_clip(hf_vit_b32):
    reference, folder = hf_vit_b32
    model = clip.load(folder)
    assert model.config == VARIANTS["ViT-B/32"]
    pixels = random_pixels(2, 224)
    token_ids = TOKEN_IDS[:2]
    assert_same_features(model, hf_features(reference, pixels, token_ids), pixels, token_ids)
    # open_clip's ViT-B-32 (QuickGELU) given the same weights in OpenAI's layout.
    open_clip_model = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None)
    state_dict, _ = read_state_dict(folder)
    open_clip_model.load_state_dict({k: torch.from_numpy(np.asarray(v, order="C"))
                                     for k, v in state_dict.items()})
    assert_same_features(model, open_clip_features(open_clip_model.eval(), pixels, token_ids),
                         pixels, token_ids)


# --- The project checkpoint and export ------------------------------------------------------


def test_project_checkpoint_keeps_params_and_extras(hf_tiny_folder, tmp_path):
    model = load_clip(hf_tiny_folder)
    extras = {"prompts/visual": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
              "head.bias": np.array([0.5, -1.0], np.float32)}
    save_checkpoint(tmp_path / "ckpt", model, extras, {"num_visual_prompts": 3})
    restored, restored_extras, extra_config = load_checkpoint(tmp_path / "ckpt")
    assert restored.config == model.config
    before, after = to_openai_state_dict(model), to_openai_state_dict(restored)
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert restored_extras.keys() == extras.keys()
    assert all(np.array_equal(restored_extras[k], extras[k]) for k in extras)
    assert extra_config == {"num_visual_prompts": 3}
    assert read_state_dict(tmp_path / "ckpt")[1] == "mmpiqa"
    assert load_clip(tmp_path / "ckpt", dtype="bfloat16").config.dtype == "bfloat16"
    with pytest.raises(CheckpointError, match="already holds a checkpoint"):
        save_checkpoint(tmp_path / "ckpt", model)
    # Training loads it under a mesh (`jax.set_mesh`), where restore targets must stay concrete.
    with jax.set_mesh(jax.make_mesh((1,), ("data",))):
        under_mesh = load_clip(tmp_path / "ckpt")
    assert np.array_equal(to_openai_state_dict(under_mesh)["text_projection"],
                          before["text_projection"])


def test_export_hf_loads_in_transformers(hf_tiny, hf_tiny_folder, tmp_path):
    extras = {"prompts/text": np.ones((4, 48), np.float32)}
    export_hf(load_clip(hf_tiny_folder), tmp_path, extra_params=extras, extra_config={"depth": 2})
    exported = transformers.CLIPModel.from_pretrained(tmp_path).eval()
    pixels = random_pixels(2, 32)
    for ours, ref in zip(hf_features(exported, pixels, TOKEN_IDS),
                         hf_features(hf_tiny, pixels, TOKEN_IDS)):
        assert relative_difference(ours, ref) <= TOLERANCE
    assert np.array_equal(load_file(tmp_path / "mmpiqa_extra.safetensors")["prompts/text"],
                          extras["prompts/text"])
    assert json.loads((tmp_path / "mmpiqa_config.json").read_text())["extra_config"] == {"depth": 2}
    _, back, config = load_checkpoint(tmp_path)
    assert np.array_equal(back["prompts/text"], extras["prompts/text"]) and config == {"depth": 2}


# --- Errors: each names the file and the tensor at fault ------------------------------------


def test_error_unknown_format(tmp_path):
    path = tmp_path / "weights.pt"
    path.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="unknown checkpoint format") as e:
        read_state_dict(path)
    assert str(path) in str(e.value) and "accepted" in str(e.value)


def test_error_not_clip_state_dict(tmp_path):
    path = tmp_path / "resnet.safetensors"
    save_file({"fc.weight": np.zeros((2, 2), np.float32)}, path)
    with pytest.raises(CheckpointError, match="not CLIP's") as e:
        read_state_dict(path)
    assert str(path) in str(e.value) and "fc.weight" in str(e.value)


def test_error_missing_path_and_folder_without_config(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        read_state_dict(tmp_path / "nope.pt")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="without config.json") as e:
        read_state_dict(tmp_path)
    assert str(tmp_path) in str(e.value) and "model.safetensors" in str(e.value)


def _copy_hf_folder(src, dst, edit_weights=None, edit_config=None):
    os.makedirs(dst)
    weights = load_file(src / "model.safetensors")
    config = json.loads((src / "config.json").read_text())
    if edit_weights:
        edit_weights(weights)
    if edit_config:
        edit_config(config)
    save_file(weights, dst / "model.safetensors", metadata={"format": "pt"})
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def test_error_missing_and_unexpected_keys(hf_tiny_folder, tmp_path):
    def edit(weights):
        del weights["text_model.final_layer_norm.bias"]
        del weights["vision_model.encoder.layers.1.self_attn.k_proj.weight"]
        weights["text_model.extra_head.weight"] = np.zeros(3, np.float32)

    folder = _copy_hf_folder(hf_tiny_folder, tmp_path / "broken", edit_weights=edit)
    with pytest.raises(CheckpointError) as e:
        load_clip(folder)
    message = str(e.value)
    assert str(folder) in message
    assert "missing keys (2)" in message and "text_model.final_layer_norm.bias" in message
    assert "vision_model.encoder.layers.1.self_attn.k_proj.weight" in message
    assert "unexpected keys (1): text_model.extra_head.weight" in message


def test_error_open_clip_unexpected_key(open_clip_tiny, tmp_path):
    path = tmp_path / "model.safetensors"
    state = {k: v.numpy() for k, v in open_clip_tiny.state_dict().items()}
    state["visual.head.weight"] = np.zeros(4, np.float32)
    save_file(state, path)
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): visual.head.weight") as e:
        load_clip(path)
    assert str(path) in str(e.value)


def test_error_shape_mismatch(open_clip_tiny, tmp_path):
    path = tmp_path / "model.safetensors"
    state = {k: v.numpy() for k, v in open_clip_tiny.state_dict().items()}
    state["visual.transformer.resblocks.1.mlp.c_fc.weight"] = np.zeros((256, 128), np.float32)
    save_file(state, path)
    with pytest.raises(CheckpointError) as e:
        load_clip(path)
    message = str(e.value)
    assert str(path) in message and "visual.transformer.resblocks.1.mlp.c_fc.weight" in message
    assert "(256, 128)" in message and "expected (512, 128)" in message


def test_error_hf_config_disagrees_with_weights(hf_tiny_folder, tmp_path):
    def edit(config):
        config["projection_dim"] = 32

    folder = _copy_hf_folder(hf_tiny_folder, tmp_path / "bad_config", edit_config=edit)
    with pytest.raises(CheckpointError) as e:
        load_clip(folder)
    message = str(e.value)
    assert str(folder) in message and "visual_projection.weight" in message
    assert "(64, 24)" in message and "expected (64, 32)" in message


def test_error_hf_activation_not_implemented(hf_tiny_folder, tmp_path):
    def edit(config):
        config["vision_config"]["hidden_act"] = "gelu_new"  # the tanh approximation

    folder = _copy_hf_folder(hf_tiny_folder, tmp_path / "gelu_new", edit_config=edit)
    with pytest.raises(CheckpointError, match="vision_config.hidden_act is 'gelu_new'") as e:
        read_state_dict(folder)
    assert str(folder / "config.json") in str(e.value)

    def mixed(config):
        config["vision_config"]["hidden_act"] = "gelu"  # text_config keeps quick_gelu

    folder = _copy_hf_folder(hf_tiny_folder, tmp_path / "mixed", edit_config=mixed)
    with pytest.raises(CheckpointError, match="hidden_act differ") as e:
        read_state_dict(folder)
    assert str(folder / "config.json") in str(e.value)


def _truncate(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:keep(len(data))])


def test_error_truncated_safetensors(open_clip_tiny, tmp_path):
    in_header, in_data = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    for path in (in_header, in_data):
        _write_safetensors(open_clip_tiny, path)
    _truncate(in_header, lambda n: 100)
    _truncate(in_data, lambda n: n // 2)
    for path in (in_header, in_data):
        with pytest.raises(CheckpointError, match="truncated") as e:
            read_state_dict(path)
        assert str(path) in str(e.value)


def test_error_config_json_named(tmp_path):
    config = tmp_path / "config.json"
    for text, match in (("{", "config.json: not valid JSON"),
                        ("[1, 2]", "config.json: holds a JSON list, expected an object")):
        config.write_text(text)
        with pytest.raises(ValueError, match=match):
            load_clip(tmp_path)
        with pytest.raises(ValueError, match=match):
            resolve_arch(str(config))


@pytest.mark.parametrize("zipped", [True, False])
def test_error_truncated_torch_file(tmp_path, zipped):
    path = tmp_path / "model.pt"
    torch.save({"visual.conv1.weight": torch.zeros(64, 3, 8, 8)}, path,
               _use_new_zipfile_serialization=zipped)
    _truncate(path, lambda n: n // 2)
    with pytest.raises(CheckpointError, match="truncated or corrupt") as e:
        read_state_dict(path)
    assert str(path) in str(e.value)


def test_error_torch_missing(open_clip_tiny, tmp_path, monkeypatch):
    path = tmp_path / "ViT-tiny.pt"
    _write_openai_pt(open_clip_tiny, path)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(CheckpointError, match="pip install torch") as e:
        read_state_dict(path)
    assert str(path) in str(e.value)


def test_error_project_checkpoint_config_disagrees(hf_tiny_folder, tmp_path):
    folder = save_checkpoint(tmp_path / "ckpt", load_clip(hf_tiny_folder))
    config_path = os.path.join(folder, "config.json")
    with open(config_path) as f:
        meta = json.load(f)
    for key, value, match in (
            ("clip", dict(meta["clip"], vision_layers=2),  # the file's blocks: 3 stacked
             r"tensor clip/visual/transformer/resblocks/\S+ has shape \(3, .*expected \(2, "),
            ("extra_params", {"ghost": {"shape": [2], "dtype": "float32"}},
             r"do not match config.json; missing keys \(1\): extra/ghost")):
        with open(config_path, "w") as f:
            json.dump(dict(meta, **{key: value}), f)
        with pytest.raises(CheckpointError, match=match) as e:
            load_clip(folder)
        assert folder in str(e.value)
    meta["version"] = 1  # blocks stored one subtree each: read by no released code
    with open(config_path, "w") as f:
        json.dump(meta, f)
    with pytest.raises(CheckpointError, match="checkpoint version 1, this code reads version 2"):
        load_clip(folder)


# --- Any CLIP shape: the architecture read from the checkpoint -------------------------------


def _open_clip_model(model_cfg, seed):
    torch.manual_seed(seed)
    return perturb_(open_clip.CLIP(**model_cfg), seed=seed)


# A GELU open_clip model (LAION's and DataComp's activation); heads 16 wide, not 64.
OPEN_CLIP_GELU_CFG = {"embed_dim": 32,
                      "vision_cfg": {"layers": 2, "width": 64, "head_width": 16, "patch_size": 8,
                                     "image_size": 32},
                      "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 48,
                                   "heads": 4, "layers": 2}}
# ViT-g/14's ratios (open_clip/model_configs/ViT-g-14.json: head_width 88, mlp_ratio 4.3637,
# exact GELU) at tiny widths: vision 176 = 2 heads of 88, MLP int(176 * 4.3637) = 768.
OPEN_CLIP_G_SHAPED_CFG = {"embed_dim": 48,
                          "vision_cfg": {"layers": 2, "width": 176, "head_width": 88,
                                         "mlp_ratio": 4.3637, "patch_size": 14,
                                         "image_size": 28},
                          "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64,
                                       "heads": 4, "layers": 2}}


def test_gelu_open_clip_model_matches_open_clip(tmp_path):
    reference = _open_clip_model(OPEN_CLIP_GELU_CFG, seed=4)
    path = tmp_path / "open_clip_model.safetensors"
    _write_safetensors(reference, path)
    with pytest.raises(CheckpointError, match=r"--arch"):  # bare: never a guess
        load_clip(path)
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(OPEN_CLIP_GELU_CFG))
    model = load_clip(path, arch=str(arch))
    assert model.config.activation == "gelu" and model.config.vision_heads == 4
    pixels = random_pixels(2, 32)
    features = open_clip_features(reference, pixels, TOKEN_IDS)
    assert_same_features(model, features, pixels)
    # The activation matters: the same weights read as QuickGELU give other features (small
    # random weights keep the MLP inputs near 0, where the two differ least: 2.5e-3 here).
    quick = load_clip(path, arch=_json(tmp_path / "quick.json",
                                       {**OPEN_CLIP_GELU_CFG, "quick_gelu": True}))
    assert quick.config.activation == "quick_gelu"
    assert relative_difference(quick.encode_image(pixels), features[0]) > 10 * TOLERANCE
    # Beside the weights, as on the Hugging Face Hub: found without --arch; cheap to read.
    write_open_clip_config(tmp_path, OPEN_CLIP_GELU_CFG)
    assert load_clip(path).config == model.config == read_clip_config(path)


def _json(path, obj):
    path.write_text(json.dumps(obj))
    return str(path)


def test_vit_g_shaped_open_clip_model_matches_open_clip(tmp_path):
    reference = _open_clip_model(OPEN_CLIP_G_SHAPED_CFG, seed=5)
    assert reference.visual.transformer.resblocks[0].mlp.c_fc.out_features == 768
    path = tmp_path / "vit_g_tiny.pt"
    torch.save(reference.state_dict(), path)
    arch = _json(tmp_path / "arch.json", OPEN_CLIP_G_SHAPED_CFG)
    config = read_clip_config(path, arch=arch)  # memory-mapped: shapes, not values
    assert (config.vision_mlp_width, config.vision_heads, config.text_mlp_width) == (768, 2, 256)
    model = load_clip(path, arch=arch)
    assert model.config == config and model.config.activation == "gelu"
    pixels = random_pixels(2, 28)
    assert_same_features(model, open_clip_features(reference, pixels, TOKEN_IDS), pixels)


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_hf_folder_with_non_4x_mlp_matches_transformers(tmp_path, act):
    config = hf_clip_config(Tower(64, 136, 2, 4), Tower(96, 200, 2, 3), image_size=32,
                            patch_size=8, projection_dim=32, act=act)
    torch.manual_seed(6)
    reference = perturb_(transformers.CLIPModel(config), seed=6)
    reference.save_pretrained(tmp_path / "hf")
    model = load_clip(tmp_path / "hf")
    assert (model.config.vision_mlp_width, model.config.text_mlp_width) == (200, 136)
    assert model.config.activation == act and read_clip_config(tmp_path / "hf") == model.config
    pixels = random_pixels(2, 32)
    features = hf_features(reference, pixels, TOKEN_IDS)
    assert_same_features(model, features, pixels)
    # And out again: transformers reads the exported folder's MLP widths and activation.
    export_hf(model, tmp_path / "out")
    exported = transformers.CLIPModel.from_pretrained(tmp_path / "out").eval()
    assert exported.config.vision_config.intermediate_size == 200
    assert exported.config.text_config.hidden_act == act
    for ours, ref in zip(hf_features(exported, pixels, TOKEN_IDS), features):
        assert relative_difference(ours, ref) <= TOLERANCE


def test_open_clip_arch_table_is_open_clips_own():
    """Every name of the table against the installed open_clip's model_configs/*.json, and the
    architecture it resolves to against open_clip's own model (built on the meta device)."""
    for name, table_cfg in OPEN_CLIP_CONFIGS.items():
        assert table_cfg == open_clip.get_model_config(name), name
        config = resolve_arch(name)
        with torch.device("meta"):  # shapes without memory
            reference = open_clip.model.CLIP(**open_clip.get_model_config(name))
        shapes = {k: v for k, v in reference.state_dict().items() if k != "attn_mask"}
        check_state_dict(shapes, config, source=name)
        blocks = reference.visual.transformer.resblocks
        assert config.vision_heads == blocks[0].attn.num_heads, name
        assert config.text_heads == reference.transformer.resblocks[0].attn.num_heads, name
        quick = isinstance(blocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
        assert config.activation == ("quick_gelu" if quick else "gelu"), name
    assert resolve_arch("ViT-g-14").vision_mlp_width == 6144
    assert resolve_arch("ViT-bigG-14").vision_mlp_width == 8192
    with pytest.raises(CheckpointError, match="ViT-B-33.*ViT-B-32"):
        resolve_arch("ViT-B-33")
    with pytest.raises(CheckpointError, match="attentional_pool"):
        config_from_open_clip({**OPEN_CLIP_GELU_CFG, "vision_cfg": {
            **OPEN_CLIP_GELU_CFG["vision_cfg"], "attentional_pool": True}}, source="x.json")


def test_training_takes_the_architecture_from_the_checkpoint(tmp_path):
    """`model.variant=checkpoint`: an architecture outside VARIANTS builds and loads."""
    from flax import nnx

    from mmpiqa_jax import config as config_lib
    from mmpiqa_jax.checkpoints import pretrained
    from mmpiqa_jax.models import iqa

    reference = _open_clip_model(OPEN_CLIP_G_SHAPED_CFG, seed=7)
    torch.save(reference.state_dict(), tmp_path / "w.pt")
    write_open_clip_config(tmp_path, OPEN_CLIP_G_SHAPED_CFG)
    config = config_lib.load_config("configs/tiny.py:model=liqe,ctx=0", [
        "model.variant=checkpoint", f"model.clip_checkpoint={tmp_path / 'w.pt'}"])
    expected = read_clip_config(tmp_path / "w.pt")
    assert expected not in [dataclasses.replace(v, dtype=expected.dtype) for v in VARIANTS.values()]
    assert pretrained.clip_config(config.model) == expected
    abstract = nnx.eval_shape(lambda: iqa.build_model(
        config.model, nnx.Rngs(0), clip=pretrained.clip_config(config.model)))
    assert abstract.clip.config == expected
    clip_model = pretrained.load_pretrained_clip(config.model)
    assert clip_model.config == expected
    with config.unlocked():
        config.model.variant = "ViT-B/32"  # a named variant must match what is loaded
    with pytest.raises(ValueError, match="not model.variant 'ViT-B/32'"):
        pretrained.load_pretrained_clip(config.model)
    with config.unlocked():
        config.model.variant, config.model.clip_checkpoint = "checkpoint", "random"
    with pytest.raises(ValueError, match="model.variant='checkpoint'.*model.clip_checkpoint"):
        pretrained.clip_config(config.model)
