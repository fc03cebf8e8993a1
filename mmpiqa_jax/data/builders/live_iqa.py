"""`live_iqa`: LIVE Image Quality Assessment Database Release 2 (Sheikh et al. 2006)."""
import dataclasses

import tensorflow_datasets as tfds

from mmpiqa_jax import labels
from mmpiqa_jax.data.builders import base
from mmpiqa_jax.data.features import FULL_SPLIT
from mmpiqa_jax.errors import MissingFileError, UserError

REFNAMES_FILE = "refnames_all.mat"

# The .mat arrays list 982 entries in this order of folders; within a folder, entry k is
# `img<k>.bmp`. (LIVE, folder name, entries, LIQE class; fast fading is JPEG2000 over a lossy
# channel: `labels.LIVE_FASTFADING_CLASS`, the one mapping the split importers use too.)
FOLDERS = (
    ("jp2k", 227, "jpeg2000 compression"),
    ("jpeg", 233, "jpeg compression"),
    ("wn", 174, "noise"),
    ("gblur", 174, "blur"),
    ("fastfading", 174, labels.LIVE_FASTFADING_CLASS),
)
ENTRIES = sum(count for _, count, _ in FOLDERS)  # 982
_CLASSES = base.distortion_classes({folder: cls for folder, _, cls in FOLDERS})


@dataclasses.dataclass
class LiveConfig(tfds.core.BuilderConfig):
    """Which published DMOS to read, and the top of its scale (DMOS 0 is pristine)."""

    score_file: str = ""
    column: str = ""
    std_column: str | None = None
    worst: float = 100.0


class LiveIqa(base.IqaBuilder):
    """LIVE Release 2: 779 distorted images of 29 references, 5 distortion types.

    `mos` is a DMOS (lower is better): config `realigned` (default) reads `dmos_new` and
    `dmos_std` of `dmos_realigned.mat`, quality = (111.77 - x) / 111.77 as LIQE; `original`
    `dmos` of `dmos.mat` (no std), quality = (100 - x) / 100 as pyiqa; both clipped to [0, 1].
    Copies of the references (`orgs`) are left out. `distortion_type` is the folder, `level` 0,
    `ref_id` the position of the reference name (`refnames_all.mat`) among the sorted names.
    """

    BUILDER_CONFIGS = [
        LiveConfig(name="realigned", description="dmos_new of dmos_realigned.mat (LIQE)",
                   score_file="dmos_realigned.mat", column="dmos_new", std_column="dmos_std",
                   worst=111.77),
        LiveConfig(name="original", description="dmos of dmos.mat (pyiqa)",
                   score_file="dmos.mat", column="dmos", worst=100.0),
    ]
    PUBLISHED_RECORDS = 779  # distorted entries (references left out)
    HOMEPAGE = "https://live.ece.utexas.edu/research/quality/subjective.htm"
    CITATION = """@article{sheikh2006statistical,
  title={A statistical evaluation of recent full reference image quality assessment algorithms},
  author={Sheikh, Hamid R and Sabir, Muhammad F and Bovik, Alan C},
  journal={IEEE Transactions on Image Processing}, volume={15}, number={11}, year={2006}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Request "LIVE Image Quality Assessment Database Release 2" at
    https://live.ece.utexas.edu/research/quality/subjective.htm and unpack it. The manual
    folder holds `dmos_realigned.mat` (config `realigned`, the default) or `dmos.mat` (config
    `original`), `refnames_all.mat`, and the folders `jp2k/ jpeg/ wn/ gblur/ fastfading/`
    with `img<N>.bmp`.
    """

    def _read(self, folder):
        config = self.builder_config
        path = folder.first(config.score_file)
        if path is None:
            other = next(c for c in self.BUILDER_CONFIGS if c.name != config.name)
            hint = (f"; it holds {other.score_file}: build live_iqa/{other.name}"
                    if folder.first(other.score_file) else "")
            raise MissingFileError(f"no {config.score_file} in {folder.root}{hint}")
        keys = ["orgs", config.column] + ([config.std_column] if config.std_column else [])
        arrays = base.load_mat(path, keys)
        refnames_path = folder.require(REFNAMES_FILE)
        refnames = base.load_mat(refnames_path, ["refnames_all"])["refnames_all"]
        lengths = {(path, key): len(arrays[key]) for key in keys}
        lengths[(refnames_path, "refnames_all")] = len(refnames)
        for (file, key), length in lengths.items():
            if length != ENTRIES:
                raise UserError(f"{file}: {key!r} has {length} entries; LIVE Release 2 has "
                                f"{ENTRIES}, in the order {[f for f, _, _ in FOLDERS]}")

        entries = []  # (where, folder, image number, dmos, std, reference name)
        images = [(folder, k) for folder, count, _ in FOLDERS for k in range(1, count + 1)]
        for index, (directory, k) in enumerate(images):
            where = base.location(path, index + 1, "entry")
            org = base.integer(arrays["orgs"][index], where, "orgs")
            if org not in (0, 1):
                raise UserError(f"{where}: 'orgs' is {org}, expected 0 or 1")
            if org:  # a copy of the reference, not a distorted image
                continue
            dmos = base.number(arrays[config.column][index], where, config.column)
            std = (base.number(arrays[config.std_column][index], where, config.std_column)
                   if config.std_column else base.NAN)
            ref = base.text(refnames[index], base.location(refnames_path, index + 1, "entry"),
                            "refnames_all")
            entries.append((where, directory, k, dmos, std, ref))

        refs = base.index_by_sorted(ref.lower() for *_, ref in entries)
        records = []
        for where, directory, k, dmos, std, ref in entries:
            image, name = folder.image(f"{directory}/img{k}.bmp", where)
            records.append(base.Record(
                path=image, name=name, where=where, mos=dmos, mos_std=std,
                ref_id=refs[ref.lower()], distortion_type=directory,
                distortion_class=_CLASSES[directory]))
        score = base.Score(folder.relative(path), config.column, higher_is_better=False,
                           low=0.0, high=config.worst, clip=True)
        return score, {FULL_SPLIT: records}, {}


BUILDER = LiveIqa
