"""Splits for experiments: index arrays into a dataset's `all` data source.

A split is a dict `{part: sorted int64 indices}`, e.g. `{"train": ..., "val": ..., "test": ...}`:
random by reference image (`random_split`), or LIQE's and pyiqa's split files matched by `name`.
"""
import csv
import dataclasses
import os
import pickle
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import scipy.stats
import tensorflow_datasets as tfds

from mmpiqa_jax import labels
from mmpiqa_jax.errors import MissingFileError, UserError

PART_NAMES = {2: ("train", "test"), 3: ("train", "val", "test")}
# Ten fixed seeds, one per standard split, as the literature reports medians over ten splits.
STANDARD_SEEDS = tuple(range(10))

# LIQE's file vocabulary of distortion names -> our 11 classes (LIQE's `dist_map`).
LIQE_DISTORTION_CLASS = {
    "jpeg2000 compression": "jpeg2000 compression", "jpeg compression": "jpeg compression",
    "white noise": "noise", "gaussian blur": "blur", "fastfading": labels.LIVE_FASTFADING_CLASS,
    "fnoise": "noise", "contrast": "contrast", "lens": "blur", "motion": "blur",
    "diffusion": "color", "shifting": "blur", "color quantization": "quantization",
    "oversaturation": "color", "desaturation": "color", "white with color": "noise",
    "impulse": "noise", "multiplicative": "noise", "white noise with denoise": "noise",
    "brighten": "overexposure", "darken": "underexposure", "shifting the mean": "other",
    "jitter": "spatial", "noneccentricity patch": "spatial", "pixelate": "spatial",
    "quantization": "quantization", "color blocking": "spatial", "sharpness": "contrast",
    "realistic blur": "blur", "realistic noise": "noise", "underexposure": "underexposure",
    "overexposure": "overexposure", "realistic contrast change": "contrast",
    "other realistic": "other",
}
_INVALID = "invalid"

_PART_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "test": "test", "testing": "test"}


def random_split(ref_ids: Sequence[int], ratios: Sequence[float], seed: int = 0
                 ) -> dict[str, np.ndarray]:
    """Seeded random split by reference: the references shuffled and cut by `ratios` (2 or 3
    fractions summing to 1), each example following its reference."""
    ref_ids = np.asarray(ref_ids)
    refs = np.random.default_rng(seed).permutation(np.unique(ref_ids))
    # Cumulative rounding: the parts' sizes add up to the number of references exactly.
    cuts = np.rint(np.cumsum(ratios) * len(refs)).astype(int)
    parts = np.split(refs, cuts[:-1])
    return {name: np.flatnonzero(np.isin(ref_ids, part))
            for name, part in zip(PART_NAMES[len(ratios)], parts)}


# ------------------------------------------------------------------------------------------------
# Labels of a data source, and matching names to indices.

def read_labels(source) -> dict[str, np.ndarray]:
    """Every example's labels from a data source (best opened with `decode_images=False`):
    name, mos, mos_std, quality, ref_id, distortion_type, distortion_class, level."""
    fields = ("name", "mos", "mos_std", "quality", "ref_id", "distortion_type",
              "distortion_class", "level")
    rows = [source[i] for i in range(len(source))]
    out = {}
    for f in fields:
        values = [_text(r[f]) if f in ("name", "distortion_type") else r[f] for r in rows]
        out[f] = np.asarray(values, dtype=object if f in ("name", "distortion_type") else None)
    return out


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def _normal(name: str) -> str:
    return name.replace("\\", "/").strip().lower()


