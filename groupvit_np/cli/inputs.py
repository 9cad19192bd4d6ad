"""A command's inputs, checked before anything is loaded (flags, image files, labels, prompt templates), then read:
images (large ones at a reduced scale, with a progress line) and class embeddings, with a warning for words the
checkpoint's vocabulary or characters the system's fonts lack.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .checkpoint import REAL, about_checkpoint, weights_name
from .common import UsageError, UserError, first_line

LONG_IMAGE = 1 << 24  # pixels (4096 x 4096): seconds of work, so a progress line says which step is running
LARGE_IMAGE = 1 << 26  # pixels (8192 x 8192): decoded at a reduced scale
REDUCE_TO = 1024  # a large image's short side after the decoder's reduction


def check_arguments(args: argparse.Namespace) -> None:
    """Checks every command shares, before anything is loaded: --out is not a file, --revision has a repo id,
    the templates have one "{}" each."""
    from ..hub import looks_like_repo_id
    from ..tasks.classify import check_template

    out = getattr(args, "out", None)
    if out and Path(out).exists() and not Path(out).is_dir():
        raise UserError(f"--out {out} is a file; pass a folder")
    if args.revision is not None and (not args.weights or Path(args.weights).exists()
                                      or not looks_like_repo_id(args.weights)):  # fmt: skip
        raise UsageError(f"--revision applies to Hub repo ids, not to the local checkpoint {weights_name(args)}")
    for template in getattr(args, "template", None) or ():
        try:
            check_template(template)
        except ValueError as e:
            raise UsageError(f"--template: {e}") from None


def check_images(paths: list[str]) -> None:
    """Fail fast on a typo, before loading anything."""
    for path in paths:
        if Path(path).is_dir():
            raise UserError(f"{path} is a folder, not an image file")
        if not Path(path).is_file():
            raise UserError(f"no such image file: {path}")


def label_set(args: argparse.Namespace) -> Any:
    from ..tasks.datasets import custom_labels, dataset_labels, parse_labels

    try:
        if args.dataset:
            ls = dataset_labels(args.dataset)
        else:
            ls = custom_labels(parse_labels(args.labels), background=True)
        if getattr(args, "no_background", False):
            ls = ls.without_background()
    except ValueError as e:
        raise UserError(str(e)) from None
    if getattr(args, "threshold", None) is not None:
        if not 0.0 <= args.threshold <= 1.0:
            raise UserError(f"--threshold must lie in [0, 1], got {args.threshold}")
        ls = ls.with_threshold(args.threshold)
    return ls


def text_embeddings(args: argparse.Namespace, model: Any, names: list[str], templates: list[str], tokenizer: Any,
                    defaults: dict[str, Any]) -> Any:  # fmt: skip
    """The prompt-ensembled class embeddings, after a warning when the checkpoint's vocabulary lacks the words."""
    from ..tasks.classify import check_template, encode_text

    for template in templates:  # --template is checked up front; the checkpoint's segmentation.json only now
        try:
            check_template(template)
        except ValueError as e:
            raise UserError(str(e)) from None
    warn_vocabulary(args, tokenizer, [t.format(n) for n in names for t in templates], defaults.get("labels"))
    try:
        return encode_text(model, names, templates, tokenizer)
    except ValueError as e:  # a template from segmentation.json, or NaN features
        raise UserError(about_checkpoint(args, e)) from None


def warn_vocabulary(args: argparse.Namespace, tokenizer: Any, prompts: list[str], trained_on: Any = None) -> None:
    """One line on stderr when prompts hold words a checkpoint's own small vocabulary lacks (the demo checkpoint
    knows the words of its scenes, nothing else). CLIP's 49408-token BPE encodes any text: no check there.
    `trained_on`: the checkpoint's labels (segmentation.json), named in the warning."""
    if len(tokenizer) >= 49408 or not hasattr(tokenizer, "words_not_in_vocab"):
        return
    unknown = dict.fromkeys(w for p in prompts for w in tokenizer.words_not_in_vocab(p))
    if unknown:
        words = sorted({w for label in trained_on or () for w in str(label).split()})
        known = f" (its words: {', '.join(words)})" if words else ""
        print(f"warning: {', '.join(unknown)}: not in the vocabulary of the checkpoint {weights_name(args)}{known}; "
              f"its answers about them mean nothing, and {REAL}", file=sys.stderr)  # fmt: skip


def warn_fonts(names: Sequence[str]) -> None:
    """One line on stderr when no font on this system draws some characters of the class names."""
    from ..tasks.fonts import undrawable

    missing = undrawable(names)
    if missing:
        which = ", ".join(n for n in names if set(n) & set(missing))
        print(f"warning: no font on this system draws {missing} (in {which}); those names show as boxes in the "
              "pictures: install a font that covers them (e.g. Noto Sans CJK)", file=sys.stderr)  # fmt: skip


def read_image(path: str, max_pixels: int, say: Callable[[str], None] | None = None) -> tuple[Any, float]:
    """An image file as an RGB array and the scale it was decoded at: 1.0, or less for an image over LARGE_IMAGE
    pixels, which the decoder shrinks (see `preprocessing.image.load_image`). For one over LONG_IMAGE pixels,
    `say(message)` starts a progress line first."""
    from PIL import Image

    from ..preprocessing.image import ImageTooLarge, load_image, to_rgb_array

    try:
        with Image.open(path) as probe:  # reads the header only
            w, h = probe.size
    except Exception:  # not an image Pillow knows: load_image says why, naming the file
        w = h = 0
    try:
        reduce_to = REDUCE_TO if w * h > LARGE_IMAGE else None
        if w * h > LONG_IMAGE and say is not None and w * h <= max_pixels:
            say(f"{path}: {w}x{h} pixels; decoding" + (" at a reduced scale" if reduce_to else ""))
        rgb = to_rgb_array(load_image(path, max_pixels=max_pixels, reduce_to=reduce_to), path)
    except ImageTooLarge as e:
        raise UserError(
            f"{path}: {e.pixels:,} pixels is over --max-pixels {max_pixels:,} (a guard against "
            f"decompression bombs); if you trust the file, pass --max-pixels {e.pixels}"
        ) from None
    except (OSError, ValueError, SyntaxError) as e:
        reason = first_line(e)  # image.py's messages usually name the file already
        raise UserError(reason if path in reason else f"cannot read image {path}: {reason}") from None
    scale = min(rgb.shape[:2]) / min(w, h) if w else 1.0
    if scale != 1 and say is not None:
        say(f"{rgb.shape[1]}x{rgb.shape[0]} (scale 1/{round(1 / scale)}: pictures and label map at this size)")
    return rgb, scale


class Steps:
    """A progress line on stderr for one long image: "big.jpg: 12000x12000 ...; segmenting; writing pictures;
    done in 3.1 s". Parts are flushed as they come, so a user sees which step is running."""

    def __init__(self) -> None:
        self.started, self.open = time.monotonic(), False

    def say(self, text: str) -> None:
        sys.stderr.write(("; " if self.open else "") + text)
        sys.stderr.flush()
        self.open = True

    def done(self) -> None:
        self.end(f"; done in {time.monotonic() - self.started:.1f} s")

    def end(self, text: str = "") -> None:
        """Finish the line (a failure's own message then starts on the next one)."""
        if self.open:
            sys.stderr.write(text + "\n")
            self.open = False
