"""`groupvit-np classify`: zero-shot classification of images, the labels ranked for each (CLIP's 7-template
prompt ensemble unless --template or the checkpoint's `segmentation.json` says otherwise)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .checkpoint import about_checkpoint, inference_defaults, is_broken_model, load_model, load_tokenizer
from .common import UserError, add_common_options, add_label_options, command, positive_int
from .inputs import check_arguments, check_images, read_image, text_embeddings


def add(subparsers: Any) -> None:
    """Register `classify` on an argparse subparsers object."""
    cls = subparsers.add_parser(
        "classify",
        help="zero-shot classification of images",
        description="Rank the labels for each image (CLIP's 7-template prompt ensemble).",
    )
    cls.add_argument("images", nargs="+", metavar="IMAGE")
    add_label_options(cls, required_one=False)
    cls.add_argument("--top", type=positive_int, default=None, metavar="N",
                     help="how many labels to show per image (default: 5 printed, all in --json)")  # fmt: skip
    add_common_options(cls, None, "also write classify.json to this folder")
    cls.set_defaults(run=run, command_name="classify")


@command
def run(args: argparse.Namespace) -> int:
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
            raise UserError(about_checkpoint(args, e) if is_broken_model(e) else f"{path}: {e}") from None
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
