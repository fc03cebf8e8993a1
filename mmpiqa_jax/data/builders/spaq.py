"""`spaq`: SPAQ, 11,125 smartphone photographs (Fang et al. 2020)."""
from PIL import Image

from mmpiqa_jax.data.builders import base
from mmpiqa_jax.data.features import FULL_SPLIT
from mmpiqa_jax.errors import UserError

SCORE_FILE = "Annotations/MOS and Image attribute scores.xlsx"
# The photographs are up to 4000 x 3000; like the SPAQ paper's own experiments, images are
# stored with their shorter side shrunk to 512 (Lanczos, lossless PNG), which also keeps
# LIQE's test protocol (shrinking starts at 768) from resampling them again.
SHORT_SIDE = 512


class Spaq(base.IqaBuilder):
    """SPAQ: 11,125 photographs taken with 66 smartphones.

    `mos` is the `MOS` column (higher is better, 0 - 100), `mos_std` NaN. Images whose shorter
    side exceeds 512 are shrunk to 512 and stored as PNG (metadata `original_size`: each name's
    published [height, width]); EXIF orientation is not applied. `ref_id` is the data row.
    """

    PUBLISHED_RECORDS = 11_125
    HOMEPAGE = "https://github.com/h4nwei/SPAQ"
    CITATION = """@inproceedings{fang2020perceptual,
  title={Perceptual quality assessment of smartphone photography},
  author={Fang, Yuming and Zhu, Hanwei and Zeng, Yan and Ma, Kede and Wang, Zhou},
  booktitle={CVPR}, year={2020}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download SPAQ as linked from https://github.com/h4nwei/SPAQ and unpack it. The manual
    folder holds `Annotations/MOS and Image attribute scores.xlsx` (columns `Image name`,
    `MOS`, ...) and `TestImage/00001.jpg` ...
    """

    def _read(self, folder):
        path = folder.require(SCORE_FILE)
        records, sizes = [], {}
        for ref_id, (n, row) in enumerate(base.table(base.read_sheet(path),
                                                     ("Image name", "MOS"), path)):
            where = base.location(path, n)
            image, name = folder.image(
                f"TestImage/{base.text(row['Image name'], where, 'Image name')}", where)
            records.append(base.Record(path=image, name=name, where=where, ref_id=ref_id,
                                       mos=base.number(row["MOS"], where, "MOS")))
            sizes[name] = _size(image, where)
        score = base.Score(folder.relative(path), "MOS", higher_is_better=True,
                           low=0.0, high=100.0)
        return score, {FULL_SPLIT: records}, {"short_side": SHORT_SIDE, "original_size": sizes}

    def _encode(self, record):
        return base.encode_image(record.path, short_side=SHORT_SIDE)


def _size(path, where: str) -> list[int]:
    """[height, width] from the image header (no decoding)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except OSError as error:
        raise UserError(f"{where}: cannot read image {path}: {error}") from error
    return [height, width]


BUILDER = Spaq