class NameIndex:
    """Finds examples by name: exact, then case-insensitively, then by unique file name."""

    def __init__(self, names: Sequence[str], dataset: str = "dataset"):
        self.dataset = dataset
        self.names = [_text(n) for n in names]
        self._exact = {n: i for i, n in enumerate(self.names)}
        self._lower = {_normal(n): i for i, n in enumerate(self.names)}
        base: dict[str, list[int]] = {}
        for i, n in enumerate(self.names):
            base.setdefault(os.path.basename(_normal(n)), []).append(i)
        self._base = {b: v[0] for b, v in base.items() if len(v) == 1}

    def find(self, name: str) -> int | None:
        if name in self._exact:
            return self._exact[name]
        key = _normal(name)
        if key in self._lower:
            return self._lower[key]
        return self._base.get(os.path.basename(key))

    def indices(self, names: Sequence[str], rows: Sequence, where: str,
                seen: dict[int, str]) -> np.ndarray:
        """Indices of a file's image names (`rows`: their rows in `where`); raises at the first
        name not in the dataset, or listed twice (here or in an earlier file, `seen`)."""
        found = []
        for name, row in zip(names, rows):
            i = self.find(name)
            at = f"{where}:{row}"
            if i is None:
                raise UserError(f"{at}: image {name!r} is not in the prepared dataset "
                                f"{self.dataset} ({len(self.names)} images, named like "
                                f"{self.names[:2]}); prepare the whole dataset, or fix the file")
            if i in seen:
                raise UserError(f"{at}: image {name!r} is listed twice, also at {seen[i]}")
            seen[i] = at
            found.append(i)
        return np.asarray(found, np.int64)


# ------------------------------------------------------------------------------------------------
# LIQE split files: `<db>_{train,val,test}_clip.txt`, tab-separated, no header:
# path, score (higher is better), distortion name, scene1, scene2, scene3 ("invalid" if absent).

class LiqeRow(NamedTuple):
    """One row of a LIQE split file."""
    path: str                  # image path relative to the dataset folder
    score: float               # higher is better
    distortion: str            # LIQE's distortion name (a key of `LIQE_DISTORTION_CLASS`)
    scenes: tuple[str, ...]    # up to three scene names; empty when all are "invalid"
    line: int                  # 1-based line number, for error messages


def read_liqe_file(path: str) -> list[LiqeRow]:
    """The rows of one LIQE file; errors name the file and line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            cols = line.rstrip("\n\r").split("\t")
            if len(cols) != 6:
                raise UserError(f"{path}:{line_no}: expected 6 tab-separated columns "
                                f"(path, score, distortion, scene1..3), got {len(cols)}")
            try:
                score = float(cols[1])
            except ValueError:
                raise UserError(f"{path}:{line_no}: score {cols[1]!r} is not a number") from None
            if cols[2] not in LIQE_DISTORTION_CLASS:
                raise UserError(f"{path}:{line_no}: unknown distortion name {cols[2]!r}; "
                                f"LIQE's names: {sorted(LIQE_DISTORTION_CLASS)}")
            scenes = tuple(s for s in cols[3:] if s != _INVALID)
            for s in scenes:
                if s not in labels.SCENES:
                    raise UserError(f"{path}:{line_no}: unknown scene {s!r}; "
                                    f"expected one of {labels.SCENES} or {_INVALID!r}")
            rows.append(LiqeRow(cols[0], score, cols[2], scenes, line_no))
    return rows


@dataclasses.dataclass(frozen=True)
class ImportedSplit:
    """A split read from split files: `parts` ({part: sorted int64 indices}), and where the files
    carry them, `scenes` float32 [N, 9] multi-hot and `distortion_class` int32 [N] (zero rows and
    -1 where they say nothing)."""
    parts: dict[str, np.ndarray]
    scenes: np.ndarray | None = None
    distortion_class: np.ndarray | None = None


# A file's scores must order the images as the dataset's quality does (LIQE writes scores
# with higher = better); anything lower means a wrong file, scale or direction.
MIN_SCORE_AGREEMENT = 0.99


def check_score_agreement(path: str, rows: Sequence[int], scores: np.ndarray,
                          quality: np.ndarray, *, either_direction: bool = False) -> None:
    """Raises, naming `path` and its first badly ranked of `rows`, when Spearman(file scores,
    dataset quality) < `MIN_SCORE_AGREEMENT` (either sign with `either_direction`)."""
    scores, quality = np.asarray(scores, np.float64), np.asarray(quality, np.float64)
    if len(scores) < 3 or np.ptp(scores) == 0 or np.ptp(quality) == 0:
        return
    rho = float(scipy.stats.spearmanr(scores, quality).statistic)
    if rho >= MIN_SCORE_AGREEMENT or (either_direction and -rho >= MIN_SCORE_AGREEMENT):
        return
    sign = -1.0 if either_direction and rho < 0 else 1.0
    rank_file = scipy.stats.rankdata(sign * scores) / len(scores)
    rank_ours = scipy.stats.rankdata(quality) / len(scores)
    gap = np.abs(rank_file - rank_ours)
    # The first row far out of place; where no row stands out, the one farthest.
    far = np.flatnonzero(gap > 0.25)
    k = int(far[0]) if far.size else int(np.argmax(gap))
    raise UserError(
        f"{path}:{rows[k]}: the file's scores disagree with the prepared dataset's quality "
        f"(Spearman {rho:.3f} < {MIN_SCORE_AGREEMENT}); first bad row: score {scores[k]:g} ranks "
        f"at {rank_file[k]:.0%}, its quality {quality[k]:.4g} at {rank_ours[k]:.0%}. Is it the "
        "file of another dataset, scale or direction?")


def _liqe_class(db: str, row: LiqeRow) -> str:
    # LIQE's LIVE files name the fast-fading images "white noise": one mapping for them.
    if db == "live" and _normal(row.path).startswith("fastfading/"):
        return labels.LIVE_FASTFADING_CLASS
    return LIQE_DISTORTION_CLASS[row.distortion]


def import_liqe(directory: str, db: str, names: Sequence[str], quality=None) -> ImportedSplit:
    """LIQE's split files `<directory>/<db>_{train,val,test}_clip.txt`, with their scenes and
    distortion classes, matched strictly to `names` (each listed image in the dataset, in one
    part); with `quality` ([N]), each file's scores must rank the images alike."""
    index = NameIndex(names, db)
    scenes = np.zeros((len(names), labels.NUM_SCENES), np.float32)
    classes = np.full(len(names), -1, np.int32)
    split, seen = {}, {}
    for part in ("train", "val", "test"):
        path = os.path.join(directory, f"{db}_{part}_clip.txt")
        if not os.path.exists(path):
            raise MissingFileError(f"LIQE split file {path} not found (part {part!r} of {db})")
        rows = read_liqe_file(path)
        lines = [r.line for r in rows]
        idx = index.indices([r.path for r in rows], lines, path, seen)
        if quality is not None:
            check_score_agreement(path, lines, np.array([r.score for r in rows]),
                                  np.asarray(quality)[idx])
        scenes[idx] = labels.scene_multi_hot([row.scenes for row in rows])
        classes[idx] = [labels.distortion_index(_liqe_class(db, row)) for row in rows]
        split[part] = np.sort(idx)
    return ImportedSplit(split, scenes, classes)


