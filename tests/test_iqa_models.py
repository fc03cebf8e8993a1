"""MP-IQE and LIQE on a tiny random CLIP: shapes, score, crop averaging, LIQE layout, plain-CLIP
equivalence, phrase-initialised context, the text-feature cache (under jit) and which
parameters make up the text path."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmpiqa_jax import config as config_lib
from mmpiqa_jax import labels
from mmpiqa_jax.models import iqa, prompts
from mmpiqa_jax.models.clip_model import CLIP, get_variant
from mmpiqa_jax.tokenizer import tokenize
from workdirs import build, forward

RES = get_variant("tiny").image_resolution
FUSION = dict(fusion_layers=1, fusion_width=32, fusion_heads=2)


def normalize(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def clip():
    return CLIP(get_variant("tiny"), rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def crops():
    return jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, RES, RES, 3)), jnp.float32)


@pytest.fixture(scope="module")
def mpiqe(clip):
    model = build("mpiqe", clip, visual_prompt_depth=2, num_visual_prompts=3, rngs=nnx.Rngs(1),
                  **FUSION)
    # The head starts at zero (uniform quality); a random one makes the quality tests bite.
    kernel = model.fusion.head.kernel
    kernel[...] = jax.random.normal(jax.random.key(0), kernel.shape)
    return model


@pytest.fixture(scope="module")
def liqe(clip):
    return build("liqe", clip, rngs=nnx.Rngs(2))


def test_mpiqe_outputs(mpiqe, crops):
    out = forward(mpiqe, crops)
    shapes = {k: v.shape for k, v in out.items()}
    assert shapes == {"quality_logits": (2, 5), "quality_probs": (2, 5), "score": (2,),
                      "scene_logits": (2, 9), "scene_probs": (2, 9),
                      "distortion_logits": (2, 11), "distortion_probs": (2, 11)}
    p = np.asarray(out["quality_probs"], np.float64)
    np.testing.assert_allclose(p, jax.nn.softmax(np.asarray(out["quality_logits"], np.float64)),
                               atol=1e-6)
    np.testing.assert_allclose(out["score"], p @ np.arange(1, 6), rtol=1e-6)
    assert np.all((out["score"] >= 1) & (out["score"] <= 5))
    np.testing.assert_allclose(np.sum(out["distortion_probs"], -1), 1, atol=1e-6)


def test_score_spans_1_to_5(clip, crops):
    """Extreme quality logits push the score to the ends of [1, 5], never beyond."""
    model = build("mpiqe", clip, visual_prompt_depth=0, num_text_context=0, rngs=nnx.Rngs(1),
                  **FUSION)
    for level, sign in ((0, 1.0), (4, 1.0)):
        bias = np.full(5, -50.0, np.float32)
        bias[level] = 50.0
        model.fusion.head.bias[...] = jnp.asarray(bias)
        score = forward(model, crops)["score"]
        np.testing.assert_allclose(score, level + 1, atol=1e-4)


@pytest.mark.usefixtures("same_flags")  # compares runs made under the same flags
@pytest.mark.parametrize("name", ["mpiqe", "liqe"])
def test_logits_are_averaged_over_crops(name, request, crops):
    model = request.getfixturevalue(name)
    b, c = crops.shape[:2]
    together = forward(model, crops)
    alone = forward(model, crops.reshape(b * c, 1, *crops.shape[2:]))  # every crop its own image
    # LIQE averages its joint logits; its marginals come from the averaged joint (next test).
    keys = (("logits",) if name == "liqe"
            else ("quality_logits", "scene_logits", "distortion_logits"))
    for key in keys:
        want = np.asarray(alone[key]).reshape(b, c, -1).mean(axis=1)
        np.testing.assert_allclose(together[key], want, rtol=1e-5, atol=1e-5, err_msg=key)
    # Softmax after averaging, not an average of softmaxes.
    key = keys[0]
    probs = "probs" if name == "liqe" else "quality_probs"
    want_p = jax.nn.softmax(np.asarray(alone[key]).reshape(b, c, -1).mean(1))
    np.testing.assert_allclose(together[probs], want_p, atol=1e-6)
    avg_of_softmax = jax.nn.softmax(np.asarray(alone[key])).reshape(b, c, -1).mean(1)
    assert np.abs(avg_of_softmax - want_p).max() > 1e-4  # the crops differ enough to tell


@pytest.mark.usefixtures("same_flags")  # compares runs made under the same flags
def test_liqe_index_layout_and_marginals(liqe, clip, crops):
    texts = prompts.liqe_texts()
    assert len(texts) == 495
    for q, s, d in [(0, 0, 0), (1, 2, 3), (4, 8, 10), (2, 7, 0)]:
        assert texts[q * 99 + s * 11 + d] == labels.LIQE_TEMPLATE.format(
            quality=labels.QUALITIES[q], scene=labels.SCENES[s], distortion=labels.DISTORTIONS[d])
    # The text features at those indices are CLIP's features of those very sentences.
    feats = nnx.jit(lambda m: m.text_features())(liqe)
    idx = [0, 1 * 99 + 2 * 11 + 3, 494, 2 * 99 + 7 * 11]
    ref = nnx.jit(lambda c, t: c.encode_text(t))(clip, tokenize([texts[i] for i in idx]))
    np.testing.assert_allclose(np.asarray(feats)[idx], normalize(ref), atol=2e-5)

    out = forward(liqe, crops)
    probs = np.asarray(out["probs"], np.float64)
    np.testing.assert_allclose(probs.sum(-1), 1, atol=1e-5)
    index = np.arange(495)
    for key, part, n in (("quality_probs", index // 99, 5), ("scene_probs", index // 11 % 9, 9),
                         ("distortion_probs", index % 11, 11)):
        want = np.stack([probs[:, part == k].sum(-1) for k in range(n)], axis=-1)
        np.testing.assert_allclose(out[key], want, atol=1e-5, err_msg=key)
        np.testing.assert_allclose(np.sum(out[key], -1), 1, atol=1e-5)
        np.testing.assert_allclose(jax.nn.softmax(out[key.replace("probs", "logits")]), want,
                                   atol=1e-5)
    np.testing.assert_allclose(out["score"], np.asarray(out["quality_probs"]) @ np.arange(1, 6),
                               rtol=1e-5)


@pytest.mark.usefixtures("same_flags")  # compares runs made under the same flags
def test_no_prompts_equals_plain_clip(clip, crops):
    model = build("mpiqe", clip, visual_prompt_depth=0, num_text_context=0, rngs=nnx.Rngs(3),
                  **FUSION)
    assert model.prompts["visual"].tokens is None and model.prompts["scene"].ctx is None
    pixels = crops.reshape(-1, *crops.shape[2:])
    got = nnx.jit(lambda m, x: m.encode_image(x))(model, pixels)
    want = nnx.jit(lambda c, x: c.encode_image(x))(clip, pixels)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    words = ([f"{s.replace('_', ' ')}." for s in labels.SCENES]
             + [f"{d}." for d in labels.DISTORTIONS])
    want_t = nnx.jit(lambda c, t: c.encode_text(t))(clip, tokenize(words))
    got_t = nnx.jit(lambda m: m.text_features())(model)
    np.testing.assert_allclose(got_t, normalize(want_t), atol=2e-6)


def test_phrase_context_starts_at_the_phrase(clip, liqe):
    """Context from "a photo of a" gives exactly the phrase's prompts (CoOp's initialisation)."""
    model = build("mpiqe", clip, visual_prompt_depth=0, num_text_context=4,
                  text_context_init="a photo of a", rngs=nnx.Rngs(4), **FUSION)
    want = nnx.jit(lambda c, t: c.encode_text(t))(
        clip, tokenize([f"a photo of a {s.replace('_', ' ')}." for s in labels.SCENES]))
    got = nnx.jit(lambda m: m.text_features())(model)[:9]
    np.testing.assert_allclose(got, normalize(want), atol=2e-5)
    # LIQE's CoOp variant starts at LIQE's fixed template.
    coop = build("liqe", clip, num_text_context=4, rngs=nnx.Rngs(5))
    np.testing.assert_allclose(nnx.jit(lambda m: m.text_features())(coop),
                               nnx.jit(lambda m: m.text_features())(liqe), atol=2e-5)
    # A random context does not.
    rand = build("mpiqe", clip, visual_prompt_depth=0, num_text_context=4, text_context_init="",
                 rngs=nnx.Rngs(4), **FUSION)
    assert np.abs(nnx.jit(lambda m: m.text_features())(rand)[:9] - got).max() > 1e-2


@pytest.mark.usefixtures("same_flags")  # compares runs made under the same flags
def test_shared_prefix_plan_of_liqe_and_features_equal_the_plain_path(clip):
    texts = prompts.liqe_texts(with_context=True)
    shared = prompts.PromptBank(texts, clip=clip, num_context=2, depth=2, rngs=nnx.Rngs(3))
    plain = prompts.PromptBank(texts, clip=clip, num_context=2, depth=2, share_prefixes=False,
                               rngs=nnx.Rngs(3))
    plan = shared.prefix_plan
    assert plain.prefix_plan is None
    # 99 (scene, distortion) prefixes; each suffix is "{quality} quality <eot>"; index layout
    # q * 99 + s * 11 + d, so text n continues prefix n % 99.
    assert len(plan.representatives) == 99 and plan.suffix_length == 3
    assert plan.groups == tuple(n % 99 for n in range(495)) and set(plan.suffix_eot) == {2}
    ids = np.asarray(shared.token_ids)
    for g, rep in enumerate(plan.representatives):
        members = np.flatnonzero(np.asarray(plan.groups) == g)
        assert rep in members
        assert (ids[members, :plan.prefix_lengths[g]] == ids[rep, :plan.prefix_lengths[g]]).all()
    # Deep context random, so that the prompts inserted into the prefixes matter.
    deep = jax.random.normal(jax.random.key(4), shared.deep_ctx.shape)
    for bank in (shared, plain):
        bank.deep_ctx[...] = deep
    run = nnx.jit(lambda bank, c: bank(c))
    np.testing.assert_allclose(run(shared, clip), run(plain, clip), atol=2e-5)


def test_phrase_longer_than_context_is_an_error(clip):
    with pytest.raises(ValueError, match="text_context_init 'a photo of a' has 4 tokens"):
        build("mpiqe", clip, visual_prompt_depth=0, num_text_context=2, rngs=nnx.Rngs(0),
              **FUSION)


@pytest.mark.usefixtures("same_flags")  # compares runs made under the same flags
def test_text_cache(clip, crops):
    model = build("mpiqe", clip, visual_prompt_depth=0, num_text_context=2, text_context_init="",
                  text_prompt_depth=2, rngs=nnx.Rngs(6), **FUSION)
    graphdef, state = nnx.split(model)

    @jax.jit
    def call(state, crops):
        return nnx.merge(graphdef, state)(crops, use_text_cache=True)["scene_logits"]

    @jax.jit
    def refresh(state):
        m = nnx.merge(graphdef, state)
        m.refresh_text_cache()
        return nnx.state(m)

    def uncached(state):
        return forward(nnx.merge(graphdef, state), crops)["scene_logits"]

    # An empty cache is read as it is (zero features, zero logits): the caller guards it.
    assert np.abs(np.asarray(call(state, crops))).max() == 0
    state = refresh(state)
    np.testing.assert_allclose(call(state, crops), uncached(state), atol=1e-5)

    # A text-path parameter changed after the refresh: the cache keeps the old features until
    # the next refresh; the uncached call follows the parameter.
    changed = jax.tree.map(lambda x: x, state)
    deep = changed["prompts"]["scene"]["deep_ctx"]
    deep[...] = deep[...] + jax.random.normal(jax.random.key(7), deep.shape)
    np.testing.assert_allclose(call(changed, crops), call(state, crops), atol=1e-6)
    assert np.abs(np.asarray(uncached(changed) - uncached(state))).max() > 1e-3
    changed = refresh(changed)
    np.testing.assert_allclose(call(changed, crops), uncached(changed), atol=1e-5)

    # The cache is not differentiated: the text path gets no gradient through it, which is why
    # only a frozen text path may train with it.
    def text_grad(state, use_text_cache):
        def loss(ctx):
            s = jax.tree.map(lambda x: x, state)
            s["prompts"]["scene"]["ctx"][...] = ctx
            m = nnx.merge(graphdef, s)
            return jnp.sum(m(crops, use_text_cache=use_text_cache)["scene_probs"][:, 0])
        return jax.jit(jax.grad(loss))(state["prompts"]["scene"]["ctx"][...])
    assert np.abs(np.asarray(text_grad(state, True))).max() == 0
    assert np.abs(np.asarray(text_grad(state, False))).max() > 0


@pytest.mark.parametrize("name", ["mpiqe", "liqe"])
def test_text_path_is_what_text_features_depend_on(clip, name):
    if name == "mpiqe":
        model = build("mpiqe", clip, visual_prompt_depth=2, num_visual_prompts=3,
                      num_text_context=2, text_context_init="", text_prompt_depth=2,
                      rngs=nnx.Rngs(6), **FUSION)
    else:
        model = build("liqe", clip, num_text_context=2, text_context_init="", text_prompt_depth=2,
                      rngs=nnx.Rngs(6))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    @jax.jit
    def grads(params):
        return jax.grad(lambda p: jnp.sum(jnp.sin(
            nnx.merge(graphdef, p, rest).encode_prompts() * 7.0)))(params)

    # Independent reference: the parameters whose gradient of the text features is not zero.
    depends = {path for path, g in nnx.to_flat_state(grads(params))
               if np.abs(np.asarray(g[...])).max() > 0}
    assert ("clip", "token_embedding", "embedding") in depends
    assert not any(path[:2] == ("clip", "visual") for path in depends)
    flat = nnx.to_flat_state(params)
    for path, var in flat:
        alone = nnx.from_flat_state([(path, var)])
        assert iqa.text_path_is_trainable(model, alone) == (path in depends), path
    assert not iqa.text_path_is_trainable(model, nnx.from_flat_state([]))


def test_the_configs_param_groups_decide_the_cache(clip):
    from mmpiqa_jax.train import param_groups as pg

    def trains_text(model, preset):
        return iqa.text_path_is_trainable(model, pg.split_trainable(model, pg.resolve(preset))[1])

    plain = build("mpiqe", clip, visual_prompt_depth=2, num_visual_prompts=3, num_text_context=0,
                  rngs=nnx.Rngs(1), **FUSION)
    coop = build("mpiqe", clip, visual_prompt_depth=2, num_visual_prompts=3, num_text_context=2,
                 text_context_init="", rngs=nnx.Rngs(1), **FUSION)
    liqe = build("liqe", clip, rngs=nnx.Rngs(2))
    assert not trains_text(plain, "prompt")  # frozen CLIP, no text context: cached
    assert trains_text(coop, "prompt")       # learnable text context: recomputed
    assert trains_text(liqe, "full") and trains_text(plain, "full")


def test_build_model_from_config():
    config = config_lib.load_config("configs/tiny.py:model=liqe,ctx=0")
    model = nnx.eval_shape(lambda: iqa.build_model(config.model, nnx.Rngs(0)))
    assert isinstance(model, iqa.LIQE) and model.clip.config == get_variant("tiny")
    config = config_lib.load_config("configs/tiny.py", ["model.name=vit"])
    with pytest.raises(ValueError, match="unknown model.name 'vit'"):
        iqa.build_model(config.model, nnx.Rngs(0))
    config = config_lib.load_config("configs/tiny.py", ["model.visual_prompt_depth=3"])
    with pytest.raises(ValueError, match=r"visual_prompt_depth must be in \[0, 2\].*got 3"):
        nnx.eval_shape(lambda: iqa.build_model(config.model, nnx.Rngs(0)))
