"""The `segment`, `classify` and `evaluate` subcommands of `groupvit-np`.

`add_commands(subparsers)` registers them; each sets `run` to a function of the parsed arguments that returns the
exit status (the convention of `cli.py`). Mistakes a user can fix (a missing image, weights that are not there)
print one line on stderr and return 1; flags that contradict each other return 2, as argparse's own errors do;
Ctrl-C returns 130. Nothing is loaded before the arguments and files have been checked. `--json` prints results
on stdout. The steps they share (checks, loading, warnings) are in `command_steps.py`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .steps import (
    MAX_PIXELS,
    PROG,
    Steps,
    UsageError,
    UserError,
    about_checkpoint,
    check_arguments,
    check_images,
    command,
    inference_defaults,
    label_set,
    load_model,
    load_tokenizer,
    output_stems,
    positive_int,
    read_image,
    text_embeddings,
    warn_fonts,
    warn_vocabulary,
    weights_name,
)

# ---------------------------------------------------------------------------------------------------------------
# segment


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
def run_segment(args: argparse.Namespace) -> int:
    from ..tasks.evaluate import Progress
    from ..tasks.segmentation import hf_segment, segment
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
        from ..preprocessing.image import CLIPImageProcessor

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
            if _is_broken_model(e):
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


def _is_broken_model(e: Exception) -> bool:
    from ..tasks.classify import NonFiniteError

    return isinstance(e, NonFiniteError)


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


# ---------------------------------------------------------------------------------------------------------------
# classify


@command
def run_classify(args: argparse.Namespace) -> int:
    from ..tasks.classify import classify
    from ..tasks.datasets import CLASSIFICATION_TEMPLATES, parse_labels

    check_arguments(args)
    labels = parse_labels(args.labels)
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise UserError(f"--labels needs at least two distinct names, got {labels}")
    check_images(args.images)
    model, folder = load_model(args)
    tokenizer, defaults = load_tokenizer(folder), inference_defaults(folder)
    templates = args.template or defaults.get("templates") or list(CLASSIFICATION_TEMPLATES)
    text = text_embeddings(args, model, labels, templates, tokenizer, defaults)
    results = []
    for path in args.images:
        try:
            ranked = classify(model, read_image(path, args.max_pixels)[0], labels, text_embeds=text)
        except ValueError as e:
            raise UserError(about_checkpoint(args, e) if _is_broken_model(e) else f"{path}: {e}") from None
        shown = ranked[: args.top] if args.top else ranked  # --json and classify.json: every label unless --top
        results.append({"image": path, "predictions": [{"label": k, "probability": p} for k, p in shown]})
        if not args.json:
            print(path)
            for k, p in ranked[: args.top or 5]:
                print(f"  {100 * p:6.2f}%  {k}")
    if args.out:
        from ..config import write_json_atomic

        Path(args.out).mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(args.out) / "classify.json", {"results": results})
    if args.json:
        print(json.dumps({"results": results}, indent=2))
    return 0


# ---------------------------------------------------------------------------------------------------------------
# evaluate


@command
def run_evaluate(args: argparse.Namespace) -> int:
    from ..tasks.datasets import SEGMENTATION_TEMPLATES, dataset_labels
    from ..tasks.evaluate import METRICS_FILE, STATE_FILE, dataset_samples, evaluate, iou_table, json_metrics

    check_arguments(args)
    try:
        dataset_samples(args.dataset, args.data_root)  # check the layout before loading a model
    except FileNotFoundError as e:
        raise UserError(str(e)) from None
    model, folder = load_model(args)
    tokenizer = load_tokenizer(folder)
    prompts = [t.format(n) for n in dataset_labels(args.dataset).foreground for t in SEGMENTATION_TEMPLATES]
    warn_vocabulary(args, tokenizer, prompts, inference_defaults(folder).get("labels"))
    try:
        metrics = evaluate(model, args.dataset, args.data_root, args.out, mode=args.mode, limit=args.limit,
                           restart=args.restart, tokenizer=tokenizer, weights=weights_name(args))  # fmt: skip
    except KeyboardInterrupt:
        state = Path(args.out) / STATE_FILE
        print(f"\n{PROG} evaluate: interrupted; progress is saved in {state}: run the same command to resume",
              file=sys.stderr)  # fmt: skip
        return 130
    except (ValueError, OSError) as e:
        raise UserError(about_checkpoint(args, e)) from None
    if args.json:
        print(json_metrics(metrics))
    else:
        print(iou_table(metrics, metrics["classes"]))
        print(f"{metrics['images']} images; metrics saved in {Path(args.out) / METRICS_FILE}")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# Registration.


def _common(p: argparse.ArgumentParser, out: str | None, out_help: str, images: bool = True) -> None:
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


def _labels(p: argparse.ArgumentParser, required_one: bool) -> None:
    from ..tasks.datasets import DATASETS

    if required_one:
        group = p.add_mutually_exclusive_group(required=True)
        group.add_argument("--labels", help='comma-separated class names, e.g. "cat,dog,sofa"')
        group.add_argument("--dataset", choices=tuple(DATASETS), help="a built-in label set (coco: COCO-Object)")
    else:
        p.add_argument("--labels", required=True, help='comma-separated class names, e.g. "cat,dog,sofa"')
    p.add_argument("--template", action="append", metavar="TEXT",
                   help="prompt template with one {} for the name; repeat to ensemble")  # fmt: skip


def add_commands(subparsers: Any) -> None:
    """Register `segment`, `classify` and `evaluate` on an argparse subparsers object."""
    from ..tasks.datasets import DATASETS

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
    _common(seg, "groupvit-out", "folder for the pictures (default: groupvit-out)")
    seg.set_defaults(run=run_segment, command_name="segment")

    cls = subparsers.add_parser(
        "classify",
        help="zero-shot classification of images",
        description="Rank the labels for each image (CLIP's 7-template prompt ensemble).",
    )
    cls.add_argument("images", nargs="+", metavar="IMAGE")
    _labels(cls, required_one=False)
    cls.add_argument("--top", type=positive_int, default=None, metavar="N",
                     help="how many labels to show per image (default: 5 printed, all in --json)")  # fmt: skip
    _common(cls, None, "also write classify.json to this folder")
    cls.set_defaults(run=run_classify, command_name="classify")

    ev = subparsers.add_parser(
        "evaluate",
        help="mIoU on PASCAL VOC, PASCAL Context or COCO-Object",
        description="Evaluate the original inference on a dataset folder; resumable.",
    )
    ev.add_argument("--dataset", required=True, choices=tuple(DATASETS), help="coco is COCO-Object")
    ev.add_argument(
        "--data-root",
        required=True,
        metavar="DIR",
        help="VOC2012 (or VOC2010 for context, coco for coco) folder in the original layout",
    )
    ev.add_argument("--mode", choices=("slide", "whole"), default="slide", help="default slide, as the paper")
    ev.add_argument("--limit", type=positive_int, metavar="N", help="evaluate only the first N images")
    ev.add_argument("--restart", action="store_true", help="ignore saved progress and start over")
    _common(ev, "groupvit-eval", "folder for the state file and metrics.json (default: groupvit-eval)", images=False)
    ev.set_defaults(run=run_evaluate, command_name="evaluate")
