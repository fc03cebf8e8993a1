"""`kadid10k`: KADID-10k, 81 references x 25 distortion types x 5 levels (Lin et al. 2019)."""
import math
import re

from mmpiqa_jax.data.builders import base
from mmpiqa_jax.data.features import FULL_SPLIT
from mmpiqa_jax.errors import UserError

SCORE_FILE = "dmos.csv"

# Type number -> (KADID's own name, LIQE class). The classes follow LIQE's `dist_map`, so that
# labels compare with LIQE's: colour shift counts as blur and denoising as noise there.
TYPES = {
    1: ("gaussian blur", "blur"),
    2: ("lens blur", "blur"),
    3: ("motion blur", "blur"),
    4: ("color diffusion", "color"),
    5: ("color shift", "blur"),
    6: ("color quantization", "quantization"),
    7: ("color saturation 1", "color"),
    8: ("color saturation 2", "color"),
    9: ("jpeg2000", "jpeg2000 compression"),
    10: ("jpeg", "jpeg compression"),
    11: ("white noise", "noise"),
    12: ("white noise in color component", "noise"),
    13: ("impulse noise", "noise"),
    14: ("multiplicative noise", "noise"),
    15: ("denoise", "noise"),
    16: ("brighten", "overexposure"),
    17: ("darken", "underexposure"),
    18: ("mean shift", "other"),
    19: ("jitter", "spatial"),
    20: ("non-eccentricity patch", "spatial"),
    21: ("pixelate", "spatial"),
    22: ("quantization", "quantization"),
    23: ("color block", "spatial"),
    24: ("high sharpen", "contrast"),
    25: ("contrast change", "contrast"),
}
_CLASSES = base.distortion_classes(dict(TYPES.values()))

# I<reference>_<type>_<level>.png
_NAME = re.compile(r"^I(\d+)_(\d+)_(\d+)\.png$", re.IGNORECASE)


class Kadid10k(base.IqaBuilder):
    """KADID-10k: 10,125 images, 81 references, 25 synthetic distortion types at 5 levels.

    `mos` is the `dmos` column of `dmos.csv`, which despite its name is higher-is-better on
    1 - 5; `mos_std` is sqrt(`var`). `level` is 1 - 5, `ref_id` the reference number - 1.
    """

    PUBLISHED_RECORDS = 10_125  # 81 x 25 x 5
    HOMEPAGE = "https://database.mmsp-kn.de/kadid-10k-database.html"
    CITATION = """@inproceedings{lin2019kadid,
  title={KADID-10k: A Large-scale Artificially Distorted IQA Database},
  author={Lin, Hanhe and Hosu, Vlad and Saupe, Dietmar},
  booktitle={QoMEX}, year={2019}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download `kadid10k.zip` from https://database.mmsp-kn.de/kadid-10k-database.html and unzip
    it. The manual folder is the one holding `dmos.csv` (header `dist_img,ref_img,dmos,var`) and
    `images/` (`I01_01_01.png` ... and the references `I01.png` ...).
    """

    def _read(self, folder):
        path = folder.require(SCORE_FILE)
        columns = ("dist_img", "ref_img", "dmos", "var")
        rows = base.table(base.read_delimited(path), columns, path)
        records = []
        for n, row in rows:
            where = base.location(path, n)
            name = base.text(row["dist_img"], where, "dist_img")
            match = _NAME.match(name)
            if not match:
                raise UserError(
                    f"{where}: {name!r} in 'dist_img' is not I<ref>_<type>_<level>.png")
            ref, kind, level = (int(g) for g in match.groups())
            if kind not in TYPES:
                raise UserError(f"{where}: distortion type {kind} of {name!r} is not 1 - 25")
            ref_name = base.text(row["ref_img"], where, "ref_img")
            if ref_name.lower() != f"i{ref:02d}.png":
                raise UserError(f"{where}: 'ref_img' {ref_name!r} does not match {name!r}")
            var = base.number(row["var"], where, "var")
            if var < 0:
                raise UserError(f"{where}: negative variance {var} in 'var'")
            image, stored = folder.image(f"images/{name}", where)
            type_name, _ = TYPES[kind]
            records.append(base.Record(
                path=image, name=stored, where=where,
                mos=base.number(row["dmos"], where, "dmos"), mos_std=math.sqrt(var),
                ref_id=ref - 1, distortion_type=type_name,
                distortion_class=_CLASSES[type_name], level=level))
        score = base.Score(folder.relative(path), "dmos", higher_is_better=True, low=1.0,
                           high=5.0)
        return score, {FULL_SPLIT: records}, {}


BUILDER = Kadid10k
