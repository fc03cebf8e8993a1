"""`mmpiqa score --checkpoint DIR PATH...`: quality scores of image files and folders, as CSV.

Exit status: 0 when every file was scored, 2 when some were skipped (each named on stderr with
its reason), 1 on an error that stops the command (bad checkpoint, no image found).
"""
import argparse
import csv
import io
import os
import sys

HELP = "score image files and folders with a trained model (CSV: path,score)"

EXIT_SKIPPED = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="image files and folders (searched recursively for image files)")
    parser.add_argument("--checkpoint", required=True,
                        help="a training workdir, or one checkpoint in it")
    parser.add_argument("--out", default=None, help="write the CSV here (default: stdout)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    parser.add_argument("--crops", choices=("liqe", "center", "full", "pyiqa"), default=None,
                        help="liqe: LIQE's 15 grid crops; center: one centre crop; full: the whole "
                             "image resized; pyiqa: pyiqa's LIQE crops, no resize (default: the "
                             "run's evaluation setting, else liqe)")
    parser.add_argument("--workers", type=int, default=4, help="threads reading images")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _write_csv(rows, out) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "score"])
    writer.writerows((path, repr(score)) for path, score in rows)
    if out is None:
        sys.stdout.write(text.getvalue())
        return
    tmp = out + ".tmp"  # write then rename: no half-written CSV when interrupted
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        f.write(text.getvalue())
    os.replace(tmp, out)


def run(args: argparse.Namespace) -> int:
    from mmpiqa_jax.evaluate import scoring  # pylint: disable=import-outside-toplevel
    from mmpiqa_jax.train import inference  # pylint: disable=import-outside-toplevel

    if args.batch_size < 1:
        print(f"error: --batch-size must be >= 1, got {args.batch_size}", file=sys.stderr)
        return 1
    files, skipped = scoring.find_images(args.paths)
    if not files:
        for path, reason in skipped:
            print(f"skipped {path}: {reason}", file=sys.stderr)
        print(f"error: no image files ({', '.join(scoring.IMAGE_EXTENSIONS)}) in "
              f"{' '.join(args.paths)}", file=sys.stderr)
        return 1
    try:
        model, config = inference.load_for_inference(args.checkpoint)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: cannot load checkpoint {args.checkpoint}: {e}", file=sys.stderr)
        return 1
    scores, unreadable = scoring.score_files(
        model, files, batch_size=args.batch_size, workers=args.workers,
        progress=not args.no_progress, **scoring.crop_setting(config, args.crops))
    skipped += unreadable
    _write_csv(scores, args.out)
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    where = f" -> {args.out}" if args.out else ""
    print(f"scored {len(scores)} images{where}"
          + (f"; skipped {len(skipped)} (listed above)" if skipped else ""), file=sys.stderr)
    return EXIT_SKIPPED if skipped else 0
