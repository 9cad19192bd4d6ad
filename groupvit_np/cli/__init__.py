"""The `groupvit-np` command line. One `_add_<name>` function per subcommand registers its parser and handler;
a new subcommand adds its function to `SUBCOMMANDS`. User errors print one line to stderr, "groupvit-np COMMAND:
error: ...", and exit with 1 (2 for arguments that contradict each other, as argparse's own errors).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

PROG = "groupvit-np"


def add_weights_option(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """`--weights` (checkpoint folder, weights file, NVlabs .pth or Hub repo id) and `--revision` (Hub only)."""
    parser.add_argument(
        "--weights",
        default=default,
        required=default is None,
        metavar="PATH_OR_REPO",
        help="checkpoint folder, model.safetensors/pytorch_model.bin, NVlabs .pth, or Hub repo id "
        "(e.g. nvidia/groupvit-gcc-yfcc)",
    )
    parser.add_argument("--revision", default=None, help="Hub branch, tag or commit (repo ids only)")


# ---------------------------------------------------------------------------------------------------------------
# convert


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="write an HF safetensors folder from any checkpoint",
        description="Convert an NVlabs .pth, an HF folder or weights file, or a Hub repo id into DST/ with "
        "config.json + model.safetensors (+ tokenizer/preprocessor files when known), loadable by transformers.",
    )
    p.add_argument("src", help="NVlabs .pth, HF checkpoint folder or weights file, or Hub repo id")
    p.add_argument("dst", help="folder to create")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--force", action="store_true", help="replace DST if it exists")
    p.add_argument("--revision", default=None, help="Hub branch, tag or commit (repo ids only)")
    p.set_defaults(run=cmd_convert)


def cmd_convert(args: argparse.Namespace) -> int:
    from ..checkpoints.convert import convert
    from ..hub import looks_like_repo_id

    dst = Path(args.dst)
    if dst.exists() and not dst.is_dir():
        raise UserInputError(f"{dst} exists and is not a folder")
    if dst.exists() and not args.force:
        raise UserInputError(f"{dst} already exists; pass --force to replace it")
    if args.revision is not None and (Path(args.src).exists() or not looks_like_repo_id(args.src)):
        raise UserInputError(f"--revision applies to Hub repo ids, not to the local checkpoint {args.src}", 2)
    dst = convert(args.src, args.dst, dtype=args.dtype, force=args.force, revision=args.revision)
    size = sum(f.stat().st_size for f in Path(dst).iterdir())
    print(f"wrote {dst} ({args.dtype}, {size / 1e6:.1f} MB)")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# download


def _add_download(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "download",
        help="fetch a Hub checkpoint into the Hugging Face cache",
        description="Find REPO_ID in the Hugging Face cache, or download config.json, the weights "
        "(model.safetensors, else pytorch_model.bin) and the tokenizer/preprocessor files. Honours HF_ENDPOINT, "
        "HF_HUB_OFFLINE and HF_HUB_CACHE/HF_HOME. Prints the snapshot folder.",
    )
    p.add_argument("repo_id", help="e.g. nvidia/groupvit-gcc-yfcc or nvidia/groupvit-gcc-redcaps")
    p.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    p.add_argument("--cache-dir", default=None, help="hub cache folder (default: the Hugging Face cache)")
    p.set_defaults(run=cmd_download)


def cmd_download(args: argparse.Namespace) -> int:
    from ..hub import resolve_repo

    print(resolve_repo(args.repo_id, args.revision, cache_dir=args.cache_dir))
    return 0


# ---------------------------------------------------------------------------------------------------------------


def _add_inference(sub: argparse._SubParsersAction) -> None:
    """segment, classify, evaluate (groupvit_np/commands.py)."""
    from .commands import add_commands

    add_commands(sub)


class UserInputError(Exception):
    """A mistake in the arguments of `convert` or `download`, shown as one line (exit status 1, or 2 for usage)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_inference, _add_convert, _add_download]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog=PROG, description="GroupViT in NumPy: checkpoints, inference, evaluation.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(sub)
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
    except UserInputError as err:
        print(f"{where}: error: {err}", file=sys.stderr)
        return err.status
    except (ValueError, OSError) as err:  # bad checkpoints (CheckpointError), missing files, refused downloads
        text = str(err).strip() or type(err).__name__
        print(f"{where}: error: {text.splitlines()[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{where}: interrupted", file=sys.stderr)
        return 130
