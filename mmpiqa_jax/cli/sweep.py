"""`mmpiqa sweep --config FILE[:ARGS] --workdir DIR`: one training per point of the config's grid
(`experiments.sweep`); the same command continues an interrupted sweep."""
import argparse

from mmpiqa_jax.cli.train import add_distributed_arguments, start_processes

HELP = "train and evaluate every point of the grid a config declares; compare them"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True,
                        help="config as FILE[:ARGS] with a `sweep` section, e.g. "
                             "configs/ablation_depth.py or configs/ten_splits.py:base=mpiqe")
    parser.add_argument("--workdir", required=True, help="the sweep's folder")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config key for every point (repeatable); the grid "
                             "itself too, e.g. 'sweep.model.visual_prompt_depth=(0, 12)'")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the points and whether each is done; train nothing")
    parser.add_argument("--devices-per-run", type=int, default=None, metavar="K",
                        help="run the points side by side, each on its own K devices (K must "
                             "divide the device count; one process); default: one after another "
                             "on every device")
    parser.add_argument("--part", default=None, metavar="I/N",
                        help="train only points I, I+N, I+2N, ... of the grid: one job per "
                             "pod slice, each with its own part (all jobs share --workdir)")
    add_distributed_arguments(parser)


def run(args: argparse.Namespace) -> int:
    start_processes(args)  # first: before anything creates a JAX backend
    from mmpiqa_jax import config as config_lib  # pylint: disable=import-outside-toplevel
    from mmpiqa_jax import files  # pylint: disable=import-outside-toplevel
    from mmpiqa_jax.experiments import sweep  # pylint: disable=import-outside-toplevel

    config = config_lib.load_config(args.config, args.overrides)
    points = sweep.plan(config, args.workdir)
    mine = sweep.part_of(points, args.part)
    if args.devices_per_run is not None:  # its errors before anything trains
        sweep.sub_meshes(args.devices_per_run)
    if args.dry_run:
        for p in mine:
            print(f"{'done   ' if p.done else 'pending'}  {p.workdir}")
        return 0
    points = sweep.run_sweep(config, args.workdir, devices_per_run=args.devices_per_run,
                             part=args.part)
    print((files.as_path(args.workdir) / sweep.TABLE_FILE).read_text(encoding="utf-8"))
    mine = {p.workdir for p in sweep.part_of(points, args.part)}
    return 0 if all(p.done for p in points if p.workdir in mine) else 1
