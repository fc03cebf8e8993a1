"""What the real IQA builders share: the user's folder, score files, checks and image bytes.

A dataset module reads its score files into `Record`s (`IqaBuilder._read`); every record is
checked before anything is written, and every error names the file and the row at fault.
"""
import abc
import csv
import dataclasses
import math
import pathlib
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import openpyxl
import scipy.io
import tensorflow_datasets as tfds
import xlrd
from PIL import Image

from mmpiqa_jax import labels
from mmpiqa_jax.data import transforms
from mmpiqa_jax.data.features import DeterministicBuilder, iqa_example, iqa_features
from mmpiqa_jax.errors import MissingFileError, UserError

NAN = float("nan")


# ------------------------------------------------------------------------------------------------
# Scores and records.

@dataclasses.dataclass(frozen=True)
class Score:
    """The published score a builder reads, and its linear map onto quality in [0, 1]."""

    file: str              # score file, relative to the dataset folder
    column: str            # column, field or .mat key read
    higher_is_better: bool
    low: float             # nominal range of the raw score
    high: float
    # Only where published scores exceed the nominal range (LIVE's DMOS): quality is clipped
    # instead of the score being rejected.
    clip: bool = False

    def quality(self, mos: float, where: str) -> float:
        """Quality in [0, 1] of a raw score; raises naming `where` when out of range."""
        if not self.clip and not self.low <= mos <= self.high:
            raise UserError(
                f"{where}: score {mos} in {self.column!r} is outside its nominal range "
                f"[{self.low:g}, {self.high:g}]")
        span = self.high - self.low
        q = (mos - self.low) / span if self.higher_is_better else (self.high - mos) / span
        return min(max(q, 0.0), 1.0)

    def metadata(self) -> dict[str, Any]:
        """What a reader needs to interpret `mos`: source, direction, range, mapping."""
        span = self.high - self.low
        formula = (f"(x - {self.low:g}) / {span:g}" if self.higher_is_better
                   else f"({self.high:g} - x) / {span:g}")
        return {
            "score_file": self.file,
            "score_column": self.column,
            "score_direction": "higher is better" if self.higher_is_better else "lower is better",
            "score_range": [self.low, self.high],
            "quality": formula + (", clipped to [0, 1]" if self.clip else ""),
        }


@dataclasses.dataclass(frozen=True)
class Record:
    """One scored image, as read from the score file (quality is derived by the builder)."""

    path: pathlib.Path     # the image on disk
    name: str              # path relative to the dataset folder, as found on disk
    mos: float             # raw published score
    ref_id: int
    where: str             # "file, row n": where the record came from, for error messages
    mos_std: float = NAN
    distortion_type: str = ""
    distortion_class: int = -1
    level: int = 0


def index_by_sorted(keys: Iterable[Any]) -> dict[Any, int]:
    """Reference ids: the position of each key among the sorted distinct keys."""
    return {key: i for i, key in enumerate(sorted(set(keys)))}


def distortion_classes(table: dict[str, str]) -> dict[str, int]:
    """A dataset's type -> LIQE class-name table as type -> class index (checks the names)."""
    return {kind: labels.distortion_index(name) for kind, name in table.items()}


# ------------------------------------------------------------------------------------------------
# The user's folder.

