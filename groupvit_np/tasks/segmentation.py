"""Zero-shot segmentation: the original NVlabs inference (`GroupViTSegInference` in mmseg) and HF-style maps.

Original, per window: soft stage maps multiplied (pixel -> final group), bilinearly resized to the window, argmaxed
to one group per pixel; each group's class scores are softmax(s cos) times a softmax restricted to the image's
top-5 classes; a pixel takes its group's scores, and becomes background when its best score is below
min(threshold, best score anywhere). `whole` runs one window over the image resized to short side 448; `slide`
averages 448x448 windows at stride 224 (the paper's evaluation). The class scores are then bilinearly resized to the
input size and argmaxed. HF-style (`hf_segment`) is transformers' `segmentation_logits` on its 224 centre crop.
Shape legend: K foreground classes, C output classes (K, or K + 1 with background), S groups, P projection dim,
h x w a window or resized image, H x W the input image, gh x gw the token grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backend import array_device, namespace, slice_add, to_namespace, to_numpy
from ..nn.functional import vision_model
from ..nn.heads import normalized_group_embeddings, projection_head, segmentation_logits
from ..nn.ops import l2_normalize, softmax
from ..nn.resize import bilinear_taps, resize_grid
from ..preprocessing.image import CLIPImageProcessor, to_rgb_array
from .classify import check_finite, encode_text, logit_scale
from .datasets import IGNORE_INDEX, SEGMENTATION_TEMPLATES, LabelSet, custom_labels

MEAN_255 = (123.675, 116.28, 103.53)  # mmseg's img_norm_cfg: ImageNet mean/std on the 0-255 scale
STD_255 = (58.395, 57.12, 57.375)

# ---------------------------------------------------------------------------------------------------------------
# Host-side preprocessing (mmseg's test pipeline: Resize keep_ratio to (2048, 448), Normalize).


def rescale_size(height: int, width: int, short: int = 448, long: int = 2048) -> tuple[int, int]:
    """mmcv's rescale_size: the largest scale with short side <= `short` and long side <= `long`, rounded half up.

    Example: 333 x 517 -> 448 x 696; 17 x 2000 -> 17 x 2048 (the long side limits it).
    """
    scale = min(long / max(height, width), short / min(height, width))
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_linear(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """cv2.INTER_LINEAR (mmcv's default): half-pixel bilinear without antialiasing.  # [H, W, 3] u8 -> [h, w, 3] u8

    Each output pixel blends its four source neighbours, rows first, in float64, rounded half up; OpenCV's 11-bit
    fixed-point weights can differ by one grey level. Only the neighbours are gathered, so memory follows the
    output's size, not the input's (a 12000 x 12000 photo costs no float copy of itself).
    """
    if rgb.shape[:2] == (height, width):
        return rgb
    like = np.zeros(1, dtype=np.float64)
    y0, y1, fy = bilinear_taps(height, rgb.shape[0], like)  # [h] each
    x0, x1, fx = bilinear_taps(width, rgb.shape[1], like)  # [w] each
    y0, y1, x0, x1 = (t.astype(np.intp) for t in (y0, y1, x0, x1))
    fy, fx = fy[:, None, None], fx[None, :, None]

    def rows(cols: np.ndarray) -> np.ndarray:  # [h, w, 3]: the two source rows blended at the given columns
        return (1.0 - fy) * rgb[y0[:, None], cols[None, :]] + fy * rgb[y1[:, None], cols[None, :]]

    out = (1.0 - fx) * rows(x0) + fx * rows(x1)
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def segmentation_pixels(
    image: Any,
    short: int = 448,
    long: int = 2048,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Image -> normalised pixels [1, 3, h, w] float32 (h, w from `rescale_size`) and the input's (H, W).

    `mean` / `std` (0-1 scale, as in a preprocessor config) are the statistics the checkpoint was trained with;
    the default is the original pipeline's ImageNet normalisation.
    """
    rgb = to_rgb_array(image)  # [H, W, 3] uint8
    size = rgb.shape[:2]
    mean_255 = np.asarray(MEAN_255) if mean is None else 255.0 * np.asarray(mean, dtype=np.float64)  # [3]
    std_255 = np.asarray(STD_255) if std is None else 255.0 * np.asarray(std, dtype=np.float64)  # [3]
    x = resize_linear(rgb, *rescale_size(*size, short, long)).astype(np.float64)
    x = (x - mean_255) * (1.0 / std_255)  # mmcv multiplies by the reciprocal
    return np.ascontiguousarray(x.astype(np.float32).transpose(2, 0, 1)[None]), size


def sliding_windows(height: int, width: int, crop: int = 448, stride: int = 224) -> list[tuple[int, int, int, int]]:
    """mmseg's slide_inference windows (y1, y2, x1, x2): a grid at `stride`, the last ones pushed inside the image.

    Example: 448 x 597 -> (0, 448, 0, 448), (0, 448, 149, 597). A side shorter than `crop` gets one full window.
    """
    rows = max(height - crop + stride - 1, 0) // stride + 1
    cols = max(width - crop + stride - 1, 0) // stride + 1
    out = []
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * stride + crop, height), min(c * stride + crop, width)
            out.append((max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
    return out


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


def _taps(out_size: int, in_size: int, like: Any) -> tuple[Any, Any, Any]:
    """`resize.bilinear_taps` computed in float64 (as the maps' resize is specified), indices as integers."""
    xp = namespace(like)
    i0, i1, frac = bilinear_taps(out_size, in_size, xp.zeros((1,), dtype=xp.float64, device=array_device(like)))
    return xp.astype(i0, xp.int64), xp.astype(i1, xp.int64), frac


def _lerp(x: Any, taps: tuple[Any, Any, Any]) -> Any:
    """Resample the first axis from its two taps: (1 - f) * x[i0] + f * x[i1], torch's formula and order."""
    xp = namespace(x)
    i0, i1, f = taps
    f = xp.reshape(xp.astype(f, x.dtype), (-1,) + (1,) * (x.ndim - 1))
    return (1.0 - f) * xp.take(x, i0, axis=0) + f * xp.take(x, i1, axis=0)


def label_dtype(n: int) -> np.dtype:
    """The smallest dtype for label maps of `n` classes beside IGNORE_INDEX (255): uint8 up to 255 classes."""
    return np.dtype(np.uint8 if n <= IGNORE_INDEX else np.int32)


def resize_argmax(logits: Any, height: int, width: int, budget: int = 1 << 24) -> np.ndarray:
    """Bilinear resize to (H, W), then argmax over classes.  # [C, h, w] -> [H, W] uint8 (`label_dtype`), host

    Two taps per output sample (a dense resampling matrix would cost h times more at photo sizes), gathered along
    the leading axis so each copy is a contiguous block, in blocks of output columns holding about `budget`
    values, written straight into the answer: a 60-class map of a 12-megapixel photo fits in memory, and the
    answer takes one byte a pixel. Columns first, then rows, as torch.
    """
    xp = namespace(logits)
    c, h, w = logits.shape
    if (h, w) == (height, width):
        return to_numpy(xp.argmax(logits, axis=0)).astype(label_dtype(c))
    rows, cols = _taps(height, h, logits), _taps(width, w, logits)
    by_column = xp.permute_dims(logits, (2, 0, 1))  # [w, C, h]
    step = max(1, budget // (c * (h + height)))
    out = np.empty((height, width), dtype=label_dtype(c))
    for x0 in range(0, width, step):
        part = _lerp(by_column, tuple(t[x0 : min(x0 + step, width)] for t in cols))  # [b, C, h]
        part = _lerp(xp.permute_dims(part, (2, 0, 1)), rows)  # [h, b, C] -> [H, b, C]
        out[:, x0 : x0 + step] = to_numpy(xp.argmax(part, axis=-1))  # [H, b]
    return out


# ---------------------------------------------------------------------------------------------------------------
# Results and the two entry points.


@dataclass(frozen=True)
class SegmentationResult:
    """A label map over the input image and what produced it. Arrays are host NumPy."""

    labels: np.ndarray  # [H, W] uint8 indices into class_names (`label_dtype`); IGNORE_INDEX (255) where unseen
    class_names: tuple[str, ...]  # background first when `background`
    background: bool
    probabilities: np.ndarray  # [K] image-level softmax over the foreground classes (slide: mean over windows)
    group_maps: tuple[np.ndarray, ...] = ()  # per grouping stage [S, gh, gw] soft maps (empty in slide mode)
    group_scores: np.ndarray | None = None  # [S, K] final groups' class scores (original method, whole mode)
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # (top, left, bottom, right) of the input the maps cover
    method: str = "original"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def foreground(self) -> tuple[str, ...]:
        return self.class_names[1:] if self.background else self.class_names

    def fractions(self) -> dict[str, float]:
        """Share of the image's pixels given to each class present, largest first."""
        n, flat, step = max(256, len(self.class_names)), self.labels.reshape(-1), 1 << 22
        counts = np.zeros(n, dtype=np.int64)
        for start in range(0, flat.size, step):  # bincount widens to int64: a block at a time, not the whole map
            counts += np.bincount(flat[start : start + step], minlength=n)[:n]
        counts, total = counts[: len(self.class_names)], self.labels.size
        order = np.argsort(-counts, kind="stable")
        return {self.class_names[k]: float(counts[k] / total) for k in order if counts[k]}

    def group_labels(self, stage: int = -1, size: tuple[int, int] | None = None) -> np.ndarray:
        """Each pixel's argmax group at a stage, soft maps resized bilinearly first.  # -> [H, W] (or `size`) uint8

        `size` draws the map at another (display) size of the whole input; pixels outside `box` are IGNORE_INDEX.
        """
        if not self.group_maps:
            raise ValueError("no group maps: slide mode runs many windows; segment in whole mode to see groups")
        height, width = size or self.labels.shape
        sy, sx = height / self.labels.shape[0], width / self.labels.shape[1]
        top, left = round(self.box[0] * sy), round(self.box[1] * sx)
        bottom, right = round(self.box[2] * sy), round(self.box[3] * sx)
        inner = resize_argmax(self.group_maps[stage], bottom - top, right - left)
        out = np.full((height, width), IGNORE_INDEX, dtype=inner.dtype)
        out[top:bottom, left:right] = inner
        return out


def _label_set(labels: LabelSet | Sequence[str], threshold: float | None) -> LabelSet:
    if isinstance(labels, str):
        raise TypeError("labels must be a list of names (or a LabelSet), not one string")
    ls = labels if isinstance(labels, LabelSet) else custom_labels(list(labels), background=False)
    return ls.with_threshold(threshold) if threshold is not None else ls


def _text(model: Any, ls: LabelSet, templates: Sequence[str], tokenizer: Any, text_embeds: Any) -> Any:
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
    ls = _label_set(labels, threshold)
    text = _text(model, ls, templates, tokenizer, text_embeds)
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
    ls = _label_set(labels, None)
    processor = processor if processor is not None else CLIPImageProcessor()
    text = _text(model, ls, templates, tokenizer, text_embeds)
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
