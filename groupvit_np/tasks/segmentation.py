"""Zero-shot segmentation as the original NVlabs inference does it (`GroupViTSegInference` in mmseg).

Per window: soft stage maps multiplied (pixel -> final group), bilinearly resized to the window, argmaxed to one
group per pixel; each group's class scores are softmax(s cos) times a softmax restricted to the image's top-5
classes; a pixel takes its group's scores, and becomes background when its best score is below
min(threshold, best score anywhere). `whole` runs one window over the image resized to short side 448; `slide`
averages 448x448 windows at stride 224 (the paper's evaluation); the windows and resizing are in
`segmentation_input`. The class scores are then bilinearly resized to the input size and argmaxed (`label_maps`).
HF's method is `segmentation_hf`. Shape legend: K foreground classes, C output classes (K, or K + 1 with
background), S groups, P projection dim, h x w a window or resized image, H x W the input image, gh x gw the token
grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..backend import array_device, namespace, slice_add, to_namespace, to_numpy
from ..nn.functional import vision_model
from ..nn.heads import normalized_group_embeddings, projection_head
from ..nn.ops import l2_normalize, softmax
from ..nn.resize import resize_grid
from .classify import check_finite, encode_text, logit_scale
from .datasets import SEGMENTATION_TEMPLATES, LabelSet, custom_labels
from .label_maps import SegmentationResult, resize_argmax
from .segmentation_input import segmentation_pixels, sliding_windows

# ---------------------------------------------------------------------------------------------------------------
# The original's scoring (GroupViTSegInference.encode_decode), on the model's array namespace.


def group_class_scores(groups: Any, image: Any, text: Any, scale: Any, top_k: int = 5) -> tuple[Any, Any]:
    """Group scores pre * post and the image-level class probabilities.  # [S, P], [P], [K, P] -> [S, K], [K]

    pre = softmax_k(s cos(group, text)); post is the same softmax over only the top-k classes of the pooled image
    embedding (the others at -inf, so 0), so at most k classes can win any pixel. The product ("TODO: check if
    necessary" in the original) keeps a group's score high only when both agree.
    """
    xp = namespace(groups, text)
    logits = (groups @ xp.matrix_transpose(text)) * scale  # [S, K]
    pre = softmax(logits)
    probs = softmax((image @ xp.matrix_transpose(text)) * scale)  # [K]
    k = min(top_k, text.shape[0])
    top = xp.argsort(probs, descending=True, stable=True)[:k]  # ties: the lower class index, as a stable sort
    classes = xp.arange(text.shape[0], device=array_device(top))
    keep = xp.any(classes[None, :] == top[:, None], axis=0)  # [K]
    post = softmax(xp.where(keep[None, :], logits, xp.full_like(logits, -xp.inf)))  # [S, K]
    return post * pre, probs


def pixel_scores(maps: Any, scores: Any, background: bool, threshold: float) -> Any:
    """Per-pixel class scores from soft group maps.  # [S, h, w], [S, K] -> [C, h, w]

    Each pixel takes the scores of its argmax group (the original's one-hot map times the score matrix). With
    background, channel 0 is 1 where the best foreground score is below min(threshold, max score), else 0: the
    `min` means the best group of an image is never thresholded away.
    """
    xp = namespace(maps, scores)
    _, h, w = maps.shape
    group = xp.reshape(xp.argmax(maps, axis=0), (-1,))  # [h*w]; ties -> the first group, as torch's argmax
    fg = xp.reshape(xp.matrix_transpose(xp.take(scores, group, axis=0)), (scores.shape[1], h, w))  # [K, h, w]
    if not background:
        return fg
    thr = xp.clip(xp.max(scores), max=float(threshold))
    bg = xp.astype(xp.max(fg, axis=0) < thr, fg.dtype)  # [h, w]
    return xp.concat([bg[None, ...], fg], axis=0)


def stage_maps(attentions: Sequence[Any], grid: tuple[int, int]) -> list[Any]:
    """Cumulative pixel -> group soft maps of each grouping stage.  # [1,64,N], [1,8,64] -> [64,gh,gw], [8,gh,gw]"""
    xp = namespace(*attentions)
    out, acc = [], None
    for att in attentions:
        m = xp.matrix_transpose(att[0, ...])  # [S_prev or N, S]
        acc = m if acc is None else acc @ m  # [N, S]
        out.append(xp.reshape(xp.matrix_transpose(acc), (acc.shape[1], *grid)))
    return out


def run_window(model: Any, pixels: np.ndarray, text: Any, background: bool, threshold: float, top_k: int = 5):
    """One forward pass and the original's scoring.  # [1, 3, h, w] -> scores [C, h, w], probs [K], extras

    The patch conv drops a right/bottom remainder smaller than a patch, as the original's does; the group maps are
    still stretched over the full window, as `resize_attn_map` does.
    """
    cfg = model.config.vision_config
    h, w = pixels.shape[-2:]
    gh, gw = h // cfg.patch_size, w // cfg.patch_size
    if gh == 0 or gw == 0:
        raise ValueError(f"the resized image is {h}x{w} pixels, smaller than one {cfg.patch_size}-pixel patch")
    x = to_namespace(pixels[..., : gh * cfg.patch_size, : gw * cfg.patch_size], model.xp, dtype=model.dtype,
                     device=model.device)  # fmt: skip
    vis = model.run(vision_model, pixel_values=x, static={"interpolate_pos_encoding": True})  # compiled on JAX
    head = model.params["visual_projection"]
    groups = normalized_group_embeddings(vis["last_hidden_state"], head)[0, ...]  # [S, P]
    image = l2_normalize(projection_head(vis["pooler_output"], head))[0, ...]  # [P]
    scores, probs = group_class_scores(groups, image, text, logit_scale(model), top_k)  # [S, K], [K]
    maps = stage_maps(vis["attentions"], (gh, gw))
    logits = pixel_scores(resize_grid(maps[-1], h, w, "bilinear"), scores, background, threshold)  # [C, h, w]
    return logits, probs, {"group_maps": maps, "group_scores": scores}


def as_label_set(labels: LabelSet | Sequence[str], threshold: float | None) -> LabelSet:
    """`labels` as a LabelSet (a list of names becomes one, see `datasets.custom_labels`), with `threshold` if given."""
    if isinstance(labels, str):
        raise TypeError("labels must be a list of names (or a LabelSet), not one string")
    ls = labels if isinstance(labels, LabelSet) else custom_labels(list(labels), background=False)
    return ls.with_threshold(threshold) if threshold is not None else ls


def class_embeddings(model: Any, ls: LabelSet, templates: Sequence[str], tokenizer: Any, text_embeds: Any) -> Any:
    """The foreground classes' embeddings [K, P] in the model's namespace: given, or encoded now."""
    if text_embeds is None:
        return encode_text(model, ls.foreground, templates, tokenizer)
    if text_embeds.shape[0] != len(ls.foreground):
        raise ValueError(f"{len(ls.foreground)} foreground classes but {text_embeds.shape[0]} text embeddings")
    return to_namespace(text_embeds, model.xp, dtype=model.dtype, device=model.device)


def segment(
    model: Any,
    image: Any,
    labels: LabelSet | Sequence[str],
    *,
    mode: str = "whole",
    threshold: float | None = None,
    templates: Sequence[str] = SEGMENTATION_TEMPLATES,
    tokenizer: Any = None,
    text_embeds: Any = None,
    short_side: int = 448,
    long_side: int = 2048,
    crop: int = 448,
    stride: int = 224,
    top_k: int = 5,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> SegmentationResult:
    """The original GroupViT zero-shot segmentation of one image (path, PIL image or [H, W, 3] array).

    `labels`: a LabelSet (`datasets.dataset_labels("voc")`) or a list of names; a list whose first name is
    "background" turns the background rule on, as the original's class tuples do. `threshold` overrides the label
    set's (0.95 for a list); `text_embeds` [K, P] (from `classify.encode_text`) skips re-encoding the names.
    `mean` / `std`: the checkpoint's training normalisation (0-1 scale); default the original's ImageNet one.
    """
    if mode not in ("whole", "slide"):
        raise ValueError(f"mode must be 'whole' or 'slide', got {mode!r}")
    ls = as_label_set(labels, threshold)
    text = class_embeddings(model, ls, templates, tokenizer, text_embeds)
    pixels, (height, width) = segmentation_pixels(image, short_side, long_side, mean, std)
    h, w = pixels.shape[-2:]
    extras: dict[str, Any] = {}
    if mode == "whole":
        logits, probs, extras = run_window(model, pixels, text, ls.background, ls.threshold, top_k)
    else:  # mmseg slide_inference: sum the windows' scores, divide by how many windows cover each pixel
        xp = model.xp
        logits, probs_sum, count = None, None, np.zeros((h, w), dtype=np.float32)
        windows = sliding_windows(h, w, crop, stride)
        for y1, y2, x1, x2 in windows:
            part, probs, _ = run_window(model, pixels[..., y1:y2, x1:x2], text, ls.background, ls.threshold, top_k)
            if logits is None:
                logits = xp.zeros((part.shape[0], h, w), dtype=part.dtype, device=array_device(part))
            logits = slice_add(logits, (slice(None), slice(y1, y2), slice(x1, x2)), part)  # immutable arrays too
            probs_sum = probs if probs_sum is None else probs_sum + probs
            count[y1:y2, x1:x2] += 1
        logits = logits / to_namespace(count, xp, dtype=logits.dtype, device=array_device(logits))
        probs = probs_sum / len(windows)
    check_finite(probs, "class probabilities")
    check_finite(logits, "pixel scores")
    return SegmentationResult(
        labels=resize_argmax(logits, height, width),
        class_names=ls.class_names,
        background=ls.background,
        probabilities=to_numpy(probs).astype(np.float64),
        group_maps=tuple(to_numpy(m) for m in extras.get("group_maps", ())),
        group_scores=to_numpy(extras["group_scores"]) if "group_scores" in extras else None,
        box=(0, 0, height, width),
        meta={"mode": mode, "resized": (h, w), "threshold": ls.threshold},
    )
