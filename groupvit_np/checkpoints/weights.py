"""Checkpoint files -> validated parameter trees under HF's key names.

`load_checkpoint(source)` accepts a checkpoint folder (config.json + model.safetensors, a sharded safetensors
index, or pytorch_model.bin), a single .safetensors/.bin file, an original NVlabs .pth, or a Hub repo id. Tensors
come back as host NumPy arrays; `validate` checks every key and shape the config implies; `nest` turns the flat
dict into the tree the layer functions take (numbered children become lists).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..config import GroupViTConfig, GroupViTTextConfig, GroupViTVisionConfig
from .safetensors_io import CheckpointError, read_safetensors

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
TORCH_WEIGHTS = "pytorch_model.bin"
# Buffers and extras that checkpoints carry but the forward pass never reads.
IGNORED_SUFFIXES = ("num_batches_tracked", "position_ids", "multi_label_logit_scale")


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
        from .torch_pickle import load_torch_file

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
        from .convert import load_nvlabs

        return load_nvlabs(path)
    folder = path if path.is_dir() else path.parent
    if (folder / "config.json").is_file():
        return GroupViTConfig.from_pretrained(folder), read_state_dict(path)
    if path.is_file():  # a bare weights file: infer the architecture from the tensor shapes, as for NVlabs files
        from .convert import infer_config

        state = read_state_dict(path)
        return infer_config(state), state
    raise CheckpointError(f"{folder}: no config.json beside the weights")


# ---------------------------------------------------------------------------------------------------------------
# What a config implies.


def _encoder_layer(prefix: str, d: int, inner: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        yield f"{prefix}.self_attn.{proj}.weight", (d, d)
        yield f"{prefix}.self_attn.{proj}.bias", (d,)
    for norm in ("layer_norm1", "layer_norm2"):
        yield f"{prefix}.{norm}.weight", (d,)
        yield f"{prefix}.{norm}.bias", (d,)
    yield from _linear(f"{prefix}.mlp.fc1", d, inner)
    yield from _linear(f"{prefix}.mlp.fc2", inner, d)


def _linear(prefix: str, d_in: int, d_out: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    yield f"{prefix}.weight", (d_out, d_in)
    yield f"{prefix}.bias", (d_out,)


def _norm(prefix: str, d: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    yield f"{prefix}.weight", (d,)
    yield f"{prefix}.bias", (d,)


def text_shapes(c: GroupViTTextConfig, prefix: str = "text_model") -> Iterator[tuple[str, tuple[int, ...]]]:
    d = c.hidden_size
    yield f"{prefix}.embeddings.token_embedding.weight", (c.vocab_size, d)
    yield f"{prefix}.embeddings.position_embedding.weight", (c.max_position_embeddings, d)
    for i in range(c.num_hidden_layers):
        yield from _encoder_layer(f"{prefix}.encoder.layers.{i}", d, c.intermediate_size)
    yield from _norm(f"{prefix}.final_layer_norm", d)


def vision_shapes(c: GroupViTVisionConfig, prefix: str = "vision_model") -> Iterator[tuple[str, tuple[int, ...]]]:
    d, grid = c.hidden_size, c.image_size // c.patch_size
    tokens_dim, channels_dim = (int(r * d) for r in c.assign_mlp_ratio)
    e = f"{prefix}.embeddings"
    yield f"{e}.position_embeddings", (1, grid * grid, d)
    yield f"{e}.patch_embeddings.projection.weight", (d, c.num_channels, c.patch_size, c.patch_size)
    yield f"{e}.patch_embeddings.projection.bias", (d,)
    yield from _norm(f"{e}.layernorm", d)
    for s, depth in enumerate(c.depths):
        st, g, out = f"{prefix}.encoder.stages.{s}", c.num_group_tokens[s], c.num_output_groups[s]
        prev = c.num_output_groups[s - 1] if s > 0 else 0
        if g > 0:
            yield f"{st}.group_token", (1, g, d)
        for i in range(depth):
            yield from _encoder_layer(f"{st}.layers.{i}", d, c.intermediate_size)
        if g > 0:
            ds = f"{st}.downsample"
            for norm in ("norm_tokens", "norm_post_tokens", "norm_x", "norm_new_x"):
                yield from _norm(f"{ds}.{norm}", d)
            yield from _linear(f"{ds}.mlp_inter.fc1", g, tokens_dim)
            yield from _linear(f"{ds}.mlp_inter.fc2", tokens_dim, out)
            for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                yield from _linear(f"{ds}.pre_assign_attn.attn.{proj}", d, d)
            yield from _norm(f"{ds}.pre_assign_attn.norm2", d)
            yield from _linear(f"{ds}.pre_assign_attn.mlp.fc1", d, c.intermediate_size)
            yield from _linear(f"{ds}.pre_assign_attn.mlp.fc2", c.intermediate_size, d)
            yield from _norm(f"{ds}.pre_assign_attn.norm_post", d)
            for proj in ("q_proj", "k_proj", "v_proj", "proj"):
                yield from _linear(f"{ds}.assign.{proj}", d, d)
            yield from _linear(f"{ds}.mlp_channels.fc1", d, channels_dim)
            yield from _linear(f"{ds}.mlp_channels.fc2", channels_dim, d)
            if prev > 0:
                yield from _norm(f"{st}.group_projector.0", d)
                yield from _linear(f"{st}.group_projector.1.fc1", prev, d // 2)
                yield from _linear(f"{st}.group_projector.1.fc2", d // 2, g)
    yield from _norm(f"{prefix}.layernorm", d)


def head_shapes(prefix: str, d_in: int, inner: int, d_out: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    yield from _linear(f"{prefix}.0", d_in, inner)
    for name in ("weight", "bias", "running_mean", "running_var"):
        yield f"{prefix}.1.{name}", (inner,)
    yield from _linear(f"{prefix}.3", inner, d_out)


def expected_shapes(config: GroupViTConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a full GroupViTModel with this config has, with its shape (502 for the default config)."""
    shapes = {"logit_scale": ()}
    shapes.update(text_shapes(config.text_config))
    shapes.update(vision_shapes(config.vision_config))
    p, inner = config.projection_dim, config.projection_intermediate_dim
    shapes.update(head_shapes("visual_projection", config.vision_config.hidden_size, inner, p))
    shapes.update(head_shapes("text_projection", config.text_config.hidden_size, inner, p))
    return shapes


# ---------------------------------------------------------------------------------------------------------------
# Validation and nesting.


def validate(state: dict[str, Any], expected: dict[str, tuple[int, ...]], source: str = "checkpoint") -> None:
    """Refuse a state dict unless it holds exactly the expected keys with the expected shapes."""
    present = {k for k in state if not k.endswith(IGNORED_SUFFIXES)}
    missing = sorted(set(expected) - present)
    extra = sorted(present - set(expected))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s), e.g. {missing[:5]}")
    if extra:
        problems.append(f"{len(extra)} unexpected key(s), e.g. {extra[:5]}")
    for key in sorted(present & set(expected)):
        shape = tuple(state[key].shape)
        if shape != expected[key]:
            problems.append(f"{key} has shape {shape}, the config implies {expected[key]}")
    if problems:
        raise CheckpointError(f"{source} does not match its config: " + "; ".join(problems[:8]))


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
