"""The `segment`, `classify` and `evaluate` subcommands of `groupvit-np`.

`add_commands(subparsers)` registers them; each sets `run` to a function of the parsed arguments that returns the
exit status (the convention of `cli.py`). Mistakes a user can fix (a missing image, an unknown label set, weights
that are not there) print one line on stderr and return 1, without a traceback; Ctrl-C returns 130. `--json`
prints results on stdout.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROG = "groupvit-np"
SHIPPED = ("groupvit-demo-scenes", "groupvit-tiny-random")  # preferred first, under the shipped weights folder
HOW_TO_GET = ("pass --weights with a checkpoint folder, a weights file or a Hub repo id, or fetch the released "
              f"model with `{PROG} download nvidia/groupvit-gcc-yfcc`")  # fmt: skip


class UserError(Exception):
    """Something the user can fix; shown as one line."""


def _command(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except UserError as e:
            print(f"{PROG} {args.command_name}: error: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"{PROG} {args.command_name}: interrupted", file=sys.stderr)
            return 130

    return run


# ---------------------------------------------------------------------------------------------------------------
# Shared steps.


def default_weights() -> Path:
    """The shipped checkpoint the commands use without --weights (the trained demo one when present)."""
    from ._resources import data_dir

    try:
        root = data_dir("weights")
    except FileNotFoundError as e:
        raise UserError(f"no shipped checkpoint ({e}); {HOW_TO_GET}") from None
    for name in SHIPPED:
        if (root / name / "config.json").is_file():
            return root / name
    raise UserError(f"no shipped checkpoint in {root}; {HOW_TO_GET}")


def checkpoint_folder(args: argparse.Namespace) -> Path:
    """The local folder (or weights file) behind --weights: a path as given, a Hub repo id resolved through the
    local cache (downloading only when the `hub` extra is installed and the network allows)."""
    source = args.weights or str(default_weights())
    if not args.weights and Path(source).name == "groupvit-tiny-random":
        print(f"note: using the shipped tiny *random* checkpoint, whose outputs are noise; {HOW_TO_GET}",
              file=sys.stderr)  # fmt: skip
    path = Path(source)
    if path.exists() or source.count("/") != 1 or source.startswith((".", "/")):
        return path
    from .hub import resolve_repo

    try:
        return resolve_repo(source, args.revision)
    except ImportError as e:
        raise UserError(str(e)) from None
    except (OSError, ValueError) as e:
        raise UserError(f"cannot get weights {source!r}: {_first_line(e)}; {HOW_TO_GET}") from None


def load_model(args: argparse.Namespace) -> tuple[Any, Path]:
    """The model and the folder it came from (which may hold its own tokenizer and inference settings)."""
    from .model import GroupViTModel

    source = checkpoint_folder(args)
    try:
        model = GroupViTModel.from_pretrained(source, xp=args.backend)
    except ImportError as e:  # CuPy or JAX missing: the message says what to install
        raise UserError(str(e)) from None
    except (OSError, ValueError) as e:  # CheckpointError is a ValueError
        raise UserError(f"cannot load weights {str(source)!r}: {_first_line(e)}; {HOW_TO_GET}") from None
    if model.jit:
        print(f"note: {args.backend} compiles the model for each new input size on first use (several seconds each)",
              file=sys.stderr)  # fmt: skip
    return model, source if source.is_dir() else source.parent


def load_tokenizer(folder: Path | None = None) -> Any:
    """The checkpoint folder's own tokenizer files when it has them (the demo model's word vocabulary), else CLIP's."""
    from .classify import default_tokenizer
    from .tokenizer import CLIPTokenizer

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
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {_first_line(e)}") from None


