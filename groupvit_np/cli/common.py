"""What every subcommand shares: the errors a user can fix and the wrapper that prints them, the options of the
inference commands, and small argument helpers.

Mistakes a user can fix raise `UserError` (one line on stderr, exit status 1); flags that contradict each other
raise `UsageError` (exit status 2, as argparse's own errors). `command` wraps a subcommand's function so; `main`
(in `__init__`) prints them the same way for subcommands that need no wrapper.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path

PROG = "groupvit-np"
MAX_PIXELS = 178_956_970  # Pillow's default refusal limit (2 * PIL.Image.MAX_IMAGE_PIXELS)


class UserError(Exception):
    """Something the user can fix; shown as one line, exit status 1."""


class UsageError(UserError):
    """Arguments that contradict each other; exit status 2, as argparse's own errors."""


def command(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A subcommand that prints its UserError as one line and returns 1 (UsageError: 2; Ctrl-C: 130). While it
    runs, Pillow's pixel limit gives way to the command's own --max-pixels check."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        from PIL import Image

        limit = Image.MAX_IMAGE_PIXELS
        if hasattr(args, "max_pixels"):  # --max-pixels is checked instead of Pillow's own limit
            Image.MAX_IMAGE_PIXELS = None
        try:
            return fn(args)
        except UserError as e:
            print(f"{PROG} {args.command_name}: error: {e}", file=sys.stderr)
            return 2 if isinstance(e, UsageError) else 1
        except KeyboardInterrupt:
            print(f"{PROG} {args.command_name}: interrupted", file=sys.stderr)
            return 130
        finally:
            Image.MAX_IMAGE_PIXELS = limit

    return run


def first_line(e: BaseException) -> str:
    """An error's message, first line only (its type's name when it has none)."""
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def output_stems(paths: list[str]) -> list[str]:
    """Output name stems, made unique when two inputs share a file name (a/cat.jpg, b/cat.jpg -> cat, cat-2)."""
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        stem = Path(p).stem
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return out


# ---------------------------------------------------------------------------------------------------------------
# The options of segment, classify and evaluate.


def add_common_options(p: argparse.ArgumentParser, out: str | None, out_help: str, images: bool = True) -> None:
    p.add_argument("--weights", metavar="PATH_OR_REPO_ID", default=None,
                   help="checkpoint folder, .safetensors/.bin/.pth file or Hub repo id (default: the shipped demo "
                        "checkpoint)")  # fmt: skip
    p.add_argument("--revision", default=None, help="Hub branch, tag or commit (repo ids only)")
    p.add_argument("--backend", choices=("numpy", "cupy", "jax"), default="numpy",
                   help="array library (default numpy); jax compiles the model on first use, once per image size "
                        "(several seconds each, then faster)")  # fmt: skip
    p.add_argument("--out", metavar="DIR", default=out, help=out_help)
    p.add_argument("--json", action="store_true", help="print machine-readable results on stdout")
    if images:
        p.add_argument("--max-pixels", type=positive_int, default=MAX_PIXELS, metavar="N",
                       help=f"refuse images with more pixels, a guard against decompression bombs (default "
                            f"{MAX_PIXELS}, Pillow's)")  # fmt: skip


def add_label_options(p: argparse.ArgumentParser, required_one: bool) -> None:
    from ..tasks.datasets import DATASETS

    if required_one:
        group = p.add_mutually_exclusive_group(required=True)
        group.add_argument("--labels", help='comma-separated class names, e.g. "cat,dog,sofa"')
        group.add_argument("--dataset", choices=tuple(DATASETS), help="a built-in label set (coco: COCO-Object)")
    else:
        p.add_argument("--labels", required=True, help='comma-separated class names, e.g. "cat,dog,sofa"')
    p.add_argument("--template", action="append", metavar="TEXT",
                   help="prompt template with one {} for the name; repeat to ensemble")  # fmt: skip
