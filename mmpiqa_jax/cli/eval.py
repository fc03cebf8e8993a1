"""`mmpiqa eval --workdir DIR [--dataset NAME] [--split NAME]`: test a run's best checkpoint."""
from __future__ import annotations

import argparse
import sys

from mmpiqa_jax.cli.train import (INPUT_ERRORS, add_distributed_arguments, error_message,
                                  format_results, start_processes)

HELP = "evaluate the best checkpoint of a training run; writes eval/<dataset>-<split>.*"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", required=True, help="folder of a `mmpiqa train` run")
    parser.add_argument("--dataset", default=None,
                        help="one dataset (default: every training dataset and eval.datasets)")
    parser.add_argument("--split", default=None,
                        help="part: train, val, test or all (default: test; all for a dataset "
                             "not trained on)")
    add_distributed_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if not start_processes(args):  # first: before anything creates a JAX backend
        return 1
    from mmpiqa_jax.train import run as run_lib  # pylint: disable=import-outside-toplevel

    try:
        results = run_lib.evaluate_workdir(args.workdir, args.dataset, args.split)
    except INPUT_ERRORS as e:
        print(f"error: {error_message(e)}", file=sys.stderr)
        return 1
    print(format_results(results))
    print(f"written to {args.workdir}/eval/")
    return 0
