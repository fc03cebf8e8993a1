"""`data.split`: the grammar, per-dataset sources, LIQE's folder layout, pyiqa's files, and the
strict matching of split files to a prepared dataset (every bad input named by file and row)."""
import pickle

import numpy as np
import pytest

from protocol_fixtures import write_liqe_file
from mmpiqa_jax import labels
from mmpiqa_jax.data import split_spec, splits

DATASETS = ("live_iqa", "csiq", "koniq10k")


def test_one_source_for_all():
    spec = split_spec.parse("70/10/20", DATASETS)
    for name in DATASETS:
        assert spec.source(name) == split_spec.Source("ratios", ratios=(0.7, 0.1, 0.2))
    assert split_spec.parse("80/20").source("x").ratios == (0.8, 0.2)
    assert split_spec.parse("official").source("koniq10k").kind == "official"


def test_per_dataset_sources():
    spec = split_spec.parse("koniq10k:official,*:liqe:/data/IQA Database,csiq:80/20", DATASETS)
    assert spec.source("koniq10k") == split_spec.Source("official")
    assert spec.source("live_iqa") == split_spec.Source("liqe", path="/data/IQA Database")
    assert spec.source("csiq").ratios == (0.8, 0.2)
    spec = split_spec.parse("pyiqa:/m/meta.csv:/m/split.pkl,synthetic_iqa/small:50/25/25")
    assert spec.source("kadid10k") == split_spec.Source("pyiqa", path="/m/meta.csv",
                                                        extra="/m/split.pkl")
    assert spec.source("synthetic_iqa/small").ratios == (0.5, 0.25, 0.25)


@pytest.mark.parametrize("text,match", [
    ("koniq10k:offical", r"item 'koniq10k:offical' has no split source 'offical'"),
    ("60/30", r"item '60/30' has percentages that sum to 90, not 100"),
    ("liqe:", r"item 'liqe:' needs a path after 'liqe:'"),
    ("koniq10k:official,koniq10k:70/10/20", r"names dataset 'koniq10k' a second time"),
    ("70/10/20,*:official", r"is a second default"),
    ("koniq10k:official,", r"item '' is empty"),
])
def test_malformed_split_names_the_item_and_shows_the_syntax(text, match):
    with pytest.raises(ValueError, match=match) as info:
        split_spec.parse(text, DATASETS)
    assert f"config.data.split={text!r}" in str(info.value)
    assert "koniq10k:official,*:liqe:" in str(info.value)  # the grammar's example


def test_a_dataset_without_a_source_or_not_trained_is_named():
    with pytest.raises(ValueError, match=r"gives no split for dataset 'csiq'.*`csiq:SOURCE`"):
        split_spec.parse("koniq10k:official,live_iqa:70/10/20", DATASETS)
    with pytest.raises(ValueError, match=r"names \['kadid'\], which are not training datasets"):
        split_spec.parse("kadid:official,*:70/10/20", DATASETS)


# ------------------------------------------------------------------------------------------------
# LIQE's folder.