class Folder:
    """The dataset folder given as tfds `manual_dir`; names are matched case-insensitively,
    because copies of the same dataset differ in case (`I01.BMP`, `i01.bmp`)."""

    def __init__(self, root: pathlib.Path | str):
        self.root = pathlib.Path(root)
        self._listings: dict[pathlib.Path, dict[str, str]] = {}

    def find(self, relative: str) -> pathlib.Path | None:
        """The file or folder at `relative` (any case), or None."""
        path = self.root
        for part in pathlib.PurePosixPath(relative).parts:
            if (path / part).exists():
                path = path / part
                continue
            match = self._listing(path).get(part.lower())
            if match is None:
                return None
            path = path / match
        return path

    def first(self, *candidates: str) -> pathlib.Path | None:
        """The first of the candidate files that exists, or None."""
        for relative in candidates:
            path = self.find(relative)
            if path is not None and path.is_file():
                return path
        return None

    def require(self, *candidates: str, what: str = "score file") -> pathlib.Path:
        """The first candidate file that exists; raises listing them all when none does."""
        path = self.first(*candidates)
        if path is None:
            raise MissingFileError(
                f"no {what} in {self.root}: expected one of {', '.join(candidates)}")
        return path

    def image(self, relative: str, where: str) -> tuple[pathlib.Path, str]:
        """The image at `relative` and its name as found on disk; raises naming the row."""
        path = self.find(relative)
        if path is None or not path.is_file():
            raise MissingFileError(f"{where}: image {self.root / relative} not found")
        return path, self.relative(path)

    def relative(self, path: pathlib.Path) -> str:
        return path.relative_to(self.root).as_posix()

    def _listing(self, directory: pathlib.Path) -> dict[str, str]:
        if directory not in self._listings:
            entries = [p.name for p in directory.iterdir()] if directory.is_dir() else []
            self._listings[directory] = {name.lower(): name for name in entries}
        return self._listings[directory]


# ------------------------------------------------------------------------------------------------
# Score files. Rows are numbered as a person sees them: lines of a text file, rows of a sheet
# (both 1-based, header included), entries of a .mat array (1-based).

def location(path: pathlib.Path, row: int, kind: str = "row") -> str:
    """How errors name a row: "file, row n"."""
    return f"{path}, {kind} {row}"


