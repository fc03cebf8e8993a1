"""Splits: by reference, seeded; LIQE and pyiqa split files round-trip; official splits."""
import io

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from fake_datasets import write_csv
from protocol_fixtures import write_liqe_file
from mmpiqa_jax import labels
from mmpiqa_jax.data import splits
from mmpiqa_jax.data.features import iqa_features

# 20 references with 1 to 4 examples each, in a shuffled order.
REF_IDS = np.random.default_rng(7).permutation(np.repeat(np.arange(20), np.arange(20) % 4 + 1))


def assert_disjoint(split, ref_ids=None):
    """No example, and no reference of `ref_ids`, in two parts."""
    groups = [np.asarray(v, int) for v in split.values()]
    if ref_ids is not None:
        groups = [np.unique(np.asarray(ref_ids)[g]) for g in groups]
    members = np.concatenate(groups)
    assert len(members) == len(np.unique(members)), split


@pytest.mark.parametrize("ratios,parts", [((0.7, 0.1, 0.2), ("train", "val", "test")),
                                          ((0.8, 0.2), ("train", "test")),
                                          ((0.5, 0.5), ("train", "test"))])
def test_random_split_by_reference(ratios, parts):
    split = splits.random_split(REF_IDS, ratios, seed=3)
    assert tuple(split) == parts
    assert_disjoint(split, REF_IDS)
    everything = np.concatenate(list(split.values()))
    np.testing.assert_array_equal(np.sort(everything), np.arange(len(REF_IDS)))
    for part, fraction in zip(parts, ratios):
        assert len(np.unique(REF_IDS[split[part]])) == round(fraction * 20)


def test_same_seed_same_split_other_seed_other_split():
    a = splits.random_split(REF_IDS, (0.7, 0.1, 0.2), seed=5)
    b = splits.random_split(REF_IDS, (0.7, 0.1, 0.2), seed=5)
    for part in a:
        np.testing.assert_array_equal(a[part], b[part])
    assert len(splits.STANDARD_SEEDS) == 10
    tests = {tuple(splits.random_split(REF_IDS, (0.7, 0.1, 0.2), seed)["test"])
             for seed in splits.STANDARD_SEEDS}
    assert len(tests) == 10


def test_assert_disjoint_catches_a_crossing_reference():
    split = splits.random_split(REF_IDS, (0.8, 0.2), seed=0)
    # Move one example of a reference that has several to the other part.
    train_refs = REF_IDS[split["train"]]
    k = next(k for k, r in enumerate(train_refs) if (train_refs == r).sum() > 1)
    moved = {"train": np.delete(split["train"], k),
             "test": np.append(split["test"], split["train"][k])}
    assert_disjoint(moved)
    with pytest.raises(AssertionError):
        assert_disjoint(moved, REF_IDS)
    with pytest.raises(AssertionError):
        assert_disjoint({"train": [0, 1], "test": [0]})


# LIQE's names -> our classes, by hand from LIQE's `dist_map`.
LIQE_CLASSES = {"white noise": "noise", "gaussian blur": "blur", "darken": "underexposure",
                "desaturation": "color", "other realistic": "other", "pixelate": "spatial"}


def test_liqe_files_give_parts_scenes_and_classes(tmp_path):
    names = np.array([f"dst_imgs/set{i % 3}/Img_{i:03d}.PNG" for i in range(len(REF_IDS))], object)
    quality = np.random.default_rng(0).uniform(0, 1, len(names))
    split = splits.random_split(REF_IDS, (0.7, 0.1, 0.2), seed=1)
    rng = np.random.default_rng(1)
    scenes = np.zeros((len(names), labels.NUM_SCENES), np.float32)
    dists = [list(LIQE_CLASSES)[i % len(LIQE_CLASSES)] for i in range(len(names))]
    for part, idx in split.items():
        rows = []
        for i in idx:
            chosen = rng.choice(labels.NUM_SCENES, size=i % 4, replace=False)
            scenes[i, chosen] = 1
            rows.append((names[i], quality[i], dists[i],
                         tuple(labels.SCENES[s] for s in chosen)))
        write_liqe_file(tmp_path / f"csiq_{part}_clip.txt", rows)
    imported = splits.import_liqe(str(tmp_path), "csiq", names, quality)
    for part in split:
        np.testing.assert_array_equal(imported.parts[part], split[part])
    np.testing.assert_array_equal(imported.scenes, scenes)  # no scene: a zero row
    np.testing.assert_array_equal(imported.distortion_class,
                                  [labels.distortion_index(LIQE_CLASSES[d]) for d in dists])


def test_liqe_names_match_case_insensitively_and_by_file_name(tmp_path):
    names = ["dst_imgs/awgn/A.AWGN.1.png", "refs/b.png", "x/y/c.bmp"]
    (tmp_path / "db_train_clip.txt").write_text(
        "DST_IMGS/awgn/a.awgn.1.png\t0.5\twhite noise\tanimal\tnight\tinvalid\n"
        "other/root/b.png\t0.7\tfnoise\tinvalid\tinvalid\tinvalid\n")
    (tmp_path / "db_test_clip.txt").write_text(
        "x\\y\\c.bmp\t0.1\tdarken\thuman\tinvalid\tinvalid\n")
    (tmp_path / "db_val_clip.txt").write_text("")
    imported = splits.import_liqe(str(tmp_path), "db", names)
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


def test_pyiqa_csv_split_columns(tmp_path):
    n = len(REF_IDS)
    names = [f"img/{i}.png" for i in range(n)]
    official = {"train": np.arange(0, n, 2), "test": np.arange(1, n, 2)}
    random3 = splits.random_split(REF_IDS, (0.8, 0.2), seed=3)
    part = {column: {int(i): p for p, idx in split.items() for i in idx}
            for column, split in (("official_split", official), ("split_3", random3))}
    write_csv(tmp_path / "meta.csv", ["name", "mos", "std", "official_split", "split_3"],
              [[names[i], 3.0, 0.1, part["official_split"][i], part["split_3"][i]]
               for i in range(n)])
    for column, want in (("official_split", official), ("split_3", random3)):
        got = splits.import_pyiqa(str(tmp_path / "meta.csv"), names, split_column=column)
        assert got.keys() == want.keys()
        for p in want:
            np.testing.assert_array_equal(got[p], want[p])


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
    assert_disjoint(split)
