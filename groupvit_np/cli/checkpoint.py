"""The checkpoint a command runs: --weights resolved (or the shipped demo one), the model and tokenizer loaded from it,
its own inference settings (`segmentation.json`), and how its failures read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .common import PROG, UserError, first_line

SHIPPED = ("groupvit-demo-scenes", "groupvit-tiny-random")  # preferred first, under the shipped weights folder
HOW_TO_GET = ("pass --weights with a checkpoint folder, a weights file or a Hub repo id, or fetch the released "
              f"model with `{PROG} download nvidia/groupvit-gcc-yfcc`")  # fmt: skip
REAL = "real photos need a real checkpoint (--weights nvidia/groupvit-gcc-yfcc)"


def default_weights() -> Path:
    """The shipped checkpoint the commands use without --weights (the trained demo one when present)."""
    from .._resources import data_dir

    try:
        root = data_dir("weights")
    except FileNotFoundError as e:
        raise UserError(f"no shipped checkpoint ({e}); {HOW_TO_GET}") from None
    for name in SHIPPED:
        if (root / name / "config.json").is_file():
            return root / name
    raise UserError(f"no shipped checkpoint in {root}; {HOW_TO_GET}")


def weights_name(args: argparse.Namespace) -> str:
    """--weights as given, or the shipped checkpoint's folder: how messages name the checkpoint."""
    return args.weights or str(default_weights())


def checkpoint_folder(args: argparse.Namespace) -> Path:
    """The local folder (or weights file) behind --weights: a path as given, a Hub repo id resolved through the
    local cache (downloading only when the `hub` extra is installed and the network allows)."""
    from ..hub import resolve

    source = weights_name(args)
    if not args.weights and Path(source).name == "groupvit-tiny-random":
        print(f"note: using the shipped tiny *random* checkpoint, whose outputs are noise; {HOW_TO_GET}",
              file=sys.stderr)  # fmt: skip
    try:
        return resolve(source, args.revision, kind="model")
    except FileNotFoundError:
        raise UserError(f"--weights {source}: no such file or folder") from None
    except (OSError, ValueError, ImportError) as e:  # HubError is a ValueError
        raise UserError(f"cannot get weights {source}: {first_line(e)}") from None


def load_model(args: argparse.Namespace) -> tuple[Any, Path]:
    """The model and the folder it came from (which may hold its own tokenizer and inference settings)."""
    from ..model import GroupViTModel

    source = checkpoint_folder(args)
    advice = "" if args.weights else f"; {HOW_TO_GET}"  # a shipped checkpoint that fails: say where to get one
    try:
        model = GroupViTModel.from_pretrained(source, xp=args.backend)
    except ImportError as e:  # CuPy or JAX missing: the message says what to install
        raise UserError(str(e)) from None
    except (OSError, ValueError) as e:  # CheckpointError is a ValueError
        raise UserError(f"cannot load weights {source}: {first_line(e)}{advice}") from None
    if model.jit:
        print(f"note: {args.backend} compiles the model for each new input size on first use (several seconds each)",
              file=sys.stderr)  # fmt: skip
    return model, source if source.is_dir() else source.parent


def load_tokenizer(folder: Path | None = None) -> Any:
    """The checkpoint folder's own tokenizer files when it has them (the demo model's word vocabulary), else CLIP's."""
    from ..preprocessing.tokenizer import CLIPTokenizer
    from ..tasks.classify import default_tokenizer

    try:
        if folder is not None and (folder / "vocab.json").is_file():
            return CLIPTokenizer.from_pretrained(folder)
        return default_tokenizer()
    except (OSError, ImportError, ValueError) as e:
        raise UserError(f"cannot load the tokenizer: {first_line(e)}") from None


def inference_defaults(folder: Path) -> dict[str, Any]:
    """A checkpoint's own inference settings (`segmentation.json`: prompt templates, background thresholds, image
    size), used where no flag overrides them. The released GroupViT checkpoints have none: the original's apply."""
    path = folder / "segmentation.json"
    if not path.is_file():
        return {}
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {first_line(e)}") from None
    kinds = {"templates": list, "labels": list, "image_size": int, "threshold_original": (int, float),
             "threshold_hf": (int, float), "method": str, "image_mean": list, "image_std": list}  # fmt: skip
    if not isinstance(found, dict):
        raise UserError(f"{path}: expected a JSON object, found {type(found).__name__}")
    for key, kind in kinds.items():
        if key in found and (not isinstance(found[key], kind) or isinstance(found[key], bool)):
            wanted = getattr(kind, "__name__", "number")
            raise UserError(f"{path}: {key} is a {type(found[key]).__name__}, not a {wanted}")
    if not all(isinstance(t, str) for t in found.get("templates", [])) or found.get("image_size", 1) < 1:
        raise UserError(f"{path}: templates must be strings and image_size a positive number of pixels")
    if found.get("method", "original") not in ("original", "hf"):
        raise UserError(f"{path}: method is {found['method']!r}, not 'original' or 'hf'")
    for key in ("image_mean", "image_std"):
        stats = found.get(key, [1.0, 1.0, 1.0])
        if len(stats) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in stats):
            raise UserError(f"{path}: {key} must be three numbers (one per RGB channel, 0-1 scale)")
        if key == "image_std" and min(stats) <= 0:
            raise UserError(f"{path}: image_std must be positive")
    return found


def about_checkpoint(args: argparse.Namespace, err: Exception) -> str:
    from ..tasks.classify import NonFiniteError

    if isinstance(err, NonFiniteError):
        return f"{weights_name(args)}: {err}"
    return first_line(err)


def is_broken_model(e: Exception) -> bool:
    """True for a model whose outputs are NaN or infinite: its weights are broken, whatever the input."""
    from ..tasks.classify import NonFiniteError

    return isinstance(e, NonFiniteError)
