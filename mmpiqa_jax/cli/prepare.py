"""`mmpiqa prepare NAME`: build a dataset into the data dir, from the folder the user downloaded."""
import argparse
import time

HELP = "build an IQA dataset (tfds, array_record) from its downloaded folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mmpiqa_jax.data import registry  # pylint: disable=import-outside-toplevel
    parser.add_argument("name", help=f"dataset, one of: {', '.join(registry.BUILDER_MODULES)} "
                                     "(a config as NAME/CONFIG, e.g. synthetic_iqa/small)")
    parser.add_argument("--manual-dir", default=None,
                        help="the folder you downloaded (not needed for synthetic_iqa)")
    parser.add_argument("--data-dir", default=None,
                        help="where to write (default: $MMPIQA_DATA_DIR or ~/mmpiqa_data)")
    parser.add_argument("--allow-partial", action="store_true",
                        help="build even when the folder holds another number of images than "
                             "the published dataset (a partial download, a small test copy)")
    parser.add_argument("--liqe-resize", action="store_true",
                        help="store images after LIQE's resize (short side above 768 shrunk to "
                             "768): the same crops, read faster; use a --data-dir of its own")
    parser.add_argument("--uncompressed", action="store_true",
                        help="store images as uncompressed BMP: the same pixels, decoded about "
                             "14 times faster than PNG; for PNG datasets (KADID-10k, CSIQ), not "
                             "JPEG ones (records ~10x larger, read slower); a --data-dir of its "
                             "own")


def run(args: argparse.Namespace) -> int:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    from mmpiqa_jax.data import registry  # pylint: disable=import-outside-toplevel
    # tfds' tqdm bars count the examples generated and shuffled, split by split.
    tfds.display_progress_bar(True)
    start = time.time()
    builder = registry.prepare(args.name, args.manual_dir, args.data_dir,
                               allow_partial=args.allow_partial, liqe_resize=args.liqe_resize,
                               uncompressed=args.uncompressed)
    counts = {name: split.num_examples for name, split in builder.info.splits.items()}
    print(f"{args.name}: {counts} examples in {builder.data_dir} ({time.time() - start:.0f} s)")
    return 0
