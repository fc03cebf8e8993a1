"""`tid2013`: TID2013, 25 references x 24 distortion types x 5 levels (Ponomarenko et al. 2015)."""
import re

from mmpiqa_jax.data.builders import base
from mmpiqa_jax.data.features import FULL_SPLIT
from mmpiqa_jax.errors import UserError

SCORE_FILE = "mos_with_names.txt"
STD_FILE = "mos_std.txt"

# Type number -> (TID2013's own name, LIQE class). TID2013 is not in LIQE's training set; the
# classes follow LIQE's `dist_map` for the KADID types they resemble (denoising -> noise, mean
# shift -> other, non-eccentricity and block-wise -> spatial, chromatic aberration, like KADID's
# colour shift, -> blur; transmission errors count as their codec, as LIVE's fast fading does).
TYPES = {
    1: ("additive gaussian noise", "noise"),
    2: ("additive noise in color components", "noise"),
    3: ("spatially correlated noise", "noise"),
    4: ("masked noise", "noise"),
    5: ("high frequency noise", "noise"),
    6: ("impulse noise", "noise"),
    7: ("quantization noise", "quantization"),
    8: ("gaussian blur", "blur"),
    9: ("image denoising", "noise"),
    10: ("jpeg compression", "jpeg compression"),
    11: ("jpeg2000 compression", "jpeg2000 compression"),
    12: ("jpeg transmission errors", "jpeg compression"),
    13: ("jpeg2000 transmission errors", "jpeg2000 compression"),
    14: ("non eccentricity pattern noise", "spatial"),
    15: ("local block-wise distortions of different intensity", "spatial"),
    16: ("mean shift", "other"),
    17: ("contrast change", "contrast"),
    18: ("change of color saturation", "color"),
    19: ("multiplicative gaussian noise", "noise"),
    20: ("comfort noise", "noise"),
    21: ("lossy compression of noisy images", "noise"),
    22: ("image color quantization with dither", "quantization"),
    23: ("chromatic aberrations", "blur"),
    24: ("sparse sampling and reconstruction", "other"),
}
_CLASSES = base.distortion_classes(dict(TYPES.values()))

# i<reference>_<type>_<level>.bmp, in any case.
_NAME = re.compile(r"^i(\d+)_(\d+)_(\d)\.bmp$", re.IGNORECASE)


class Tid2013(base.IqaBuilder):
    """TID2013: 3,000 images, 25 references, 24 distortion types at 5 levels.

    `mos` is the first field of `mos_with_names.txt` (higher is better, 0 - 9), `mos_std` the
    same line of `mos_std.txt` (NaN without it). `level` is 1 - 5, `ref_id` the reference
    number - 1. Names are matched without case.
    """

    PUBLISHED_RECORDS = 3_000  # 25 x 24 x 5
    HOMEPAGE = "https://www.ponomarenko.info/tid2013.htm"
    CITATION = """@article{ponomarenko2015tid2013,
  title={Image database TID2013: Peculiarities, results and perspectives},
  author={Ponomarenko, Nikolay and others},
  journal={Signal Processing: Image Communication}, volume={30}, year={2015}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download `tid2013.rar` from https://www.ponomarenko.info/tid2013.htm and unpack it. The
    manual folder holds `mos_with_names.txt` (one `MOS name` pair per line), `mos_std.txt`
    (one std per line, same order; optional) and `distorted_images/i01_01_1.bmp` ...
    (file names in any case).
    """

    def _read(self, folder):
        path = folder.require(SCORE_FILE)
        lines = base.read_lines(path)
        stds = self._stds(folder, len(lines))
        records = []
        for (n, line), std in zip(lines, stds):
            where = base.location(path, n, "line")
            fields = line.split()
            if len(fields) != 2:
                raise UserError(f"{where}: expected `MOS name`, got {line!r}")
            mos = base.number(fields[0], where, "MOS")
            match = _NAME.match(fields[1])
            if not match:
                raise UserError(f"{where}: {fields[1]!r} is not i<ref>_<type>_<level>.bmp")
            ref, kind, level = (int(g) for g in match.groups())
            if kind not in TYPES:
                raise UserError(f"{where}: distortion type {kind} of {fields[1]!r} is not 1 - 24")
            image, name = folder.image(f"distorted_images/{fields[1]}", where)
            type_name, _ = TYPES[kind]
            records.append(base.Record(
                path=image, name=name, where=where, mos=mos, mos_std=std, ref_id=ref - 1,
                distortion_type=type_name, distortion_class=_CLASSES[type_name], level=level))
        score = base.Score(folder.relative(path), "MOS (first field)", higher_is_better=True,
                           low=0.0, high=9.0)
        return score, {FULL_SPLIT: records}, {}

    @staticmethod
    def _stds(folder: base.Folder, count: int) -> list[float]:
        """The std of each score line; NaN for all when the copy has no `mos_std.txt`."""
        path = folder.first(STD_FILE)
        if path is None:
            return [base.NAN] * count
        lines = base.read_lines(path)
        if len(lines) != count:
            raise UserError(f"{path} has {len(lines)} values but {SCORE_FILE} has {count} lines")
        return [base.number(line, base.location(path, n, "line"), "std") for n, line in lines]


BUILDER = Tid2013
