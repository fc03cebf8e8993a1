"""`config.data.split`: where each training dataset's split comes from, parsed and resolved.

One string, so that `--set data.split=...` can say it: comma-separated items `[DATASET:]SOURCE`
(see `GRAMMAR`), SOURCE one of `70/10/20` (train/val/test, in %) or `80/20`, `official` (the
dataset's own split), `liqe:DIR` (LIQE's `IQA_Database`, see `LIQE_FOLDERS`), `pyiqa:CSV[:PKL]`
or `pyiqa:CSV:COLUMN`. An item without DATASET (or with `*`) applies to every dataset no item
names. `data.split_seed` = s picks split s + 1 of LIQE's `splits2/1..10` and of a pyiqa `.pkl`,
and seeds the random split of ratios.
"""
from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence

import numpy as np

from mmpiqa_jax.data import splits
from mmpiqa_jax.errors import MissingFileError, UserError

GRAMMAR = ("[DATASET:]SOURCE[,...] with SOURCE one of 70/10/20 | 80/20 | official | liqe:DIR | "
           "pyiqa:META.csv[:SPLIT.pkl|:COLUMN], e.g. koniq10k:official,*:liqe:/data/IQA_Database")

# Our dataset name -> (folder in LIQE's IQA_Database, file prefix of its split files). A dataset
# not listed is looked up as `<DIR>/<name>/splits2/<k>/<name>_<part>_clip.txt`.
LIQE_FOLDERS = {
    "live_iqa": ("databaserelease2", "live"),
    "csiq": ("CSIQ", "csiq"),
    "kadid10k": ("kadid10k", "kadid10k"),
    "koniq10k": ("koniq-10k", "koniq10k"),
    "live_challenge": ("ChallengeDB_release", "clive"),
    "bid": ("BID", "bid"),
}

_RATIOS = re.compile(r"^\d+(\.\d*)?(/\d+(\.\d*)?){1,2}$")
_KINDS = ("official", "liqe", "pyiqa")
ALL = "*"


@dataclasses.dataclass(frozen=True)
class Source:
    """One split source of `kind` `ratios` (fractions per part), `official`, `liqe` (`path`: its
    folder) or `pyiqa` (`path`: the CSV, `extra`: a `.pkl` file or a column, "" = `split`)."""
    kind: str
    ratios: tuple[float, ...] = ()
    path: str = ""
    extra: str = ""

    def __str__(self) -> str:
        if self.kind == "ratios":
            return "/".join(f"{100 * r:g}" for r in self.ratios)
        return ":".join(p for p in (self.kind, self.path, self.extra) if p)


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    """A parsed `data.split`: a source per named dataset, and one for the rest (or none)."""
    by_dataset: Mapping[str, Source]
    default: Source | None
    text: str = ""

    def source(self, dataset: str) -> Source:
        """The source of `dataset` (a name as in `data.batch_sizes`)."""
        if dataset in self.by_dataset:
            return self.by_dataset[dataset]
        if self.default is None:
            raise UserError(f"config.data.split={self.text!r} gives no split for dataset "
                            f"{dataset!r}: add `{dataset}:SOURCE` or `*:SOURCE` ({GRAMMAR})")
        return self.default


def _error(text: str, item: str, why: str) -> ValueError:
    return ValueError(f"config.data.split={text!r}: item {item!r} {why}; expected {GRAMMAR}")


def parse_ratios(text: str) -> tuple[float, ...]:
    """Percentages `a/b[/c]` summing to 100 as fractions."""
    parts = tuple(float(p) for p in text.split("/"))
    if abs(sum(parts) - 100) > 1e-6:
        raise UserError(f"has percentages that sum to {sum(parts):g}, not 100")
    return tuple(p / 100 for p in parts)


