"""The Flax CLIP against open_clip's torch CLIP (QuickGELU): features, conversion, prompt hooks."""
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmpiqa_jax import clip
from mmpiqa_jax.checkpoints.clip_conversion import (from_openai_state_dict, infer_config,
                                                    to_openai_state_dict)
from mmpiqa_jax.checkpoints.errors import CheckpointError
from mmpiqa_jax.models.clip_model import init_visual_prompts, trim_to_longest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

TINY = clip.get_variant("tiny")
TEXTS = ["a photo of a cat.", "a photo of a animal with blur artifacts, which is of good quality",
         "x"]


# Jitted entry points (eager JAX compiles op by op, which is slower for these tests).
@nnx.jit(static_argnames="return_tokens")
def _image(model, images, prompts=None, return_tokens=False):
    return model.encode_image(images, visual_prompts=prompts, return_tokens=return_tokens)


@nnx.jit
def _text(model, ids):
    return model.encode_text(ids)


@nnx.jit(static_argnames="return_tokens")
def _text_embeddings(model, embeddings, eot, deep=None, return_tokens=False):
    return model.encode_text_embeddings(embeddings, eot, deep_prompts=deep,
                                        return_tokens=return_tokens)


@nnx.jit
def _image_prompt_grad(model, images, prompts):
    return jax.grad(lambda p: model.encode_image(images, visual_prompts=p).sum())(prompts)


@nnx.jit
def _text_prompt_grads(model, embeddings, eot, context, deep):
    def total(c, d):
        return model.encode_text_embeddings(embeddings.at[:, 1:1 + c.shape[0]].set(c), eot,
                                            deep_prompts=d).sum()
    return jax.grad(total, argnums=(0, 1))(context, deep)


def _assert_close_to_norm(ours, ref, tol=1e-4):
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape
    scale = np.linalg.norm(ref, axis=-1, keepdims=True)
    assert np.max(np.abs(ours - ref) / scale) <= tol, np.max(np.abs(ours - ref) / scale)


def _images(config, n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, config.image_resolution,
                                                    config.image_resolution, 3)).astype(np.float32)


