"""Projection heads, contrastive logits and loss, and HF's segmentation logits.

Shape legend: B images, T texts, S groups, D width, P projection dim, Hpx x Wpx pixels.
"""

from __future__ import annotations

from typing import Any

from ..backend import array_device, namespace
from .ops import Params, batch_norm_eval, l2_normalize, linear, relu
from .resize import bilinear_matrix, resize_grid  # noqa: F401 (bilinear_matrix re-exported)


def projection_head(x: Any, p: list[Params]) -> Any:
    """Linear -> BatchNorm1d (running stats) -> ReLU -> Linear.  # [..., D] -> [..., P]

    `p` is HF's Sequential as a list: indices 0, 1 and 3 hold parameters, 2 (the ReLU) is None.
    """
    return linear(relu(batch_norm_eval(linear(x, p[0]), p[1])), p[3])


def contrastive_logits(text_embeds: Any, image_embeds: Any, logit_scale: Any) -> Any:
    """exp(logit_scale) * cosine similarity, not clamped (HF).  # [T, P], [B, P] normalised -> [T, B]"""
    xp = namespace(text_embeds, image_embeds)
    return (text_embeds @ xp.matrix_transpose(image_embeds)) * xp.exp(logit_scale)


def _cross_entropy_diagonal(logits: Any) -> Any:
    """Mean over rows of -log softmax(row)[i] with target i (torch's cross_entropy with arange).  # [n, n] -> []"""
    xp = namespace(logits)
    n = logits.shape[0]
    m = xp.max(logits, axis=-1, keepdims=True)  # [n, 1]
    lse = xp.log(xp.sum(xp.exp(logits - m), axis=-1)) + m[:, 0]  # [n]
    diag = xp.take(xp.reshape(logits, (-1,)), xp.arange(n, device=array_device(logits)) * (n + 1), axis=0)  # [n]
    return xp.mean(lse - diag)


def contrastive_loss(logits_per_text: Any) -> Any:
    """Symmetric InfoNCE: the mean of the text->image and image->text cross-entropies.  # [T, B] with T == B -> []"""
    xp = namespace(logits_per_text)
    t, b = logits_per_text.shape
    if t != b:
        raise ValueError(f"the contrastive loss pairs text i with image i, so it needs as many texts as images; "
                         f"got {t} texts and {b} images")  # fmt: skip
    return (
        _cross_entropy_diagonal(logits_per_text) + _cross_entropy_diagonal(xp.matrix_transpose(logits_per_text))
    ) / 2.0


def token_grid(num_tokens: int, height: int, width: int) -> tuple[int, int]:
    """Recover the token grid (fh, fw) from the token count and the image's aspect ratio, as HF does.

    scale = sqrt(floor(H*W / N)); the shorter side's grid is round(side/scale) (half to even) and the other
    side takes N // that. 224x224 with 196 tokens -> (14, 14).
    """
    scale = (height * width // num_tokens) ** 0.5
    if height > width:
        fw = int(round(width / scale))
        return num_tokens // fw, fw
    fh = int(round(height / scale))
    return fh, num_tokens // fh


def resize_group_maps(maps: Any, height: int, width: int) -> Any:
    """Bilinear (align_corners=False) upsampling of token-grid maps to pixels.  # [B, S, N] -> [B, S, H, W]"""
    xp = namespace(maps)
    b, s, n = maps.shape
    fh, fw = token_grid(n, height, width)
    return resize_grid(xp.reshape(maps, (b, s, fh, fw)), height, width, "bilinear")  # [B, S, H, W]


def grouping_from_attentions(attentions: tuple[Any, ...]) -> Any:
    """Pixel-token -> final-group map: the product of the soft stage maps.  # [B,64,196], [B,8,64] -> [B, 196, 8]"""
    xp = namespace(*attentions)
    maps = xp.matrix_transpose(attentions[0])  # [B, N, S0]
    for att in attentions[1:]:
        maps = maps @ xp.matrix_transpose(att)  # [B, N, S_prev] @ [B, S_prev, S] -> [B, N, S]
    return maps


def segmentation_logits(
    group_embeds: Any,
    text_embeds: Any,
    attentions: tuple[Any, ...],
    logit_scale: Any,
    height: int,
    width: int,
) -> Any:
    """HF's `segmentation_logits`: s^2 * sum_g cos(group_g, text_t) * grouping_g(pixel).  # -> [B, T, H, W]

    `group_embeds` [B, S, P] are the projected, normalised final segment tokens. The logit scale s multiplies
    once into the group-text logits and once more into the map product: HF applies it twice, so values are not
    probabilities and there is no background.
    """
    xp = namespace(group_embeds, text_embeds)
    s = xp.exp(logit_scale)
    b, groups, _ = group_embeds.shape
    logits = (group_embeds @ xp.matrix_transpose(text_embeds)) * s  # [B, S, T]
    maps = resize_group_maps(xp.matrix_transpose(grouping_from_attentions(attentions)), height, width)  # [B,S,H,W]
    flat = xp.reshape(maps, (b, groups, height * width))  # [B, S, H*W]
    seg = (xp.matrix_transpose(logits) @ flat) * s  # [B, T, S] @ [B, S, H*W] -> [B, T, H*W]
    return xp.reshape(seg, (b, text_embeds.shape[0], height, width))


def normalized_group_embeddings(last_hidden_state: Any, p: list[Params]) -> Any:
    """Each final segment token through the visual head, then L2-normalised.  # [B, S, D] -> [B, S, P]"""
    return l2_normalize(projection_head(last_hidden_state, p))
