"""The `mmpiqa` command line: one sub-command per module in `mmpiqa_jax.cli`.

Each sub-command module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`,
imported only when its command runs. A `UserError` or an `OSError` is printed as one line with
exit status 1; anything else keeps its traceback.
"""
import argparse
import importlib
import importlib.util
import sys

from mmpiqa_jax.errors import UserError

# command name -> module; each module owns its arguments and its work.
COMMANDS = {
    "convert": "mmpiqa_jax.cli.convert",
    "export": "mmpiqa_jax.cli.export",
    "parity": "mmpiqa_jax.cli.parity",
    "prepare": "mmpiqa_jax.cli.prepare",
    "summary": "mmpiqa_jax.cli.summary",
    "train": "mmpiqa_jax.cli.train",
    "eval": "mmpiqa_jax.cli.eval",
    "score": "mmpiqa_jax.cli.score",
    "sweep": "mmpiqa_jax.cli.sweep",
    "demo": "mmpiqa_jax.cli.demo",
}


def _available():
    """The commands whose module exists in this installation."""
    return {name: module for name, module in COMMANDS.items()
            if importlib.util.find_spec(module) is not None}


def build_parser(commands=None):
    parser = argparse.ArgumentParser(prog="mmpiqa", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in (commands or _available()).items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _quiet_teardown(unraisable) -> None:
    """Drops the unraisable 'Event loop is closed' of Orbax's writers; reports any other."""
    if not (isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == "Event loop is closed"):
        sys.__unraisablehook__(unraisable)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    sys.unraisablehook = _quiet_teardown
    commands = _available()
    # Import only the module of the command asked for (plus all of them for --help).
    if argv and argv[0] in commands:
        commands = {argv[0]: commands[argv[0]]}
    args = build_parser(commands).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
