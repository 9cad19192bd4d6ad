"""Regenerate the committed reference fixtures from transformers 4.57.6 + torch 2.13.0 (CPU).

    pip install -e '.[reference,test]' && python tests/generate_fixtures.py [model|tokenizer|image ...]

Each area's live-reference module (`tests/reference_*.py`) owns its torch/transformers code; this script only
dispatches. The package itself never imports torch or transformers.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

AREAS = ("model", "tokenizer", "image")


def main(argv: list[str]) -> None:
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    for area in argv or AREAS:
        importlib.import_module(f"reference_{area}").generate(here / "fixtures")


if __name__ == "__main__":
    main(sys.argv[1:])
