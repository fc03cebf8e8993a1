"""Splits for experiments: index arrays into a dataset's `all` data source.

A split is a dict `{part: sorted int64 indices}`, e.g. `{"train": ..., "val": ..., "test": ...}`.
Random splits go by reference image, so that no reference (and none of its distorted versions)
falls in two parts. Split files of LIQE and pyiqa are read and written, matched by `name`.
"""
import csv
import os
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from mmpiqa_jax import labels

PRESETS = {"70/10/20": (0.7, 0.1, 0.2), "80/20": (0.8, 0.2)}
PART_NAMES = {2: ("train", "test"), 3: ("train", "val", "test")}
# Ten fixed seeds, one per standard split, as the literature reports medians over ten splits.
STANDARD_SEEDS = tuple(range(10))

# LIQE's file vocabulary of distortion names -> our 11 classes (LIQE's `dist_map`).
LIQE_DISTORTION_CLASS = {
    "jpeg2000 compression": "jpeg2000 compression", "jpeg compression": "jpeg compression",
    "white noise": "noise", "gaussian blur": "blur", "fastfading": "jpeg2000 compression",
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
# One LIQE name per class, for writing files LIQE's code can read.
LIQE_NAME_OF_CLASS = {
    "jpeg2000 compression": "jpeg2000 compression", "jpeg compression": "jpeg compression",
    "noise": "white noise", "blur": "gaussian blur", "color": "desaturation",
    "contrast": "contrast", "overexposure": "overexposure", "underexposure": "underexposure",
    "spatial": "pixelate", "quantization": "quantization", "other": "other realistic",
}
_INVALID = "invalid"
# In-the-wild images carry no distortion label; LIQE's files still need a name there.
_NO_DISTORTION = "other realistic"

_PART_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "test": "test", "testing": "test"}


def _ratios(ratios) -> tuple[float, ...]:
    if isinstance(ratios, str):
        if ratios not in PRESETS:
            raise ValueError(f"unknown split preset {ratios!r}; known: {', '.join(PRESETS)}")
        return PRESETS[ratios]
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) not in PART_NAMES or min(ratios) < 0 or abs(sum(ratios) - 1) > 1e-6:
        raise ValueError(f"split ratios {ratios} must be 2 or 3 non-negative numbers summing to 1")
    return ratios


