"""The benchmark's PyTorch reference (`tools/torch_reference.py`: `mmpiqa_jax.pytorch`'s models on
open_clip's CLIP) computes what our models compute: same loss (to 1e-4), scores and gradient norm
on the same weights and batch, tiny config, for MP-IQE (VPT-deep, dual context banks with deep
context, fusion) and LIQE (495 prompts at 77 tokens and trimmed); the tower functions it runs on
open_clip's CLIP are open_clip's own encoders; and the check fails when the reference's weights
differ."""
import os
import sys

import jax
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
open_clip_tokenize = pytest.importorskip("open_clip").tokenize

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
import torch_reference as tr  # noqa: E402  pylint: disable=wrong-import-position

from mmpiqa_jax import config as config_lib  # noqa: E402
from mmpiqa_jax.checkpoints.torch_export import torch_export  # noqa: E402
from mmpiqa_jax.models import iqa  # noqa: E402
from mmpiqa_jax.models.clip_model import get_variant  # noqa: E402
from mmpiqa_jax.pytorch import model as torch_model  # noqa: E402

# The benchmark's baseline, not the package: checked in CI's every-tier run, and by whoever
# changes tools/torch_reference.py or the models it mirrors.
pytestmark = pytest.mark.integration

ROOT = os.path.join(os.path.dirname(__file__), "..")


def tiny(spec: str, overrides=()):
    config = config_lib.load_config(os.path.join(ROOT, "configs", f"tiny.py:{spec}"), overrides)
    model = iqa.build_model(config.model, nnx.Rngs(0))
    if config.model.name == "mpiqe":
        # The fusion head starts at zero (score 3 for every image): random, the quality loss bites.
        kernel = model.fusion.head.kernel
        kernel[...] = 0.5 * jax.random.normal(jax.random.key(1), kernel.shape)
    return config, model


@pytest.fixture(scope="module")
def batch():
    return tr.random_batch(np.random.default_rng(0), images=6, crops=2, resolution=32)


@pytest.fixture(scope="module")
def mpiqe():
    return tiny("model=mpiqe,depth=2,prompts=3",
                ["model.text_prompt_depth=2", "model.scene_activation=sigmoid"])


@pytest.fixture(scope="module")
def liqe():
    return tiny("model=liqe,ctx=0")


