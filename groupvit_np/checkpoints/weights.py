"""Checkpoint files -> HF-named state dicts -> the parameter trees the layer functions take.

`load_checkpoint(source)` accepts a checkpoint folder (config.json + model.safetensors, a sharded safetensors
index, or pytorch_model.bin), a single .safetensors/.bin file, an original NVlabs .pth, or a Hub repo id. Tensors
come back as host NumPy arrays; `shapes.validate` checks every key and shape the config implies; `nest` turns the
flat dict into the tree the layer functions take (numbered children become lists).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..config import GroupViTConfig
from ..errors import CheckpointError
from .safetensors_io import read_safetensors
from .shapes import infer_config

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
TORCH_WEIGHTS = "pytorch_model.bin"


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The flat state dict stored in a weights file or a checkpoint folder, whatever its format."""
    path = Path(path)
    if path.is_dir():
        for name in (SAFE_WEIGHTS, SAFE_INDEX, TORCH_WEIGHTS):
            if (path / name).is_file():
                return read_state_dict(path / name)
        raise CheckpointError(f"{path} holds none of {SAFE_WEIGHTS}, {SAFE_INDEX}, {TORCH_WEIGHTS}")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.name.endswith(".index.json"):
        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        state: dict[str, np.ndarray] = {}
        for shard in shards:
            state.update(read_safetensors(path.parent / shard))
        return state
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    if path.suffix in (".bin", ".pt", ".pth"):
        from .torch_zip import load_torch_file

        obj = load_torch_file(path)
        state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: expected a state dict, found {type(obj).__name__}")
        return state
    raise CheckpointError(f"{path}: unknown weights format (expected .safetensors, .bin or .pth)")


def load_checkpoint(source: str | os.PathLike, revision: str | None = None) -> tuple[GroupViTConfig, dict[str, Any]]:
    """Config and flat HF-named state dict from a folder, a weights file, an NVlabs .pth or a Hub repo id."""
    from ..hub import resolve

    try:
        path = resolve(source, revision, kind="model")
    except FileNotFoundError as e:  # every failure to load a checkpoint is a CheckpointError
        raise CheckpointError(str(e)) from None
    if path.is_file() and path.suffix == ".pth" and not (path.parent / "config.json").is_file():
        from .nvlabs import load_nvlabs

        return load_nvlabs(path)
    folder = path if path.is_dir() else path.parent
    if (folder / "config.json").is_file():
        return GroupViTConfig.from_pretrained(folder), read_state_dict(path)
    if path.is_file():  # a bare weights file: infer the architecture from the tensor shapes, as for NVlabs files
        state = read_state_dict(path)
        return infer_config(state), state
    raise CheckpointError(f"{folder}: no config.json beside the weights")


# ---------------------------------------------------------------------------------------------------------------
# The parameter tree.


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{'a.0.b': x} -> {'a': [{'b': x}]}: split keys on dots; all-numeric children become lists (holes None)."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value

    def listify(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        children = {k: listify(v) for k, v in node.items()}
        if children and all(k.isdigit() for k in children):
            items = [None] * (max(int(k) for k in children) + 1)
            for k, v in children.items():
                items[int(k)] = v
            return items
        return children

    return listify(tree)
