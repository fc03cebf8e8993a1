"""`live_challenge`: LIVE In the Wild Image Quality Challenge (CLIVE), 1,162 images
(Ghadiyaram & Bovik 2016)."""
from mmpiqa_jax.data.builders import base
from mmpiqa_jax.data.features import FULL_SPLIT
from mmpiqa_jax.errors import UserError

# .mat key -> file: names, scores, stds.
FILES = {"AllImages_release": "Data/AllImages_release.mat",
         "AllMOS_release": "Data/AllMOS_release.mat",
         "AllStdDev_release": "Data/AllStdDev_release.mat"}
# The first entries are the images shown to train the raters (`Images/trainingImages/`); they
# are not part of the database.
TRAINING_ENTRIES = 7


class LiveChallenge(base.IqaBuilder):
    """CLIVE: 1,162 in-the-wild photographs from mobile devices.

    `mos` is `AllMOS_release` (higher is better, 0 - 100), `mos_std` `AllStdDev_release`; the
    first 7 entries (rater training images) are left out. `ref_id` counts the kept entries.
    """

    PUBLISHED_RECORDS = 1_162  # the 7 training images left out
    HOMEPAGE = "https://live.ece.utexas.edu/research/ChallengeDB/index.html"
    CITATION = """@article{ghadiyaram2016massive,
  title={Massive online crowdsourced study of subjective and objective picture quality},
  author={Ghadiyaram, Deepti and Bovik, Alan C},
  journal={IEEE Transactions on Image Processing}, volume={25}, number={1}, year={2016}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Request "LIVE In the Wild Image Quality Challenge Database" at
    https://live.ece.utexas.edu/research/ChallengeDB/index.html and unzip `ChallengeDB_release`.
    The manual folder holds `Data/AllImages_release.mat`, `Data/AllMOS_release.mat`,
    `Data/AllStdDev_release.mat` and `Images/<name>`.
    """

    def _read(self, folder):
        names_path, mos_path, std_path = paths = [folder.require(f) for f in FILES.values()]
        names, mos, std = (base.load_mat(p, [key])[key] for p, key in zip(paths, FILES))
        if not len(names) == len(mos) == len(std):
            raise UserError(f"the CLIVE .mat files disagree in length: {names_path} has "
                            f"{len(names)} names, {mos_path} {len(mos)} scores, "
                            f"{std_path} {len(std)} stds")
        if len(names) <= TRAINING_ENTRIES:
            raise UserError(f"{names_path} has {len(names)} entries: no more than the "
                            f"{TRAINING_ENTRIES} training images")
        records = []
        for index in range(TRAINING_ENTRIES, len(names)):
            where = base.location(mos_path, index + 1, "entry")
            name = base.text(names[index], base.location(names_path, index + 1, "entry"),
                             "AllImages_release")
            image, stored = folder.image(f"Images/{name}", where)
            records.append(base.Record(
                path=image, name=stored, where=where,
                mos=base.number(mos[index], where, "AllMOS_release"),
                mos_std=base.number(std[index], base.location(std_path, index + 1, "entry"),
                                    "AllStdDev_release"),
                ref_id=index - TRAINING_ENTRIES))
        score = base.Score(folder.relative(mos_path), "AllMOS_release", higher_is_better=True,
                           low=0.0, high=100.0)
        return score, {FULL_SPLIT: records}, {"dropped_training_entries": TRAINING_ENTRIES}


BUILDER = LiveChallenge
