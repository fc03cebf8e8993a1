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
    "koniq10k-both": Case("koniq10k", fake.write_koniq10k, lambda x: (x - 1) / 4,
                          f"MOS (1-5) of {fake.KONIQ_SCORES_FILE}", True, config="1024x768"),
    "koniq10k-sets": Case("koniq10k", fake.write_koniq10k, lambda x: (x - 1) / 4,
                          "mean of c1..c5", True, config="1024x768",
                          options=(("files", (fake.KONIQ_SETS_FILE,)),)),
    "koniq10k-scores": Case("koniq10k", fake.write_koniq10k, lambda x: (x - 1) / 4,
                            f"MOS (1-5) of {fake.KONIQ_SCORES_FILE}", True, config="1024x768",
                            options=(("files", (fake.KONIQ_SCORES_FILE,)),)),
    "koniq10k-zscore": Case("koniq10k", fake.write_koniq10k, lambda x: x / 100,
                            f"MOS_zscore of {fake.KONIQ_SCORES_FILE}", True,
                            config="1024x768_zscore", options=(("zscore", True),)),
    "koniq10k-zscore-sets": Case("koniq10k", fake.write_koniq10k, lambda x: x / 100,
                                 f"MOS (0-100) of {fake.KONIQ_SETS_FILE}", True,
                                 config="1024x768_zscore",
                                 options=(("zscore", True), ("files", (fake.KONIQ_SETS_FILE,)))),
    "koniq10k-512x384": Case("koniq10k", fake.write_koniq10k, lambda x: (x - 1) / 4,
                             f"MOS (1-5) of {fake.KONIQ_SCORES_FILE}", True, config="512x384",
                             options=(("folders", ("512x384", "1024x768")),)),
    "live_challenge": Case("live_challenge", fake.write_live_challenge, lambda x: x / 100,
                           "AllMOS_release", True),
    "bid-xlsx": Case("bid", fake.write_bid, lambda x: x / 5, "column 2 (MOS)", True),
    "bid-xls": Case("bid", fake.write_bid, lambda x: x / 5, "column 2 (MOS)", True,
                    options=(("score_file", "DatabaseGrades.xls"),)),
    "spaq": Case("spaq", fake.write_spaq, lambda x: x / 100, "MOS", True),
}
# One variant per dataset for the error tests.
ERROR_CASES = ["kadid10k", "csiq-csiq.DMOS.xlsx", "csiq-csiq.beta.txt", "live_iqa-realigned",
               "tid2013", "koniq10k-both", "koniq10k-sets", "live_challenge", "bid-xls", "spaq"]


def build(case: Case, tmp: pathlib.Path, allow_partial: bool = True,
          **write_options) -> tuple[fake.Fake, pathlib.Path]:
    """Writes the fake folder and builds it (a few images: a partial build unless told
    otherwise); returns the fake and the data_dir."""
    written = case.write(tmp / "manual", **dict(case.options), **write_options)
    data_dir = tmp / "data"
    builder = case.builder(data_dir=data_dir, config=case.config, file_format="array_record",
                           allow_partial=allow_partial)
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


# ------------------------------------------------------------------------------------------------
# KonIQ-10k: the 1 - 5 MOS as LIQE uses it, the z-score configs, the two CSVs joined.

