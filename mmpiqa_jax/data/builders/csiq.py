"""`csiq`: CSIQ, 866 images of 30 references x 6 distortion types (Larson & Chandler 2010)."""
from mmpiqa_jax.data.builders import base
from mmpiqa_jax.data.features import FULL_SPLIT
from mmpiqa_jax.errors import UserError

# The score file, in order of preference: copies name the spreadsheet differently, and some
# loaders read a text export of the same sheet.
SCORE_FILES = ("csiq.DMOS.xlsx", "csiq.beta.xlsx", "csiq.beta.txt")
SHEET = "all_by_image"

# `dst_type` -> (folder under dst_imgs/, label in the file name, LIQE class).
TYPES = {
    "noise": ("awgn", "AWGN", "noise"),
    "jpeg": ("jpeg", "JPEG", "jpeg compression"),
    "jpeg 2000": ("jpeg2000", "jpeg2000", "jpeg2000 compression"),
    "fnoise": ("fnoise", "fnoise", "noise"),  # pink (1/f) noise
    "blur": ("blur", "BLUR", "blur"),
    "contrast": ("contrast", "contrast", "contrast"),
}
_CLASSES = base.distortion_classes({kind: cls for kind, (_, _, cls) in TYPES.items()})
_COLUMNS = ("image", "dst_type", "dst_lev", "dmos")


class Csiq(base.IqaBuilder):
    """CSIQ: 866 distorted images of 30 references, 6 distortion types at 4 - 5 levels.

    `mos` is `dmos` (lower is better, 0 - 1), `mos_std` `dmos_std`, `distortion_type` `dst_type`,
    `level` `dst_lev`; `ref_id` the position of `image` among the sorted reference names.
    """

    PUBLISHED_RECORDS = 866  # distorted images
    HOMEPAGE = "https://s2.smu.edu/~eclarson/csiq.html"
    CITATION = """@article{larson2010csiq,
  title={Most apparent distortion: full-reference image quality assessment and the role of
         strategy},
  author={Larson, Eric C and Chandler, Damon M},
  journal={Journal of Electronic Imaging}, volume={19}, number={1}, year={2010}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download CSIQ from https://s2.smu.edu/~eclarson/csiq.html. The manual folder holds the
    score file, one of `csiq.DMOS.xlsx` (sheet `all_by_image`), `csiq.beta.xlsx` or its text
    export `csiq.beta.txt` (tab- or comma-separated), with the columns
    `image, dst_idx, dst_type, dst_lev, dmos_std, dmos`; and the images
    `dst_imgs/<awgn|jpeg|jpeg2000|fnoise|blur|contrast>/<image>.<LABEL>.<dst_lev>.png`.
    """

    def _read(self, folder):
        path = folder.require(*SCORE_FILES)
        rows = (base.read_delimited(path, delimiters="\t,") if path.suffix.lower() == ".txt"
                else base.read_sheet(path, SHEET))
        parsed = []
        for n, row in base.table(rows, _COLUMNS, path, optional=("dmos_std",)):
            where = base.location(path, n)
            image = base.text(row["image"], where, "image")
            kind = base.text(row["dst_type"], where, "dst_type").lower()
            if kind not in TYPES:
                raise UserError(f"{where}: unknown 'dst_type' {kind!r}; expected one of "
                                f"{list(TYPES)}")
            level = base.integer(row["dst_lev"], where, "dst_lev")
            std = base.number(row["dmos_std"], where, "dmos_std") if "dmos_std" in row else base.NAN
            parsed.append((where, image, kind, level, base.number(row["dmos"], where, "dmos"), std))
        refs = base.index_by_sorted(image for _, image, *_ in parsed)
        records = []
        for where, image, kind, level, dmos, std in parsed:
            directory, label, _ = TYPES[kind]
            path_on_disk, name = folder.image(f"dst_imgs/{directory}/{image}.{label}.{level}.png",
                                              where)
            records.append(base.Record(
                path=path_on_disk, name=name, where=where, mos=dmos, mos_std=std,
                ref_id=refs[image], distortion_type=kind, distortion_class=_CLASSES[kind],
                level=level))
        score = base.Score(folder.relative(path), "dmos", higher_is_better=False,
                           low=0.0, high=1.0)
        return score, {FULL_SPLIT: records}, {}


BUILDER = Csiq
