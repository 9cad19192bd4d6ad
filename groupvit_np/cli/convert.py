"""`groupvit-np convert`: any checkpoint (NVlabs .pth, HF folder or weights file, Hub repo id) -> an HF safetensors
folder that transformers loads (`checkpoints.convert`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import UsageError, UserError


def add(subparsers: Any) -> None:
    """Register `convert` on an argparse subparsers object."""
    p = subparsers.add_parser(
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
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoints.convert import convert
    from ..hub import looks_like_repo_id

    dst = Path(args.dst)
    if dst.exists() and not dst.is_dir():
        raise UserError(f"{dst} exists and is not a folder")
    if dst.exists() and not args.force:
        raise UserError(f"{dst} already exists; pass --force to replace it")
    if args.revision is not None and (Path(args.src).exists() or not looks_like_repo_id(args.src)):
        raise UsageError(f"--revision applies to Hub repo ids, not to the local checkpoint {args.src}")
    dst = convert(args.src, args.dst, dtype=args.dtype, force=args.force, revision=args.revision)
    size = sum(f.stat().st_size for f in Path(dst).iterdir())
    print(f"wrote {dst} ({args.dtype}, {size / 1e6:.1f} MB)")
    return 0