def random_split(ref_ids: Sequence[int], ratios="70/10/20", seed: int = 0,
                 names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Seeded random split of examples by reference: the references are shuffled and cut by
    `ratios` (a preset name or fractions), each example follows its reference."""
    ratios = _ratios(ratios)
    names = tuple(names) if names is not None else PART_NAMES[len(ratios)]
    if len(names) != len(ratios):
        raise ValueError(f"{len(names)} part names {names} for {len(ratios)} ratios")
    ref_ids = np.asarray(ref_ids)
    refs = np.random.default_rng(seed).permutation(np.unique(ref_ids))
    # Cumulative rounding: the parts' sizes add up to the number of references exactly.
    cuts = np.rint(np.cumsum(ratios) * len(refs)).astype(int)
    parts = np.split(refs, cuts[:-1])
    return {name: np.flatnonzero(np.isin(ref_ids, part)) for name, part in zip(names, parts)}


def standard_splits(ref_ids: Sequence[int], ratios="70/10/20") -> list[dict[str, np.ndarray]]:
    """The ten random splits of `STANDARD_SEEDS`."""
    return [random_split(ref_ids, ratios, seed) for seed in STANDARD_SEEDS]


def check_split(split: Mapping[str, np.ndarray], ref_ids: Sequence[int] | None = None) -> None:
    """Raises when parts overlap, or when a reference falls in two parts."""
    seen: dict[int, str] = {}
    for part, indices in split.items():
        for i in np.asarray(indices).tolist():
            if i in seen:
                raise ValueError(f"example {i} is in parts {seen[i]!r} and {part!r}")
            seen[i] = part
    if ref_ids is not None:
        ref_ids = np.asarray(ref_ids)
        owner: dict[int, str] = {}
        for part, indices in split.items():
            for r in np.unique(ref_ids[np.asarray(indices, int)]).tolist():
                if owner.setdefault(r, part) != part:
                    raise ValueError(f"reference {r} is in parts {owner[r]!r} and {part!r}")


# ------------------------------------------------------------------------------------------------
# Labels of a data source, and matching names to indices.

def read_labels(source) -> dict[str, np.ndarray]:
    """Every example's labels (no image) from a data source: name, mos, mos_std, quality,
    ref_id, distortion_type, distortion_class, level. Open the source with
    `decode_images=False` to skip decoding the images."""
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

    def indices(self, names: Sequence[str], source: str = "") -> np.ndarray:
        """Indices of `names`; raises listing a few names that match no example."""
        found = [self.find(n) for n in names]
        missing = [n for n, i in zip(names, found) if i is None]
        if missing:
            raise ValueError(
                f"{source or 'split'}: {len(missing)} of {len(names)} names are not in "
                f"{self.dataset} (e.g. {missing[:5]}); dataset names look like {self.names[:3]}")
        return np.asarray(found, np.int64)


# ------------------------------------------------------------------------------------------------
# LIQE split files: `<db>_{train,val,test}_clip.txt`, tab-separated, no header:
# path, score (higher is better), distortion name, scene1, scene2, scene3 ("invalid" if absent).

def liqe_file(directory: str, db: str, part: str) -> str:
    """The path of a LIQE split file, e.g. `<dir>/csiq_train_clip.txt`."""
    return os.path.join(directory, f"{db}_{part}_clip.txt")


def read_liqe_file(path: str) -> list[tuple[str, float, str, tuple[str, ...]]]:
    """Rows (path, score, distortion name, scenes) of one LIQE file; errors name file and line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            cols = line.rstrip("\n\r").split("\t")
            if len(cols) != 6:
                raise ValueError(f"{path}:{line_no}: expected 6 tab-separated columns "
                                 f"(path, score, distortion, scene1..3), got {len(cols)}")
            try:
                score = float(cols[1])
            except ValueError:
                raise ValueError(f"{path}:{line_no}: score {cols[1]!r} is not a number") from None
            if cols[2] not in LIQE_DISTORTION_CLASS:
                raise ValueError(f"{path}:{line_no}: unknown distortion name {cols[2]!r}; "
                                 f"LIQE's names: {sorted(LIQE_DISTORTION_CLASS)}")
            scenes = tuple(s for s in cols[3:] if s != _INVALID)
            for s in scenes:
                if s not in labels.SCENES:
                    raise ValueError(f"{path}:{line_no}: unknown scene {s!r}; "
                                     f"expected one of {labels.SCENES} or {_INVALID!r}")
            rows.append((cols[0], score, cols[2], scenes))
    return rows


def import_liqe(directory: str, db: str, names: Sequence[str], parts=("train", "val", "test")
                ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Reads LIQE's split files of `db` in `directory` and matches them to `names` (the
    dataset's `all` order). Returns (split, scenes [N, 9] multi-hot with zero rows where
    unknown, distortion_class [N] with -1 where the files say nothing)."""
    index = NameIndex(names, db)
    scenes = np.zeros((len(names), labels.NUM_SCENES), np.float32)
    classes = np.full(len(names), -1, np.int32)
    split = {}
    for part in parts:
        path = liqe_file(directory, db, part)
        if not os.path.exists(path):
            raise FileNotFoundError(f"LIQE split file {path} not found (part {part!r} of {db})")
        rows = read_liqe_file(path)
        idx = index.indices([r[0] for r in rows], source=path)
        for i, (_, _, dist, row_scenes) in zip(idx, rows):
            scenes[i, [labels.scene_index(s) for s in row_scenes]] = 1.0
            classes[i] = labels.distortion_index(LIQE_DISTORTION_CLASS[dist])
        split[part] = np.sort(idx)
    check_split(split)
    return split, scenes, classes


def export_liqe(directory: str, db: str, split: Mapping[str, np.ndarray], table: Mapping,
                scenes: np.ndarray | None = None) -> list[str]:
    """Writes one LIQE file per part. `table` holds `name`, `quality` and `distortion_class`
    per example (see `read_labels`); the score written is `quality` (higher is better).
    Scenes come from `scenes` [N, 9]; an image without one gets `others`, which LIQE requires."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for part, indices in split.items():
        path = liqe_file(directory, db, part)
        with open(path, "w", encoding="utf-8", newline="") as f:
            for i in np.asarray(indices, int):
                cls = int(table["distortion_class"][i])
                dist = LIQE_NAME_OF_CLASS[labels.DISTORTIONS[cls]] if cls >= 0 else _NO_DISTORTION
                row_scenes = [] if scenes is None else [labels.SCENES[s]
                                                        for s in np.flatnonzero(scenes[i])]
                row_scenes = (row_scenes or ["others"])[:3]
                row_scenes += [_INVALID] * (3 - len(row_scenes))
                f.write("\t".join([_text(table["name"][i]), repr(float(table["quality"][i])),
                                   dist, *row_scenes]) + "\n")
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------------------------
# pyiqa meta CSV: a name column, `mos`, `std`, and split columns (`split`, `official_split`, or
# one column per random split) whose values are train / val / test (or training, validation).

_PYIQA_NAME_COLUMNS = ("dist_name", "img_name", "image_name", "name")


def import_pyiqa(path: str, names: Sequence[str], split_column: str = "split",
                 name_column: str | None = None, dataset: str = "dataset") -> dict[str, np.ndarray]:
    """The split in column `split_column` of a pyiqa meta CSV, matched to `names` (the
    dataset's `all` order). Rows with an empty split value are left out."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        if name_column is None:
            name_column = next((c for c in _PYIQA_NAME_COLUMNS if c in header),
                               header[0] if header else None)
        for col in (name_column, split_column):
            if col not in header:
                raise ValueError(f"{path}: no column {col!r}; columns: {header}")
        by_part: dict[str, list[str]] = {}
        for line_no, row in enumerate(reader, 2):
            value = (row[split_column] or "").strip().lower()
            if not value:
                continue
            if value not in _PART_ALIASES:
                raise ValueError(f"{path}:{line_no}: split value {row[split_column]!r} in column "
                                 f"{split_column!r} is not one of {sorted(_PART_ALIASES)}")
            by_part.setdefault(_PART_ALIASES[value], []).append(row[name_column])
    index = NameIndex(names, dataset)
    split = {part: np.sort(index.indices(part_names, source=path))
             for part, part_names in by_part.items()}
    check_split(split)
    return split


def export_pyiqa(path: str, table: Mapping, splits: Mapping[str, Mapping[str, np.ndarray]]) -> str:
    """Writes a pyiqa-style meta CSV: `name, mos, std` and one column per split in `splits`
    (column name -> split), each row's value its part ("" when the split leaves it out)."""
    n = len(table["name"])
    columns = {}
    for column, split in splits.items():
        values = [""] * n
        for part, indices in split.items():
            for i in np.asarray(indices, int):
                values[i] = part
        columns[column] = values
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["name", "mos", "std", *columns])
        for i in range(n):
            w.writerow([_text(table["name"][i]), repr(float(table["mos"][i])),
                        repr(float(table["mos_std"][i])), *(c[i] for c in columns.values())])
    return path


