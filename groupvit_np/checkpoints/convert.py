"""Converted folders, written atomically: `config.json` + `model.safetensors` that transformers and we both load.

`convert(src, dst)` takes any checkpoint `load_checkpoint` reads (an HF folder or weights file, an NVlabs `.pth`,
a Hub repo id) and writes `dst/` in float32, float16 or bfloat16, with the tokenizer and preprocessor files of
the source (CLIP's own when a release file has none). `write_checkpoint` writes a config and a state dict.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..config import GroupViTConfig, as_if_created, write_json_atomic
from ..errors import CheckpointError
from .safetensors_io import write_safetensors
from .shapes import expected_shapes, validate

# Files a Hub snapshot carries beside the weights; copied into a converted folder when the source has them.
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "preprocessor_config.json")  # fmt: skip
DTYPES = ("float32", "float16", "bfloat16")


def _hf_state(config: GroupViTConfig, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The tensors transformers' GroupViTModel has: the config's keys plus the BatchNorm step counters."""
    expected = expected_shapes(config)
    validate(state, expected, "the state dict to write")
    out = {k: state[k] for k in expected}
    for head in ("visual_projection", "text_projection"):  # eval mode never reads it; written so HF finds every key
        key = f"{head}.1.num_batches_tracked"
        out[key] = np.asarray(state.get(key, 0), dtype=np.int64).reshape(())
    return out


def write_checkpoint(
    config: GroupViTConfig,
    state: dict[str, np.ndarray],
    dst: str | os.PathLike,
    dtype: str = "float32",
    force: bool = False,
    extra_files_from: str | os.PathLike | None = None,
) -> Path:
    """Write `dst/` = config.json + model.safetensors (+ tokenizer/preprocessor files found in `extra_files_from`).

    Everything is written into a temporary folder beside `dst` and renamed into place at the end, so an
    interruption leaves either nothing or the previous `dst`. An existing `dst` is replaced only with `force`.
    """
    if dtype not in DTYPES:
        raise CheckpointError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    dst = Path(dst)
    _check_destination(dst, force)
    tensors = _hf_state(config, state)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    try:
        write_safetensors(tmp / "model.safetensors", tensors, dtype)
        config_dict = config.to_dict()
        config_dict["torch_dtype"] = dtype  # informative: transformers loads into float32 unless asked otherwise
        write_json_atomic(tmp / "config.json", config_dict)
        if extra_files_from is not None:
            for name in TOKENIZER_FILES:
                if (Path(extra_files_from) / name).is_file():
                    shutil.copyfile(Path(extra_files_from) / name, tmp / name)  # follows the HF cache's symlinks
        if not (tmp / "vocab.json").is_file() and config.text_config.vocab_size == 49408:
            from ..preprocessing.processor import CLIPProcessor

            CLIPProcessor.from_pretrained().save_pretrained(tmp)  # CLIP's files, as the Hub repos carry them
        as_if_created(tmp, folder=True)  # 0755 under the usual umask, not mkdtemp's 0700
        _move_into_place(tmp, dst, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def _check_destination(dst: Path, force: bool) -> None:
    if dst.exists() and not dst.is_dir():
        raise CheckpointError(f"{dst} exists and is not a folder")
    if dst.exists() and not force:
        raise CheckpointError(f"{dst} already exists; pass force=True to replace it")


def _move_into_place(tmp: Path, dst: Path, force: bool) -> None:
    """Rename the finished folder to `dst`; an old `dst` (force) is moved aside first and deleted last."""
    _check_destination(dst, force)
    old = None
    if dst.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=dst.parent))
        os.replace(dst, old / dst.name)
    try:
        os.replace(tmp, dst)
    except BaseException:
        if old is not None:
            os.replace(old / dst.name, dst)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def convert(
    src: str | os.PathLike, dst: str | os.PathLike, dtype: str = "float32", force: bool = False,
    revision: str | None = None,
) -> Path:  # fmt: skip
    """Any checkpoint (HF folder or file, NVlabs .pth, Hub repo id) -> an HF safetensors folder at `dst`."""
    from .weights import load_checkpoint

    if dtype not in DTYPES:
        raise CheckpointError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    _check_destination(Path(dst), force)  # fail before reading hundreds of megabytes
    from ..hub import resolve

    source = resolve(src, revision, kind="model")
    config, state = load_checkpoint(source)
    folder = source if source.is_dir() else source.parent
    return write_checkpoint(config, state, dst, dtype=dtype, force=force, extra_files_from=_extra_files(folder))


def _extra_files(folder: Path) -> Path | None:
    """Where to take tokenizer/preprocessor files from: an HF source folder (a release .pth sits among unrelated
    files, so none is taken there; `write_checkpoint` then writes CLIP's own)."""
    return folder if (folder / "config.json").is_file() else None
