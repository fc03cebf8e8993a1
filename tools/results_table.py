"""Markdown table (datasets x methods, median SRCC / PLCC over splits) from a set of run workdirs.

    python tools/results_table.py --runs runs/liqe-* runs/mpiqe-* [--out results.md]
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmpiqa_jax.evaluate.tables import results_table  # noqa: E402


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, metavar="DIR",
                        help="run workdirs or globs; runs with the same method name are pooled")
    parser.add_argument("--out", metavar="FILE.md", help="also write the table to this file")
    parser.add_argument("--metrics", default="srcc,plcc",
                        help="comma-separated metric keys (default: srcc,plcc)")
    parser.add_argument("--statistic", default="median", choices=("median", "mean"))
    parser.add_argument("--split", metavar="GLOB",
                        help="only splits whose name matches (default: all but train* and val*)")
    parser.add_argument("--no-n", action="store_true", help="omit the number of splits")
    args = parser.parse_args(argv)

    try:
        table = results_table(_expand(args.runs), metrics=tuple(args.metrics.split(",")),
                              statistic=args.statistic, include=args.split,
                              show_n=not args.no_n)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(table, end="")
    if args.out:
        Path(args.out).write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