def _torch_image_features(model, images):
    with torch.no_grad():
        return model.encode_image(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()


def _torch_text_features(model, ids):
    with torch.no_grad():
        return model.encode_text(torch.from_numpy(ids).long()).numpy()


@pytest.fixture(scope="module")
def tiny(make_openclip):
    torch_model, state_dict = make_openclip(TINY, seed=0)
    return torch_model, state_dict, from_openai_state_dict(state_dict, source="tiny.pt")


@pytest.fixture(scope="module")
def tiny4(make_openclip):
    """A 4-layer tiny CLIP, for prompts that stop before the last layer."""
    config = dataclasses.replace(TINY, vision_layers=4, text_layers=4)
    torch_model, state_dict = make_openclip(config, seed=1)
    return torch_model, from_openai_state_dict(state_dict)


def test_variants_and_config_dict():
    b32 = clip.get_variant("ViT-B/32")
    assert (b32.vision_width, b32.vision_heads, b32.text_heads, b32.embed_dim) == (768, 12, 8, 512)
    assert clip.VARIANTS["ViT-L/14-336"].image_resolution == 336
    with pytest.raises(ValueError, match="ViT-B/33.*ViT-B/32"):
        clip.get_variant("ViT-B/33")
    assert clip.CLIPConfig.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(ValueError, match="vision_depth"):
        clip.CLIPConfig.from_dict({**TINY.to_dict(), "vision_depth": 3})
    with pytest.raises(ValueError, match="float16"):
        dataclasses.replace(TINY, dtype="float16")
    # MLPs 4x wide and QuickGELU unless stated; a config saved before these keys reads the same.
    assert (TINY.vision_mlp_width, TINY.text_mlp_width, TINY.activation) == (512, 512, "quick_gelu")
    old = {k: v for k, v in TINY.to_dict().items()
           if k not in ("activation", "vision_mlp_width", "text_mlp_width")}
    assert clip.CLIPConfig.from_dict(old) == TINY
    with pytest.raises(ValueError, match="activation 'relu'"):
        dataclasses.replace(TINY, activation="relu")


def test_tiny_matches_open_clip(tiny):
    torch_model, _, model = tiny
    images = _images(TINY, 3)
    _assert_close_to_norm(_image(model, jnp.asarray(images)),
                          _torch_image_features(torch_model, images))
    ids = clip.tokenize(TEXTS)
    _assert_close_to_norm(_text(model, jnp.asarray(ids)), _torch_text_features(torch_model, ids))


def test_clip_load_reads_an_open_clip_file(tiny, tmp_path):
    torch_model, _, model = tiny
    torch.save(torch_model.state_dict(), tmp_path / "tiny.pt")
    with pytest.raises(CheckpointError, match="--arch"):  # heads, activation: not in the file
        clip.load(tmp_path / "tiny.pt")
    arch = tmp_path / "tiny_open_clip.json"  # open_clip's model config of the tiny variant
    arch.write_text(json.dumps({
        "embed_dim": 64, "quick_gelu": True,
        "vision_cfg": {"layers": 2, "width": 128, "patch_size": 8, "image_size": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2,
                     "layers": 2}}))
    loaded = clip.load(tmp_path / "tiny.pt", arch=str(arch))
    assert isinstance(loaded, clip.CLIP) and loaded.config == TINY
    images = jnp.asarray(_images(TINY, 2))
    np.testing.assert_array_equal(_image(loaded, images), _image(model, images))


@pytest.fixture(scope="module")
def vit_b32(make_openclip):
    torch_model, state_dict = make_openclip(clip.get_variant("ViT-B/32"), seed=2)
    return torch_model, state_dict, from_openai_state_dict(state_dict, source="b32.pt")


@pytest.mark.slow
def test_vit_b32_matches_open_clip(vit_b32):
    torch_model, state_dict, model = vit_b32
    assert infer_config(state_dict, source="b32.pt") == clip.get_variant("ViT-B/32")
    images = _images(model.config, 2)
    # Eager: compiling the full-size model would cost more than it saves here.
    _assert_close_to_norm(model.encode_image(jnp.asarray(images)),
                          _torch_image_features(torch_model, images))
    ids = clip.tokenize(TEXTS)
    _assert_close_to_norm(model.encode_text(jnp.asarray(trim_to_longest(ids))),
                          _torch_text_features(torch_model, ids))


@pytest.mark.parametrize("name, open_clip_name", [("ViT-L/14", "ViT-L-14"),
                                                  ("ViT-L/14-336", "ViT-L-14-336")])
def test_infer_config_from_shapes_only(tiny, name, open_clip_name):
    assert infer_config(tiny[1], source="tiny.pt") == TINY
    with torch.device("meta"):  # shapes without memory
        reference = open_clip.model.CLIP(**open_clip.get_model_config(open_clip_name))
    shapes = {k: jax.ShapeDtypeStruct(tuple(v.shape), jnp.float32)
              for k, v in reference.state_dict().items()}
    assert infer_config(shapes, source=open_clip_name) == clip.get_variant(name)


def test_round_trip_and_every_parameter_converted(tiny):
    _, state_dict, model = tiny
    params = nnx.to_flat_state(nnx.state(model, nnx.Param))
    # Blocks are stored stacked: fewer tensors, the same numbers.
    assert sum(v.get_value().size for _, v in params) == sum(v.size for v in state_dict.values())
    stacked = dict(params)[("visual", "transformer", "resblocks", "attn", "in_proj", "kernel")]
    assert stacked.get_value().shape[0] == model.config.vision_layers
    assert all(isinstance(v.get_value(), jax.Array) and v.get_value().dtype == jnp.float32
               for _, v in params)
    back = to_openai_state_dict(model)
    assert back.keys() == state_dict.keys()
    for key, value in state_dict.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_non_parameter_entries_are_dropped_but_junk_is_not(tiny):
    state_dict = dict(tiny[1], attn_mask=np.zeros((77, 77)), input_resolution=np.array(32),
                      context_length=np.array(77), vocab_size=np.array(49408))
    from_openai_state_dict(state_dict, source="openai.pt")
    with pytest.raises(CheckpointError, match=r"openai\.pt.*unexpected.*visual\.junk"):
        from_openai_state_dict({**state_dict, "visual.junk": np.zeros(3)}, source="openai.pt")


def test_conversion_errors_name_source_and_key(tiny):
    state_dict = tiny[1]
    key = "transformer.resblocks.1.mlp.c_fc.weight"
    missing = {k: v for k, v in state_dict.items() if k != key}
    with pytest.raises(CheckpointError, match=rf"m\.pt.*missing.*{key}"):
        from_openai_state_dict(missing, source="m.pt")
    wrong = {**state_dict, key: state_dict[key].T}
    with pytest.raises(CheckpointError, match=rf"w\.pt.*{key}.*\(128, 512\).*\(512, 128\)"):
        from_openai_state_dict(wrong, source="w.pt")
    with pytest.raises(CheckpointError, match=r"r\.pt.*ResNet"):
        from_openai_state_dict({**state_dict, "visual.layer1.0.conv1.weight": np.zeros(1)},
                               source="r.pt")
    with pytest.raises(CheckpointError, match=r"e\.pt.*token_embedding\.weight"):
        from_openai_state_dict({"visual.conv1.weight": np.zeros((128, 3, 8, 8))}, source="e.pt")


def test_text_trimmed_to_longest_prompt_is_exact(tiny):
    model = tiny[2]
    ids = clip.tokenize(TEXTS)
    trimmed = trim_to_longest(ids)
    assert trimmed.shape == (3, 16)  # SOT + 14 tokens + EOT of the LIQE-style prompt
    _assert_close_to_norm(_text(model, jnp.asarray(trimmed)), _text(model, jnp.asarray(ids)),
                          tol=1e-5)


def _torch_vpt_deep(model, images, prompts):
    """VPT-deep written directly on open_clip's modules: the independent reference."""
    visual, prompts = model.visual, torch.from_numpy(np.array(prompts))
    with torch.no_grad():
        x = visual.conv1(torch.from_numpy(images).permute(0, 3, 1, 2)).flatten(2).transpose(1, 2)
        cls = visual.class_embedding.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], 1) + visual.positional_embedding
        n = x.shape[1]
        x = visual.ln_pre(torch.cat([x, prompts[0].expand(x.shape[0], -1, -1)], 1))
        for i, block in enumerate(visual.transformer.resblocks):
            if 0 < i < len(prompts):
                x = torch.cat([x[:, :n], prompts[i].expand(x.shape[0], -1, -1)], 1)
            x = block(x)
        return (visual.ln_post(x[:, 0]) @ visual.proj).numpy()


