"""`vitkit` command line: a thin layer that parses arguments and calls the public API."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback

from vitkit.errors import VitkitError

# Sub-command name -> module. Each module has a docstring (its help), `add_arguments(parser)` and
# `run(args) -> int` (the exit status), and keeps heavy imports (torch above all) inside `run`, so that
# `vitkit --help` and `vitkit CMD --help` answer at once (tests/test_cli_startup.py guards it).
COMMANDS: dict[str, str] = {
    "demo": "vitkit.cli.demo",
    "models": "vitkit.cli.models",
    "convert": "vitkit.cli.convert",
    "analyze": "vitkit.cli.analyze",
    "train": "vitkit.cli.train",
    "finetune": "vitkit.cli.finetune",
    "pretrain": "vitkit.cli.pretrain",
    "fewshot": "vitkit.cli.fewshot",
    "eval": "vitkit.cli.evaluate",
    "predict": "vitkit.cli.predict",
    "export": "vitkit.cli.export",
    "push": "vitkit.cli.push",
    "serve": "vitkit.cli.serve",
    "data": "vitkit.cli.data",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per command; only `command`'s (all when None) gets its options.

    The options of the others are never parsed, and building them can be the slow part (train's flags come from
    the recipe's dataclasses), so `vitkit CMD ...` builds CMD's alone.
    """
    parser = argparse.ArgumentParser(prog="vitkit", description="Vision Transformers: build, train, look inside.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        summary = (module.__doc__ or "").strip().splitlines()[0]
        command_parser = sub.add_parser(name, help=summary, description=module.__doc__)
        if command in (None, name):
            module.add_arguments(command_parser)
        command_parser.set_defaults(_module=module)
    return parser


def chosen_command(argv: list[str]) -> str | None:
    """The sub-command named in `argv`: its first word that is not an option (the top level's take no value)."""
    return next((word for word in argv if not word.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `vitkit` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(chosen_command(argv) or "")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args._module.run(args) or 0)
    except VitkitError as error:
        # Bad input: the message says what was wrong and how to fix it. Anything that is not a VitkitError is
        # a bug (in vitkit or a dependency) and propagates with its traceback; -v shows this one's too.
        if args.verbose:
            traceback.print_exc()
        print(f"vitkit {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
