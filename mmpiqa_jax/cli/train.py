"""`mmpiqa train --config FILE[:ARGS] --workdir DIR [--set key=value ...]`: train, then test."""
from __future__ import annotations

import argparse
import sys

HELP = "train a model from a config (resuming in WORKDIR), then test its best checkpoint"

# The errors of bad input that are reported as one line (the message names what is wrong).
INPUT_ERRORS = (KeyError, ValueError, TypeError, FileNotFoundError, AttributeError)


def add_distributed_arguments(parser: argparse.ArgumentParser) -> None:
    """`--coordinator`, `--num-processes`, `--process-id`: the multi-process flags of train,
    sweep, eval and score (read by `train.distributed.initialize_from_args`). Defined here,
    not beside jax, so that building the parser (`mmpiqa --help`) imports no jax."""
    group = parser.add_argument_group(
        "multi-process", "needed only where jax does not detect the cluster (Cloud TPU and "
        "SLURM are detected); default: $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES, "
        "$JAX_PROCESS_ID")
    group.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                       help="address of process 0's coordinator service")
    group.add_argument("--num-processes", type=int, default=None, metavar="N")
    group.add_argument("--process-id", type=int, default=None, metavar="I")


def start_processes(args: argparse.Namespace) -> bool:
    """Joins the multi-process run, if any, before any other JAX call; False (after printing
    the error) on bad flags."""
    from mmpiqa_jax.train import distributed  # pylint: disable=import-outside-toplevel
    try:
        distributed.initialize_from_args(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return False
    return True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="config as FILE[:ARGS], e.g. "
                        "configs/mpiqe.py:depth=6")
    parser.add_argument("--workdir", required=True,
                        help="run folder: checkpoints, train_log.jsonl, tensorboard/, eval/")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config key (repeatable)")
    add_distributed_arguments(parser)


def error_message(e: BaseException) -> str:
    # KeyError's str() quotes its message; the argument itself reads better.
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)


def format_results(results: dict) -> str:
    """A small table: one row per evaluation, SRCC / PLCC / KRCC / RMSE and n."""
    rows = [("evaluation", "SRCC", "PLCC", "KRCC", "RMSE", "n")]
    for name, m in results.items():
        rows.append((name, f"{m['srcc']:.4f}", f"{m['plcc_logistic']:.4f}", f"{m['krcc']:.4f}",
                     f"{m['rmse_logistic']:.4f}", str(m["n"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in
                       enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n(PLCC and RMSE after the 4-parameter logistic fit)"


def run(args: argparse.Namespace) -> int:
    if not start_processes(args):  # first: before anything creates a JAX backend
        return 1
    from mmpiqa_jax import config as config_lib  # pylint: disable=import-outside-toplevel
    from mmpiqa_jax.train import run as run_lib  # pylint: disable=import-outside-toplevel

    try:
        config = config_lib.load_config(args.config, args.overrides)
        results = run_lib.train_and_evaluate(config, args.workdir)
    except INPUT_ERRORS as e:
        print(f"error: {error_message(e)}", file=sys.stderr)
        return 1
    if results:
        print(format_results(results))
        print(f"written to {args.workdir}/eval/")
    else:
        print(f"training stopped before config.num_steps; run again to resume in {args.workdir}")
    return 0
