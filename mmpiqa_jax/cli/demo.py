"""`mmpiqa demo [--workdir DIR] [--compare]`: the whole path on data this machine makes itself.

Trains and tests MP-IQE (and, with `--compare`, LIQE) on `synthetic_iqa` (`configs/demo.py`),
each in `<workdir>/<method>/`; the table and plots go to `<workdir>/results.md|png`.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from mmpiqa_jax.errors import MissingFileError

HELP = "train and test a small MP-IQE on the embedded synthetic_iqa dataset (nothing downloaded)"
CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.py"
METHODS = {"mpiqe": "MP-IQE", "liqe": "LIQE"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default="mmpiqa_demo",
                        help="output folder (default: %(default)s): one run folder per method, "
                             "results.md and results.png")
    parser.add_argument("--data-dir", default=None,
                        help="datasets folder (default: $MMPIQA_DATA_DIR or ~/mmpiqa_data)")
    parser.add_argument("--dataset", default="synthetic_iqa",
                        help="embedded dataset to use (default: %(default)s; synthetic_iqa/small "
                             "for a quick check, with --set data.split=50/25/25)")
    parser.add_argument("--compare", action="store_true",
                        help="also train the LIQE baseline on the same split (twice the time)")
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


def _comparison_row(run_dir: Path, evaluation: str, metrics: dict) -> dict:
    import numpy as np  # pylint: disable=import-outside-toplevel
    table = np.genfromtxt(run_dir / "eval" / f"{evaluation}.csv", delimiter=",", names=True,
                          dtype=None, encoding="utf-8")
    return {"metrics": metrics, "quality": table["quality"], "predictions": table["prediction"]}


def run(args: argparse.Namespace) -> int:
    from mmpiqa_jax import config as config_lib  # pylint: disable=import-outside-toplevel
    from mmpiqa_jax.evaluate import report  # pylint: disable=import-outside-toplevel
    from mmpiqa_jax.train import run as run_lib  # pylint: disable=import-outside-toplevel

    start = time.time()
    workdir = Path(args.workdir)
    methods = ["mpiqe", "liqe"] if args.compare else ["mpiqe"]
    results, config = {}, None
    if not CONFIG.is_file():
        raise MissingFileError(f"{CONFIG} not found: the demo needs the repository's configs/ "
                               "folder (install with pip install -e)")
    for method in methods:
        config = config_lib.load_config(f"{CONFIG}:dataset={args.dataset},model={method}",
                                        args.overrides)
        if args.data_dir:
            config.data.data_dir = args.data_dir
        _ensure_prepared(args.dataset, config.data.data_dir or None)
        print(f"training {config.method}: {config.num_steps} steps of {config.batch_size} "
              f"images -> {workdir / method}", flush=True)
        results[method] = run_lib.train_and_evaluate(config, workdir / method)
        if not results[method]:
            print(f"training stopped early; run again to resume in {workdir / method}")
            return 0
    evaluation = next(iter(results["mpiqe"]))  # `<dataset>-test`: the held-out references
    rows = {METHODS[m]: _comparison_row(workdir / m, evaluation, results[m][evaluation])
            for m in methods}
    title = (f"{args.dataset}, held-out references (split {config.data.split} by reference, "
             f"seed {config.data.split_seed}; training seed {config.seed})")
    paths = report.write_comparison(workdir / "results", rows, title)
    print()
    print(report.results_table({f"{METHODS[m]}: {k}": v for m in methods
                                for k, v in results[m].items()}))
    print(f"\n{title}; total time {time.time() - start:.0f} s")
    print(f"written to {workdir}: {paths['md'].name}, {paths['png'].name}, and per method "
          f"{'/, '.join(methods)}/: eval/ (json, csv, png), train_log.jsonl, tensorboard/, "
          "checkpoints/")
    print(f"\nnext: score your images with this model: mmpiqa score --checkpoint "
          f"{workdir / methods[0]} IMAGES...\n"
          "      or with LIQE's released weights, or train on the six datasets: README.md")
    return 0