def _table(n=12):
    names = np.array([f"jp2k/img{i}.bmp" for i in range(n // 2)] +
                     [f"fastfading/img{i}.bmp" for i in range(n // 2)], object)
    quality = np.linspace(0.05, 0.95, n)[np.random.default_rng(0).permutation(n)]
    return {"name": names, "quality": quality, "ref_id": np.arange(n) % 4,
            "distortion_class": np.full(n, labels.distortion_index("jpeg2000 compression"))}


def _write_liqe(root, table, parts, *, seed=0, score=lambda q: 111.77 * q, rows=None):
    """LIQE's layout for LIVE: IQA_Database/databaserelease2/splits2/<seed+1>/live_*_clip.txt."""
    folder = root / "databaserelease2" / "splits2" / str(seed + 1)
    for part, idx in parts.items():
        write_liqe_file(folder / f"live_{part}_clip.txt", rows(part, idx) if rows else [
            (table["name"][i], score(table["quality"][i]),
             "white noise" if "fastfading" in table["name"][i] else "jpeg2000 compression",
             (labels.SCENES[i % 9], "night") if i % 2 else (labels.SCENES[i % 9],))
            for i in idx])
    return folder


def _parts(n=12):
    return {"train": np.arange(0, 8), "val": np.arange(8, 10), "test": np.arange(10, n)}


def test_liqe_folder_gives_parts_scenes_and_one_fastfading_class(tmp_path):
    table = _table()
    _write_liqe(tmp_path, table, _parts(), seed=3)
    source = split_spec.parse(f"liqe:{tmp_path}").source("live_iqa")
    got = split_spec.resolve(source, "live_iqa", table, seed=3)
    for part, want in _parts().items():
        np.testing.assert_array_equal(got.parts[part], want)
    for i in range(12):
        assert labels.SCENES[i % 9] in [labels.SCENES[k] for k in np.flatnonzero(got.scenes[i])]
        assert got.scenes[i].sum() == (2 if i % 2 and i % 9 != 5 else 1)
    # LIQE's files call fast fading "white noise"; the one mapping is JPEG2000's.
    assert set(got.distortion_class.tolist()) == {
        labels.distortion_index(labels.LIVE_FASTFADING_CLASS)}
    with pytest.raises(FileNotFoundError, match=r"live_train_clip.txt not found"):
        split_spec.resolve(source, "live_iqa", table, seed=4)
    with pytest.raises(FileNotFoundError, match=r"no folder CSIQ/ for dataset 'csiq'"):
        split_spec.resolve(source, "csiq", table, seed=3)
    with pytest.raises(ValueError, match=r"split_seed=10: liqe split files number 1..10"):
        split_spec.resolve(source, "live_iqa", table, seed=10)


def test_liqe_missing_image_is_named_by_file_and_row(tmp_path):
    table = _table()
    def rows(part, idx):
        names = [table["name"][i] for i in idx]
        if part == "val":
            names[1] = "jp2k/img99.bmp"
        return [(n, 1.0, "jpeg2000 compression", ("animal",)) for n in names]
    folder = _write_liqe(tmp_path, table, _parts(), rows=rows)
    with pytest.raises(ValueError, match=rf"{folder}/live_val_clip.txt:2: image 'jp2k/img99.bmp' "
                                         r"is not in the prepared dataset live"):
        splits.import_liqe(str(folder), "live", table["name"])


def test_liqe_image_in_two_parts_is_named_by_both_rows(tmp_path):
    table = _table()
    parts = _parts()
    parts["test"] = np.array([10, 3])  # image 3 is also the train file's 4th row
    folder = _write_liqe(tmp_path, table, parts)
    with pytest.raises(ValueError, match=rf"live_test_clip.txt:2: image 'jp2k/img3.bmp' is "
                                         rf"listed twice, also at {folder}/live_train_clip.txt:4"):
        splits.import_liqe(str(folder), "live", table["name"], table["quality"])


def test_liqe_scores_that_disagree_with_quality_are_refused(tmp_path):
    table = _table()
    # A DMOS where LIQE writes higher-is-better scores: ranks run the other way.
    folder = _write_liqe(tmp_path, table, _parts(), score=lambda q: 111.77 * (1 - q))
    with pytest.raises(ValueError, match=r"live_train_clip.txt:1: the file's scores disagree "
                                         r"with the prepared dataset's quality \(Spearman -1.000"):
        splits.import_liqe(str(folder), "live", table["name"], table["quality"])
    # One row out of place among agreeing ones: that row is named, not the first.
    ordered = dict(table, quality=np.linspace(0.05, 0.95, 12))
    def rows(part, idx):
        scores = [10.0 if (part, k) == ("train", 2) else ordered["quality"][i]
                  for k, i in enumerate(idx)]
        return [(ordered["name"][i], score, "jpeg2000 compression", ("animal",))
                for i, score in zip(idx, scores)]
    folder = _write_liqe(tmp_path / "one", ordered, _parts(), rows=rows)
    with pytest.raises(ValueError, match=r"live_train_clip.txt:3: the file's scores disagree.*"
                                         r"score 10 ranks at 100%, its quality 0.2136 at 38%"):
        splits.import_liqe(str(folder), "live", ordered["name"], ordered["quality"])


# ------------------------------------------------------------------------------------------------
# pyiqa's files.

def test_pyiqa_pickle_split_by_seed(tmp_path):
    table = _table()
    meta = tmp_path / "meta_info_LIVEIQADataset.csv"
    order = np.random.default_rng(1).permutation(12)  # the CSV lists images in its own order
    meta.write_text("dist_name,mos\n" + "".join(
        f"{table['name'][i]},{111.77 * (1 - table['quality'][i]):.3f}\n" for i in order))
    pkl = tmp_path / "live_seed123.pkl"
    rows = {k: {"train": list(range(0, 8)), "val": [8, 9], "test": [10, 11]} for k in range(1, 11)}
    rows[4] = {"train": list(range(4, 12)), "val": [0, 1], "test": [2, 3]}
    pkl.write_bytes(pickle.dumps(rows))
    source = split_spec.parse(f"pyiqa:{meta}:{pkl}").source("live_iqa")
    got = split_spec.resolve(source, "live_iqa", table, seed=3)  # split 4
    assert sorted(got.parts["test"].tolist()) == sorted(order[[2, 3]].tolist())
    assert sorted(got.parts["train"].tolist()) == sorted(order[4:].tolist())
    with pytest.raises(ValueError, match=r"live_seed123.pkl: no split 11 \(data.split_seed 10\)"):
        splits.import_pyiqa_pickle(str(meta), str(pkl), 11, table["name"])
    # A DMOS column passes (pyiqa keeps raw scores); scores in a shuffled order do not.
    rng = np.random.default_rng(2)
    meta.write_text("dist_name,mos\n" + "".join(
        f"{table['name'][i]},{rng.uniform():.3f}\n" for i in order))
    with pytest.raises(ValueError, match=r"meta_info_LIVEIQADataset.csv:\d+: the file's scores "
                                         r"disagree"):
        split_spec.resolve(source, "live_iqa", table, seed=3)


def test_pyiqa_column_split(tmp_path):
    table = _table()
    meta = tmp_path / "meta.csv"
    meta.write_text("img_name,mos,split\n" + "".join(
        f"{n},{q:.3f},{'train' if i < 9 else 'test'}\n"
        for i, (n, q) in enumerate(zip(table["name"], table["quality"]))))
    got = split_spec.resolve(split_spec.parse(f"pyiqa:{meta}").source("x"), "x", table, seed=0)
    assert got.parts["train"].tolist() == list(range(9)) and got.scenes is None