def test_visual_prompts_depth0_is_plain_and_deep_matches_reference(tiny4):
    torch_model, model = tiny4
    images_np = _images(model.config, 2)
    images = jnp.asarray(images_np)
    plain = _image(model, images)
    empty = jnp.zeros((0, 5, model.config.vision_width))
    np.testing.assert_array_equal(_image(model, images, empty), plain)
    for depth in (1, 2):  # prompts in the first layer only; replaced once, then travelling on
        prompts = init_visual_prompts(jax.random.key(depth), model.config, depth, 5)
        prompted = _image(model, images, prompts)
        assert np.max(np.abs(prompted - plain)) > 1e-3
        _assert_close_to_norm(prompted, _torch_vpt_deep(torch_model, images_np, prompts))


def test_visual_prompt_gradient_reaches_each_prompted_layer(tiny4):
    model = tiny4[1]
    images = jnp.asarray(_images(model.config, 2))
    prompts = init_visual_prompts(jax.random.key(0), model.config, 2, 3)
    grad = _image_prompt_grad(model, images, prompts)
    assert grad.shape == (2, 3, model.config.vision_width)
    assert all(np.abs(grad[i]).max() > 0 for i in range(2))


def test_visual_tokens_and_prompt_init(tiny):
    model, config = tiny[2], TINY
    prompts = init_visual_prompts(jax.random.key(0), config, 2, 4)
    bound = np.sqrt(6 / (3 * 8 * 8 + 128))
    assert prompts.dtype == jnp.float32 and np.abs(prompts).max() <= bound
    assert np.abs(prompts).max() > 0.9 * bound
    images = jnp.asarray(_images(config, 2))
    features, extra = _image(model, images, prompts, return_tokens=True)
    assert extra["tokens"].shape == (2, 1 + 16 + 4, 128)
    assert extra["projected_tokens"].shape == (2, 1 + 16 + 4, 64)
    np.testing.assert_allclose(extra["projected_tokens"][:, 0], features, rtol=1e-6)
    with pytest.raises(ValueError, match=r"\[B, 32, 32, 3\].*\(2, 3, 32, 32\)"):
        model.encode_image(jnp.zeros((2, 3, 32, 32)))
    with pytest.raises(ValueError, match="2 deep prompt layers given for a 2-layer"):
        model.encode_image(images, visual_prompts=jnp.zeros((3, 4, 128)))


