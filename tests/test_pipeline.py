"""The grain pipeline on `synthetic_iqa/small` (prepared once through `mmpiqa prepare`)."""
import json

import grain
import numpy as np
import pytest

from mmpiqa_jax.data import pipeline as P
from mmpiqa_jax.data import registry, splits
from mmpiqa_jax.data import transforms as T

import pipeline_checks
from pipeline_checks import NAME, ONE, assert_labels, is_window

data_dir, spec = pipeline_checks.data_dir, pipeline_checks.spec  # its fixtures



@pytest.fixture(scope="module")
def table(spec):
    return splits.read_labels(spec.source)


def _train(spec, table, **kw):
    """Two datasets from one source: train part (quota 3) and test part (quota 2)."""
    split = splits.random_split(table["ref_id"], (0.8, 0.2), seed=0)
    specs = [P.DataSpec(spec.source, split["train"], 3, spec.scenes, "a"),
             P.DataSpec(spec.source, split["test"], 2, None, "b")]
    return split, P.train_iterator(specs, **{"seed": 0, "shard": ONE, **kw})


def test_registry_errors(tmp_path, data_dir):
    with pytest.raises(ValueError, match="unknown dataset 'kadid'; known: kadid10k, csiq"):
        registry.load_source("kadid")
    with pytest.raises(FileNotFoundError,
                       match=f"run: mmpiqa prepare synthetic_iqa --data-dir {tmp_path}"):
        registry.load_source("synthetic_iqa", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="unknown split 'train'"):
        registry.load_source(NAME, "train", data_dir=data_dir)


def test_train_batch_shapes_dtypes_and_quotas(spec, table):
    split, it = _train(spec, table)
    batch = next(it)
    want = {"pixels": ((5, 3, 224, 224, 3), np.uint8), "quality": ((5,), np.float32),
            "mos": ((5,), np.float32), "distortion_class": ((5,), np.int32),
            "scenes": ((5, 9), np.float32), "scene_mask": ((5,), np.float32),
            "dataset_id": ((5,), np.int32), "ref_id": ((5,), np.int32), "index": ((5,), np.int32)}
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == want
    for _ in range(3):
        assert batch["dataset_id"].tolist() == [0, 0, 0, 1, 1]
        assert np.isin(batch["index"][:3], split["train"]).all()
        assert np.isin(batch["index"][3:], split["test"]).all()
        batch = next(it)
    # Labels are the example's; scenes only where the dataset has them.
    assert_labels(batch, table, [spec.scenes, None])
    assert batch["scene_mask"].tolist() == [1, 1, 1, 0, 0]


