"""`bid`: BID, the Blurred Image Database, 586 in-the-wild photographs (Ciancio et al. 2011)."""
from typing import Any

from mmpiqa_jax.data.builders import base
from mmpiqa_jax.data.features import FULL_SPLIT
from mmpiqa_jax.errors import UserError

# Copies ship the grades as .xlsx or as .xls; columns are positional: image number, MOS, then
# the individual grades.
SCORE_FILES = ("DatabaseGrades.xlsx", "DatabaseGrades.xls")
IMAGE = "ImageDatabase/DatabaseImage{:04d}.JPG"


class Bid(base.IqaBuilder):
    """BID: 586 photographs with realistic blur and other camera distortions.

    `mos` is column 2 of `DatabaseGrades` (higher is better; 0 - 5, the range every score
    seen lies in), `mos_std` NaN (not published). `ref_id` is the image number - 1.
    """

    PUBLISHED_RECORDS = 586
    HOMEPAGE = "https://www.lps.usp.br/hae/software/blurred_image_database.html"
    CITATION = """@article{ciancio2011no,
  title={No-reference blur assessment of digital pictures based on multifeature classifiers},
  author={Ciancio, Alexandre and others},
  journal={IEEE Transactions on Image Processing}, volume={20}, number={1}, year={2011}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download the Blurred Image Database (BID) from
    https://www.lps.usp.br/hae/software/blurred_image_database.html and unzip it. The manual
    folder holds `DatabaseGrades.xlsx` or `DatabaseGrades.xls` (column 1 image number, column
    2 MOS) and `ImageDatabase/DatabaseImage0001.JPG` ...
    """

    def _read(self, folder):
        path = folder.require(*SCORE_FILES)
        rows = base.read_sheet(path)
        # Title rows come first; the data starts at the first row holding a number in
        # column 1 or 2, and from there on every row must be a complete record.
        start = next((i for i, (_, row) in enumerate(rows) if any(map(_is_number, row[:2]))),
                     None)
        if start is None:
            raise UserError(f"score file {path} has no row with an image number and a MOS")
        records = []
        for n, row in rows[start:]:
            where = base.location(path, n)
            cells = list(row[:2]) + [None] * (2 - len(row[:2]))
            number = base.integer(cells[0], where, "column 1 (image number)")
            image, name = folder.image(IMAGE.format(number), where)
            records.append(base.Record(
                path=image, name=name, where=where,
                mos=base.number(cells[1], where, "column 2 (MOS)"), ref_id=number - 1))
        score = base.Score(folder.relative(path), "column 2 (MOS)", higher_is_better=True,
                           low=0.0, high=5.0)
        return score, {FULL_SPLIT: records}, {}


def _is_number(cell: Any) -> bool:
    try:
        float(cell)
    except (TypeError, ValueError):
        return False
    return True


BUILDER = Bid