# ------------------------------------------------------------------------------------------------
# pyiqa meta CSV: a name column, `mos`, `std`, and split columns (`split`, `official_split`, or
# one column per random split) whose values are train / val / test (or training, validation).

_PYIQA_NAME_COLUMNS = ("dist_name", "img_name", "image_name", "name")


def _read_pyiqa_csv(path: str) -> tuple[list[str], list[dict]]:
    """(header, rows) of a pyiqa meta CSV, each row with its `_line` number and `_name`."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        name_column = next((c for c in _PYIQA_NAME_COLUMNS if c in header),
                           header[0] if header else None)
        if name_column not in header:
            raise UserError(f"{path}: no column {name_column!r}; columns: {header}")
        rows = [dict(row, _line=line_no, _name=row[name_column])
                for line_no, row in enumerate(reader, 2)]
    return header, rows


def _check_pyiqa_scores(path: str, header: list[str], rows: list[dict], idx: np.ndarray,
                        quality) -> None:
    """pyiqa stores the raw score (a DMOS for LIVE and CSIQ): either direction passes."""
    column = next((c for c in ("mos", "dmos", "MOS", "DMOS") if c in header), None)
    if quality is None or column is None:
        return
    scores = [_number_or_nan(r[column]) for r in rows]
    keep = np.isfinite(scores)
    check_score_agreement(path, [r["_line"] for r, k in zip(rows, keep) if k],
                          np.asarray(scores)[keep], np.asarray(quality)[idx][keep],
                          either_direction=True)


def _number_or_nan(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def import_pyiqa(path: str, names: Sequence[str], split_column: str = "split",
                 dataset: str = "dataset", quality=None) -> dict[str, np.ndarray]:
    """The split in column `split_column` of a pyiqa meta CSV (empty values left out), matched
    strictly to `names`; with `quality`, its scores must rank the images alike, either way."""
    header, rows = _read_pyiqa_csv(path)
    if split_column not in header:
        raise UserError(f"{path}: no column {split_column!r}; columns: {header}")
    listed = []
    for row in rows:
        value = (row[split_column] or "").strip().lower()
        if not value:
            continue
        if value not in _PART_ALIASES:
            raise UserError(f"{path}:{row['_line']}: split value {row[split_column]!r} in "
                            f"column {split_column!r} is not one of {sorted(_PART_ALIASES)}")
        listed.append((row, _PART_ALIASES[value]))
    index, seen = NameIndex(names, dataset), {}
    idx = index.indices([r["_name"] for r, _ in listed], [r["_line"] for r, _ in listed], path,
                        seen)
    _check_pyiqa_scores(path, header, [r for r, _ in listed], idx, quality)
    split: dict[str, list[int]] = {}
    for i, (_, part) in zip(idx.tolist(), listed):
        split.setdefault(part, []).append(i)
    return {part: np.sort(np.asarray(v, np.int64)) for part, v in split.items()}


def import_pyiqa_pickle(meta_csv: str, split_pkl: str, split_index: int, names: Sequence[str],
                        dataset: str = "dataset", quality=None) -> dict[str, np.ndarray]:
    """Split `split_index` (from 1) of a pyiqa `.pkl`: {index: {part: [meta CSV data rows]}}."""
    header, rows = _read_pyiqa_csv(meta_csv)
    with open(split_pkl, "rb") as f:
        table = pickle.load(f)  # a user's own file; pyiqa's format is a pickle
    if not isinstance(table, Mapping):
        raise UserError(f"{split_pkl}: expected a dict of splits, got {type(table).__name__}")
    key = next((k for k in table if str(k) == str(split_index)), None)
    if key is None:
        raise UserError(f"{split_pkl}: no split {split_index} (data.split_seed "
                        f"{split_index - 1}); it has {sorted(table, key=str)}")
    index, seen, split = NameIndex(names, dataset), {}, {}
    for part_name, row_ids in table[key].items():
        part = _PART_ALIASES.get(str(part_name).lower())
        if part is None:
            raise UserError(f"{split_pkl}: split {split_index} has part {part_name!r}, not one "
                            f"of {sorted(_PART_ALIASES)}")
        row_ids = [int(r) for r in row_ids]
        bad = [r for r in row_ids if not 0 <= r < len(rows)]
        if bad:
            raise UserError(f"{split_pkl}: split {split_index} part {part_name!r} lists row "
                            f"{bad[0]}, but {meta_csv} has {len(rows)} data rows")
        part_rows = [rows[r] for r in row_ids]
        where = f"{split_pkl} (split {split_index}, {part_name}) -> {meta_csv}"
        idx = index.indices([r["_name"] for r in part_rows], [r["_line"] for r in part_rows],
                            where, seen)
        _check_pyiqa_scores(meta_csv, header, part_rows, idx, quality)
        split[part] = np.sort(idx)
    return split


# ------------------------------------------------------------------------------------------------

def official_split(name: str, data_dir: str | None = None) -> dict[str, np.ndarray]:
    """A dataset's own splits (KonIQ-10k: train / validation / test) as indices into `all`."""
    from mmpiqa_jax.data import registry  # pylint: disable=import-outside-toplevel
    registry.load_source(name, "all", data_dir)  # raises "not prepared, run ..." where it applies
    return builder_split(registry.get_builder(name, data_dir))


def builder_split(builder) -> dict[str, np.ndarray]:
    """The splits a prepared builder wrote, as indices into its `all` (`validation` -> `val`)."""
    parts = list(builder.info.splits.keys())
    if len(parts) < 2:
        raise UserError(f"dataset {builder.name!r} has no official split (its splits: {parts})")
    def names(split):
        return read_labels(builder.as_data_source(
            split=split, decoders={"image": tfds.decode.SkipDecoding()}))["name"]
    index, seen, split = NameIndex(names("all"), builder.name), {}, {}
    for part in parts:
        part_names = list(names(part))
        idx = index.indices(part_names, range(1, len(part_names) + 1), f"split {part}", seen)
        split[_PART_ALIASES.get(part, part)] = np.sort(idx)
    return split
