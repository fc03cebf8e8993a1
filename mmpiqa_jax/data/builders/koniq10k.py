"""`koniq10k`: KonIQ-10k, 10,073 in-the-wild images with an official split (Hosu et al. 2020)."""
import dataclasses
import math
import pathlib
from typing import Any

import tensorflow_datasets as tfds

from mmpiqa_jax.data.builders import base
from mmpiqa_jax.data.features import FULL_SPLIT
from mmpiqa_jax.errors import MissingFileError, UserError

SETS_FILE = "koniq10k_distributions_sets.csv"
SCORES_FILE = "koniq10k_scores_and_distributions.csv"
# The official split, as written in the `set` column -> tfds split name.
SETS = {"training": "train", "validation": "validation", "test": "test"}
# The rating distribution over the 5 ACR levels: counts, or fractions of `c_total`.
RATINGS = ("c1", "c2", "c3", "c4", "c5")


@dataclasses.dataclass
class KoniqConfig(tfds.core.BuilderConfig):
    """Which of the two published image sizes to store, and the scale of `mos`."""

    folder: str = ""
    scale: str = "1-5"  # "1-5": MOS as LIQE trains and reports; "zscore": MOS_zscore, 0 - 100


@dataclasses.dataclass(frozen=True)
class _Row:
    """One data row of a KonIQ CSV."""

    where: str
    name: str              # image_name
    values: dict[str, Any]


class Koniq10k(base.IqaBuilder):
    """KonIQ-10k: 10,073 in-the-wild images, official split 7,058 / 1,000 / 2,015.

    Configs `1024x768` (default) and `512x384` store `mos` and `mos_std` on 1 - 5: `MOS` and
    `SD` of `koniq10k_scores_and_distributions.csv`, else the mean and std (ddof 0) of `c1..c5`
    of `koniq10k_distributions_sets.csv`. The `_zscore` configs store the 0 - 100 z-score MOS
    (`MOS_zscore`, else the sets file's `MOS`) and no std. With the sets file the splits are its
    `set` column (`train`, `validation`, `test`), joined by `image_name` with the scores file;
    without it, one split `full`. `ref_id` is the image's data row.
    """

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "First release: features of mmpiqa_jax.data.features.iqa_features.",
        "1.1.0": "`mos` on 1 - 5 by default (z-score configs for 0 - 100); `mos_std` on the "
                 "scale of `mos`.",
    }
    BUILDER_CONFIGS = [
        KoniqConfig(name="1024x768", folder="1024x768", scale="1-5",
                    description="full-size images, MOS on 1 - 5"),
        KoniqConfig(name="512x384", folder="512x384", scale="1-5",
                    description="half-size images, MOS on 1 - 5"),
        KoniqConfig(name="1024x768_zscore", folder="1024x768", scale="zscore",
                    description="full-size images, z-score MOS on 0 - 100"),
        KoniqConfig(name="512x384_zscore", folder="512x384", scale="zscore",
                    description="half-size images, z-score MOS on 0 - 100"),
    ]
    PUBLISHED_RECORDS = 10_073  # 7,058 + 1,000 + 2,015
    HOMEPAGE = "https://database.mmsp-kn.de/koniq-10k-database.html"
    CITATION = """@article{hosu2020koniq,
  title={KonIQ-10k: An ecologically valid database for deep learning of blind image quality
         assessment},
  author={Hosu, Vlad and Lin, Hanhe and Sziranyi, Tamas and Saupe, Dietmar},
  journal={IEEE Transactions on Image Processing}, volume={29}, year={2020}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download KonIQ-10k from https://database.mmsp-kn.de/koniq-10k-database.html and unzip it.
    The manual folder holds the image folder of the config, `1024x768/` (configs `1024x768`,
    the default, and `1024x768_zscore`) or `512x384/` (`512x384`, `512x384_zscore`), and one
    or both of the score files:
    - `koniq10k_scores_and_distributions.csv`: `MOS` and `SD` on 1 - 5, `MOS_zscore` (0 - 100);
    - `koniq10k_distributions_sets.csv`: the official split (`set`), the rating distribution
      `c1..c5` and `MOS` on 0 - 100.
    Put both there for the official split with the published 1 - 5 MOS and SD.
    """

    def _read(self, folder):
        config = self.builder_config
        images = config.folder
        if folder.find(images) is None:
            others = [c for c in self.BUILDER_CONFIGS
                      if c.scale == config.scale and folder.find(c.folder) is not None]
            hint = (f"; it holds {others[0].folder}/: build koniq10k/{others[0].name}"
                    if others else "")
            raise MissingFileError(f"no image folder {images}/ in {folder.root}{hint}")
        folder.require(SETS_FILE, SCORES_FILE)  # raises naming both when neither is there
        sets_path, scores_path = folder.first(SETS_FILE), folder.first(SCORES_FILE)
        zscore = config.scale == "zscore"

        # The score: from the scores file when it is there, else from the sets file.
        if scores_path is not None:
            path, column = scores_path, "MOS_zscore" if zscore else "MOS"
            label = f"MOS_zscore of {SCORES_FILE}" if zscore else f"MOS (1-5) of {SCORES_FILE}"
            std_label = "none on this scale" if zscore else f"SD of {SCORES_FILE}"
            scores = _rows(path, [column] if zscore else ["MOS", "SD"])
        else:
            path, column = sets_path, "MOS"
            label = f"MOS (0-100) of {SETS_FILE}" if zscore else "mean of c1..c5"
            std_label = "none on this scale" if zscore else "std (ddof 0) of c1..c5"
            scores = _rows(path, ["MOS", "set"] if zscore else [*RATINGS, "set"])
        by_image = base.by_name(scores)

        # The split: from the sets file when it is there, joined with the scores by image.
        if sets_path is None:
            listed = [(row, FULL_SPLIT) for row in scores]
        elif sets_path == path:
            listed = [(row, _split(row)) for row in scores]
        else:
            sets = _rows(sets_path, ["set"])
            _join(sets, base.by_name(sets), sets_path, by_image, scores_path)
            listed = [(by_image[row.name], _split(row)) for row in sets]

        splits: dict[str, list[base.Record]] = {}
        for ref_id, (row, split) in enumerate(listed):
            if zscore:
                mos, std = base.number(row.values[column], row.where, column), base.NAN
            elif path == scores_path:
                mos = base.number(row.values["MOS"], row.where, "MOS")
                std = base.number(row.values["SD"], row.where, "SD")
            else:
                mos, std = _rating_mean_std(row)
            image, name = folder.image(f"{images}/{row.name}", row.where)
            splits.setdefault(split, []).append(base.Record(
                path=image, name=name, where=row.where, mos=mos, mos_std=std, ref_id=ref_id))

        low, high = (0.0, 100.0) if zscore else (1.0, 5.0)
        score = base.Score(folder.relative(path), label, higher_is_better=True, low=low,
                           high=high)
        extra = {"image_folder": images, "official_split": sets_path is not None,
                 "split_file": folder.relative(sets_path) if sets_path is not None else "",
                 "scale": "0 - 100 (z-score)" if zscore else "1 - 5", "std_column": std_label}
        return score, splits, extra


