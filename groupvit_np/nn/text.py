"""The CLIP-style text tower: token + position embeddings, causal pre-LN layers, final LayerNorm, EOS pooling.

Shape legend: T texts, L text length, D width, H heads.
"""

from __future__ import annotations

from typing import Any

from ..backend import array_device, namespace
from ..config import GroupViTTextConfig
from .attention import encoder_layer, text_attention_mask
from .ops import Params, layer_norm


def eos_positions(input_ids: Any, config: GroupViTTextConfig) -> Any:
    """Where each text is pooled.  # [T, L] -> [T]

    Modern configs pool at the first `eos_token_id` (0 when there is none). 2022 configs carry eos_token_id 2 and
    transformers keeps their rule, argmax(input_ids): the first occurrence of the largest id, which is the EOS
    (49407) for CLIP tokens. Both rules pick a pad with left padding: pad on the right.
    """
    xp = namespace(input_ids)
    if config.legacy_eos_pooling:
        return xp.argmax(input_ids, axis=-1)
    return xp.argmax(xp.astype(input_ids == config.eos_token_id, xp.int32), axis=-1)


def text_tower(
    input_ids: Any,
    p: Params,
    config: GroupViTTextConfig,
    attention_mask: Any = None,
    position_ids: Any = None,
) -> dict[str, Any]:
    """CLIP text encoder.  # [T, L] ids -> last_hidden_state [T, L, D], pooler_output [T, D]

    Also returns `hidden_states` (embeddings + each layer's output, the last before the final LayerNorm) and
    `attentions` ([T, H, L, L] per layer). With right padding the padding mask changes only the pad rows:
    causality already hides later pads from real tokens.
    """
    xp = namespace(input_ids)
    t, length = input_ids.shape
    emb = p["embeddings"]
    table = emb["token_embedding"]["weight"]  # [V, D]
    dtype = p["final_layer_norm"]["weight"].dtype  # the compute dtype (tables may be stored in half precision)
    rows = xp.take(table, xp.reshape(input_ids, (-1,)), axis=0)  # [T*L, D]
    h = xp.reshape(xp.astype(rows, dtype, copy=False), (t, length, table.shape[1]))  # [T, L, D]
    if position_ids is None:
        position_ids = xp.arange(length, device=array_device(input_ids))[None, :]  # [1, L]
    pos_table = emb["position_embedding"]["weight"]  # [max_pos, D]
    pos = xp.reshape(xp.take(pos_table, xp.reshape(position_ids, (-1,)), axis=0), (*position_ids.shape, -1))
    h = h + pos  # [T, L, D]
    masks = (text_attention_mask(length, attention_mask, h),)  # [T or 1, 1, L, L]
    hidden_states, attentions = [h], []
    for layer in p["encoder"]["layers"]:
        h, weights = encoder_layer(h, layer, config.num_attention_heads, config.hidden_act, config.layer_norm_eps,
                                   masks)  # fmt: skip
        hidden_states.append(h)
        attentions.append(weights)
    last = layer_norm(h, p["final_layer_norm"], config.layer_norm_eps)  # [T, L, D]
    flat_index = eos_positions(input_ids, config) + xp.arange(t, device=array_device(input_ids)) * length  # [T]
    pooled = xp.take(xp.reshape(last, (t * length, -1)), flat_index, axis=0)  # [T, D]
    return {
        "last_hidden_state": last,
        "pooler_output": pooled,
        "hidden_states": tuple(hidden_states),
        "attentions": tuple(attentions),
    }
