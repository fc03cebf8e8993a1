"""The per-example pipeline's batches against the images and the table (and LIQE's own test-time
crops), uint8 crops normalised in the model, the device prefetch, and the element spec."""
import sys
import threading
import time
from pathlib import Path

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmpiqa_jax import config as config_lib
from mmpiqa_jax import labels
from mmpiqa_jax.data import pipeline as P
from mmpiqa_jax.data import splits
from mmpiqa_jax.data import transforms as T
from mmpiqa_jax.data.prefetch import DevicePrefetch
from mmpiqa_jax.models import iqa, preprocess

import workdirs
import pipeline_checks
from pipeline_checks import NAME, ONE, assert_labels, is_window

data_dir, spec = pipeline_checks.data_dir, pipeline_checks.spec  # its fixtures

REPO = Path(__file__).resolve().parents[1]



def _specs(spec):
    split = splits.random_split(splits.read_labels(spec.source)["ref_id"], (0.8, 0.2), seed=0)
    return [P.DataSpec(spec.source, split["train"], 4, spec.scenes, "a"),
            P.DataSpec(spec.source, split["test"], 2, None, "b")]


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_scenes_come_from_the_builder_metadata(spec):
    table = splits.read_labels(spec.source)
    # synthetic_iqa/small's references: astronaut, chelsea, coffee, rocket.
    scenes = (("human", "indoor"), ("animal", "indoor"), ("still_life", "indoor"),
              ("cityscape", "others"))
    want = np.zeros((len(table["ref_id"]), 9), np.float32)
    for row, ref in zip(want, table["ref_id"]):
        row[[labels.SCENES.index(s) for s in scenes[ref]]] = 1
    np.testing.assert_array_equal(spec.scenes, want)
    assert P.metadata_scene_labels({}, spec.source) is None   # a builder that states no scenes
    with pytest.raises(ValueError, match="reference 'b' has no entry"):
        P.metadata_scene_labels({"references": ["a", "b"], "scenes": {"a": ["animal"]}},
                                spec.source)


@pytest.mark.parametrize("kw", [{}, {"rot90": True, "crop_mode": "random", "crop_size": 64},
                                {"crops_per_image": 1, "flip": False}])
