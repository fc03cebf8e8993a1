"""`mmpiqa train --config FILE[:ARGS] --workdir DIR [--set key=value ...]`: train, then test."""
from __future__ import annotations

import argparse

HELP = "train a model from a config (resuming in WORKDIR), then test its best checkpoint"


def add_distributed_arguments(parser: argparse.ArgumentParser) -> None:
    """`--coordinator`, `--num-processes`, `--process-id` (`distributed.initialize_from_args`)."""
    group = parser.add_argument_group(
        "multi-process", "needed only where jax does not detect the cluster (Cloud TPU and "
        "SLURM are detected); default: $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES, "
        "$JAX_PROCESS_ID")
    group.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                       help="address of process 0's coordinator service")
    group.add_argument("--num-processes", type=int, default=None, metavar="N")
    group.add_argument("--process-id", type=int, default=None, metavar="I")


def start_processes(args: argparse.Namespace) -> None:
    """Joins the multi-process run, if any: call it before any other JAX call."""
    from mmpiqa_jax.train import distributed  # pylint: disable=import-outside-toplevel
    distributed.initialize_from_args(args)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="config as FILE[:ARGS], e.g. "
                        "configs/mpiqe.py:depth=6")
    parser.add_argument("--workdir", required=True,
                        help="run folder: checkpoints, train_log.jsonl, tensorboard/, eval/")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config key (repeatable)")
    add_distributed_arguments(parser)


def run(args: argparse.Namespace) -> int:
    start_processes(args)  # first: before anything creates a JAX backend
    from mmpiqa_jax import config as config_lib  # pylint: disable=import-outside-toplevel
    from mmpiqa_jax.evaluate.report import results_table  # pylint: disable=import-outside-toplevel
    from mmpiqa_jax.train import run as run_lib  # pylint: disable=import-outside-toplevel

    config = config_lib.load_config(args.config, args.overrides)
    results = run_lib.train_and_evaluate(config, args.workdir)
    if results:
        print(results_table(results))
        print(f"written to {args.workdir}/eval/")
    else:
        print(f"training stopped before config.num_steps; run again to resume in {args.workdir}")
    return 0
