"""groupvit-np: GroupViT as explicit Array API code (NumPy, CuPy, JAX, torch), exact against Hugging Face transformers.

Names are imported lazily, so `import groupvit_np` is cheap and the CLI starts fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "GroupViTConfig": "config",
    "GroupViTTextConfig": "config",
    "GroupViTVisionConfig": "config",
    "GroupViTModel": "model",
    "GroupViTTextModel": "model",
    "GroupViTVisionModel": "model",
    "GroupViTModelOutput": "model",
    "BaseModelOutputWithPooling": "model",
    "CLIPTokenizer": "preprocessing.tokenizer",
    "CLIPImageProcessor": "preprocessing.image_processor",
    "CLIPProcessor": "preprocessing.processor",
    "BatchEncoding": "preprocessing.batch",
    "CheckpointError": "errors",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'groupvit_np' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
