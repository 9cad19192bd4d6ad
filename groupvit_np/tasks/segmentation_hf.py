"""Zero-shot segmentation as Hugging Face does it: transformers' `segmentation_logits` on its processor's 224 centre
crop, argmaxed over the classes and mapped back onto the input image.

Soft group maps, the logit scale s applied twice, no top-5 gate and no background rule of its own (see
`hf_segment` for the one we add). Shape legend: K foreground classes, S groups, P projection dim, ch x cw the crop,
H x W the input image, gh x gw the token grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..backend import to_namespace, to_numpy
from ..nn.functional import vision_model
from ..nn.heads import normalized_group_embeddings, projection_head, segmentation_logits
from ..nn.ops import l2_normalize, softmax
from ..preprocessing.image import to_rgb_array
from ..preprocessing.image_processor import CLIPImageProcessor
from .classify import check_finite
from .datasets import IGNORE_INDEX, SEGMENTATION_TEMPLATES, LabelSet
from .label_maps import SegmentationResult, label_dtype, resize_argmax
from .segmentation import as_label_set, class_embeddings, stage_maps


def hf_segment(
    model: Any,
    image: Any,
    labels: LabelSet | Sequence[str],
    *,
    templates: Sequence[str] = SEGMENTATION_TEMPLATES,
    tokenizer: Any = None,
    text_embeds: Any = None,
    processor: CLIPImageProcessor | None = None,
    threshold: float | None = None,
) -> SegmentationResult:
    """HF's `segmentation_logits` (soft maps, s applied twice, no top-5 gate) on its processor's centre crop,
    argmaxed over the classes and mapped back onto the input; pixels outside the crop are IGNORE_INDEX.

    HF has no background rule. With a background label set, "background" keeps index 0 (so palettes line up) and
    wins where every class's weighted cosine, `segmentation_logits / s^2` = sum_g map_g * cos(group_g, text), is
    below `threshold`: background is a class whose score is the threshold everywhere. Without a threshold it never
    wins.
    """
    ls = as_label_set(labels, None)
    processor = processor if processor is not None else CLIPImageProcessor()
    text = class_embeddings(model, ls, templates, tokenizer, text_embeds)
    rgb = to_rgb_array(image)
    height, width = rgb.shape[:2]
    pixels = processor(rgb)["pixel_values"]  # [1, 3, ch, cw]
    ch, cw = pixels.shape[-2:]
    cfg = model.config.vision_config
    x = to_namespace(pixels, model.xp, dtype=model.dtype, device=model.device)
    vis = model.run(vision_model, pixel_values=x, static={"interpolate_pos_encoding": True})  # compiled on JAX
    head = model.params["visual_projection"]
    groups = normalized_group_embeddings(vis["last_hidden_state"], head)  # [1, S, P]
    seg = segmentation_logits(groups, text, vis["attentions"], model.params["logit_scale"], ch, cw)[0, ...]
    image_embed = l2_normalize(projection_head(vis["pooler_output"], head))  # [1, P]
    xp = model.xp
    probs = softmax((image_embed @ xp.matrix_transpose(text)) * xp.exp(model.params["logit_scale"]))[0, ...]
    check_finite(probs, "class probabilities")
    check_finite(seg, "segmentation logits")
    top, left, bottom, right = _crop_box(processor, height, width, ch, cw)
    dtype = label_dtype(len(ls.class_names))
    if ls.background and threshold is not None:  # [K, ch, cw] -> [1 + K, ch, cw]
        floor = xp.exp(model.params["logit_scale"]) ** 2 * float(threshold)  # the threshold on the logits' scale
        seg = xp.concat([xp.ones_like(seg[:1, ...]) * floor, seg], axis=0)
        inner = resize_argmax(seg, bottom - top, right - left).astype(dtype)
    else:
        inner = resize_argmax(seg, bottom - top, right - left).astype(dtype)
        inner += 1 if ls.background else 0
    labels_map = np.full((height, width), IGNORE_INDEX, dtype=inner.dtype)
    # a crop larger than the resized image (HF pads) hangs over the edges: paste only the part inside
    t, lf, b, r = max(top, 0), max(left, 0), min(bottom, height), min(right, width)
    labels_map[t:b, lf:r] = inner[t - top : b - top, lf - left : r - left]
    gh, gw = ch // cfg.patch_size, cw // cfg.patch_size
    return SegmentationResult(
        labels=labels_map,
        class_names=ls.class_names,
        background=ls.background,
        probabilities=to_numpy(probs).astype(np.float64),
        group_maps=tuple(to_numpy(m) for m in stage_maps(vis["attentions"], (gh, gw))),
        box=(top, left, bottom, right),
        method="hf",
        meta={"mode": "whole", "resized": (ch, cw), "threshold": threshold if ls.background else None},
    )


def _crop_box(processor: CLIPImageProcessor, height: int, width: int, ch: int, cw: int) -> tuple[int, int, int, int]:
    """The processor's crop in input pixels (top, left, bottom, right), from its resize and centre-crop rules."""
    rh, rw = processor.output_size(height, width) if processor.do_resize else (height, width)
    if not processor.do_center_crop:
        return 0, 0, height, width
    # HF's centre crop: top = (rh - ch) // 2, or, when padding, -(pad + 1) // 2 (the odd pixel on top)
    top = (rh - ch) // 2 if rh >= ch else -((ch - rh + 1) // 2)
    left = (rw - cw) // 2 if rw >= cw else -((cw - rw + 1) // 2)
    sy, sx = height / rh, width / rw
    return round(top * sy), round(left * sx), round((top + ch) * sy), round((left + cw) * sx)
