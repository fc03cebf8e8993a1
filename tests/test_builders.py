"""The builders of the published IQA datasets, built from tiny fakes in the exact real layouts
and read back through `tfds.data_source` (no TensorFlow)."""
import csv
import dataclasses
import importlib
import math
import pathlib
from typing import Callable

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import fake_datasets as fake


@dataclasses.dataclass(frozen=True)
class Case:
    module: str                       # mmpiqa_jax.data.builders.<module>
    write: Callable[..., fake.Fake]
    quality: Callable[[float], float]  # the normalisation of the reference's table
    column: str                       # the score column the metadata must name
    higher_is_better: bool
    config: str | None = None
    options: tuple = ()               # keyword arguments of `write`

    @property
    def builder(self):
        return importlib.import_module(f"mmpiqa_jax.data.builders.{self.module}").BUILDER

    @property
    def name(self) -> str:
        return f"{self.module}/{self.config}" if self.config else self.module


def _clip(q: float) -> float:
    return min(max(q, 0.0), 1.0)


CASES = {
    "kadid10k": Case("kadid10k", fake.write_kadid10k, lambda x: (x - 1) / 4, "dmos", True),
    **{f"csiq-{file}": Case("csiq", fake.write_csiq, lambda x: 1 - x, "dmos", False,
                            options=(("score_file", file),)) for file in fake.CSIQ_FILES},
    "live_iqa-realigned": Case("live_iqa", fake.write_live_iqa,
                               lambda x: _clip((111.77 - x) / 111.77), "dmos_new", False,
                               config="realigned"),
    "live_iqa-original": Case("live_iqa", fake.write_live_iqa, lambda x: (100 - x) / 100, "dmos",
                              False, config="original", options=(("score_file", "dmos.mat"),)),
    "tid2013": Case("tid2013", fake.write_tid2013, lambda x: x / 9, "MOS (first field)", True),
    "koniq10k-sets": Case("koniq10k", fake.write_koniq10k, lambda x: x / 100, "MOS", True,
                          config="1024x768"),
    "koniq10k-scores": Case("koniq10k", fake.write_koniq10k, lambda x: x / 100, "MOS_zscore",
                            True, config="1024x768",
                            options=(("score_file", "koniq10k_scores_and_distributions.csv"),)),
    "koniq10k-512x384": Case("koniq10k", fake.write_koniq10k, lambda x: x / 100, "MOS", True,
                             config="512x384", options=(("folders", ("512x384", "1024x768")),)),
    "live_challenge": Case("live_challenge", fake.write_live_challenge, lambda x: x / 100,
                           "AllMOS_release", True),
    "bid-xlsx": Case("bid", fake.write_bid, lambda x: x / 5, "column 2 (MOS)", True),
    "bid-xls": Case("bid", fake.write_bid, lambda x: x / 5, "column 2 (MOS)", True,
                    options=(("score_file", "DatabaseGrades.xls"),)),
    "spaq": Case("spaq", fake.write_spaq, lambda x: x / 100, "MOS", True),
}
# One variant per dataset for the error tests.
ERROR_CASES = ["kadid10k", "csiq-csiq.DMOS.xlsx", "csiq-csiq.beta.txt", "live_iqa-realigned",
               "tid2013", "koniq10k-sets", "live_challenge", "bid-xls", "spaq"]


def build(case: Case, tmp: pathlib.Path, **write_options) -> tuple[fake.Fake, pathlib.Path]:
    """Writes the fake folder and builds it; returns the fake and the data_dir."""
    written = case.write(tmp / "manual", **dict(case.options), **write_options)
    data_dir = tmp / "data"
    builder = case.builder(data_dir=data_dir, config=case.config, file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(written.root)))
    return written, data_dir


def read(case: Case, data_dir: pathlib.Path, split: str = "all") -> dict[str, dict]:
    source = tfds.data_source(case.name, split=split, data_dir=data_dir)
    examples = [source[i] for i in range(len(source))]
    return {ex["name"].decode(): ex for ex in examples}


@dataclasses.dataclass
class Built:
    case: Case
    fake: fake.Fake
    data_dir: pathlib.Path
    examples: dict[str, dict]