def read_image(path: str) -> Any:
    from .image import to_rgb_array

    if not Path(path).exists():
        raise UserError(f"no such image file: {path}")
    try:
        return to_rgb_array(path)
    except (OSError, ValueError) as e:
        reason = _first_line(e)  # image.py's messages usually name the file already
        raise UserError(reason if path in reason else f"cannot read image {path}: {reason}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def label_set(args: argparse.Namespace) -> Any:
    from .datasets import custom_labels, dataset_labels, parse_labels

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


def _stems(paths: list[str]) -> list[str]:
    """Output name stems, made unique when two inputs share a file name (a/cat.jpg, b/cat.jpg -> cat, cat-2)."""
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        stem = Path(p).stem
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return out


# ---------------------------------------------------------------------------------------------------------------
# segment


@_command
def run_segment(args: argparse.Namespace) -> int:
    from .classify import encode_text
    from .evaluate import Progress
    from .segmentation import hf_segment, segment
    from .viz import save_segmentation

    ls = label_set(args)
    for path in args.images:  # fail fast on a typo, before loading anything
        if not Path(path).is_file():
            raise UserError(f"no such image file: {path}")
    model, folder = load_model(args)
    tokenizer, defaults = load_tokenizer(folder), inference_defaults(folder)
    templates = args.template or defaults.get("templates") or ["a photo of a {}."]
    if args.threshold is None and not args.dataset and "threshold_original" in defaults:
        ls = ls.with_threshold(defaults["threshold_original"])
    size = defaults.get("image_size")
    sizes = {"short_side": size, "long_side": size, "crop": size} if size else {}
    processor = None
    if (folder / "preprocessor_config.json").is_file():
        from .image import CLIPImageProcessor

        processor = CLIPImageProcessor.from_pretrained(folder)
    try:
        text = encode_text(model, ls.foreground, templates, tokenizer)
    except ValueError as e:
        raise UserError(str(e)) from None
    results, failed = [], 0
    bar = Progress(len(args.images), "segmenting") if len(args.images) > 1 and not args.json else None
    for path, stem in zip(args.images, _stems(args.images), strict=True):
        try:
            rgb = read_image(path)
            if args.hf:
                res = hf_segment(model, rgb, ls, text_embeds=text, processor=processor)
            else:
                res = segment(model, rgb, ls, mode=args.mode, text_embeds=text, **sizes)
            files = save_segmentation(rgb, res, ls.palette, args.out, stem)
        except (UserError, ValueError, OSError) as e:  # ValueError: e.g. too thin to hold a patch once resized
            print(f"{PROG} segment: error: {e if isinstance(e, UserError) else f'{path}: {e}'}", file=sys.stderr)
            failed += 1
        else:
            results.append(_summary(path, res, files))
            if not args.json:
                shares = ", ".join(f"{n} {100 * f:.1f}%" for n, f in res.fractions().items())
                print(f"{path}: {shares} -> {files['panel']}")
        if bar:
            bar.update()
    if args.json:
        print(json.dumps({"results": results}, indent=2))
    return 1 if failed else 0


def _summary(path: str, res: Any, files: dict[str, Path]) -> dict[str, Any]:
    fractions = res.fractions()
    probs = dict(zip(res.foreground, res.probabilities.tolist(), strict=True))
    return {
        "image": path,
        "size": list(res.labels.shape),
        "method": res.method,
        "mode": res.meta.get("mode"),
        "classes": [
            {"id": res.class_names.index(n), "name": n, "fraction": f, "probability": probs.get(n)}
            for n, f in fractions.items()
        ],
        "probabilities": probs,
        "files": {k: str(v) for k, v in files.items()},
    }


# ---------------------------------------------------------------------------------------------------------------
# classify


@_command
def run_classify(args: argparse.Namespace) -> int:
    from .classify import classify, encode_text
    from .datasets import CLASSIFICATION_TEMPLATES, parse_labels

    labels = parse_labels(args.labels)
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise UserError(f"--labels needs at least two distinct names, got {labels}")
    for path in args.images:
        if not Path(path).is_file():
            raise UserError(f"no such image file: {path}")
    model, folder = load_model(args)
    tokenizer, defaults = load_tokenizer(folder), inference_defaults(folder)
    try:
        text = encode_text(model, labels, args.template or defaults.get("templates") or CLASSIFICATION_TEMPLATES,
                           tokenizer)  # fmt: skip
    except ValueError as e:
        raise UserError(str(e)) from None
    results = []
    for path in args.images:
        try:
            ranked = classify(model, read_image(path), labels, text_embeds=text)
        except ValueError as e:
            raise UserError(f"{path}: {e}") from None
        results.append({"image": path, "predictions": [{"label": k, "probability": p} for k, p in ranked]})
        if not args.json:
            print(path)
            for k, p in ranked[: args.top]:
                print(f"  {100 * p:6.2f}%  {k}")
    if args.out:
        from .config import write_json_atomic

        Path(args.out).mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(args.out) / "classify.json", {"results": results})
    if args.json:
        print(json.dumps({"results": results}, indent=2))
    return 0


# ---------------------------------------------------------------------------------------------------------------
# evaluate


