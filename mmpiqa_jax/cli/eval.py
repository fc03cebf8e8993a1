"""`mmpiqa eval --workdir DIR [--dataset NAME] [--split NAME]`: test a run's best checkpoint."""
from __future__ import annotations

import argparse

from mmpiqa_jax.cli.train import add_distributed_arguments, start_processes

HELP = "evaluate the best checkpoint of a training run; writes eval/<dataset>-<split>.*"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", required=True,
                        help="a `mmpiqa train` run, one checkpoint in it (WORKDIR/checkpoints/N), "
                             "or a model folder (`mmpiqa convert` of a LIQE model)")
    parser.add_argument("--dataset", default=None,
                        help="one dataset (default: every training dataset and eval.datasets)")
    parser.add_argument("--split", default=None,
                        help="part: train, val, test or all (default: test; all for a dataset "
                             "not trained on)")
    add_distributed_arguments(parser)


def run(args: argparse.Namespace) -> int:
    start_processes(args)  # first: before anything creates a JAX backend
    from mmpiqa_jax.evaluate.report import results_table  # pylint: disable=import-outside-toplevel
    from mmpiqa_jax.train import run as run_lib  # pylint: disable=import-outside-toplevel

    results = run_lib.evaluate_workdir(args.workdir, args.dataset, args.split)
    print(results_table(results))
    print(f"written to {run_lib.inference.run_folder(args.workdir)}/eval/")
    return 0