@pytest.mark.parametrize("shard", [ONE, grain.sharding.ShardOptions(1, 2)])
def test_train_batches_hold_each_examples_crops_and_labels(spec, kw, shard):
    """25 steps (past epoch ends of both datasets): each dataset's count per step, examples of
    its part and shard, the table's labels, and every crop a window of the image (after LIQE's
    resize; turned with `rot90`) or, for all crops of an example alike, of its mirror."""
    specs = _specs(spec)
    table = splits.read_labels(spec.source)
    size, crops = kw.get("crop_size", T.CROP), kw.get("crops_per_image", 3)
    turns = range(4) if kw.get("rot90") else [0]
    it = P.train_iterator(specs, seed=3, shard=shard, num_threads=3, **kw)
    sides_seen = set()
    for _ in range(25):
        batch = next(it)
        local = [s.batch_size // shard.shard_count for s in specs]
        assert batch["dataset_id"].tolist() == [0] * local[0] + [1] * local[1]
        assert batch["pixels"].dtype == np.uint8
        assert batch["pixels"].shape == (sum(local), crops, size, size, 3)
        for d, s in enumerate(specs):
            mine = P.shard_indices(s.all_indices(), shard)
            assert np.isin(batch["index"][batch["dataset_id"] == d], mine).all()
        assert_labels(batch, table, [s.scenes for s in specs])
        for index, example in zip(batch["index"], batch["pixels"]):
            image = np.asarray(T.liqe_resize(T.decode_rgb(spec.source[int(index)]["image"]),
                                             crop=size))
            sides = tuple(all(any(is_window(view, np.rot90(c, -k)) for k in turns)
                              for c in example) for view in (image, image[:, ::-1]))
            assert any(sides), f"example {index}: a crop is no window of the image or mirror"
            sides_seen.add(sides)
    # Mirrored images (windows of the mirror only) where flipping, none where not.
    assert ((False, True) in sides_seen) == kw.get("flip", True)


@pytest.mark.parametrize("mode", ["liqe", "center", "full"])
def test_eval_batches_hold_each_examples_crops_and_labels(spec, mode):
    """Every example of the shard once, in order, with its own crops (`transforms.eval_crops`
    of the decoded record, and for `liqe` LIQE's own test-time code: `unfold` into the stride
    grid) and the table's labels; padding rows after, not valid."""
    pytest.importorskip("torchvision")
    sys.path.insert(0, str(REPO / "tools"))
    from benchmark_pipeline import LiqeDataset  # pylint: disable=import-outside-toplevel

    table = splits.read_labels(spec.source)
    liqe = LiqeDataset(spec.source, 15, test=True)
    for shard in (ONE, grain.sharding.ShardOptions(1, 2)):
        batches = list(P.eval_iterator(spec, batch_size=16, crop_mode=mode, shard=shard))
        mine = P.shard_indices(spec.all_indices(), shard)
        valid = np.concatenate([b["valid"] for b in batches])
        assert valid.tolist() == [True] * len(mine) + [False] * (len(valid) - len(mine))
        rows = {k: np.concatenate([b[k] for b in batches])[:len(mine)] for k in batches[0]}
        np.testing.assert_array_equal(rows["index"], mine)
        assert_labels(rows, table, [spec.scenes])
        for index, pixels in zip(mine, rows["pixels"]):
            image = T.decode_rgb(spec.source[int(index)]["image"])
            np.testing.assert_array_equal(pixels, T.eval_crops(image, mode, 15))
            if mode == "liqe":
                theirs = liqe[int(index)]["I"].numpy().transpose(0, 2, 3, 1)
                np.testing.assert_allclose(np.asarray(preprocess.clip_normalize(pixels)), theirs,
                                           atol=2e-6)


def test_two_workers_give_the_same_batches_and_resume(spec):
    want = [next(it) for it in [P.train_iterator(_specs(spec), seed=5, shard=ONE)]
            for _ in range(4)]
    it = P.train_iterator(_specs(spec), seed=5, shard=ONE, num_workers=2, num_threads=1)
    got = [next(it), next(it)]
    state = it.get_state()
    it.close()
    resumed = P.train_iterator(_specs(spec), seed=5, shard=ONE, num_workers=2, num_threads=1)
    resumed.set_state(state)
    got += [next(resumed), next(resumed)]
    resumed.close()
    for a, b in zip(got, want):
        _assert_same(a, b)
    ev = P.eval_iterator(spec, batch_size=32, crop_mode="center", shard=ONE, num_workers=2)
    for a, b in zip(list(ev), list(P.eval_iterator(spec, batch_size=32, crop_mode="center",
                                                   shard=ONE))):
        _assert_same(a, b)


def test_train_element_spec_is_a_real_batch(data_dir):
    from mmpiqa_jax.data import datasets   # pylint: disable=import-outside-toplevel
    config = config_lib.load_config(str(REPO / "configs" / "tiny.py") + ":dataset=" + NAME, [
        f"data.data_dir={data_dir}", "data.split=50/25/25", "data.num_workers=0"])
    batch = next(datasets.train_iterator(config, datasets.training_datasets(config)))  # one process
    spec = P.train_element_spec(config)
    assert {k: (v.shape, v.dtype) for k, v in spec.items()} == {
        k: (v.shape, v.dtype) for k, v in batch.items()}
    assert spec["pixels"].dtype == np.uint8 and spec["pixels"].shape == (8, 2, 32, 32, 3)


def test_worker_default_follows_the_cores(monkeypatch):
    for cores, workers in ((16, 15), (1, 1)):
        monkeypatch.setattr(P, "host_cores", lambda c=cores: c)
        assert P.host_workers() == workers


# ------------------------------------------------------------------------------------------------
# Normalisation in the model.

def test_clip_normalize_matches_the_host():
    np.testing.assert_array_equal(preprocess.CLIP_MEAN, T.CLIP_MEAN)
    np.testing.assert_array_equal(preprocess.CLIP_STD, T.CLIP_STD)
    x = np.arange(256, dtype=np.uint8).reshape(1, -1, 1) * np.ones((1, 1, 3), np.uint8)
    got = jax.jit(preprocess.clip_normalize)(x)
    assert got.dtype == jnp.float32
    want = (x / 255.0 - T.CLIP_MEAN) / T.CLIP_STD
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-6)
    f = jnp.ones((2, 3), jnp.bfloat16)
    assert preprocess.clip_normalize(f) is f   # float input is taken as normalised
    with pytest.raises(TypeError, match="must be uint8 .* got int32"):
        preprocess.clip_normalize(jnp.zeros((1, 3), jnp.int32))


