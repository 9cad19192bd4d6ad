"""Locating the data the project ships (the CLIP vocabulary, the demo checkpoints).

A built wheel carries `tokenizer/` and `weights/` inside the package as `groupvit_np/_data/...`; a clone and an
editable install keep them at the repository root, beside the package. Nothing is read at import time.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """Return the shipped data folder `name` ("tokenizer" or "weights"), wherever this install keeps it."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"groupvit_np cannot find its {name!r} data folder (looked in {_PACKAGE / '_data'} and {_PACKAGE.parent}); "
        "reinstall the package or run from a full clone"
    )


def data_file(name: str, *parts: str) -> Path:
    """Return a file inside a shipped data folder, with a clear error when it is missing."""
    path = data_dir(name).joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(f"groupvit_np's shipped file {path} is missing; reinstall or re-clone")
    return path
