"""`mmpiqa prepare --liqe-resize`: LIQE's resize done once gives the pixels of resizing on the
fly, for training and evaluation crops alike."""
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
# BID's images 1..4: shrunk (both sides above 768), shrunk (portrait), enlarged to 224, as is.
SIZES = {1: (1000, 800), 2: (800, 1100), 3: (200, 150), 4: (500, 400)}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bid")
    written = fake.write_bid(tmp / "manual")
    for k, size in SIZES.items():   # photographs of varied sizes in place of the small ones
        fake.write_image(written.root / f"ImageDatabase/DatabaseImage{k:04d}.JPG", k, size)
    dirs = {}
    for resized in (False, True):
        dirs[resized] = str(tmp / f"data_{resized}")
        registry.prepare("bid", str(written.root), dirs[resized], allow_partial=True,
                         liqe_resize=resized)
    return written, dirs


def test_records_hold_the_resized_images(prepared):
    written, dirs = prepared
    plain = registry.load_source("bid", data_dir=dirs[False], decode_images=False)
    resized = registry.load_source("bid", data_dir=dirs[True], decode_images=False)
    assert registry.get_builder("bid", dirs[True]).info.metadata["liqe_resized"] is True
    assert "liqe_resized" not in registry.get_builder("bid", dirs[False]).info.metadata
    for i in range(len(plain)):
        a, b = plain[i]["image"], resized[i]["image"]
        k = int(plain[i]["ref_id"]) + 1
        want = T.liqe_resize(T.decode_rgb(a))
        got = Image.open(io.BytesIO(b))
        assert got.size == want.size
        np.testing.assert_array_equal(np.asarray(got.convert("RGB")), np.asarray(want))
        assert (a == b) == (k == 4)           # only the image left alone keeps its bytes
        assert T.liqe_resize(got) is got      # resizing again changes nothing
    assert {Image.open(io.BytesIO(resized[i]["image"])).size for i in range(4)} == {
        (960, 768), (768, 1056), (298, 224), (500, 400)}


def test_pipeline_pixels_are_those_of_resizing_on_the_fly(prepared):
    _, dirs = prepared
    specs = {r: P.open_spec("bid", batch_size=2, data_dir=d) for r, d in dirs.items()}
    its = {r: P.train_iterator([s], seed=0, shard=ONE, normalize=False)
           for r, s in specs.items()}
    for _ in range(6):   # three epochs of the four images, flips and crops drawn anew
        a, b = next(its[False]), next(its[True])
        np.testing.assert_array_equal(a["index"], b["index"])
        np.testing.assert_array_equal(a["pixels"], b["pixels"])
    for mode in ("liqe", "center"):
        a, b = (next(P.eval_iterator(s, batch_size=4, crop_mode=mode, shard=ONE,
                                     normalize=False)) for s in (specs[False], specs[True]))
        np.testing.assert_array_equal(a["pixels"], b["pixels"])


def test_the_other_variant_needs_its_own_data_dir(prepared):
    written, dirs = prepared
    with pytest.raises(ValueError, match="already prepared in .* without LIQE's resize"):
        registry.prepare("bid", str(written.root), dirs[False], allow_partial=True,
                         liqe_resize=True)
    with pytest.raises(ValueError, match="for published datasets only"):
        registry.prepare("synthetic_iqa", data_dir=dirs[False], liqe_resize=True)