# ------------------------------------------------------------------------------------------------

def official_split(name: str, data_dir: str | None = None) -> dict[str, np.ndarray]:
    """A dataset's own splits (KonIQ-10k: train / validation / test) as indices into `all`."""
    from mmpiqa_jax.data import registry  # pylint: disable=import-outside-toplevel
    registry.load_source(name, "all", data_dir)  # raises "not prepared, run ..." where it applies
    return builder_split(registry.get_builder(name, data_dir))


def builder_split(builder) -> dict[str, np.ndarray]:
    """The splits a prepared tfds builder wrote, as indices into its `all` split, matched by
    name (part names normalised: `validation` -> `val`)."""
    parts = list(builder.info.splits.keys())
    if len(parts) < 2:
        raise ValueError(f"dataset {builder.name!r} has no official split (its splits: {parts})")
    def names(split):
        return read_labels(builder.as_data_source(
            split=split, decoders={"image": tfds.decode.SkipDecoding()}))["name"]
    index = NameIndex(names("all"), builder.name)
    return {_PART_ALIASES.get(part, part): np.sort(index.indices(list(names(part)), source=part))
            for part in parts}


def koniq_official_split(data_dir: str | None = None) -> dict[str, np.ndarray]:
    """KonIQ-10k's official 7,058 / 1,000 / 2,015 split as indices into `all`."""
    return official_split("koniq10k", data_dir)
