"""`groupvit-np download`: a Hub checkpoint into the Hugging Face cache (found there when it already is); prints the
snapshot folder."""

from __future__ import annotations

import argparse
from typing import Any


def add(subparsers: Any) -> None:
    """Register `download` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "download",
        help="fetch a Hub checkpoint into the Hugging Face cache",
        description="Find REPO_ID in the Hugging Face cache, or download config.json, the weights "
        "(model.safetensors, else pytorch_model.bin) and the tokenizer/preprocessor files. Honours HF_ENDPOINT, "
        "HF_HUB_OFFLINE and HF_HUB_CACHE/HF_HOME. Prints the snapshot folder.",
    )
    p.add_argument("repo_id", help="e.g. nvidia/groupvit-gcc-yfcc or nvidia/groupvit-gcc-redcaps")
    p.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    p.add_argument("--cache-dir", default=None, help="hub cache folder (default: the Hugging Face cache)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..hub import resolve_repo

    print(resolve_repo(args.repo_id, args.revision, cache_dir=args.cache_dir))
    return 0
