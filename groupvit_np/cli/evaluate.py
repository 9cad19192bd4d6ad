"""`groupvit-np evaluate`: mIoU of the original inference on PASCAL VOC, PASCAL Context or COCO-Object, resumable
after an interruption (`tasks.evaluate`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .checkpoint import about_checkpoint, inference_defaults, load_model, load_tokenizer, weights_name
from .common import PROG, UserError, add_common_options, command, positive_int
from .inputs import check_arguments, warn_vocabulary


def add(subparsers: Any) -> None:
    """Register `evaluate` on an argparse subparsers object."""
    from ..tasks.datasets import DATASETS

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
    add_common_options(
        ev, "groupvit-eval", "folder for the state file and metrics.json (default: groupvit-eval)", images=False
    )
    ev.set_defaults(run=run, command_name="evaluate")


@command
def run(args: argparse.Namespace) -> int:
    from ..tasks.datasets import SEGMENTATION_TEMPLATES, dataset_labels
    from ..tasks.evaluate import METRICS_FILE, STATE_FILE, dataset_samples, evaluate
    from ..tasks.metrics import iou_table, json_metrics

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