@pytest.fixture(scope="module", params=list(CASES))
def built(request, tmp_path_factory) -> Built:
    case = CASES[request.param]
    written, data_dir = build(case, tmp_path_factory.mktemp(request.param))
    return Built(case, written, data_dir, read(case, data_dir))


def test_every_listed_image_is_stored_with_its_labels(built):
    assert sorted(built.examples) == sorted(built.fake.images)
    for name, ex in built.examples.items():
        want = built.fake.images[name]
        assert ex["mos"] == pytest.approx(want.mos, abs=1e-5), name
        if math.isnan(want.mos_std):
            assert np.isnan(ex["mos_std"]), name
        else:
            assert ex["mos_std"] == pytest.approx(want.mos_std, abs=1e-5), name
        assert ex["distortion_type"].decode() == want.distortion_type, name
        assert ex["distortion_class"] == want.distortion_class, name
        assert ex["level"] == want.level, name


def test_quality_is_the_reference_normalisation_higher_better(built):
    case, examples = built.case, built.examples
    for name, ex in examples.items():
        assert 0.0 <= ex["quality"] <= 1.0, name
        assert ex["quality"] == pytest.approx(case.quality(built.fake.images[name].mos),
                                              abs=1e-6), name
    # The worst image by the dataset's own convention has the lowest quality.
    mos = {name: built.fake.images[name].mos for name in examples}
    worst = (min if case.higher_is_better else max)(mos, key=mos.get)
    assert examples[worst]["quality"] == min(ex["quality"] for ex in examples.values())
    best = (max if case.higher_is_better else min)(mos, key=mos.get)
    assert examples[best]["quality"] == max(ex["quality"] for ex in examples.values())


def test_ref_id_groups_the_images_of_one_reference(built):
    pairs = {(built.fake.images[name].ref, int(ex["ref_id"]))
             for name, ex in built.examples.items()}
    refs = {ref for ref, _ in pairs}
    ids = {ref_id for _, ref_id in pairs}
    # One id per reference and one reference per id.
    assert len(pairs) == len(refs) == len(ids)
    assert min(ids) >= 0


def test_images_are_the_published_pixels(built):
    for name, ex in built.examples.items():
        want = built.fake.images[name]
        assert ex["image"].dtype == np.uint8 and ex["image"].shape == want.shape, name
        if want.shape[:2] == (fake.SIZE, fake.SIZE):  # not resized: stored without loss
            with Image.open(built.fake.root / name) as image:
                np.testing.assert_array_equal(ex["image"], np.asarray(image.convert("RGB")))


def test_metadata_records_the_score_read(built):
    builder = tfds.builder(built.case.name, data_dir=built.data_dir)
    metadata = builder.info.metadata
    assert metadata["score_column"] == built.case.column
    assert metadata["score_file"] == built.fake.score_file.relative_to(built.fake.root).as_posix()
    direction = "higher is better" if built.case.higher_is_better else "lower is better"
    assert metadata["score_direction"] == direction
    if built.case.module == "spaq":
        assert metadata["original_size"]["TestImage/00002.jpg"] == list(fake.SPAQ_LARGE[::-1])


def test_koniq_official_split_comes_from_the_distributions_csv(tmp_path):
    case = CASES["koniq10k-sets"]
    written, data_dir = build(case, tmp_path)
    assert set(tfds.builder(case.name, data_dir=data_dir).info.splits) == {
        "train", "validation", "test"}
    for split in ("train", "validation", "test"):
        want = {n for n, e in written.images.items() if e.split == split}
        assert set(read(case, data_dir, split)) == want


def test_koniq_scores_csv_alone_gives_one_full_split(tmp_path):
    case = CASES["koniq10k-scores"]
    _, data_dir = build(case, tmp_path)
    assert set(tfds.builder(case.name, data_dir=data_dir).info.splits) == {"full"}


def test_koniq_config_without_its_folder_names_the_one_present(tmp_path):
    case = dataclasses.replace(CASES["koniq10k-sets"], options=(("folders", ("512x384",)),))
    with pytest.raises(FileNotFoundError, match=r"1024x768.*koniq10k/512x384"):
        build(case, tmp_path)


def test_live_config_without_its_file_names_the_other(tmp_path):
    case = dataclasses.replace(CASES["live_iqa-realigned"], options=(("score_file", "dmos.mat"),))
    with pytest.raises(FileNotFoundError, match=r"dmos_realigned\.mat.*live_iqa/original"):
        build(case, tmp_path)


