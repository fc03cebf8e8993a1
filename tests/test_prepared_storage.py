"""`mmpiqa prepare --liqe-resize` and `--uncompressed`: images stored after LIQE's resize, as
BMP, or both, give the pixels of decoding (and resizing) the published files on the fly, for
training and evaluation crops alike."""
import dataclasses
import io

import grain
import numpy as np
import pytest
from PIL import Image

import fake_datasets as fake
from mmpiqa_jax.data import pipeline as P
from mmpiqa_jax.data import registry
from mmpiqa_jax.data import transforms as T

ONE = grain.sharding.NoSharding()
# BID's images 1..4: shrunk (both sides above 768), shrunk (portrait), enlarged to 224, as is
# (odd sides, so BMP rows carry padding, and grey, so that decoding converts it to RGB).
SIZES = {1: (1000, 800), 2: (800, 1100), 3: (200, 150), 4: (501, 401)}
# (liqe_resize, uncompressed)
VARIANTS = [(False, False), (True, False), (False, True), (True, True)]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bid")
    written = fake.write_bid(tmp / "manual")
    for k, size in SIZES.items():   # photographs of varied sizes in place of the small ones
        path = written.root / f"ImageDatabase/DatabaseImage{k:04d}.JPG"
        fake.write_image(path, k, size)
        if k == 4:
            Image.open(path).convert("L").save(path, format="JPEG")
    dirs = {}
    for resize, uncompressed in VARIANTS:
        dirs[resize, uncompressed] = str(tmp / f"data_{resize}_{uncompressed}")
        registry.prepare("bid", str(written.root), dirs[resize, uncompressed],
                         allow_partial=True, liqe_resize=resize, uncompressed=uncompressed)
    return written, dirs


def _records(dirs, variant, decode=False):
    return registry.load_source("bid", data_dir=dirs[variant], decode_images=decode)


@pytest.mark.parametrize("variant", VARIANTS[1:])
def test_records_hold_the_stored_images(prepared, variant):
    _, dirs = prepared
    resize, uncompressed = variant
    plain, stored = _records(dirs, (False, False)), _records(dirs, variant)
    metadata = registry.get_builder("bid", dirs[variant]).info.metadata
    assert metadata.get("liqe_resized", False) is resize
    assert metadata.get("uncompressed", False) is uncompressed
    for i in range(len(plain)):
        a, b = plain[i]["image"], stored[i]["image"]
        k = int(plain[i]["ref_id"]) + 1
        want = T.decode_rgb(a)
        if resize:
            want = T.liqe_resize(want)
        got = Image.open(io.BytesIO(b))
        kept = Image.open(io.BytesIO(a)).format   # as the plain build stores it
        assert got.format == ("BMP" if uncompressed else kept if a == b else "PNG")
        assert got.size == want.size
        np.testing.assert_array_equal(np.asarray(got.convert("RGB")), np.asarray(want))
        if not uncompressed:
            assert (a == b) == (k == 4)       # only the image left alone keeps its bytes
        if resize:
            assert T.liqe_resize(got) is got  # resizing again changes nothing
    if resize:
        assert {Image.open(io.BytesIO(stored[i]["image"])).size for i in range(4)} == {
            (960, 768), (768, 1056), (298, 224), (501, 401)}


def test_tfds_decodes_the_uncompressed_records_to_the_same_pixels(prepared):
    # tfds' own decoder (OpenCV or pillow, another code path than ours) on the BMP records.
    _, dirs = prepared
    plain, bmp = _records(dirs, (False, False)), _records(dirs, (False, True), decode=True)
    for i in range(len(plain)):
        np.testing.assert_array_equal(bmp[i]["image"],
                                      np.asarray(T.decode_rgb(plain[i]["image"])))


def test_pipeline_pixels_are_those_of_the_published_files(prepared):
    _, dirs = prepared
    specs = {v: dataclasses.replace(P.open_spec("bid", d), batch_size=2) for v, d in dirs.items()}
    its = {v: P.train_iterator([s], seed=0, shard=ONE) for v, s in specs.items()}
    for _ in range(6):   # three epochs of the four images, flips and crops drawn anew
        want = next(its[False, False])
        for variant in VARIANTS[1:]:
            got = next(its[variant])
            np.testing.assert_array_equal(got["index"], want["index"])
            np.testing.assert_array_equal(got["pixels"], want["pixels"], err_msg=str(variant))
    for mode in ("liqe", "center"):
        want, *rest = (next(P.eval_iterator(specs[v], batch_size=4, crop_mode=mode, shard=ONE))
                       for v in VARIANTS)
        for variant, got in zip(VARIANTS[1:], rest):
            np.testing.assert_array_equal(got["pixels"], want["pixels"], err_msg=str(variant))


def test_another_variant_needs_its_own_data_dir(prepared):
    written, dirs = prepared
    with pytest.raises(ValueError, match="already prepared in .* without LIQE's resize, as "
                                         "published; prepare it with LIQE's resize, as published"):
        registry.prepare("bid", str(written.root), dirs[False, False], allow_partial=True,
                         liqe_resize=True)
    with pytest.raises(ValueError, match=r"with LIQE's resize, uncompressed \(BMP\); prepare it "
                                         "with LIQE's resize, as published"):
        registry.prepare("bid", str(written.root), dirs[True, True], allow_partial=True,
                         liqe_resize=True)
    with pytest.raises(ValueError, match="--liqe-resize --uncompressed is for published "
                                         "datasets only"):
        registry.prepare("synthetic_iqa", data_dir=dirs[False, False], liqe_resize=True,
                         uncompressed=True)