@pytest.mark.parametrize("name", ["mpiqe", "liqe"])
def test_reference_matches(name, request, batch):
    config, model = request.getfixturevalue(name)
    result = tr.compare(model, config.optimizer.param_groups, batch)
    assert tr.check(result) == []
    jax_loss, torch_loss = result["loss"]
    assert abs(jax_loss - torch_loss) < 1e-4
    np.testing.assert_allclose(*result["task_losses"], atol=1e-5)
    assert result["score_max_abs_diff"] < 1e-4
    np.testing.assert_allclose(*result["grad_norm"], rtol=1e-3)
    # The trainable sets agree: prompts + fusion for MP-IQE, all but logit_scale for LIQE.
    assert result["trainable"][0] == result["trainable"][1]
    total = sum(int(np.size(x)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    if name == "liqe":
        assert result["trainable"][0] == total - 1
    else:
        assert 0 < result["trainable"][0] < total // 10
    # Not trivially equal: every task contributes.
    assert min(result["task_losses"][0]) > 0.01


@pytest.mark.parametrize("name", ["mpiqe", "liqe"])
def test_first_timed_steps_agree(name, request, batch):
    """The benchmark's check on its timed steps: the first step of JAX's jitted train step and
    of the reference's report the same loss and gradient norm (both before the update)."""
    import jax.numpy as jnp

    from mmpiqa_jax.train import optimizer as optimizer_lib
    from mmpiqa_jax.train import param_groups as pg
    from mmpiqa_jax.train import step as step_lib

    config, model = request.getfixturevalue(name)
    mode = config.optimizer.param_groups
    ref = tr.reference(*torch_export(model), mode=mode)
    opt = tr.make_optimizer(ref, config.optimizer.to_dict())
    torch_loss, torch_norm = tr.make_train_step(ref, opt, clip_norm=1.0)(tr.torch_batch(batch))

    groups = pg.resolve(mode)
    graphdef, trainable, frozen = pg.split_trainable(model, groups)
    tx = optimizer_lib.make_optimizer(config.optimizer, groups, trainable, num_steps=10)
    step = jax.jit(step_lib.make_train_step(
        graphdef, tx, use_text_cache=not iqa.text_path_is_trainable(model, trainable)))
    _, _, metrics = step(trainable, frozen, tx.init(trainable),
                         {k: jnp.asarray(v) for k, v in batch.items()},
                         jnp.asarray(tr.LOSS_WEIGHTS))
    result = {"loss": (float(metrics["loss"]), float(torch_loss)),
              "grad_norm": (float(metrics["grad_norm"]), float(torch_norm)),
              "trainable": (1, 1)}
    assert tr.check(result, grad_rtol=1e-3) == [], result
    # And the check would notice a different loss.
    assert tr.check({**result, "loss": (result["loss"][0] + 1e-3, result["loss"][1])})


def test_tower_functions_are_open_clips_encoders():
    """On open_clip's CLIP (its own random weights), `image_tokens`' class token through
    `visual.proj` is its `encode_image`, `encode_text_embeddings` its `encode_text`."""
    torch.manual_seed(0)
    clip = tr.build_clip(get_variant("tiny").to_dict()).eval()
    pixels = torch.randn(3, 3, 32, 32)
    ids = open_clip_tokenize(["a photo.", "a blurry photo of a cat.", "X X noise."])
    with torch.no_grad():
        image = torch_model.image_tokens(clip.visual, pixels)[:, 0] @ clip.visual.proj
        text = torch_model.encode_text_embeddings(clip, clip.token_embedding(ids),
                                                  ids.argmax(dim=-1))
        torch.testing.assert_close(image, clip.encode_image(pixels), rtol=0, atol=1e-6)
        torch.testing.assert_close(text, clip.encode_text(ids), rtol=0, atol=1e-6)
    assert image.std() > 0.1 and text.std() > 0.1


def test_liqe_trimmed_text_is_exact(liqe, batch):
    """The trimmed text tower (what the JAX model runs) equals LIQE's 77-token one in torch too."""
    config, model = liqe
    exported = torch_export(model)
    full = tr.reference(*exported, mode="full")
    trimmed = tr.reference(*exported, mode="full", text_length="trimmed")
    assert full.joint.token_ids.shape[1] == 77 and trimmed.joint.token_ids.shape[1] < 30
    with torch.no_grad():
        np.testing.assert_allclose(full.text_features().numpy(), trimmed.text_features().numpy(),
                                   atol=1e-5)


def test_check_catches_a_wrong_weight(mpiqe, batch):
    """A reference with one visual prompt changed no longer passes the check."""
    config, model = mpiqe
    ref = tr.reference(*torch_export(model), mode="prompt")
    with torch.no_grad():  # random, not a constant shift (LayerNorm would remove that)
        ref.visual_prompts[1, 0] += 0.1 * torch.randn(ref.visual_prompts.shape[-1])
    result = tr.compare(model, "prompt", batch, ref=ref)
    assert tr.check(result), result


def test_reference_train_step_lowers_the_loss(mpiqe, batch):
    """The timed torch step trains only the trainable set, and a few steps lower the loss."""
    config, model = mpiqe
    ref = tr.reference(*torch_export(model), mode="prompt")
    frozen = {n: p.detach().clone() for n, p in ref.named_parameters() if not p.requires_grad}
    opt = tr.make_optimizer(ref, {**config.optimizer.to_dict(), "learning_rate": 1e-2})
    step = tr.make_train_step(ref, opt, clip_norm=1.0)
    tb = tr.torch_batch(batch)
    losses = [float(step(tb)[0]) for _ in range(5)]
    assert losses[-1] < losses[0]
    for n, p in ref.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
