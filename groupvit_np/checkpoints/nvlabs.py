"""Original NVlabs checkpoints -> HF names, read from a release `.pth` without torch.

`load_nvlabs(path)` reads `ckpt["model"]` of a release file through the allow-list unpickler, renames it the way
transformers' `convert_groupvit_nvlab_to_hf.py` does (spec: original-groupvit.md section 2.3), infers the config
from the shapes and validates every tensor. A release file's name carries a prefix of its SHA-256, checked here.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..config import GroupViTConfig
from ..errors import CheckpointError
from .shapes import expected_shapes, infer_config, validate


class ChecksumWarning(UserWarning):
    """A release file whose SHA-256 does not start with the hash prefix in its name."""


# ---------------------------------------------------------------------------------------------------------------
# Renaming. Substring rules applied in order, each with the guard transformers' script uses.

_RULES: tuple[tuple[str, str, Any], ...] = (
    ("img_encoder.pos_embed", "vision_model.embeddings.position_embeddings", None),
    ("img_encoder.patch_embed.proj", "vision_model.embeddings.patch_embeddings.projection", None),
    ("img_encoder.patch_embed.norm", "vision_model.embeddings.layernorm", None),
    ("img_encoder.layers", "vision_model.encoder.stages", None),
    ("blocks", "layers", lambda k: "res" not in k),  # keeps the text `resblocks` intact
    ("attn", "self_attn", lambda k: "pre_assign" not in k),  # text `attn.out_proj` becomes `self_attn.out_proj` too
    ("proj", "out_proj", lambda k: "self_attn" in k and "text" not in k),  # vision block output projection
    ("pre_assign_attn.attn.proj", "pre_assign_attn.attn.out_proj", None),
    ("norm1", "layer_norm1", None),
    ("norm2", "layer_norm2", lambda k: "pre_assign" not in k),
    ("img_encoder.norm", "vision_model.layernorm", None),
    ("text_encoder.token_embedding", "text_model.embeddings.token_embedding", None),
    ("text_encoder.positional_embedding", "text_model.embeddings.position_embedding.weight", None),
    ("text_encoder.transformer.resblocks.", "text_model.encoder.layers.", None),
    ("ln_1", "layer_norm1", None),
    ("ln_2", "layer_norm2", None),
    ("c_fc", "fc1", None),
    ("c_proj", "fc2", None),
    ("text_encoder", "text_model", None),
    ("ln_final", "final_layer_norm", None),
    ("img_projector.linear_hidden.", "visual_projection.", None),
    ("img_projector.linear_out.", "visual_projection.3.", None),
    ("text_projector.linear_hidden.", "text_projection.", None),
    ("text_projector.linear_out.", "text_projection.3.", None),
)
_FAMILIES = ("img_encoder.", "text_encoder.", "img_projector.", "text_projector.")
# Fused attention inputs: rows [0:d] are q, [d:2d] k, [2d:3d] v.
_FUSED = (
    (re.compile(r"^img_encoder\.layers\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$"),
     "vision_model.encoder.stages.{0}.layers.{1}.self_attn.{q}_proj.{2}"),
    (re.compile(r"^text_encoder\.transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)$"),
     "text_model.encoder.layers.{0}.self_attn.{q}_proj.{1}"),
)  # fmt: skip


def rename_key(key: str) -> str:
    """One NVlabs key -> its HF name. E.g. 'img_encoder.layers.0.blocks.1.norm1.weight' ->
    'vision_model.encoder.stages.0.layers.1.layer_norm1.weight'."""
    for old, new, guard in _RULES:
        if old in key and (guard is None or guard(key)):
            key = key.replace(old, new)
    return key


def nvlabs_to_hf(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """NVlabs state dict -> HF state dict: renamed, fused q/k/v split, Conv1d [O, I, 1] squeezed to [O, I]."""
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        if key == "multi_label_logit_scale":
            continue  # the yfcc model's multi-label loss temperature: training only
        if key != "logit_scale" and not key.startswith(_FAMILIES):
            hint = (
                " (this looks like an HF checkpoint already)" if key.startswith(("vision_model", "text_model")) else ""
            )
            raise CheckpointError(f"unknown key {key!r} in an NVlabs checkpoint{hint}")
        for pattern, template in _FUSED:
            if m := pattern.match(key):
                if value.shape[0] % 3:
                    raise CheckpointError(
                        f"{key} has shape {value.shape}: the fused q/k/v rows are not a multiple of 3"
                    )
                for part, rows in zip("qkv", np.split(value, 3, axis=0), strict=True):  # [3D, ...] -> 3 x [D, ...]
                    out[template.format(*m.groups(), q=part)] = rows
                break
        else:
            new = rename_key(key)
            if re.match(r"^(visual|text)_projection\.[03]\.weight$", new) and value.ndim == 3:
                value = value[:, :, 0]  # Conv1d(kernel 1) [O, I, 1] -> Linear [O, I]
            out[new] = value
    return out


# ---------------------------------------------------------------------------------------------------------------
# Reading a release file.

_HASH_SUFFIX = re.compile(r"-([0-9a-f]{8,64})\.[^.]+$")  # torch.hub's convention: name-<sha256 prefix>.pth


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_hash_prefix(path: str | os.PathLike) -> bool | None:
    """Compare the hash prefix in the file name with the file's SHA-256: True/False, None when the name has none.

    A mismatch is reported with `warnings.warn(ChecksumWarning)`: the file may be truncated or not the release.
    """
    path = Path(path)
    m = _HASH_SUFFIX.search(path.name)
    if m is None:
        return None
    digest = sha256_file(path)
    if digest.startswith(m.group(1)):
        return True
    warnings.warn(
        f"{path.name}: its SHA-256 starts with {digest[: len(m.group(1))]}, but the name says {m.group(1)}; the "
        "file may be truncated, corrupt, or not the official release",
        ChecksumWarning,
        stacklevel=2,
    )
    return False


def load_nvlabs(
    path: str | os.PathLike, *, vision_heads: int = 6, text_heads: int = 4, verify_hash: bool = True
) -> tuple[GroupViTConfig, dict[str, np.ndarray]]:
    """An NVlabs release `.pth` -> (inferred config, HF-named state dict), validated key by key.

    Only `ckpt["model"]` is read. The rest of the wrapper (optimizer, scheduler, the training config as a
    pickled OmegaConf object) is parsed into inert placeholders and never executed nor kept.
    """
    from .torch_zip import load_torch_file

    path = Path(path)
    if verify_hash:
        check_hash_prefix(path)
    state = load_torch_file(path, select="model", opaque=True)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: ckpt['model'] is a {type(state).__name__}, not a state dict")
    for key, value in state.items():
        if not isinstance(value, np.ndarray):
            raise CheckpointError(f"{path}: ckpt['model'][{key!r}] is a {type(value).__name__}, not a tensor")
    hf = nvlabs_to_hf(state)
    config = infer_config(hf, vision_heads=vision_heads, text_heads=text_heads)
    validate(hf, expected_shapes(config), str(path))
    return config, hf
