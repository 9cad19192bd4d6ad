"""Config <-> tensor shapes: every key and shape a config implies, the check of a state dict against them, and the
way back, a config inferred from the shapes alone (as openai/CLIP's `build_model` does for CLIP).

`expected_shapes(config)` lists what a full GroupViTModel holds under HF's names (502 tensors for the default
config); `validate` refuses a state dict with a missing, extra or misshapen tensor, naming it; `infer_config` reads
widths, depths, group counts and sizes from the tensors of a bare weights file or an NVlabs checkpoint.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..config import GroupViTConfig, GroupViTTextConfig, GroupViTVisionConfig
from ..errors import CheckpointError

# Buffers and extras that checkpoints carry but the forward pass never reads.
IGNORED_SUFFIXES = ("num_batches_tracked", "position_ids", "multi_label_logit_scale")

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
# Validation.


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


# ---------------------------------------------------------------------------------------------------------------
# Config from shapes (openai/CLIP's build_model does the same for CLIP).


def _count(state: dict[str, Any], pattern: str) -> int:
    """1 + the largest index matched by the group in `pattern` (0 when nothing matches)."""
    found = [int(m.group(1)) for k in state if (m := re.match(pattern, k))]
    return max(found) + 1 if found else 0


def _ratio(n: int, d: int) -> float | int:
    r = n / d
    return int(r) if r == int(r) else r


def infer_config(state: dict[str, np.ndarray], *, vision_heads: int = 6, text_heads: int = 4) -> GroupViTConfig:
    """A GroupViTConfig from the tensor shapes of an HF-named state dict.

    Shapes give widths, depths, group counts, patch and image size, vocabulary and context. Head counts leave no
    trace in shapes: they default to the released models' 6 (vision) and 4 (text). Text ids follow CLIP's
    tokenizer, whose last two ids are BOS and EOS (49406 / 49407 for the 49408-token vocabulary); pooling at the
    first EOS is then the original's argmax pooling.
    """
    try:
        pos = state["vision_model.embeddings.position_embeddings"].shape  # [1, N, D]
        patch = state["vision_model.embeddings.patch_embeddings.projection.weight"].shape  # [D, C, p, p]
        d = pos[2]
        grid = round(pos[1] ** 0.5)
        if grid * grid != pos[1] or patch[2] != patch[3]:
            raise CheckpointError(f"position table {pos} or patch kernel {patch} is not square")
        stages = _count(state, r"^vision_model\.encoder\.stages\.(\d+)\.")
        depths = [_count(state, rf"^vision_model\.encoder\.stages\.{s}\.layers\.(\d+)\.") for s in range(stages)]
        groups, outputs = [], []
        for s in range(stages):
            token = state.get(f"vision_model.encoder.stages.{s}.group_token")  # [1, G, D]
            groups.append(token.shape[1] if token is not None else 0)
            fc2 = state.get(f"vision_model.encoder.stages.{s}.downsample.mlp_inter.fc2.weight")  # [S, D/2]
            outputs.append(fc2.shape[0] if fc2 is not None else (outputs[-1] if outputs else 0))
        ds = "vision_model.encoder.stages.0.downsample"
        vision = GroupViTVisionConfig(
            hidden_size=d,
            intermediate_size=state["vision_model.encoder.stages.0.layers.0.mlp.fc1.weight"].shape[0],
            depths=depths,
            num_hidden_layers=sum(depths),
            num_group_tokens=groups,
            num_output_groups=outputs,
            num_attention_heads=vision_heads,
            image_size=grid * patch[2],
            patch_size=patch[2],
            num_channels=patch[1],
            assign_mlp_ratio=[_ratio(state[f"{ds}.mlp_inter.fc1.weight"].shape[0], d),
                              _ratio(state[f"{ds}.mlp_channels.fc1.weight"].shape[0], d)],
        )  # fmt: skip
        vocab, width = state["text_model.embeddings.token_embedding.weight"].shape  # [V, D]
        text = GroupViTTextConfig(
            vocab_size=vocab,
            hidden_size=width,
            intermediate_size=state["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
            num_hidden_layers=_count(state, r"^text_model\.encoder\.layers\.(\d+)\."),
            num_attention_heads=text_heads,
            max_position_embeddings=state["text_model.embeddings.position_embedding.weight"].shape[0],
            bos_token_id=vocab - 2,
            eos_token_id=vocab - 1,
        )
        out = state["visual_projection.3.weight"].shape  # [P, I]
        return GroupViTConfig(text, vision, projection_dim=out[0], projection_intermediate_dim=out[1])
    except KeyError as err:
        raise CheckpointError(f"cannot infer the config: the state dict has no {err.args[0]!r}") from None
    except ValueError as err:  # e.g. a width not divisible by the default head count
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"cannot infer the config: {err}") from None
