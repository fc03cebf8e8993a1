"""`mmpiqa score --checkpoint DIR PATH...`: quality scores of image files and folders.

The scores go to `--out FILE` (CSV `path,score`, or JSON with the mean, count and skipped
files) or stdout. Exit status: 0, 2 when some files were skipped (named on stderr), 1 on error.
"""
import argparse
import csv
import io
import json
import os
import sys

from mmpiqa_jax.cli.train import add_distributed_arguments, start_processes
from mmpiqa_jax.errors import MissingFileError, UserError

HELP = "score image files and folders with a trained model (CSV or JSON: path, score; the mean)"
FORMATS = ("csv", "json")

EXIT_SKIPPED = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="image files and folders (searched recursively for image files)")
    parser.add_argument("--checkpoint", required=True,
                        help="a training workdir, one checkpoint in it (WORKDIR/checkpoints/N), "
                             "or a model folder (`mmpiqa convert` of a LIQE model)")
    parser.add_argument("--out", default=None,
                        help="write the scores here (default: stdout); .json: JSON, else CSV")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="csv or json (default: from --out's suffix, else csv)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    parser.add_argument("--crops", choices=("liqe", "center", "full", "pyiqa"), default=None,
                        help="liqe: LIQE's 15 grid crops; center: one centre crop; full: the whole "
                             "image resized; pyiqa: pyiqa's LIQE crops, no resize (default: the "
                             "run's evaluation setting, else liqe)")
    parser.add_argument("--workers", type=int, default=4, help="threads reading images")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_distributed_arguments(parser)


def output_format(fmt: str | None, out: str | None) -> str:
    """`--format`, else json for an --out ending in .json, else csv."""
    if fmt is not None:
        return fmt
    return "json" if out is not None and out.lower().endswith(".json") else "csv"


def _mean(rows) -> float | None:
    return sum(s for _, s in rows) / len(rows) if rows else None


def _mean_text(rows) -> str:
    return "n/a" if not rows else f"{_mean(rows):.4f}"


def _render(rows, skipped, fmt: str) -> str:
    if fmt == "json":
        doc = {"scores": [{"path": p, "score": s} for p, s in rows], "mean": _mean(rows),
               "count": len(rows), "skipped": [{"path": p, "reason": r} for p, r in skipped]}
        return json.dumps(doc, indent=1) + "\n"
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "score"])
    writer.writerows((path, repr(score)) for path, score in rows)
    return text.getvalue()


def _check_out(out: str | None) -> None:
    """Refuses an --out that cannot be written, before anything is scored."""
    if out is None:
        return
    folder = os.path.dirname(os.path.abspath(out))
    if os.path.isdir(out):
        raise UserError(f"--out {out} is a folder; give a file name in it")
    if not os.path.isdir(folder):
        raise MissingFileError(f"--out {out}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise UserError(f"--out {out}: the folder {folder} is not writable")


def _write(rows, skipped, out, fmt: str) -> None:
    from mmpiqa_jax import files  # pylint: disable=import-outside-toplevel
    text = _render(rows, skipped, fmt)
    if out is None:
        sys.stdout.write(text)
        return
    for path, score in rows:  # the file holds them; the terminal shows them too
        print(f"{score:.4f}  {path}")
    print(f"{_mean_text(rows)}  mean of {len(rows)} images")
    files.write_text(out, text)


def run(args: argparse.Namespace) -> int:
    start_processes(args)  # first: before anything creates a JAX backend
    from mmpiqa_jax.evaluate import scoring  # pylint: disable=import-outside-toplevel
    from mmpiqa_jax.train import inference  # pylint: disable=import-outside-toplevel

    _check_out(args.out)
    images, skipped = scoring.find_images(args.paths)
    if not images:
        for path, reason in skipped:
            print(f"skipped {path}: {reason}", file=sys.stderr)
        raise UserError(f"no image files ({', '.join(scoring.IMAGE_EXTENSIONS)}) in "
                        f"{' '.join(args.paths)}")
    scorer, config = inference.load_scorer(args.checkpoint)
    scores, unreadable = scoring.score_files(
        scorer, images, batch_size=args.batch_size, workers=args.workers,
        progress=not args.no_progress, **scoring.crop_setting(config, args.crops))
    skipped += unreadable
    import jax  # pylint: disable=import-outside-toplevel
    if jax.process_index() != 0:
        # Every process scores every file (the same scores); one writes them, so that processes
        # sharing a file system do not race on --out.
        return EXIT_SKIPPED if skipped else 0
    _write(scores, skipped, args.out, output_format(args.format, args.out))
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    where = f" -> {args.out}" if args.out else ""
    print(f"scored {len(scores)} images, mean score {_mean_text(scores)}{where}"
          + (f"; skipped {len(skipped)} (listed above)" if skipped else ""), file=sys.stderr)
    return EXIT_SKIPPED if skipped else 0
