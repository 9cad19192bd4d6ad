"""Steps the `segment`, `classify` and `evaluate` subcommands share: argument and file checks, loading the model,
tokenizer and images, one-line errors and warnings.

Mistakes a user can fix raise `UserError` (one line on stderr, exit status 1); flags that contradict each other
raise `UsageError` (exit status 2, as argparse's own errors). `command` wraps a subcommand's function so.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PROG = "groupvit-np"
SHIPPED = ("groupvit-demo-scenes", "groupvit-tiny-random")  # preferred first, under the shipped weights folder
HOW_TO_GET = ("pass --weights with a checkpoint folder, a weights file or a Hub repo id, or fetch the released "
              f"model with `{PROG} download nvidia/groupvit-gcc-yfcc`")  # fmt: skip
REAL = "real photos need a real checkpoint (--weights nvidia/groupvit-gcc-yfcc)"
MAX_PIXELS = 178_956_970  # Pillow's default refusal limit (2 * PIL.Image.MAX_IMAGE_PIXELS)
LONG_IMAGE = 1 << 24  # pixels (4096 x 4096): seconds of work, so a progress line says which step is running
LARGE_IMAGE = 1 << 26  # pixels (8192 x 8192): decoded at a reduced scale
REDUCE_TO = 1024  # a large image's short side after the decoder's reduction


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


# ---------------------------------------------------------------------------------------------------------------
# Shared steps.


def default_weights() -> Path:
    """The shipped checkpoint the commands use without --weights (the trained demo one when present)."""
    from .._resources import data_dir

    try:
        root = data_dir("weights")
    except FileNotFoundError as e:
        raise UserError(f"no shipped checkpoint ({e}); {HOW_TO_GET}") from None
    for name in SHIPPED:
        if (root / name / "config.json").is_file():
            return root / name
    raise UserError(f"no shipped checkpoint in {root}; {HOW_TO_GET}")


def weights_name(args: argparse.Namespace) -> str:
    """--weights as given, or the shipped checkpoint's folder: how messages name the checkpoint."""
    return args.weights or str(default_weights())


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


def checkpoint_folder(args: argparse.Namespace) -> Path:
    """The local folder (or weights file) behind --weights: a path as given, a Hub repo id resolved through the
    local cache (downloading only when the `hub` extra is installed and the network allows)."""
    from ..hub import resolve

    source = weights_name(args)
    if not args.weights and Path(source).name == "groupvit-tiny-random":
        print(f"note: using the shipped tiny *random* checkpoint, whose outputs are noise; {HOW_TO_GET}",
              file=sys.stderr)  # fmt: skip
    try:
        return resolve(source, args.revision, kind="model")
    except FileNotFoundError:
        raise UserError(f"--weights {source}: no such file or folder") from None
    except (OSError, ValueError, ImportError) as e:  # HubError is a ValueError
        raise UserError(f"cannot get weights {source}: {_first_line(e)}") from None


def load_model(args: argparse.Namespace) -> tuple[Any, Path]:
    """The model and the folder it came from (which may hold its own tokenizer and inference settings)."""
    from ..model import GroupViTModel

    source = checkpoint_folder(args)
    advice = "" if args.weights else f"; {HOW_TO_GET}"  # a shipped checkpoint that fails: say where to get one
    try:
        model = GroupViTModel.from_pretrained(source, xp=args.backend)
    except ImportError as e:  # CuPy or JAX missing: the message says what to install
        raise UserError(str(e)) from None
    except (OSError, ValueError) as e:  # CheckpointError is a ValueError
        raise UserError(f"cannot load weights {source}: {_first_line(e)}{advice}") from None
    if model.jit:
        print(f"note: {args.backend} compiles the model for each new input size on first use (several seconds each)",
              file=sys.stderr)  # fmt: skip
    return model, source if source.is_dir() else source.parent


def load_tokenizer(folder: Path | None = None) -> Any:
    """The checkpoint folder's own tokenizer files when it has them (the demo model's word vocabulary), else CLIP's."""
    from ..preprocessing.tokenizer import CLIPTokenizer
    from ..tasks.classify import default_tokenizer

    try:
        if folder is not None and (folder / "vocab.json").is_file():
            return CLIPTokenizer.from_pretrained(folder)
        return default_tokenizer()
    except (OSError, ImportError, ValueError) as e:
        raise UserError(f"cannot load the tokenizer: {_first_line(e)}") from None


def inference_defaults(folder: Path) -> dict[str, Any]:
    """A checkpoint's own inference settings (`segmentation.json`: prompt templates, background thresholds, image
    size), used where no flag overrides them. The released GroupViT checkpoints have none: the original's apply."""
    path = folder / "segmentation.json"
    if not path.is_file():
        return {}
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {_first_line(e)}") from None
    kinds = {"templates": list, "labels": list, "image_size": int, "threshold_original": (int, float),
             "threshold_hf": (int, float), "method": str, "image_mean": list, "image_std": list}  # fmt: skip
    if not isinstance(found, dict):
        raise UserError(f"{path}: expected a JSON object, found {type(found).__name__}")
    for key, kind in kinds.items():
        if key in found and (not isinstance(found[key], kind) or isinstance(found[key], bool)):
            wanted = getattr(kind, "__name__", "number")
            raise UserError(f"{path}: {key} is a {type(found[key]).__name__}, not a {wanted}")
    if not all(isinstance(t, str) for t in found.get("templates", [])) or found.get("image_size", 1) < 1:
        raise UserError(f"{path}: templates must be strings and image_size a positive number of pixels")
    if found.get("method", "original") not in ("original", "hf"):
        raise UserError(f"{path}: method is {found['method']!r}, not 'original' or 'hf'")
    for key in ("image_mean", "image_std"):
        stats = found.get(key, [1.0, 1.0, 1.0])
        if len(stats) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in stats):
            raise UserError(f"{path}: {key} must be three numbers (one per RGB channel, 0-1 scale)")
        if key == "image_std" and min(stats) <= 0:
            raise UserError(f"{path}: image_std must be positive")
    return found


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
    from ..tasks.viz import undrawable

    missing = undrawable(names)
    if missing:
        which = ", ".join(n for n in names if set(n) & set(missing))
        print(f"warning: no font on this system draws {missing} (in {which}); those names show as boxes in the "
              "pictures: install a font that covers them (e.g. Noto Sans CJK)", file=sys.stderr)  # fmt: skip


def about_checkpoint(args: argparse.Namespace, err: Exception) -> str:
    from ..tasks.classify import NonFiniteError

    if isinstance(err, NonFiniteError):
        return f"{weights_name(args)}: {err}"
    return _first_line(err)


def read_image(path: str, max_pixels: int, say: Callable[[str], None] | None = None) -> tuple[Any, float]:
    """An image file as an RGB array and the scale it was decoded at: 1.0, or less for an image over LARGE_IMAGE
    pixels, which the decoder shrinks (see `image.load_image`). For one over LONG_IMAGE pixels, `say(message)`
    starts a progress line first."""
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
        reason = _first_line(e)  # image.py's messages usually name the file already
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


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


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


def output_stems(paths: list[str]) -> list[str]:
    """Output name stems, made unique when two inputs share a file name (a/cat.jpg, b/cat.jpg -> cat, cat-2)."""
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        stem = Path(p).stem
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return out


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
