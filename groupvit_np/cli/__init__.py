"""The `groupvit-np` command line: one module per subcommand, each with `add(subparsers)`, which registers its
parser and sets `run`, a function of the parsed arguments that returns the exit status. A new subcommand adds its
module to `SUBCOMMANDS`. User errors print one line to stderr, "groupvit-np COMMAND: error: ...", and exit with 1
(2 for arguments that contradict each other, as argparse's own errors); Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import classify, convert, download, evaluate, segment
from .common import PROG, UsageError, UserError

SUBCOMMANDS = (segment, classify, evaluate, convert, download)  # in the order `--help` lists them


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog=PROG, description="GroupViT in NumPy: checkpoints, inference, evaluation.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns the exit status (2 for usage errors, 1 for user errors, 130 on Ctrl-C)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse has printed usage or help
        return int(exit_.code or 0)
    where = f"{PROG} {args.command}"
    try:
        return args.run(args)
    except UserError as err:
        print(f"{where}: error: {err}", file=sys.stderr)
        return 2 if isinstance(err, UsageError) else 1
    except (ValueError, OSError) as err:  # bad checkpoints (CheckpointError), missing files, refused downloads
        text = str(err).strip() or type(err).__name__
        print(f"{where}: error: {text.splitlines()[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{where}: interrupted", file=sys.stderr)
        return 130
