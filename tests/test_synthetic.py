"""`synthetic_iqa`: contents, labels, pseudo-MOS monotone in the level, byte-identical builds.

The fast tests build a reduced config; the full build (twice) is in the `slow` tier.
"""
import glob
import hashlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mmpiqa_jax import labels
from mmpiqa_jax.data.builders import synthetic_iqa as syn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Two references (one grey), three types at 256x224: 2 + (2 * 3 - 1 colour-only on grey) * 5.
TINY = dict(references=("chelsea", "camera"),
            distortions=("jpeg", "white_noise", "color_saturation"), image_size=(256, 224))


def _build_in_subprocess(data_dir: str, config: dict | None) -> float:
    """Builds in a fresh interpreter (upb's per-process hash seed is what once made bytes
    differ) and returns the build time in seconds."""
    make = (f"SyntheticIqaConfig(name='tiny', **{config!r})" if config else "'default'")
    code = textwrap.dedent(f"""
        import time
        from mmpiqa_jax.data.builders.synthetic_iqa import SyntheticIqa, SyntheticIqaConfig
        start = time.time()
        SyntheticIqa(config={make}, data_dir={data_dir!r},
                     file_format="array_record").download_and_prepare()
        print("SECONDS", time.time() - start)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=REPO), check=True).stdout
    return float(out.split("SECONDS")[-1])


def _record_hashes(data_dir: str) -> dict[str, str]:
    files = sorted(glob.glob(os.path.join(data_dir, "**", "*.array_record*"), recursive=True))
    assert files, f"no array_record files under {data_dir}"
    return {os.path.relpath(f, data_dir): hashlib.sha256(open(f, "rb").read()).hexdigest()
            for f in files}


def _read(data_dir: str, config):
    builder = syn.SyntheticIqa(config=config, data_dir=data_dir)
    source = builder.as_data_source(split="all")
    return builder, [source[i] for i in range(len(source))]


def _monotone_fraction(rows) -> tuple[float, list]:
    """Fraction of (reference, type) groups whose MOS falls strictly from level 1 to 5."""
    groups = {}
    for r in rows:
        if r["level"] > 0:
            groups.setdefault((int(r["ref_id"]), r["distortion_type"]),
                              {})[int(r["level"])] = r["mos"]
    bad = [g for g, m in groups.items() if not all(m[l] > m[l + 1] for l in range(1, syn.LEVELS))]
    assert all(len(m) == syn.LEVELS for m in groups.values())
    return 1 - len(bad) / len(groups), bad


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    dirs = [str(tmp_path_factory.mktemp(f"tiny{i}")) for i in range(2)]
    for d in dirs:
        _build_in_subprocess(d, TINY)
    return dirs


def test_tiny_build_is_byte_identical(tiny):
    a, b = (_record_hashes(d) for d in tiny)
    assert a == b


def test_tiny_build_contents(tiny):
    builder, rows = _read(tiny[0], syn.SyntheticIqaConfig(name="tiny", **TINY))
    assert builder.info.splits.keys() == {"full"}
    assert len(rows) == 2 + (2 * 3 - 1) * 5   # no colour_saturation of the grey camera
    names = [r["name"] for r in rows]
    assert len(set(names)) == len(names)
    refs = [r for r in rows if r["level"] == 0]
    assert [r["name"] for r in refs] == [b"refs/chelsea.png", b"refs/camera.png"]
    for r in refs:
        assert r["mos"] == 5.0 and r["distortion_class"] == -1 and r["distortion_type"] == b""
    for r in rows:
        assert r["image"].shape == (224, 256, 3) and r["image"].dtype == np.uint8
        assert 1.0 <= r["mos"] <= 5.0 and np.isnan(r["mos_std"])
        assert r["quality"] == pytest.approx((r["mos"] - 1) / 4, abs=1e-6)
    camera = [r for r in rows if r["ref_id"] == 1 and r["level"] > 0]
    assert {r["distortion_type"] for r in camera} == {b"jpeg", b"white_noise"}
    classes = {r["distortion_type"]: r["distortion_class"] for r in rows if r["level"] > 0}
    assert classes == {b"jpeg": labels.distortion_index("jpeg compression"),
                       b"white_noise": labels.distortion_index("noise"),
                       b"color_saturation": labels.distortion_index("color")}
    # The stored pixels are the ones the pseudo-MOS was computed on.
    ref = next(r["image"] for r in refs if r["ref_id"] == 0)
    some = next(r for r in rows if r["name"] == b"dist/chelsea.white_noise.3.png")
    assert some["mos"] == pytest.approx(syn.pseudo_mos(ref, some["image"]), abs=1e-5)
    assert _monotone_fraction(rows)[0] == 1.0


def test_small_config_monotone_in_level():
    """Every (reference, type) of the `small` config: MOS strictly falls with the level."""
    config = next(c for c in syn.SyntheticIqa.BUILDER_CONFIGS if c.name == "small")
    for ref in syn._by_name(syn.REFERENCES, config.references, "reference"):
        image = syn.load_reference(ref, config.image_size)
        for dist in syn._by_name(syn.DISTORTIONS, config.distortions, "distortion"):
            mos = [syn.pseudo_mos(image, syn.distort(image, dist, level, (0, 0, level)))
                   for level in range(1, syn.LEVELS + 1)]
            assert all(a > b for a, b in zip([5.0] + mos, mos)), (ref.name, dist.name, mos)


def test_distortions_are_seeded_and_distinct():
    image = syn.load_reference(syn.REFERENCES[2], (64, 48))
    noise = next(d for d in syn.DISTORTIONS if d.name == "white_noise")
    a = syn.distort(image, noise, 2, (1, 2, 2))
    np.testing.assert_array_equal(a, syn.distort(image, noise, 2, (1, 2, 2)))
    assert not np.array_equal(a, syn.distort(image, noise, 2, (1, 2, 3)))
    assert len({d.name for d in syn.DISTORTIONS}) == len(syn.DISTORTIONS) >= 10
    for d in syn.DISTORTIONS:
        assert d.distortion_class in labels.DISTORTIONS and len(d.strengths) == syn.LEVELS
    with pytest.raises(ValueError, match="level 6"):
        syn.distort(image, noise, 6, (0,))


def test_references_and_their_scenes():
    assert len(syn.REFERENCES) == 17
    for ref in syn.REFERENCES:  # all ship inside the scikit-image or matplotlib wheel: no download
        assert 1 <= len(set(ref.scenes)) == len(ref.scenes) <= 3
        assert set(ref.scenes) <= set(labels.SCENES)
        image = syn.load_reference(ref)
        assert image.shape == (288, 384, 3) and image.dtype == np.uint8
    with pytest.raises(ValueError, match="unknown reference"):
        syn._by_name(syn.REFERENCES, ("astronaut", "lena"), "reference")


@pytest.mark.slow
def test_full_build_identical_and_monotone(tmp_path):
    """The default build, twice: the same bytes, >= 95% of the level series monotone."""
    dirs = [str(tmp_path / "a"), str(tmp_path / "b")]
    seconds = [_build_in_subprocess(d, None) for d in dirs]
    assert _record_hashes(dirs[0]) == _record_hashes(dirs[1])
    builder, rows = _read(dirs[0], "default")
    assert len(rows) == builder.info.splits["full"].num_examples == 997
    fraction, bad = _monotone_fraction(rows)
    assert fraction >= 0.95, bad
    print(f"build seconds {seconds}, monotone fraction {fraction:.3f}, not monotone {bad}")
