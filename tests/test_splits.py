"""Splits: by reference, seeded; LIQE and pyiqa split files round-trip; official splits."""
import io

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from mmpiqa_jax import labels
from mmpiqa_jax.data import splits
from mmpiqa_jax.data.features import iqa_features

# 20 references with 1 to 4 examples each, in a shuffled order.
REF_IDS = np.random.default_rng(7).permutation(np.repeat(np.arange(20), np.arange(20) % 4 + 1))


def _table(n: int) -> dict:
    rng = np.random.default_rng(0)
    return {
        "name": np.array([f"dst_imgs/set{i % 3}/Img_{i:03d}.PNG" for i in range(n)], object),
        "mos": rng.uniform(1, 5, n), "mos_std": rng.uniform(0, 1, n),
        "quality": rng.uniform(0, 1, n),
        "distortion_class": rng.integers(-1, labels.NUM_DISTORTIONS, n),
    }


@pytest.mark.parametrize("ratios,parts", [("70/10/20", ("train", "val", "test")),
                                          ("80/20", ("train", "test")),
                                          ((0.5, 0.5), ("train", "test"))])
def test_random_split_by_reference(ratios, parts):
    split = splits.random_split(REF_IDS, ratios, seed=3)
    assert tuple(split) == parts
    splits.check_split(split, REF_IDS)  # raises when a reference is in two parts
    everything = np.concatenate(list(split.values()))
    np.testing.assert_array_equal(np.sort(everything), np.arange(len(REF_IDS)))
    fractions = splits._ratios(ratios)
    for part, fraction in zip(parts, fractions):
        assert len(np.unique(REF_IDS[split[part]])) == round(fraction * 20)


def test_same_seed_same_split_other_seed_other_split():
    a, b = splits.random_split(REF_IDS, seed=5), splits.random_split(REF_IDS, seed=5)
    for part in a:
        np.testing.assert_array_equal(a[part], b[part])
    standard = splits.standard_splits(REF_IDS)
    assert len(standard) == len(splits.STANDARD_SEEDS) == 10
    tests = {tuple(s["test"]) for s in standard}
    assert len(tests) == 10


def test_check_split_catches_a_crossing_reference():
    split = splits.random_split(REF_IDS, "80/20", seed=0)
    # Move one example of a reference that has several to the other part.
    train_refs = REF_IDS[split["train"]]
    k = next(k for k, r in enumerate(train_refs) if (train_refs == r).sum() > 1)
    moved = {"train": np.delete(split["train"], k),
             "test": np.append(split["test"], split["train"][k])}
    with pytest.raises(ValueError, match="reference .* in parts"):
        splits.check_split(moved, REF_IDS)
    with pytest.raises(ValueError, match="example 0 is in parts"):
        splits.check_split({"train": [0, 1], "test": [0]})


def test_bad_ratios():
    with pytest.raises(ValueError, match="unknown split preset '60/40'"):
        splits.random_split(REF_IDS, "60/40")
    with pytest.raises(ValueError, match="summing to 1"):
        splits.random_split(REF_IDS, (0.5, 0.6))


def test_liqe_files_round_trip(tmp_path):
    n = len(REF_IDS)
    table = _table(n)
    split = splits.random_split(REF_IDS, "70/10/20", seed=1)
    scenes = np.zeros((n, labels.NUM_SCENES), np.float32)
    rng = np.random.default_rng(1)
    for i in range(n):
        scenes[i, rng.choice(labels.NUM_SCENES, size=1 + i % 3, replace=False)] = 1
    paths = splits.export_liqe(str(tmp_path), "csiq", split, table, scenes)
    assert [p.rsplit("/", 1)[1] for p in paths] == [
        "csiq_train_clip.txt", "csiq_val_clip.txt", "csiq_test_clip.txt"]
    first = open(paths[0]).readline().rstrip("\n").split("\t")
    assert len(first) == 6 and first[0] in set(table["name"])

    imported = splits.import_liqe(str(tmp_path), "csiq", table["name"], table["quality"])
    for part in split:
        np.testing.assert_array_equal(imported.parts[part], split[part])
    np.testing.assert_array_equal(imported.scenes, scenes)
    got_classes = imported.distortion_class
    # In-the-wild rows (-1) are written as LIQE's "other realistic", read back as `other`.
    want = np.where(table["distortion_class"] < 0, labels.distortion_index("other"),
                    table["distortion_class"])
    np.testing.assert_array_equal(got_classes, want)


