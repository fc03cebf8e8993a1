"""`mmpiqa_jax.tokenizer` against open_clip's tokenizer (a copy of OpenAI's)."""
import itertools
import random

import numpy as np
import pytest

from mmpiqa_jax import labels, tokenizer

open_clip = pytest.importorskip("open_clip")

# Pieces that exercise OpenAI's cleaning (ftfy, HTML entities, whitespace, case) and BPE edge cases.
_PIECES = (
    "a", "photo", "Photo", "PHOTO", "of", "the", "cat", "dog's", "don't", "WE'LL", "they're",
    "I'm", "you've", "he'd", "it's", "jpeg2000", "3.14", "1,000,000", "42", "x2", "2x",
    ",", ".", "!", "?", "...", "--", "(", ")", "[", "]", "{", "}", "#", "@", "$", "%", "^",
    "&", "*", "+", "=", "/", "\\", "|", "~", "`", "<", ">", ":", ";", "'", '"', "_",
    "café", "naïve", "Ångström", "résumé", "straße", "ÉCOLE", "São", "Zürich", "İstanbul",
    "ﬁne", "ＡＢＣ", "１２３", "“quoted”", "‘single’", "—", "…", "½", "²", "µ", "Ω",
    "😀", "👍🏽", "🇫🇷", "❤️", "日本語", "中文", "한국어", "русский", "ελληνικά", "עברית", "العربية",
    "&amp;", "&lt;tag&gt;", "&#39;", "&quot;", "&nbsp;", "&amp;amp;", "&eacute;",
    "  ", "\t", "\n", "   \t\n  ", "\u00a0", "\u3000",
    "mojibake: Ã©", "low-light", "over-exposed", "e-mail", "http://example.com/x?y=1",
)


def _mixed_strings(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for i in range(n):
        # Every tenth string is long enough to be truncated at 77 tokens.
        length = rng.randint(60, 120) if i % 10 == 9 else rng.randint(1, 12)
        texts.append("".join(rng.choice(_PIECES) + rng.choice(("", " ", " ", "  "))
                             for _ in range(length)))
    return texts


def _method_prompts() -> list[str]:
    liqe = [labels.LIQE_TEMPLATE.format(quality=q, scene=s, distortion=d)
            for q, s, d in itertools.product(labels.QUALITIES, labels.SCENES, labels.DISTORTIONS)]
    scene = [f"a photo of a {s}." for s in labels.SCENES]
    distortion = [f"a photo with {d} artifacts." for d in labels.DISTORTIONS]
    return liqe + scene + distortion


def _assert_same(texts, context_length=77):
    ours = tokenizer.tokenize(texts, context_length)
    ref = open_clip.tokenize(texts, context_length).numpy()
    assert ours.dtype == np.int32 and ours.shape == (len(texts), context_length)
    bad = [t for t, a, b in zip(texts, ours, ref) if not np.array_equal(a, b)]
    assert not bad, f"{len(bad)} texts differ, first: {bad[0]!r}"


def test_method_prompts_match_open_clip():
    prompts = _method_prompts()
    assert len(prompts) == 495 + 9 + 11
    _assert_same(prompts)


def test_mixed_strings_match_open_clip():
    texts = _mixed_strings(200)
    truncated = sum(open_clip.tokenize(t)[0, -1].item() != 0 for t in texts)
    assert truncated >= 10  # the long texts really hit the 77-token limit
    _assert_same(texts)


def test_truncation_keeps_end_of_text_and_short_context():
    ids = tokenizer.tokenize(["word " * 100, "a"], context_length=16)
    assert ids[0, 0] == 49406 and ids[0, -1] == 49407
    assert list(ids[1, :3]) == [49406, 320, 49407] and not ids[1, 3:].any()
    _assert_same(["word " * 100, "a"], context_length=16)


def test_vocabulary_and_special_tokens():
    tok = tokenizer.load_tokenizer()
    assert len(tok) == 49408
    assert tok.convert_tokens_to_ids([tokenizer.START_OF_TEXT, tokenizer.END_OF_TEXT]) == [
        49406, 49407]
    assert tokenizer.load_tokenizer() is tok  # cached
    assert tokenizer.tokenize("").tolist()[0][:3] == [49406, 49407, 0]