def _rows(path: pathlib.Path, columns: list[str]) -> list[_Row]:
    """The data rows of a KonIQ CSV, with `image_name` and `columns` (all required)."""
    rows = []
    for n, row in base.table(base.read_delimited(path), ["image_name", *columns], path):
        where = base.location(path, n)
        rows.append(_Row(where, base.text(row["image_name"], where, "image_name"), row))
    return rows


def _join(sets: list[_Row], sets_by_image: dict[str, _Row], sets_path: pathlib.Path,
          scores: dict[str, _Row], scores_path: pathlib.Path) -> None:
    """Raises naming both files and the image when a row of one file is not in the other."""
    for rows, others, this, other in ((sets, scores, sets_path, scores_path),
                                      (list(scores.values()), sets_by_image, scores_path,
                                       sets_path)):
        missing = [row for row in rows if row.name not in others]
        if missing:
            more = f" (and {len(missing) - 1:,} more)" if len(missing) > 1 else ""
            raise UserError(f"{missing[0].where}: image {missing[0].name} is not in {other}"
                            f"{more}; {this.name} and {other.name} must list the same images")


def _split(row: _Row) -> str:
    """The tfds split of a sets-file row, from its `set` column."""
    written = base.text(row.values["set"], row.where, "set")
    if written not in SETS:
        raise UserError(f"{row.where}: 'set' is {written!r}, expected one of {list(SETS)}")
    return SETS[written]


def _rating_mean_std(row: _Row) -> tuple[float, float]:
    """Mean and standard deviation (ddof 0) on 1 - 5 of a row's rating distribution c1..c5."""
    weights = [base.number(row.values[c], row.where, c) for c in RATINGS]
    total = sum(weights)
    if any(w < 0 for w in weights) or total <= 0:
        raise UserError(f"{row.where}: the rating distribution c1..c5 {weights} is not a "
                        f"distribution (negative or all zero)")
    mean = sum(level * w for level, w in enumerate(weights, 1)) / total
    variance = sum(w * (level - mean) ** 2 for level, w in enumerate(weights, 1)) / total
    return mean, math.sqrt(variance)


BUILDER = Koniq10k
