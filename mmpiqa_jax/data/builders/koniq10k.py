"""`koniq10k`: KonIQ-10k, 10,073 in-the-wild images with an official split (Hosu et al. 2020)."""
import dataclasses

import tensorflow_datasets as tfds

from mmpiqa_jax.data.builders import base
from mmpiqa_jax.data.features import FULL_SPLIT

SPLITS_FILE = "koniq10k_distributions_sets.csv"
SCORES_FILE = "koniq10k_scores_and_distributions.csv"
# The official split, as written in the `set` column -> tfds split name.
SETS = {"training": "train", "validation": "validation", "test": "test"}


@dataclasses.dataclass
class KoniqConfig(tfds.core.BuilderConfig):
    """Which of the two published image sizes to store."""

    folder: str = ""


class Koniq10k(base.IqaBuilder):
    """KonIQ-10k: 10,073 in-the-wild images, official split 7,058 / 1,000 / 2,015.

    With `koniq10k_distributions_sets.csv` the splits are `train`, `validation`, `test` (the
    official ones, from its `set` column); `mos` is its `MOS` column and `mos_std` its `SD`.
    With only `koniq10k_scores_and_distributions.csv`, which has no split, the one split is
    `full`; `mos` is its `MOS_zscore` column (0 - 100), the scale the distributions file uses,
    so that a copy gives the same scores whichever file it has; `mos_std` is NaN, as the file's
    `SD` belongs to the 1 - 5 `MOS`. Read `split="all"` for every image either way.

    The scale of `MOS` in the distributions file is documented as 0 - 100 but also described as
    1 - 5: when all its values lie in [1, 5] it is read as 1 - 5, and the metadata says so.
    Configs: `1024x768` (default, full size, as pyiqa) or `512x384`, the image folder stored.
    `ref_id` is the image's row among the data rows of the CSV.
    """

    BUILDER_CONFIGS = [
        KoniqConfig(name="1024x768", folder="1024x768", description="full-size images"),
        KoniqConfig(name="512x384", folder="512x384", description="half-size images"),
    ]
    HOMEPAGE = "https://database.mmsp-kn.de/koniq-10k-database.html"
    CITATION = """@article{hosu2020koniq,
  title={KonIQ-10k: An ecologically valid database for deep learning of blind image quality
         assessment},
  author={Hosu, Vlad and Lin, Hanhe and Sziranyi, Tamas and Saupe, Dietmar},
  journal={IEEE Transactions on Image Processing}, volume={29}, year={2020}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download KonIQ-10k from https://database.mmsp-kn.de/koniq-10k-database.html and unzip it.
    The manual folder holds `koniq10k_distributions_sets.csv` (gives the official split) or
    `koniq10k_scores_and_distributions.csv`, and the image folder of the config:
    `1024x768/` (config `1024x768`, the default) or `512x384/` (config `512x384`).
    """

    def _read(self, folder):
        images = self.builder_config.folder
        if folder.find(images) is None:
            others = [c.name for c in self.BUILDER_CONFIGS if folder.find(c.folder) is not None]
            hint = f"; it holds {others[0]}/: build koniq10k/{others[0]}" if others else ""
            raise FileNotFoundError(f"no image folder {images}/ in {folder.root}{hint}")
        path = folder.require(SPLITS_FILE, SCORES_FILE)
        with_sets = path.name.lower() == SPLITS_FILE.lower()
        if with_sets:
            column, std_column = "MOS", "SD"
            rows = base.table(base.read_delimited(path), ("image_name", column, "set"), path,
                              optional=(std_column,))
        else:
            column, std_column = "MOS_zscore", None
            rows = base.table(base.read_delimited(path), ("image_name", column), path)

        splits: dict[str, list[base.Record]] = {}
        for ref_id, (n, row) in enumerate(rows):
            where = base.location(path, n)
            file = base.text(row["image_name"], where, "image_name")
            image, name = folder.image(f"{images}/{file}", where)
            split = FULL_SPLIT
            if with_sets:
                written = base.text(row["set"], where, "set")
                if written not in SETS:
                    raise ValueError(f"{where}: 'set' is {written!r}, expected one of {list(SETS)}")
                split = SETS[written]
            std = (base.number(row[std_column], where, std_column)
                   if std_column is not None and std_column in row else base.NAN)
            splits.setdefault(split, []).append(base.Record(
                path=image, name=name, where=where, mos=base.number(row[column], where, column),
                mos_std=std, ref_id=ref_id))

        low, high = 0.0, 100.0
        if with_sets and all(1.0 <= r.mos <= 5.0 for rs in splits.values() for r in rs):
            low, high = 1.0, 5.0  # no 0 - 100 copy has all 10,073 scores under 5
        score = base.Score(folder.relative(path), column, higher_is_better=True, low=low,
                           high=high)
        return score, splits, {"image_folder": images, "official_split": with_sets}


BUILDER = Koniq10k