def _csv(path: pathlib.Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return {row["image_name"]: row for row in csv.DictReader(f)}


def _koniq_metadata(case: Case, data_dir: pathlib.Path):
    return tfds.builder(case.name, data_dir=data_dir).info.metadata


def test_koniq_default_config_is_the_mos_on_1_to_5_and_its_sd(tmp_path):
    case = CASES["koniq10k-both"]
    assert case.builder.BUILDER_CONFIGS[0].name == "1024x768"  # the default
    written, data_dir = build(case, tmp_path)
    published = _csv(written.root / fake.KONIQ_SCORES_FILE)
    examples = read(case, data_dir)
    for name, ex in examples.items():
        row = published[name.split("/")[-1]]
        assert ex["mos"] == pytest.approx(float(row["MOS"]), abs=1e-5), name
        assert ex["mos_std"] == pytest.approx(float(row["SD"]), abs=1e-5), name
        assert 1.0 <= ex["mos"] <= 5.0
    metadata = _koniq_metadata(case, data_dir)
    assert metadata["score_range"] == [1.0, 5.0]
    assert metadata["quality"] == "(x - 1) / 4"
    assert metadata["std_column"] == f"SD of {fake.KONIQ_SCORES_FILE}"


def test_koniq_sets_file_alone_gives_the_mean_and_std_of_c1_to_c5(tmp_path):
    case = CASES["koniq10k-sets"]
    written, data_dir = build(case, tmp_path)
    rows = _csv(written.root / fake.KONIQ_SETS_FILE)
    for name, ex in read(case, data_dir).items():
        weights = np.array([float(rows[name.split("/")[-1]][f"c{k}"]) for k in range(1, 6)])
        levels = np.arange(1, 6)
        mean = np.sum(levels * weights) / np.sum(weights)
        std = np.sqrt(np.sum(weights * (levels - mean) ** 2) / np.sum(weights))
        assert ex["mos"] == pytest.approx(mean, abs=1e-5), name
        assert ex["mos_std"] == pytest.approx(std, abs=1e-5), name
        # Not the file's 0 - 100 MOS nor its SD.
        assert ex["mos_std"] != pytest.approx(float(rows[name.split("/")[-1]]["SD"]), abs=1e-3)
    metadata = _koniq_metadata(case, data_dir)
    assert metadata["score_column"] == "mean of c1..c5"
    assert metadata["score_range"] == [1.0, 5.0]
    assert set(tfds.builder(case.name, data_dir=data_dir).info.splits) == {
        "train", "validation", "test"}


@pytest.mark.parametrize("key, column", [("koniq10k-zscore", "MOS_zscore"),
                                         ("koniq10k-zscore-sets", "MOS")])
def test_koniq_zscore_config_is_0_to_100_without_std(key, column, tmp_path):
    case = CASES[key]
    written, data_dir = build(case, tmp_path)
    published = _csv(written.score_file)
    for name, ex in read(case, data_dir).items():
        assert ex["mos"] == pytest.approx(float(published[name.split("/")[-1]][column]),
                                          abs=1e-4), name
        assert np.isnan(ex["mos_std"]), name
        assert ex["quality"] == pytest.approx(ex["mos"] / 100, abs=1e-6)
    metadata = _koniq_metadata(case, data_dir)
    assert metadata["score_range"] == [0.0, 100.0]
    assert metadata["official_split"] is True


def test_koniq_both_files_are_joined_by_image_name(tmp_path):
    case = CASES["koniq10k-both"]
    written, data_dir = build(case, tmp_path)
    # The scores file lists the images in another order than the sets file.
    sets = list(_csv(written.root / fake.KONIQ_SETS_FILE))
    assert list(_csv(written.root / fake.KONIQ_SCORES_FILE)) == sets[::-1]
    for split in ("train", "validation", "test"):
        want = {n for n, e in written.images.items() if e.split == split}
        assert set(read(case, data_dir, split)) == want
    metadata = _koniq_metadata(case, data_dir)
    assert metadata["split_file"] == fake.KONIQ_SETS_FILE
    assert metadata["score_file"] == fake.KONIQ_SCORES_FILE


@pytest.mark.parametrize("drop_from", [fake.KONIQ_SETS_FILE, fake.KONIQ_SCORES_FILE])
def test_koniq_files_that_list_other_images_are_an_error(drop_from, tmp_path):
    written = fake.write_koniq10k(tmp_path / "manual")
    path = written.root / drop_from
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    dropped = lines.pop(2).split(",")[0]
    path.write_text("".join(lines), encoding="utf-8")
    other = written.root / ({fake.KONIQ_SETS_FILE, fake.KONIQ_SCORES_FILE} - {drop_from}).pop()
    case = dataclasses.replace(CASES["koniq10k-both"], write=lambda root: written)
    with pytest.raises(ValueError) as error:
        build(case, tmp_path)
    message = str(error.value)
    assert f"{other}, row " in message and f"image {dropped} is not in {path}" in message
    assert _nothing_written(tmp_path / "data")


def test_koniq_image_listed_twice_names_both_rows(tmp_path):
    written = fake.write_koniq10k(tmp_path / "manual")
    path = written.root / fake.KONIQ_SCORES_FILE
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines + lines[1:2]), encoding="utf-8")
    case = dataclasses.replace(CASES["koniq10k-both"], write=lambda root: written)
    image = lines[1].split(",")[0]
    with pytest.raises(ValueError, match=rf"row {len(lines) + 1}: image {image} is listed twice "
                                         rf"\(also at .*row 2\)"):
        build(case, tmp_path)