def _torch_text_deep(model, ids, context, deep):
    """CoOp context + MaPLe deep text prompts on open_clip's modules."""
    ids, context, deep = map(torch.from_numpy, (ids, np.array(context), np.array(deep)))
    n = context.shape[0]
    with torch.no_grad():
        x = model.token_embedding(ids.long())
        x = torch.cat([x[:, :1], context.expand(len(ids), -1, -1), x[:, 1 + n:]], 1)
        x = x + model.positional_embedding[:ids.shape[1]]
        mask = model.attn_mask[:ids.shape[1], :ids.shape[1]]
        for i, block in enumerate(model.transformer.resblocks):
            if 1 <= i <= len(deep):
                x = torch.cat([x[:, :1], deep[i - 1].expand(len(ids), -1, -1), x[:, 1 + n:]], 1)
            x = block(x, attn_mask=mask)
        x = model.ln_final(x)
        return (x[torch.arange(len(ids)), ids.argmax(-1)] @ model.text_projection).numpy()


def test_text_embeddings_path_and_deep_text_prompts(tiny4):
    torch_model, model = tiny4
    # "X X X X" stands in for 4 learnable context vectors after the start token.
    ids = trim_to_longest(clip.tokenize(["X X X X animal.", "X X X X jpeg compression."]))
    eot = jnp.argmax(ids, axis=-1)
    words = model.token_embedding(jnp.asarray(ids))
    np.testing.assert_array_equal(_text_embeddings(model, words, eot),
                                  _text(model, jnp.asarray(ids)))

    width = model.config.text_width
    context = 0.02 * jax.random.normal(jax.random.key(0), (4, width))
    embeddings = words.at[:, 1:5].set(context)
    shallow = _text_embeddings(model, embeddings, eot)
    np.testing.assert_array_equal(
        _text_embeddings(model, embeddings, eot, jnp.zeros((0, 4, width))), shallow)
    deep = 0.02 * jax.random.normal(jax.random.key(1), (2, 4, width))
    prompted, extra = _text_embeddings(model, embeddings, eot, deep, return_tokens=True)
    assert extra["tokens"].shape == (2, ids.shape[1], width)
    assert np.max(np.abs(prompted - shallow)) > 1e-3
    _assert_close_to_norm(shallow, _torch_text_deep(torch_model, ids, context, deep[:0]))
    _assert_close_to_norm(prompted, _torch_text_deep(torch_model, ids, context, deep))

    grads = _text_prompt_grads(model, embeddings, eot, context, deep)
    assert np.abs(grads[0]).max() > 0 and all(np.abs(grads[1][i]).max() > 0 for i in range(2))
    with pytest.raises(ValueError, match="at most 3"):
        model.encode_text_embeddings(embeddings, eot, deep_prompts=jnp.zeros((4, 4, width)))


def test_bfloat16_compute_keeps_float32_parameters(tiny):
    _, state_dict, model = tiny
    bf16 = from_openai_state_dict(state_dict, dtype="bfloat16")
    assert bf16.config.dtype == "bfloat16"
    assert all(v.get_value().dtype == jnp.float32
               for _, v in nnx.to_flat_state(nnx.state(bf16, nnx.Param)))
    images, ids = jnp.asarray(_images(TINY, 2)), jnp.asarray(clip.tokenize(TEXTS))
    for ours, ref in ((_image(bf16, images), _image(model, images)),
                      (_text(bf16, ids), _text(model, ids))):
        assert ours.dtype == jnp.float32
        assert not np.array_equal(ours, ref)  # bf16 really computed
        _assert_close_to_norm(ours, ref, tol=0.05)
