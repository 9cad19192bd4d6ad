"""Test helper: an NVlabs-style release `.pth` built from an HF GroupViT state dict (torch imported on use).

The inverse of transformers' conversion, written independently of `groupvit_np.checkpoints` (explicit regex
rules rather than ordered substring replacements): fused vision `qkv` and text `in_proj`, Conv1d projector weights
[O, I, 1], `multi_label_logit_scale`, and the wrapper `save_checkpoint` writes (model, optimizer, lr_scheduler,
metrics, epoch, and the training config as a pickled object).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import OrderedDict, defaultdict
from pathlib import Path
from typing import Any

# A small HF config that exercises every module: three stages, two grouping blocks, a group projector. The heads
# (6 vision, 4 text) and the text ids (last two of the vocabulary) are what `infer_config` assumes.
TINY = dict(
    text_config=dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                     max_position_embeddings=16, bos_token_id=97, eos_token_id=98, pad_token_id=1),
    vision_config=dict(image_size=32, patch_size=4, hidden_size=48, depths=[2, 1, 1], num_hidden_layers=4,
                       num_group_tokens=[8, 4, 0], num_output_groups=[8, 4, 4], num_attention_heads=6,
                       intermediate_size=40),
    projection_dim=16, projection_intermediate_dim=24,
)  # fmt: skip

_VISION_QKV = re.compile(
    r"^vision_model\.encoder\.stages\.(\d+)\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$"
)
_TEXT_QKV = re.compile(r"^text_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$")
_STAGE = r"^vision_model\.encoder\.stages\.(\d+)\."
_TEXT_LAYER = r"^text_model\.encoder\.layers\.(\d+)\."
_RES = r"text_encoder.transformer.resblocks.\1."
_PRE = r"img_encoder.layers.\1.downsample.pre_assign_attn."
# First match wins.
_INVERSE = [
    (r"^vision_model\.embeddings\.position_embeddings$", "img_encoder.pos_embed"),
    (r"^vision_model\.embeddings\.patch_embeddings\.projection\.", "img_encoder.patch_embed.proj."),
    (r"^vision_model\.embeddings\.layernorm\.", "img_encoder.patch_embed.norm."),
    (_STAGE + r"layers\.(\d+)\.self_attn\.out_proj\.", r"img_encoder.layers.\1.blocks.\2.attn.proj."),
    (_STAGE + r"layers\.(\d+)\.layer_norm(\d)\.", r"img_encoder.layers.\1.blocks.\2.norm\3."),
    (_STAGE + r"layers\.(\d+)\.mlp\.", r"img_encoder.layers.\1.blocks.\2.mlp."),
    (_STAGE + r"downsample\.pre_assign_attn\.attn\.out_proj\.", _PRE + "attn.proj."),
    (_STAGE, r"img_encoder.layers.\1."),  # group_token, the rest of downsample, group_projector
    (r"^vision_model\.layernorm\.", "img_encoder.norm."),
    (r"^text_model\.embeddings\.token_embedding\.", "text_encoder.token_embedding."),
    (r"^text_model\.embeddings\.position_embedding\.weight$", "text_encoder.positional_embedding"),
    (_TEXT_LAYER + r"self_attn\.out_proj\.", _RES + "attn.out_proj."),
    (_TEXT_LAYER + r"layer_norm(\d)\.", _RES + r"ln_\2."),
    (_TEXT_LAYER + r"mlp\.fc1\.", _RES + "mlp.c_fc."),
    (_TEXT_LAYER + r"mlp\.fc2\.", _RES + "mlp.c_proj."),
    (r"^text_model\.final_layer_norm\.", "text_encoder.ln_final."),
    (r"^visual_projection\.([01])\.", r"img_projector.linear_hidden.\1."),
    (r"^visual_projection\.3\.", "img_projector.linear_out."),
    (r"^text_projection\.([01])\.", r"text_projector.linear_hidden.\1."),
    (r"^text_projection\.3\.", "text_projector.linear_out."),
    (r"^logit_scale$", "logit_scale"),
]  # fmt: skip
_CONV1D = re.compile(r"^(img|text)_projector\.(linear_hidden\.0|linear_out)\.weight$")


class TrainingConfig:
    """Stands in for the OmegaConf object NVlabs pickles under `config` (a global our reader must not resolve)."""

    def __init__(self, **entries):
        self.__dict__.update(entries)


def tiny_hf_model(seed: int = 0, config: dict | None = None) -> Any:
    """A float32 transformers GroupViTModel (TINY config) with every tensor moved off its init value."""
    import torch
    import transformers

    torch.manual_seed(seed)
    model = transformers.GroupViTModel(transformers.GroupViTConfig(**(config or TINY))).eval()
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if key.endswith("running_var"):
                t.copy_(0.5 + torch.rand_like(t))
            elif t.is_floating_point():
                t.add_(0.05 * torch.randn_like(t))
    return model


def hf_to_nvlabs(state: dict[str, Any], multi_label: bool = True) -> OrderedDict[str, Any]:
    """HF GroupViT state dict (torch tensors) -> the NVlabs module tree's state dict."""
    import torch

    out: OrderedDict[str, Any] = OrderedDict()
    fused: dict[str, dict[str, Any]] = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue
        if m := _VISION_QKV.match(key):
            fused.setdefault(f"img_encoder.layers.{m[1]}.blocks.{m[2]}.attn.qkv.{m[4]}", {})[m[3]] = value
            continue
        if m := _TEXT_QKV.match(key):
            fused.setdefault(f"text_encoder.transformer.resblocks.{m[1]}.attn.in_proj_{m[3]}", {})[m[2]] = value
            continue
        for pattern, replacement in _INVERSE:
            if re.match(pattern, key):
                new = re.sub(pattern, replacement, key)
                break
        else:
            raise KeyError(f"no NVlabs name for {key}")
        out[new] = value.unsqueeze(-1) if _CONV1D.match(new) else value  # Linear [O, I] -> Conv1d [O, I, 1]
    for key, parts in fused.items():
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)  # rows: q, then k, then v
    if multi_label:
        out["multi_label_logit_scale"] = torch.tensor(4.2057)
    return out


def save_release(
    state: dict[str, Any], folder: Path, stem: str = "group_vit_gcc_tiny_30e", multi_label: bool = True
) -> Path:
    """Save an NVlabs-style checkpoint as `<stem>-<first 8 hex of its SHA-256>.pth` (torch.hub's naming)."""
    import torch

    model = hf_to_nvlabs(state, multi_label)
    some = next(iter(model.values()))
    checkpoint = {
        "model": model,
        "optimizer": {
            "state": {0: {"step": torch.tensor(7.0), "exp_avg": torch.zeros_like(some), "exp_avg_sq": some.square()}},
            "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.98), "weight_decay": 0.05, "params": [0]}],
        },
        "lr_scheduler": {"t_initial": 30, "last_epoch": 29},
        "metrics": defaultdict(float, {"max_accuracy": 0.437}),
        "epoch": 29,
        "config": TrainingConfig(model="group_vit", embed_dim=384, output="/tmp/run"),
    }
    tmp = folder / f"{stem}.pth.tmp"
    torch.save(checkpoint, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    path = folder / f"{stem}-{digest[:8]}.pth"
    os.replace(tmp, path)
    return path