def test_resume_from_saved_state_continues_with_next_batch(spec, table):
    _, it = _train(spec, table)
    for _ in range(2):
        next(it)
    state = json.dumps(it.get_state())   # what the trainer stores in its checkpoint
    expected = [next(it) for _ in range(2)]
    _, resumed = _train(spec, table)
    resumed.set_state(json.loads(state))
    for want in expected:
        got = next(resumed)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_epochs_cover_every_example_and_reshuffle(spec):
    n = len(spec.source)   # 84 = 21 steps of 4
    it = P.train_iterator([P.DataSpec(spec.source, None, 4)], seed=1, shard=ONE)
    epochs = [np.concatenate([next(it)["index"] for _ in range(n // 4)]) for _ in range(2)]
    for order in epochs:
        np.testing.assert_array_equal(np.sort(order), np.arange(n))
    assert not np.array_equal(epochs[0], epochs[1])


def test_randomness_independent_of_threads_and_seeded(spec, table):
    batches = {}
    for threads in (0, 2):
        _, it = _train(spec, table, num_threads=threads)
        batches[threads] = [next(it) for _ in range(2)]
    for a, b in zip(batches[0], batches[2]):
        np.testing.assert_array_equal(a["pixels"], b["pixels"])
    _, other = _train(spec, table, seed=1)
    assert not np.array_equal(next(other)["index"], batches[0][0]["index"])


def test_process_shards_are_disjoint_and_cover(spec):
    n = len(spec.source)
    shards = [grain.sharding.ShardOptions(i, 2) for i in range(2)]
    seen = []
    for shard in shards:
        batches = list(P.eval_iterator(spec, batch_size=16, crop_mode="center", shard=shard))
        assert len(batches) == 3   # 42 each, padded to 48: both processes step together
        seen.append(np.concatenate([b["index"][b["valid"]] for b in batches]))
    assert not set(seen[0]) & set(seen[1])
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(n))
    # Training: each process reads only its shard, with half the global batch.
    train = [P.train_iterator([P.DataSpec(spec.source, None, 4)], seed=0, shard=s) for s in shards]
    firsts = [np.concatenate([next(it)["index"] for _ in range(n // 4)]) for it in train]
    assert all(len(f) == n // 2 and len(set(f)) == n // 2 for f in firsts)
    assert not set(firsts[0]) & set(firsts[1])
    with pytest.raises(ValueError, match=r"\[3\]\) does not divide by the 2 processes; the "
                       "nearest sizes that do: 2 or 4"):
        P.train_iterator([P.DataSpec(spec.source, None, 3)], seed=0, shard=shards[0])


def test_process_quotas_keep_global_sizes():
    liqe = [4, 4, 4, 4, 16, 16]  # LIQE's per-dataset batch on 8 hosts (v5p-64)
    quotas = [P.process_quotas(liqe, 8, p) for p in range(8)]
    per_process = np.array([[len(q) for q in qs] for qs in quotas])
    assert per_process.sum(axis=1).tolist() == [6] * 8          # 48 / 8 each
    assert per_process.sum(axis=0).tolist() == liqe             # the global proportions kept
    for d, size in enumerate(liqe):  # every slot of each dataset's part filled exactly once
        slots = sorted(s for qs in quotas for s in qs[d])
        assert slots == list(range(size))
    # Sizes that divide by the count: process p takes positions p, p + n, ... (shard_indices).
    assert P.process_quotas([4, 2], 2, 1) == [(1, 3), (1,)]
    with pytest.raises(ValueError, match="nearest sizes that do: 48 or 56"):
        P.process_quotas([4, 4, 4, 4, 16, 16, 1], 8, 0)


def test_uneven_dataset_sizes_split_between_processes(spec, table):
    """Per-dataset sizes 3 and 5 on 2 processes: 4 examples each per step, 3 and 5 together,
    every example of each dataset read once per epoch by exactly one process."""
    split = splits.random_split(table["ref_id"], (0.8, 0.2), seed=0)
    specs = [P.DataSpec(spec.source, split["train"], 3, None, "a"),
             P.DataSpec(spec.source, split["test"], 5, None, "b")]
    its = [P.train_iterator(specs, seed=0, shard=grain.sharding.ShardOptions(i, 2))
           for i in range(2)]
    steps = min(len(split["train"]) // 3, len(split["test"]) // 5)
    seen = {0: [], 1: []}
    for _ in range(steps):
        batches = [next(it) for it in its]
        assert [len(b["index"]) for b in batches] == [4, 4]
        ids = np.concatenate([b["dataset_id"] for b in batches])
        assert np.bincount(ids, minlength=2).tolist() == [3, 5]
        for b in batches:
            for d in (0, 1):
                seen[d].extend(b["index"][b["dataset_id"] == d].tolist())
    for d, part in ((0, "train"), (1, "test")):
        size = (3, 5)[d]
        expect = np.sort(split[part])[: len(split[part]) // size * size]
        assert len(seen[d]) == len(set(seen[d]))             # nothing read twice in an epoch
        assert set(seen[d]) <= set(split[part].tolist())
        assert len(seen[d]) == steps * size <= len(expect)
        if len(expect) == steps * size:  # the dataset whose epoch ends the loop: all of it read
            assert sorted(seen[d]) == expect.tolist()


def test_eval_liqe_crops_in_dataset_order(spec):
    it = P.eval_iterator(spec, batch_size=32, shard=ONE)
    batches = list(it)
    assert [b["pixels"].shape for b in batches] == [(32, 15, 224, 224, 3)] * 3
    index = np.concatenate([b["index"] for b in batches])
    valid = np.concatenate([b["valid"] for b in batches])
    np.testing.assert_array_equal(index[valid], np.arange(84))
    assert valid.sum() == 84 and not valid[84:].any()
    # Example 5, by hand: 320 x 240 is not resized; its grid has 1 x 4 < 15 positions, spread.
    image = np.asarray(T.decode_rgb(spec.source[5]["image"]))
    pos = T.liqe_test_positions(*image.shape[:2])
    assert len(pos) == 15
    np.testing.assert_array_equal(batches[0]["pixels"][5], T.take_crops(image, pos))
    for mode in ("center", "full"):
        b = next(P.eval_iterator(spec, batch_size=4, crop_mode=mode, shard=ONE))
        assert b["pixels"].shape == (4, 1, 224, 224, 3)


def test_liqe_resize_and_grid():
    from PIL import Image
    size = lambda w, h: T.liqe_resize(Image.new("RGB", (w, h))).size  # noqa: E731
    assert size(1024, 768) == (1024, 768)        # short side 768: not above, unchanged
    assert size(2000, 1000) == (1536, 768)       # both sides exceed 768
    assert size(4000, 700) == (4000, 700)        # one side below 768: unchanged
    assert size(300, 200) == (336, 224)          # too small for a 224 crop: enlarged
    assert T.grid_positions(768, 1024)[1, 1] == 48 and T.grid_positions(768, 1023)[1, 1] == 32
    grid = T.grid_positions(288, 384)             # (288 - 224) // 32 + 1 = 3 rows, 6 columns
    assert grid.shape == (18, 2) and grid[:7].tolist() == [
        [0, 0], [0, 32], [0, 64], [0, 96], [0, 128], [0, 160], [32, 0]]
    np.testing.assert_array_equal(T.liqe_test_positions(288, 384), grid[:15])   # 18 // 15 = 1
    big = T.grid_positions(768, 1024)             # stride 48: 12 x 17 = 204, step 204 // 15 = 13
    np.testing.assert_array_equal(T.liqe_test_positions(768, 1024), big[13 * np.arange(15)])
    small = T.grid_positions(240, 320)            # 1 x 4
    assert T.liqe_test_positions(240, 320).tolist() == [p.tolist() for p in small[
        (np.arange(15) * 4) // 15]]


def test_worker_processes_give_the_same_batches_and_resume(spec, table):
    _, single = _train(spec, table)
    want = [next(single) for _ in range(3)]
    _, workers = _train(spec, table, num_workers=1)
    got = [next(workers) for _ in range(2)]
    state = json.dumps(workers.get_state())
    workers.close()
    _, resumed = _train(spec, table, num_workers=1)
    resumed.set_state(json.loads(state))
    got.append(next(resumed))
    resumed.close()
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a["pixels"], b["pixels"])
        np.testing.assert_array_equal(a["index"], b["index"])


def test_random_rot90_turns_each_crop_on_its_own():
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)
    turned = T.random_rot90(crops, np.random.default_rng(1))
    turns = []
    for c, t in zip(crops, turned):
        k = [k for k in range(4) if np.array_equal(np.rot90(c, k), t)]
        assert len(k) == 1
        turns.append(k[0])
    assert set(turns) == {0, 1, 2, 3}   # each crop draws its own turn


def test_train_crops_with_rot90_are_turned_windows(spec, table):
    """With `rot90`, every training crop is a window of the image, turned by some multiple of 90
    degrees, and not all of them by 0."""
    _, it = _train(spec, table, crop_size=32, crop_mode="random", flip=False, rot90=True)
    batch = next(it)
    unturned = []
    for index, crops in zip(batch["index"], batch["pixels"]):
        image = np.asarray(T.decode_rgb(spec.source[int(index)]["image"]))
        for crop in crops:
            turns = [k for k in range(4) if is_window(image, np.rot90(crop, -k))]
            assert turns, "a crop is no turned window of its image"
            unturned.append(0 in turns)
    assert not all(unturned)


class _OneImage:
    """The part of `pipeline._Example` the eval map reads: one image of a given size."""
    name = "toy"

    def __init__(self, size):
        self.size = size

    def read(self, index):
        from PIL import Image
        return Image.new("RGB", self.size, (90, 120, 150)), {}


def test_pyiqa_eval_crops_in_batches_need_the_full_count():
    full = P._EvalMap(_OneImage((480, 320)), "pyiqa", 15, T.CROP).map((0, True))
    assert full["pixels"].shape == (15, T.CROP, T.CROP, 3)
    with pytest.raises(ValueError, match=r"toy: example 0: 'pyiqa' crops give 6 crops .*300x256"):
        P._EvalMap(_OneImage((300, 256)), "pyiqa", 15, T.CROP).map((0, True))
    with pytest.raises(ValueError, match=r"toy: example 0: .*both sides >= 224"):
        P._EvalMap(_OneImage((300, 200)), "pyiqa", 15, T.CROP).map((0, True))