@_command
def run_evaluate(args: argparse.Namespace) -> int:
    from .datasets import DATASETS
    from .evaluate import METRICS_FILE, STATE_FILE, dataset_samples, evaluate, iou_table, json_metrics

    if args.dataset not in DATASETS:
        raise UserError(f"unknown dataset {args.dataset!r}; choose one of {', '.join(DATASETS)}")
    try:
        dataset_samples(args.dataset, args.data_root)  # check the layout before loading a model
    except FileNotFoundError as e:
        raise UserError(str(e)) from None
    model, folder = load_model(args)
    tokenizer = load_tokenizer(folder)
    weights = args.weights or str(default_weights())  # part of the run's identity in the state file
    try:
        metrics = evaluate(model, args.dataset, args.data_root, args.out, mode=args.mode, limit=args.limit,
                           restart=args.restart, tokenizer=tokenizer, weights=weights)  # fmt: skip
    except KeyboardInterrupt:
        state = Path(args.out) / STATE_FILE
        print(f"\n{PROG} evaluate: interrupted; progress is saved in {state}: run the same command to resume",
              file=sys.stderr)  # fmt: skip
        return 130
    except (ValueError, OSError) as e:
        raise UserError(_first_line(e)) from None
    if args.json:
        print(json_metrics(metrics))
    else:
        print(iou_table(metrics, metrics["classes"]))
        print(f"{metrics['images']} images; metrics saved in {Path(args.out) / METRICS_FILE}")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# Registration.


def _common(p: argparse.ArgumentParser, out: str | None, out_help: str) -> None:
    p.add_argument("--weights", metavar="PATH_OR_REPO_ID", default=None,
                   help="checkpoint folder, .safetensors/.bin/.pth file or Hub repo id (default: the shipped demo "
                        "checkpoint)")  # fmt: skip
    p.add_argument("--revision", default=None, help="Hub branch, tag or commit (repo ids only)")
    p.add_argument("--backend", choices=("numpy", "cupy", "jax"), default="numpy",
                   help="array library (default numpy); jax compiles the model on first use, once per image size "
                        "(several seconds each, then faster)")  # fmt: skip
    p.add_argument("--out", metavar="DIR", default=out, help=out_help)
    p.add_argument("--json", action="store_true", help="print machine-readable results on stdout")


def _labels(p: argparse.ArgumentParser, required_one: bool) -> None:
    if required_one:
        group = p.add_mutually_exclusive_group(required=True)
        group.add_argument("--labels", help='comma-separated class names, e.g. "cat,dog,sofa"')
        group.add_argument("--dataset", help="a built-in label set: voc, context or coco (COCO-Object)")
    else:
        p.add_argument("--labels", required=True, help='comma-separated class names, e.g. "cat,dog,sofa"')
    p.add_argument("--template", action="append", metavar="TEXT",
                   help="prompt template with {} for the name; repeat to ensemble")  # fmt: skip


def add_commands(subparsers: Any) -> None:
    """Register `segment`, `classify` and `evaluate` on an argparse subparsers object."""
    seg = subparsers.add_parser(
        "segment",
        help="zero-shot segmentation of images (the original GroupViT inference)",
        description="Segment images into the given classes and write pictures to --out.",
    )
    seg.add_argument("images", nargs="+", metavar="IMAGE")
    _labels(seg, required_one=True)
    seg.add_argument(
        "--mode",
        choices=("whole", "slide"),
        default="whole",
        help="one pass over the image resized to short side 448, or 448-px windows at stride 224",
    )
    seg.add_argument(
        "--hf",
        action="store_true",
        help="Hugging Face's segmentation_logits on its 224 centre crop instead of the original method",
    )
    seg.add_argument(
        "--threshold",
        type=float,
        help="background threshold (default: the dataset's; for --labels the checkpoint's "
        "segmentation.json, else 0.95)",
    )
    seg.add_argument("--no-background", action="store_true", help="never label pixels as background")
    _common(seg, "groupvit-out", "folder for the pictures (default: groupvit-out)")
    seg.set_defaults(run=run_segment, command_name="segment")

    cls = subparsers.add_parser(
        "classify",
        help="zero-shot classification of images",
        description="Rank the labels for each image (CLIP's 7-template prompt ensemble).",
    )
    cls.add_argument("images", nargs="+", metavar="IMAGE")
    _labels(cls, required_one=False)
    cls.add_argument("--top", type=int, default=5, help="how many labels to print per image (default 5)")
    _common(cls, None, "also write classify.json to this folder")
    cls.set_defaults(run=run_classify, command_name="classify")

    ev = subparsers.add_parser(
        "evaluate",
        help="mIoU on PASCAL VOC, PASCAL Context or COCO-Object",
        description="Evaluate the original inference on a dataset folder; resumable.",
    )
    ev.add_argument("--dataset", required=True, help="voc, context or coco")
    ev.add_argument(
        "--data-root",
        required=True,
        metavar="DIR",
        help="VOC2012 (or VOC2010 for context, coco for coco) folder in the original layout",
    )
    ev.add_argument("--mode", choices=("slide", "whole"), default="slide", help="default slide, as the paper")
    ev.add_argument("--limit", type=int, help="evaluate only the first N images")
    ev.add_argument("--restart", action="store_true", help="ignore saved progress and start over")
    _common(ev, "groupvit-eval", "folder for the state file and metrics.json (default: groupvit-eval)")
    ev.set_defaults(run=run_evaluate, command_name="evaluate")
