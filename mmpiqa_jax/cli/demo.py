"""`mmpiqa demo [--workdir DIR]`: the whole path on data this machine makes itself.

Builds `synthetic_iqa` if absent, trains a small randomly initialised MP-IQE on 7 of its 10
reference images (`configs/demo.py`, an ordinary config), tests it on the 2 held-out references
and prints a table; everything `mmpiqa train` writes lands in the workdir.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mmpiqa_jax.cli.train import INPUT_ERRORS, error_message, format_results

HELP = "train and test a small MP-IQE on the embedded synthetic_iqa dataset (nothing downloaded)"
CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.py"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default="mmpiqa_demo",
                        help="run folder (default: %(default)s)")
    parser.add_argument("--data-dir", default=None,
                        help="datasets folder (default: $MMPIQA_DATA_DIR or ~/mmpiqa_data)")
    parser.add_argument("--dataset", default="synthetic_iqa",
                        help="embedded dataset to use (default: %(default)s; synthetic_iqa/small "
                             "for a quick check, with --set data.split=50/25/25)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a key of configs/demo.py (repeatable)")


def _ensure_prepared(name: str, data_dir: str | None) -> None:
    from mmpiqa_jax.data import registry  # pylint: disable=import-outside-toplevel
    builder = registry.get_builder(name, data_dir)
    if builder.is_prepared():
        return
    print(f"building {name} in {builder.data_dir} (once; under a minute) ...", flush=True)
    start = time.time()
    registry.prepare(name, data_dir=data_dir)
    print(f"built {name} in {time.time() - start:.0f} s", flush=True)


def run(args: argparse.Namespace) -> int:
    from mmpiqa_jax import config as config_lib  # pylint: disable=import-outside-toplevel
    from mmpiqa_jax.train import run as run_lib  # pylint: disable=import-outside-toplevel

    start = time.time()
    try:
        if not CONFIG.is_file():
            raise FileNotFoundError(f"{CONFIG} not found: the demo needs the repository's "
                                    "configs/ folder (install with pip install -e)")
        config = config_lib.load_config(f"{CONFIG}:dataset={args.dataset}", args.overrides)
        if args.data_dir:
            config.data.data_dir = args.data_dir
        _ensure_prepared(args.dataset, config.data.data_dir or None)
        print(f"training {config.method}: {config.num_steps} steps of {config.batch_size} images "
              f"-> {args.workdir}", flush=True)
        results = run_lib.train_and_evaluate(config, args.workdir)
    except INPUT_ERRORS as e:
        print(f"error: {error_message(e)}", file=sys.stderr)
        return 1
    if not results:
        print(f"training stopped early; run again to resume in {args.workdir}")
        return 0
    print()
    print(format_results(results))
    print(f"\nheld-out references: split {config.data.split} by reference image (seed "
          f"{config.data.split_seed}); total time {time.time() - start:.0f} s")
    print(f"written to {args.workdir}: eval/ (json, csv, png), train_log.jsonl, tensorboard/, "
          "checkpoints/")
    return 0