def _nothing_written(data_dir: pathlib.Path) -> bool:
    return not any(data_dir.rglob("*.array_record*"))


@pytest.mark.parametrize("key", ERROR_CASES)
def test_missing_image_is_named_with_its_score_row(key, tmp_path):
    case = CASES[key]
    written = case.write(tmp_path / "probe", **dict(case.options))
    missing = sorted(written.images)[1]
    original = CASES[key].write

    def write_without_image(root, **options):
        result = original(root, **options)
        (result.root / missing).unlink()
        return result

    with pytest.raises(FileNotFoundError) as error:
        build(dataclasses.replace(case, write=write_without_image), tmp_path / "build")
    message = str(error.value)
    built_fake = tmp_path / "build" / "manual"
    assert str(built_fake / missing).lower() in message.lower()
    assert str(built_fake / written.score_file.relative_to(written.root)) in message
    assert written.images[missing].row in message
    assert _nothing_written(tmp_path / "build" / "data")


@pytest.mark.parametrize("key", ERROR_CASES)
def test_malformed_score_is_named_with_its_row(key, tmp_path):
    case = CASES[key]
    probe = case.write(tmp_path / "probe", **dict(case.options))
    bad = sorted(probe.images)[-1]
    with pytest.raises(ValueError) as error:
        build(case, tmp_path / "build", bad_score=bad)
    message = str(error.value)
    score_file = tmp_path / "build" / "manual" / probe.score_file.relative_to(probe.root)
    assert str(score_file) in message
    assert f"{probe.images[bad].row}:" in message
    assert _nothing_written(tmp_path / "build" / "data")


def test_score_outside_its_nominal_range_is_an_error(tmp_path):
    written = fake.write_kadid10k(tmp_path / "manual")
    with open(written.score_file, newline="") as f:
        rows = list(csv.reader(f))
    rows[3][2] = "7.5"  # KADID scores lie in [1, 5]
    with open(written.score_file, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    case = dataclasses.replace(CASES["kadid10k"], write=lambda root: written)
    with pytest.raises(ValueError, match=r"dmos\.csv, row 4: score 7\.5 .*\[1, 5\]"):
        build(case, tmp_path)


def test_builder_names_are_the_dataset_names():
    modules = ["kadid10k", "csiq", "live_iqa", "tid2013", "koniq10k", "live_challenge", "bid",
               "spaq"]
    for module in modules:
        builder = importlib.import_module(f"mmpiqa_jax.data.builders.{module}").BUILDER
        assert builder.name == module
        assert builder.MANUAL_DOWNLOAD_INSTRUCTIONS


def test_koniq_distributions_mos_on_1_to_5_is_read_as_such(tmp_path):
    written = fake.write_koniq10k(tmp_path / "manual")
    with open(written.score_file, newline="") as f:
        rows = list(csv.reader(f))
    column = rows[0].index("MOS")
    for row in rows[1:]:
        row[column] = f"{1 + 4 * float(row[column]) / 100:.4f}"
    with open(written.score_file, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    case = dataclasses.replace(CASES["koniq10k-sets"], write=lambda root: written)
    _, data_dir = build(case, tmp_path)
    assert tfds.builder(case.name, data_dir=data_dir).info.metadata["score_range"] == [1.0, 5.0]
    for ex in read(case, data_dir).values():
        assert ex["quality"] == pytest.approx((ex["mos"] - 1) / 4, abs=1e-6)


@pytest.mark.parametrize("mode, suffix", [("L", ".jpg"), ("P", ".png"), ("RGBA", ".png"),
                                          ("RGB", ".bmp")])
def test_stored_images_decode_as_rgb(mode, suffix, tmp_path):
    from mmpiqa_jax.data.builders import base
    from mmpiqa_jax.data.features import iqa_features
    path = tmp_path / f"image{suffix}"
    pixels = np.random.default_rng(0).integers(0, 256, (8, 12, 3), np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)
    decoded = iqa_features()["image"].decode_example_np(base.encode_image(path))
    with Image.open(path) as image:
        np.testing.assert_array_equal(decoded, np.asarray(image.convert("RGB")))