@pytest.mark.usefixtures("same_flags")  # compares runs made under the same flags
@pytest.mark.parametrize("model_name", ["mpiqe", "liqe"])
def test_models_score_uint8_crops_as_host_normalised_ones(model_name):
    config = config_lib.load_config(str(REPO / "configs" / "tiny.py") + f":model={model_name}")
    # Random parameters off zero, so that every output depends on the pixels.
    model = workdirs.perturb(iqa.build_model(config.model, nnx.Rngs(0)))
    crops = np.random.default_rng(0).integers(0, 256, (3, 2, 32, 32, 3), dtype=np.uint8)
    forward = workdirs.forward
    host = ((crops / 255.0 - T.CLIP_MEAN) / T.CLIP_STD).astype(np.float32)
    got, want = forward(model, crops), forward(model, host)
    for key in ("score", "quality_logits", "scene_logits", "distortion_logits"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-5, err_msg=key)
    assert float(jnp.std(want["score"])) > 1e-4   # the images differ, so do their scores


# ------------------------------------------------------------------------------------------------
# Device prefetch.

def to_device(batch):
    return jax.tree.map(jnp.asarray, batch)


class Counter:
    """Batches {"k": [k]}, k = 1, 2, ...; `reads` records the thread of every `next`."""

    def __init__(self, fail_at=None, length=None):
        self.k, self.fail_at, self.length, self.reads = 0, fail_at, length, []

    def __next__(self):
        if self.length is not None and self.k == self.length:
            raise StopIteration
        self.k += 1
        self.reads.append(threading.current_thread().name)
        if self.k == self.fail_at:
            raise OSError(f"bad record {self.k}")
        return {"k": np.array([self.k])}

    def get_state(self):
        return {"k": self.k}

    def set_state(self, state):
        self.k = state["k"]


def test_device_prefetch_reads_ahead_in_order_and_saves_exact_states():
    it = Counter()
    it.set_state({"k": 10})
    feed = DevicePrefetch(it, to_device, size=2, limit=9)
    assert feed.get_state() == {"k": 10}            # before any read: the iterator's own
    got = []
    for n in range(1, 10):
        batch = next(feed)
        assert isinstance(batch["k"], jax.Array)
        got.append(int(batch["k"][0]))
        if n == 3:                                  # let the thread read ahead all it may
            deadline = time.monotonic() + 10
            while it.k < 10 + n + 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert it.k > 10 + n                    # read ahead...
        assert feed.get_state() == {"k": 10 + n}    # ...yet the state is after batch n
    assert got == list(range(11, 20))
    with pytest.raises(StopIteration):             # the limit: 9 batches
        next(feed)
    feed.close()
    assert it.k == 19 and set(it.reads) == {"device-prefetch"}


def test_device_prefetch_passes_errors_and_the_end_on():
    feed = DevicePrefetch(Counter(fail_at=3), to_device)
    next(feed), next(feed)
    with pytest.raises(OSError, match="bad record 3"):
        next(feed)
    feed.close()
    feed = DevicePrefetch(Counter(length=2), to_device, size=1)
    assert [int(b["k"][0]) for b in feed] == [1, 2]
    feed.close()
    stopped = DevicePrefetch(Counter(), to_device, size=1)
    next(stopped)
    stopped.close()                                 # a thread blocked on a full queue ends
    assert not stopped._thread.is_alive()           # pylint: disable=protected-access