# ------------------------------------------------------------------------------------------------
# Published record counts.

def test_every_published_builder_has_its_published_count():
    counts = {"kadid10k": 10_125, "csiq": 866, "live_iqa": 779, "tid2013": 3_000,
              "koniq10k": 10_073, "live_challenge": 1_162, "bid": 586, "spaq": 11_125}
    for module, count in counts.items():
        builder = importlib.import_module(f"mmpiqa_jax.data.builders.{module}").BUILDER
        assert builder.PUBLISHED_RECORDS == count, module


@pytest.mark.parametrize("key", ERROR_CASES)
def test_a_count_other_than_the_published_one_is_refused(key, tmp_path):
    case = CASES[key]
    with pytest.raises(ValueError) as error:
        build(case, tmp_path, allow_partial=False)
    written = case.write(tmp_path / "probe", **dict(case.options))
    message = str(error.value)
    score_file = tmp_path / "manual" / written.score_file.relative_to(written.root)
    assert message.startswith(
        f"{case.module}: found {len(written.images)} images in {score_file}, the published "
        f"dataset has {case.builder.PUBLISHED_RECORDS:,};")
    assert f"mmpiqa prepare {case.module}" in message and "--allow-partial" in message
    assert _nothing_written(tmp_path / "data")


def test_a_partial_build_is_recorded_in_the_metadata(built):
    metadata = tfds.builder(built.case.name, data_dir=built.data_dir).info.metadata
    assert metadata["partial"] is True
    assert metadata["published_records"] == built.case.builder.PUBLISHED_RECORDS
    assert metadata["records"] == len(built.fake.images)


def test_allow_partial_belongs_to_one_builder(tmp_path):
    written = fake.write_kadid10k(tmp_path / "manual")
    config = tfds.download.DownloadConfig(manual_dir=str(written.root))
    builder = CASES["kadid10k"].builder
    builder(data_dir=tmp_path / "a", file_format="array_record",
            allow_partial=True).download_and_prepare(download_config=config)
    with pytest.raises(ValueError, match="the published dataset has 10,125"):
        builder(data_dir=tmp_path / "b", file_format="array_record").download_and_prepare(
            download_config=config)


def test_registry_prepare_takes_allow_partial(tmp_path):
    from mmpiqa_jax.data import registry
    written = fake.write_koniq10k(tmp_path / "manual")
    with pytest.raises(ValueError, match=r"koniq10k: found 5 images .*10,073"):
        registry.prepare("koniq10k", str(written.root), str(tmp_path / "data"))
    builder = registry.prepare("koniq10k", str(written.root), str(tmp_path / "data"),
                               allow_partial=True)
    assert builder.info.metadata["partial"] is True
    source = registry.load_source("koniq10k/1024x768", data_dir=str(tmp_path / "data"))
    assert all(1.0 <= source[i]["mos"] <= 5.0 for i in range(len(source)))


def test_mmpiqa_prepare_refuses_a_partial_folder_unless_allowed(tmp_path, capsys):
    from mmpiqa_jax.cli.main import main
    written = fake.write_kadid10k(tmp_path / "manual")
    command = ["prepare", "kadid10k", "--manual-dir", str(written.root),
               "--data-dir", str(tmp_path / "data")]
    assert main(command) == 1
    err = capsys.readouterr().err
    assert f"kadid10k: found {len(written.images)} images in {written.score_file}" in err
    assert "the published dataset has 10,125" in err and "--allow-partial" in err
    assert _nothing_written(tmp_path / "data")
    assert main(command + ["--allow-partial"]) == 0
    assert f"{len(written.images)}" in capsys.readouterr().out
    metadata = tfds.builder("kadid10k", data_dir=tmp_path / "data").info.metadata
    assert metadata["partial"] is True and metadata["records"] == len(written.images)
