"""`mmpiqa convert`, `mmpiqa export` and `mmpiqa parity`, through the command-line entry point."""
import json

import numpy as np
import pytest
from hf_configs import Tower, hf_clip_config
from safetensors.numpy import load_file
from safetensors.numpy import save_file as save_file_np

# The PyTorch references: skipped where torch is not installed (the newest-Python CI env).
open_clip = pytest.importorskip("open_clip")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from mmpiqa_jax.checkpoints import load_checkpoint, save_checkpoint  # noqa: E402
from mmpiqa_jax.cli.main import main  # noqa: E402

TEXTS = ["a photo of a dog.", "a noisy photo, which is of poor quality"]
transformers.utils.logging.disable_progress_bar()


def features(model, pixels, token_ids):
    with torch.no_grad():
        image = model.get_image_features(pixel_values=torch.from_numpy(pixels).permute(0, 3, 1, 2))
        text = model.get_text_features(input_ids=torch.from_numpy(token_ids).long())
    return [getattr(f, "pooler_output", f).numpy() for f in (image, text)]


def relative_difference(ours, reference):
    return float((np.abs(ours - reference).max(-1) / np.linalg.norm(reference, axis=-1)).max())


@pytest.fixture(scope="module")
def hf_source(tmp_path_factory):
    """A tiny random transformers CLIPModel (heads not width // 64), all weights perturbed."""
    config = hf_clip_config(Tower(64, 256, 2, 8), Tower(96, 384, 2, 3), image_size=48,
                            patch_size=16, projection_dim=32)
    torch.manual_seed(0)
    model = transformers.CLIPModel(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.02 * torch.randn_like(param))
    folder = tmp_path_factory.mktemp("hf_source")
    model.save_pretrained(folder)
    return model, folder


def test_convert_then_export_gives_the_source_features(hf_source, tmp_path, capsys):
    source, folder = hf_source
    assert main(["convert", str(folder), "--out", str(tmp_path / "ckpt")]) == 0
    printed = capsys.readouterr().out
    n_params = sum(p.numel() for p in source.parameters())
    assert "format: huggingface" in printed and "variant: custom" in printed
    assert "vision_heads=3" in printed and f"parameters: {n_params:,}" in printed
    assert (tmp_path / "ckpt" / "config.json").exists() and (tmp_path / "ckpt" / "params").is_dir()

    assert main(["export", str(tmp_path / "ckpt"), "--to", "hf",
                 "--out", str(tmp_path / "hf")]) == 0
    exported = transformers.CLIPModel.from_pretrained(tmp_path / "hf").eval()
    pixels = np.random.default_rng(0).standard_normal((2, 48, 48, 3), dtype=np.float32)
    token_ids = open_clip.tokenize(TEXTS).numpy()
    for ours, ref in zip(features(exported, pixels, token_ids),
                         features(source, pixels, token_ids)):
        assert relative_difference(ours, ref) <= 1e-4


def test_export_carries_the_extras(hf_source, tmp_path):
    _, folder = hf_source
    model = load_checkpoint(folder).clip
    extras = {"prompts/visual": np.linspace(-1, 1, 2 * 4 * 96, dtype=np.float32).reshape(2, 4, 96),
              "quality_head/kernel": np.eye(5, dtype=np.float32)}
    save_checkpoint(tmp_path / "ckpt", model, extras, {"visual_prompt_depth": 2})
    assert main(["export", str(tmp_path / "ckpt"), "--to", "hf",
                 "--out", str(tmp_path / "hf")]) == 0
    stored = load_file(tmp_path / "hf" / "mmpiqa_extra.safetensors")
    assert stored.keys() == extras.keys()
    assert all(np.array_equal(stored[k], extras[k]) for k in extras)
    meta = json.loads((tmp_path / "hf" / "mmpiqa_config.json").read_text())
    assert meta["extra_config"] == {"visual_prompt_depth": 2}
    # And back in: convert the exported folder, the extras come along.
    assert main(["convert", str(tmp_path / "hf"), "--out", str(tmp_path / "again")]) == 0
    again = load_checkpoint(tmp_path / "again")
    assert all(np.array_equal(again.extra_params[k], extras[k]) for k in extras)
    assert again.extra_config == {"visual_prompt_depth": 2}


def test_convert_reports_a_bad_file(tmp_path, capsys):
    bad = tmp_path / "garbage.bin"
    bad.write_bytes(b"\x00\x01garbage" * 50)
    assert main(["convert", str(bad), "--out", str(tmp_path / "out")]) == 1
    printed = capsys.readouterr().err
    assert str(bad) in printed and "unknown checkpoint format" in printed
    assert not (tmp_path / "out").exists()


def test_convert_open_clip_needs_its_arch(tmp_path, capsys):
    """A bare open_clip state dict: refused without --arch, read with it, checked against it."""
    model_cfg = {"embed_dim": 32, "vision_cfg": {"layers": 2, "width": 64, "head_width": 16,
                                                 "patch_size": 8, "image_size": 32},
                 "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 48, "heads": 4,
                              "layers": 2}}
    torch.manual_seed(0)
    source = open_clip.CLIP(**model_cfg).eval()  # exact GELU: quick_gelu is off
    weights = tmp_path / "open_clip_model.safetensors"
    save_file_np({k: v.numpy() for k, v in source.state_dict().items()}, weights)
    assert main(["convert", str(weights), "--out", str(tmp_path / "no_arch")]) == 1
    printed = capsys.readouterr().err
    assert str(weights) in printed and "--arch" in printed and "ViT-B-32-quickgelu" in printed
    assert not (tmp_path / "no_arch").exists()
    # The architecture must fit the file: ViT-B-32's does not.
    assert main(["convert", str(weights), "--arch", "ViT-B-32",
                 "--out", str(tmp_path / "b32")]) == 1
    printed = capsys.readouterr().err  # 12 layers per tower there, 2 here
    assert str(weights) in printed and "expected architecture" in printed
    assert "missing keys" in printed and "transformer.resblocks.11.ln_1.weight" in printed
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(model_cfg))
    assert main(["convert", str(weights), "--arch", str(arch), "--out", str(tmp_path / "ok")]) == 0
    printed = capsys.readouterr().out
    assert "format: open_clip" in printed and "activation=gelu" in printed
    assert "vision_heads=4" in printed and "vision_mlp_width=256" in printed
    converted = load_checkpoint(tmp_path / "ok").clip
    pixels = np.random.default_rng(1).standard_normal((2, 32, 32, 3), dtype=np.float32)
    with torch.no_grad():
        reference = source.encode_image(torch.from_numpy(pixels).permute(0, 3, 1, 2)).numpy()
    assert relative_difference(np.asarray(converted.encode_image(pixels)), reference) <= 1e-4


def test_parity_command_passes_and_prints_the_differences(capsys):
    assert main(["parity", "--batch", "2"]) == 0
    printed = capsys.readouterr().out
    assert "image features (2, 64)" in printed and "text features (2, 64)" in printed
    assert "PASS" in printed