def test_liqe_names_match_case_insensitively_and_by_file_name(tmp_path):
    names = ["dst_imgs/awgn/A.AWGN.1.png", "refs/b.png", "x/y/c.bmp"]
    (tmp_path / "db_train_clip.txt").write_text(
        "DST_IMGS/awgn/a.awgn.1.png\t0.5\twhite noise\tanimal\tnight\tinvalid\n"
        "other/root/b.png\t0.7\tfnoise\tinvalid\tinvalid\tinvalid\n")
    (tmp_path / "db_test_clip.txt").write_text(
        "x\\y\\c.bmp\t0.1\tdarken\thuman\tinvalid\tinvalid\n")
    imported = splits.import_liqe(str(tmp_path), "db", names, parts=("train", "test"))
    split, scenes, classes = imported.parts, imported.scenes, imported.distortion_class
    assert split["train"].tolist() == [0, 1] and split["test"].tolist() == [2]
    assert scenes[1].sum() == 0 and scenes[0].sum() == 2           # "invalid" x3: unknown scenes
    assert classes.tolist() == [labels.distortion_index(c)
                                for c in ("noise", "noise", "underexposure")]


def test_liqe_errors_name_file_and_line(tmp_path):
    names = ["a.png", "b.png"]
    path = tmp_path / "db_train_clip.txt"
    path.write_text("a.png\t0.5\twhite noise\tanimal\tinvalid\tinvalid\nb.png\tbad\twhite noise\n")
    with pytest.raises(ValueError, match=r"db_train_clip.txt:2: expected 6"):
        splits.read_liqe_file(str(path))
    path.write_text("a.png\t0.5\tsmudge\tanimal\tinvalid\tinvalid\n")
    with pytest.raises(ValueError, match=r":1: unknown distortion name 'smudge'"):
        splits.read_liqe_file(str(path))
    path.write_text("zz.png\t0.5\twhite noise\tanimal\tinvalid\tinvalid\n")
    (tmp_path / "db_val_clip.txt").write_text("")
    (tmp_path / "db_test_clip.txt").write_text("")
    with pytest.raises(ValueError, match=r"db_train_clip.txt:1: image 'zz.png' is not in the "
                                         r"prepared dataset db"):
        splits.import_liqe(str(tmp_path), "db", names)
    with pytest.raises(FileNotFoundError, match="other_train_clip.txt"):
        splits.import_liqe(str(tmp_path), "other", names)


def test_pyiqa_csv_round_trip(tmp_path):
    n = len(REF_IDS)
    table = _table(n)
    official = {"train": np.arange(0, n, 2), "test": np.arange(1, n, 2)}
    random3 = splits.random_split(REF_IDS, "80/20", seed=3)
    path = splits.export_pyiqa(str(tmp_path / "meta.csv"), table,
                               {"official_split": official, "split_3": random3})
    assert open(path).readline().strip() == "name,mos,std,official_split,split_3"
    for column, want in (("official_split", official), ("split_3", random3)):
        got = splits.import_pyiqa(path, table["name"], split_column=column)
        assert got.keys() == want.keys()
        for part in want:
            np.testing.assert_array_equal(got[part], want[part])


def test_pyiqa_koniq_layout_and_errors(tmp_path):
    path = tmp_path / "meta_info_KonIQ10kDataset.csv"
    path.write_text("img_name,mos,std,split\n1.jpg,77.3,0.5,training\n2.jpg,68.7,0.5,test\n"
                    "3.jpg,71.2,0.4,validation\n")
    got = splits.import_pyiqa(str(path), ["1024x768/3.jpg", "1024x768/1.jpg", "1024x768/2.jpg"])
    assert {k: v.tolist() for k, v in got.items()} == {"train": [1], "test": [2], "val": [0]}
    with pytest.raises(ValueError, match="no column 'official_split'"):
        splits.import_pyiqa(str(path), ["1.jpg"], split_column="official_split")
    path.write_text("img_name,mos,std,split\n1.jpg,77.3,0.5,holdout\n")
    with pytest.raises(ValueError, match=r"meta_info_KonIQ10kDataset.csv:2: split value 'holdout'"):
        splits.import_pyiqa(str(path), ["1.jpg"])


class _TwoSplits(tfds.core.GeneratorBasedBuilder):
    """A builder with an official split, written in an order unlike `all`'s."""
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=iqa_features(),
                                     metadata=tfds.core.MetadataDict())

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples([3, 1, 4]),
                "validation": self._generate_examples([0]),
                "test": self._generate_examples([2, 5])}

    def _generate_examples(self, ids):
        buf = io.BytesIO()
        Image.new("RGB", (2, 2)).save(buf, "PNG")
        for i in ids:
            yield i, {"image": buf.getvalue(), "name": f"img/{i}.jpg", "mos": 3.0, "mos_std": 0.1,
                      "quality": 0.5, "ref_id": i, "distortion_type": "", "distortion_class": -1,
                      "level": 0}


def test_official_split_matches_names_into_all(tmp_path):
    builder = _TwoSplits(data_dir=str(tmp_path), file_format="array_record")
    builder.download_and_prepare()
    split = splits.builder_split(builder)
    names = splits.read_labels(builder.as_data_source(split="all"))["name"]
    assert set(split) == {"train", "val", "test"}
    got = {part: sorted(names[idx]) for part, idx in split.items()}
    assert got == {"train": ["img/1.jpg", "img/3.jpg", "img/4.jpg"], "val": ["img/0.jpg"],
                   "test": ["img/2.jpg", "img/5.jpg"]}
    splits.check_split(split)