def number(value: Any, where: str, column: str) -> float:
    """A finite float from a cell; raises naming the row and column when missing or malformed."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise UserError(f"{where}: missing value in {column!r}")
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: {value!r} in {column!r} is not a number") from None
    if not math.isfinite(result):
        raise UserError(f"{where}: missing value in {column!r} ({value!r})")
    return result


def integer(value: Any, where: str, column: str) -> int:
    """An integer from a cell (spreadsheets store 3 as 3.0); raises when not integral."""
    result = number(value, where, column)
    if not result.is_integer():
        raise UserError(f"{where}: {value!r} in {column!r} is not an integer")
    return int(result)


def text(value: Any, where: str, column: str) -> str:
    """A non-empty string from a cell; numbers (CSIQ's image `1600`) are kept as their text."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if value is None or not str(value).strip():
        raise UserError(f"{where}: missing value in {column!r}")
    return str(value).strip()


def read_lines(path: pathlib.Path) -> list[tuple[int, str]]:
    """The non-blank lines of a text file with their 1-based line numbers."""
    try:
        content = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read score file {path}: {error}") from error
    return [(n, line.strip()) for n, line in enumerate(content.splitlines(), 1) if line.strip()]


def read_delimited(path: pathlib.Path, delimiters: str = ",") -> list[tuple[int, list[str]]]:
    """Rows of a CSV-like text file, header included; the delimiter is the first of
    `delimiters` found in the first line."""
    lines = read_lines(path)
    if not lines:
        raise UserError(f"score file {path} is empty")
    delimiter = next((d for d in delimiters if d in lines[0][1]), None)
    if delimiter is None:
        raise UserError(f"{location(path, lines[0][0])}: header is not separated by any of "
                        f"{list(delimiters)}: {lines[0][1]!r}")
    numbers = [n for n, _ in lines]
    rows = csv.reader([line for _, line in lines], delimiter=delimiter)
    return [(n, [cell.strip() for cell in row]) for n, row in zip(numbers, rows)]


def read_sheet(path: pathlib.Path, sheet: str | None = None) -> list[tuple[int, list[Any]]]:
    """Rows of sheet `sheet` (None: the first) of an `.xlsx` or `.xls`, empty rows left out."""
    try:
        rows = (_xls_rows if path.suffix.lower() == ".xls" else _xlsx_rows)(path, sheet)
    except Exception as error:  # the readers raise many kinds on a broken file
        raise UserError(f"cannot read score file {path}: {error}") from error
    return [(n, list(row)) for n, row in rows
            if any(cell is not None and str(cell).strip() for cell in row)]


def _xlsx_rows(path: pathlib.Path, sheet: str | None) -> list[tuple[int, tuple]]:
    book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        if sheet is not None and sheet not in book.sheetnames:
            raise UserError(f"no sheet {sheet!r}; it has {book.sheetnames}")
        worksheet = book[sheet] if sheet is not None else book.worksheets[0]
        return list(enumerate(worksheet.iter_rows(values_only=True), 1))
    finally:
        book.close()


def _xls_rows(path: pathlib.Path, sheet: str | None) -> list[tuple[int, tuple]]:
    book = xlrd.open_workbook(path)
    if sheet is not None and sheet not in book.sheet_names():
        raise UserError(f"no sheet {sheet!r}; it has {book.sheet_names()}")
    worksheet = book.sheet_by_name(sheet) if sheet is not None else book.sheet_by_index(0)
    # xlrd gives "" for an empty cell; None keeps empty cells alike across formats.
    return [(r + 1, tuple(None if v == "" else v for v in worksheet.row_values(r)))
            for r in range(worksheet.nrows)]


def table(rows: Sequence[tuple[int, Sequence[Any]]], columns: Sequence[str],
          path: pathlib.Path, optional: Sequence[str] = ()) -> list[tuple[int, dict[str, Any]]]:
    """The rows below the header (the first row holding every column, in any case) as dicts
    keyed by `columns` and the `optional` ones present."""
    for i, (_, header) in enumerate(rows):
        names = [str(cell).strip().lower() if cell is not None else "" for cell in header]
        if all(c.lower() in names for c in columns):
            break
    else:
        raise UserError(f"score file {path} has no header row with the columns {list(columns)}")
    positions = {c: names.index(c.lower()) for c in (*columns, *optional) if c.lower() in names}
    return [(n, {c: (row[p] if p < len(row) else None) for c, p in positions.items()})
            for n, row in rows[i + 1:]]


def load_mat(path: pathlib.Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """The named arrays of a MATLAB file, flattened; raises naming the file and missing key."""
    try:
        content = scipy.io.loadmat(path, squeeze_me=True)
    except Exception as error:  # scipy raises several kinds on a broken file
        raise UserError(f"cannot read score file {path}: {error}") from error
    missing = [key for key in keys if key not in content]
    if missing:
        found = sorted(k for k in content if not k.startswith("__"))
        raise UserError(f"score file {path} has no key {missing[0]!r}; it has {found}")
    return {key: np.atleast_1d(content[key]).ravel() for key in keys}


# ------------------------------------------------------------------------------------------------
# Images.

def encode_image(path: pathlib.Path, short_side: int | None = None) -> bytes:
    """Encoded RGB image bytes to store: an RGB JPEG or 8-bit RGB PNG as it is, anything else
    converted to RGB (`transforms.to_rgb`) as PNG. With `short_side`, larger images are first
    shrunk (Lanczos) so that their shorter side is `short_side`, and stored as PNG."""
    try:
        with Image.open(path) as image:
            image.load()  # decodes fully: a truncated file fails here, naming the image
            too_large = short_side is not None and min(image.size) > short_side
            as_published = (image.format == "JPEG" and image.mode == "RGB"
                            or transforms.is_rgb8_png(path.read_bytes()))
            if as_published and not too_large:
                return path.read_bytes()
            rgb = transforms.to_rgb(image)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise UserError(f"cannot decode image {path}: {error}") from error
    if too_large:
        width, height = rgb.size
        scale = short_side / min(width, height)
        size = ((short_side, round(height * scale)) if width <= height
                else (round(width * scale), short_side))
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
    return transforms.encode(rgb, "PNG")


# ------------------------------------------------------------------------------------------------
# The builder.

class IqaBuilder(DeterministicBuilder):
    """Base of the builders of published IQA datasets, built from the user's folder: a count
    other than `PUBLISHED_RECORDS` is refused unless `allow_partial` (metadata `partial`)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: features of mmpiqa_jax.data.features.iqa_features."}
    HOMEPAGE = ""
    CITATION = ""
    PUBLISHED_RECORDS: int  # images in the published dataset, all splits together

    def __init__(self, *, allow_partial: bool = False, liqe_resize: bool = False,
                 uncompressed: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        # Images stored after LIQE's resize and/or as BMP: `transforms.stored_bytes`.
        options = {"allow_partial": allow_partial, "liqe_resize": liqe_resize,
                   "uncompressed": uncompressed}
        for name, value in options.items():
            setattr(self, name, bool(value))
            self._original_state[name] = bool(value)  # kept when pickled

    def _info(self) -> tfds.core.DatasetInfo:
        # DatasetInfo is built by hand: `dataset_info_from_configs` looks for metadata files
        # beside the module, which this package does not ship.
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__,
            features=iqa_features(),
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
            metadata=tfds.core.MetadataDict(),
        )

    @abc.abstractmethod
    def _read(self, folder: Folder) -> tuple[Score, dict[str, list[Record]], dict[str, Any]]:
        """(the score read, the records of each split, extra metadata) of the files in `folder`."""

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        folder = Folder(dl_manager.manual_dir)
        score, splits, extra = self._read(folder)
        # Everything is checked here, before the first example is written.
        if not all(splits.values()):
            raise UserError(f"score file {score.file} lists no images")
        examples = {split: [(r, score.quality(r.mos, r.where)) for r in records]
                    for split, records in splits.items()}
        by_name(r for records in splits.values() for r in records)
        count = self._check_count(sum(len(records) for records in splits.values()),
                                  folder.root / score.file)
        self.info.metadata.update(score.metadata(), **extra, **count)
        if self.liqe_resize:
            self.info.metadata["liqe_resized"] = True
        if self.uncompressed:
            self.info.metadata["uncompressed"] = True
        return {split: self._generate_examples(items) for split, items in examples.items()}

    def _check_count(self, records: int, score_file: pathlib.Path) -> dict[str, Any]:
        """Metadata on the record count; raises for another count unless `allow_partial`."""
        published = self.PUBLISHED_RECORDS
        if records != published and not self.allow_partial:
            guess = ("a truncated score file or a partial download?" if records < published
                     else "rows added to the score file, or another copy mixed in?")
            name = self.name + (f"/{self.builder_config.name}" if self.builder_config else "")
            raise UserError(
                f"{self.name}: found {records:,} images in {score_file}, the published dataset "
                f"has {published:,}; {guess} Build it anyway with: mmpiqa prepare {name} "
                f"--manual-dir DIR --allow-partial")
        return {"partial": records != published, "published_records": published,
                "records": records}

    def _generate_examples(self, items: list[tuple[Record, float]]) -> Iterator[tuple[str, dict]]:
        for record, quality in items:
            image = transforms.stored_bytes(self._encode(record), resize=self.liqe_resize,
                                            uncompressed=self.uncompressed)
            yield record.name, iqa_example(
                image, record.name, record.mos, quality, record.ref_id, mos_std=record.mos_std,
                distortion_type=record.distortion_type,
                distortion_class=record.distortion_class, level=record.level)

    def _encode(self, record: Record) -> bytes:
        """The image bytes to store; builders that resize override this."""
        return encode_image(record.path)


def by_name(items: Iterable[Any]) -> dict[str, Any]:
    """Items (with `name` and `where`) by name; raises naming both rows of a name listed twice."""
    found: dict[str, Any] = {}
    for item in items:
        if item.name in found:
            raise UserError(f"{item.where}: image {item.name} is listed twice "
                            f"(also at {found[item.name].where})")
        found[item.name] = item
    return found