def _parse_source(text: str, item: str, source: str) -> Source:
    if _RATIOS.match(source):
        try:
            return Source("ratios", ratios=parse_ratios(source))
        except ValueError as e:
            raise _error(text, item, str(e)) from None
    kind, _, rest = source.partition(":")
    if kind == "official" and not rest:
        return Source("official")
    if kind == "liqe" and rest:
        return Source("liqe", path=rest)
    if kind == "pyiqa" and rest:
        csv_path, _, extra = rest.partition(":")
        return Source("pyiqa", path=csv_path, extra=extra)
    if kind in ("liqe", "pyiqa"):
        raise _error(text, item, f"needs a path after '{kind}:'")
    raise _error(text, item, f"has no split source {source!r}")


def parse(text: str, datasets: Sequence[str] = ()) -> SplitSpec:
    """Parses `data.split`; with `datasets` (the training ones), checks that it names only
    those and gives each a source."""
    by_dataset: dict[str, Source] = {}
    default = None
    for item in (i.strip() for i in str(text).split(",")):
        if not item:
            raise _error(text, item, "is empty")
        head, sep, rest = item.partition(":")
        named = sep and head not in _KINDS and not _RATIOS.match(item)
        dataset, source = (head.strip(), rest.strip()) if named else (ALL, item)
        if not source:
            raise _error(text, item, "names a dataset but no source")
        parsed = _parse_source(text, item, source)
        if dataset == ALL:
            if default is not None:
                raise _error(text, item, "is a second default (an item without DATASET or '*')")
            default = parsed
        elif dataset in by_dataset:
            raise _error(text, item, f"names dataset {dataset!r} a second time")
        else:
            by_dataset[dataset] = parsed
    spec = SplitSpec(by_dataset, default, str(text))
    if datasets:
        unknown = sorted(set(by_dataset) - set(datasets))
        if unknown:
            raise UserError(f"config.data.split={text!r} names {unknown}, which are not "
                            f"training datasets (data.batch_sizes: {list(datasets)})")
        for name in datasets:
            spec.source(name)
    return spec


# ------------------------------------------------------------------------------------------------
# Resolution against a prepared dataset.

def liqe_split_dir(directory: str, dataset: str, seed: int) -> tuple[str, str]:
    """(folder of LIQE's split files for `dataset` and seed, their file prefix)."""
    base = dataset.partition("/")[0]
    folder, db = LIQE_FOLDERS.get(base, (base, base))
    root = os.path.join(os.path.expanduser(directory), folder)
    if not os.path.isdir(root):
        raise MissingFileError(
            f"liqe:{directory}: no folder {folder}/ for dataset {dataset!r}; LIQE's IQA_Database "
            f"holds {', '.join(f'{f}/' for f, _ in LIQE_FOLDERS.values())}, each with "
            "splits2/<1..10>/<db>_{train,val,test}_clip.txt")
    return os.path.join(root, "splits2", str(seed + 1)), db


def resolve(source: Source, dataset: str, table: Mapping[str, np.ndarray], *, seed: int,
            official=None) -> splits.ImportedSplit:
    """The split of one dataset from `source`, given its labels (`splits.read_labels`), the
    `data.split_seed`, and a callable giving its own split (called for `official` only)."""
    if not 0 <= seed <= 9 and source.kind in ("liqe", "pyiqa"):
        raise UserError(f"data.split_seed={seed}: {source.kind} split files number 1..10 "
                        "(split_seed 0..9)")
    if source.kind == "ratios":
        return splits.ImportedSplit(splits.random_split(table["ref_id"], source.ratios, seed))
    if source.kind == "official":
        return splits.ImportedSplit(official())
    if source.kind == "liqe":
        directory, db = liqe_split_dir(source.path, dataset, seed)
        return splits.import_liqe(directory, db, table["name"], table["quality"])
    if source.kind == "pyiqa":
        if source.extra.lower().endswith(".pkl"):
            parts = splits.import_pyiqa_pickle(source.path, source.extra, seed + 1, table["name"],
                                               dataset, table["quality"])
        else:
            parts = splits.import_pyiqa(source.path, table["name"], source.extra or "split",
                                        dataset=dataset, quality=table["quality"])
        return splits.ImportedSplit(parts)
    raise UserError(f"unknown split source kind {source.kind!r}")
