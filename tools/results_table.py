"""Results table as in LIQE's paper (methods x LIVE, CSIQ, KADID-10k, BID, CLIVE, KonIQ-10k;
SRCC / PLCC).

    python tools/results_table.py --runs DIR... [--statistic median|mean|both] [--plcc raw|logistic]
        [--published|--no-published] [--cross] [--split GLOB] [--ddof 0|1] [--no-n]
        [--out FILE.md] [--json FILE]

A run is a training workdir (`config.json`, `eval/*.json`) or a sweep's workdir (its points; the
ten split seeds of one setting pool into one method). Runs with the same method name are pooled.
Default: a median table and a mean ± std table over splits, PLCC after the logistic fit, the
published LIQE and MP-IQE figures as reference rows; `--cross` adds the cross-dataset tables
(evaluations of split `all`).
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmpiqa_jax.evaluate.tables import paper_tables  # noqa: E402


def _expand(patterns: list[str]) -> list[str]:
    """Expands globs the shell left alone (quoted, or on Windows); keeps plain paths as given."""
    dirs = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise SystemExit(f"error: --runs pattern {pattern!r} matches no directory")
        dirs += matches
    return dirs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, metavar="DIR",
                        help="run or sweep workdirs, or globs; "
                             "runs with the same method are pooled")
    parser.add_argument("--statistic", default="both", choices=("median", "mean", "both"),
                        help="over splits: median, mean ± std, or a table of each (default)")
    parser.add_argument("--plcc", default="logistic", choices=("raw", "logistic"),
                        help="PLCC of the raw predictions or after the 4-parameter logistic fit "
                             "(default, as papers report)")
    parser.add_argument("--published", action=argparse.BooleanOptionalAction, default=True,
                        help="the papers' LIQE and MP-IQE figures as reference rows (default: on)")
    parser.add_argument("--cross", action="store_true",
                        help="also the cross-dataset tables (evaluations of split 'all')")
    parser.add_argument("--split", metavar="GLOB",
                        help="within-dataset: only splits whose name matches "
                             "(default: all but train*, val* and all)")
    parser.add_argument("--ddof", type=int, default=0, choices=(0, 1),
                        help="std's delta degrees of freedom (default 0, numpy's)")
    parser.add_argument("--no-n", action="store_true", help="omit the number of splits")
    parser.add_argument("--out", metavar="FILE.md", help="also write the tables to this file")
    parser.add_argument("--json", metavar="FILE", help="write the numbers to this JSON file")
    args = parser.parse_args(argv)

    try:
        text, numbers = paper_tables(_expand(args.runs), statistic=args.statistic, plcc=args.plcc,
                                     published=args.published, cross=args.cross,
                                     include=args.split, show_n=not args.no_n, ddof=args.ddof)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps(numbers, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
