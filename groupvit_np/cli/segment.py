"""`groupvit-np segment`: zero-shot segmentation of images into the given classes, pictures written to --out.

The original GroupViT inference by default (`tasks.segmentation`), Hugging Face's with --method hf
(`tasks.segmentation_hf`); a checkpoint's `segmentation.json` may choose the method, thresholds, templates and input
size. Nothing is loaded before the arguments and files have been checked; `--json` prints results on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .checkpoint import about_checkpoint, inference_defaults, is_broken_model, load_model, load_tokenizer
from .common import PROG, UsageError, UserError, add_common_options, add_label_options, command, output_stems
from .inputs import Steps, check_arguments, check_images, label_set, read_image, text_embeddings, warn_fonts


def add(subparsers: Any) -> None:
    """Register `segment` on an argparse subparsers object."""
    seg = subparsers.add_parser(
        "segment",
        help="zero-shot segmentation of images (the original GroupViT inference)",
        description="Segment images into the given classes and write pictures to --out.",
    )
    seg.add_argument("images", nargs="+", metavar="IMAGE")
    add_label_options(seg, required_one=True)
    seg.add_argument(
        "--mode",
        choices=("whole", "slide"),
        default=None,
        help="one pass over the image resized to short side 448 (default), or 448-px windows at stride 224",
    )
    seg.add_argument(
        "--method",
        choices=("original", "hf"),
        default=None,
        help="original: NVlabs' inference (argmax groups, top-5 gate); hf: Hugging Face's segmentation_logits on "
        "the processor's centre crop (default: the checkpoint's segmentation.json, else original)",
    )
    seg.add_argument("--hf", action="store_true", help="the same as --method hf")
    seg.add_argument(
        "--threshold",
        type=float,
        help="background threshold: for original, on the group scores (default: the dataset's; for --labels the "
        "checkpoint's segmentation.json, else 0.95); for hf, on segmentation_logits / s^2, the weighted cosine "
        "(default: the checkpoint's threshold_hf, else background never wins)",
    )
    seg.add_argument("--no-background", action="store_true", help="never label pixels as background")
    add_common_options(seg, "groupvit-out", "folder for the pictures (default: groupvit-out)")
    seg.set_defaults(run=run, command_name="segment")


def _check_segment(args: argparse.Namespace) -> None:
    """Flags that would be silently ignored together are refused; `--hf` is `--method hf`."""
    if args.hf:
        if args.method == "original":
            raise UsageError("--hf is --method hf; it cannot be combined with --method original")
        args.method = "hf"
    if args.method == "hf" and args.mode is not None:
        raise UsageError("--mode chooses the original inference's windows; --method hf runs HF's method on one "
                         "centre crop")  # fmt: skip
    if args.no_background and args.threshold is not None:
        raise UsageError("--threshold sets when a pixel becomes background; with --no-background none does")


def segmentation_settings(args: argparse.Namespace, defaults: dict[str, Any]) -> tuple[str, float | None]:
    """The inference method and its background threshold: the flags, else the checkpoint's segmentation.json (its
    recommended `method`, `threshold_original` / `threshold_hf` for --labels), else the original method."""
    method = args.method or defaults.get("method", "original")
    threshold = args.threshold
    if threshold is None and not args.dataset:
        threshold = defaults.get("threshold_hf" if method == "hf" else "threshold_original")
    return method, threshold


@command
def run(args: argparse.Namespace) -> int:
    from ..tasks.evaluate import Progress
    from ..tasks.segmentation import segment
    from ..tasks.segmentation_hf import hf_segment
    from ..tasks.viz import save_segmentation

    _check_segment(args)
    check_arguments(args)
    ls = label_set(args)
    check_images(args.images)
    warn_fonts(ls.class_names)
    model, folder = load_model(args)
    tokenizer, defaults = load_tokenizer(folder), inference_defaults(folder)
    templates = args.template or defaults.get("templates") or ["a photo of a {}."]
    method, threshold = segmentation_settings(args, defaults)
    if method == "original" and threshold is not None:
        ls = ls.with_threshold(threshold)
    size = defaults.get("image_size")
    sizes = {"short_side": size, "long_side": size, "crop": size} if size else {}
    # the statistics the checkpoint was trained with; the released checkpoints name none: the original's ImageNet
    sizes.update(mean=defaults.get("image_mean"), std=defaults.get("image_std"))
    processor = None
    if (folder / "preprocessor_config.json").is_file():
        from ..preprocessing.image_processor import CLIPImageProcessor

        try:
            processor = CLIPImageProcessor.from_pretrained(folder)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read the checkpoint's image settings: {e}") from None
    text = text_embeddings(args, model, list(ls.foreground), templates, tokenizer, defaults)
    results, failed = [], 0
    bar = Progress(len(args.images), "segmenting") if len(args.images) > 1 and not args.json else None
    for path, stem in zip(args.images, output_stems(args.images), strict=True):
        steps = Steps()
        try:
            rgb, scale = read_image(path, args.max_pixels, steps.say)
            if steps.open:
                steps.say("segmenting")
            if method == "hf":
                res = hf_segment(model, rgb, ls, text_embeds=text, processor=processor, threshold=threshold)
            else:
                res = segment(model, rgb, ls, mode=args.mode or "whole", text_embeds=text, **sizes)
            if steps.open:
                steps.say("writing pictures")
            files = save_segmentation(rgb, res, ls.palette, args.out, stem)
            steps.done()
        except KeyboardInterrupt:
            steps.end()
            raise
        except (UserError, ValueError, OSError) as e:  # ValueError: e.g. too thin to hold a patch once resized
            steps.end()
            if is_broken_model(e):
                raise UserError(about_checkpoint(args, e)) from None
            print(f"{PROG} segment: error: {e if isinstance(e, UserError) else f'{path}: {e}'}", file=sys.stderr)
            failed += 1
        else:
            results.append(_summary(path, res, files, scale))
            if not args.json:
                shares = ", ".join(f"{n} {100 * f:.1f}%" for n, f in res.fractions().items())
                print(f"{path}: {shares} -> {files['panel']}")
        if bar:
            bar.update()
    if args.json:
        print(json.dumps({"results": results}, indent=2))
    return 1 if failed else 0


def _summary(path: str, res: Any, files: dict[str, Path], scale: float = 1.0) -> dict[str, Any]:
    fractions = res.fractions()
    probs = dict(zip(res.foreground, res.probabilities.tolist(), strict=True))
    return {
        "image": path,
        "size": list(res.labels.shape),
        **({"scale": scale} if scale != 1 else {}),  # a large image, decoded smaller: the label map's size / file's
        "method": res.method,
        "mode": res.meta.get("mode"),
        "classes": [
            {"id": res.class_names.index(n), "name": n, "fraction": f, "probability": probs.get(n)}
            for n, f in fractions.items()
        ],
        "probabilities": probs,
        "files": {k: str(v) for k, v in files.items()},
    }
