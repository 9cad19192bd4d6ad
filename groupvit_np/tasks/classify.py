"""Zero-shot classification, and the prompt-ensembled class embeddings that segmentation shares.

As NVlabs GroupViT (`MultiLabelContrastive.build_text_embedding`, `zero_shot_pred`): every class name goes into
every template, the *unnormalised* projected text features are averaged over templates, then L2-normalised once;
the image is compared with the normalised pooled image embedding. Shape legend: K classes, T templates, P projection
dim.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..backend import namespace, to_namespace, to_numpy
from ..nn.functional import vision_model
from ..nn.heads import projection_head
from ..nn.ops import l2_normalize, softmax
from ..preprocessing.image import to_rgb_array
from .datasets import CLASSIFICATION_TEMPLATES

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # timm's defaults, which the original's eval transform uses
IMAGENET_STD = (0.229, 0.224, 0.225)


def classification_pixels(image: Any, size: int = 224) -> np.ndarray:
    """The original's eval transform: Resize(256/224*size) bilinear, CenterCrop(size), ImageNet mean/std.

    torchvision semantics: the short side becomes int(256/224*size), the long side int(short' * long / short);
    PIL's bilinear (antialiased) resize; the crop's top is round((h - size) / 2) (half to even).  # -> [1, 3, s, s]
    """
    rgb = to_rgb_array(image)  # [H, W, 3] uint8
    h, w = rgb.shape[:2]
    short = int(256 / 224 * size)
    nh, nw = (int(short * h / w), short) if w <= h else (short, int(short * w / h))
    img = Image.fromarray(rgb).resize((nw, nh), Image.Resampling.BILINEAR)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    x = np.asarray(img, dtype=np.float32)[top : top + size, left : left + size] / np.float32(255)
    x = (x - np.asarray(IMAGENET_MEAN, dtype=np.float32)) / np.asarray(IMAGENET_STD, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])  # [H, W, 3] -> [1, 3, H, W]


class NonFiniteError(ValueError):
    """The model gave NaN or infinite values: broken weights, not something about the input."""


def check_finite(x: Any, what: str) -> None:
    """Raise NonFiniteError unless every value of `x` (any namespace) is finite."""
    xp = namespace(x)
    if not bool(xp.all(xp.isfinite(x))):
        raise NonFiniteError(f"the model's {what} are not finite (NaN or inf): its weights are broken")


def check_template(template: str) -> None:
    """A prompt template holds exactly one "{}", where the class name goes ("{{" and "}}" are literal braces)."""
    try:
        fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
    except ValueError as e:  # a lone "{" or "}"
        raise ValueError(f"template {template!r}: {e} (write {{{{ or }}}} for a literal brace)") from None
    if fields != [("", "", None)]:
        raise ValueError(f"template {template!r} must hold exactly one '{{}}' where the class name goes, and no "
                         "other {...} field")  # fmt: skip


def default_tokenizer() -> Any:
    """The shipped CLIP tokenizer (read on first use, never at import)."""
    from ..preprocessing.tokenizer import CLIPTokenizer

    return CLIPTokenizer.from_pretrained()


def encode_text(
    model: Any, names: Sequence[str], templates: Sequence[str], tokenizer: Any = None, batch_size: int = 256
) -> Any:
    """Prompt-ensembled class embeddings.  # K names x T templates -> [K, P], unit rows, in the model's namespace"""
    names, templates = list(names), list(templates)
    if not names:
        raise ValueError("no class names given")
    if not templates:
        raise ValueError("no prompt templates given")
    for t in templates:
        check_template(t)
    tokenizer = tokenizer if tokenizer is not None else default_tokenizer()
    prompts = [t.format(name) for name in names for t in templates]  # class-major: row k*T + t
    chunks = []
    for start in range(0, len(prompts), batch_size):  # bounded memory for long lists (ImageNet: 7000 prompts)
        enc = tokenizer(prompts[start : start + batch_size], padding=True, truncation=True, return_tensors="np")
        chunks.append(model.get_text_features(enc["input_ids"], enc["attention_mask"]))  # [chunk, P]
    xp = namespace(*chunks)
    feats = xp.concat(chunks, axis=0)  # [K*T, P], unnormalised
    check_finite(feats, "text features")
    feats = xp.reshape(feats, (len(names), len(templates), feats.shape[-1]))  # [K, T, P]
    return l2_normalize(xp.mean(feats, axis=1))  # average first, normalise once: [K, P]


def logit_scale(model: Any) -> Any:
    """s = min(exp(logit_scale), 100): the original clamps the learned temperature at 100."""
    xp = model.xp
    return xp.clip(xp.exp(model.params["logit_scale"]), max=100.0)


def image_embedding(model: Any, pixels: np.ndarray) -> Any:
    """Pooled, projected, normalised image embedding.  # [1, 3, H, W] host -> [1, P] in the model's namespace"""
    x = to_namespace(pixels, model.xp, dtype=model.dtype, device=model.device)
    vis = model.run(vision_model, pixel_values=x, static={"interpolate_pos_encoding": True})  # compiled on JAX
    return l2_normalize(projection_head(vis["pooler_output"], model.params["visual_projection"]))


def classify(
    model: Any,
    image: Any,
    labels: Sequence[str],
    templates: Sequence[str] = CLASSIFICATION_TEMPLATES,
    tokenizer: Any = None,
    text_embeds: Any = None,
) -> list[tuple[str, float]]:
    """Zero-shot classification: softmax_k(s * cos(image, class_k)), sorted, most likely first.

    `labels` are class names; `templates` default to CLIP's 7-prompt ensemble (pass ("{}",) for raw names);
    `text_embeds` [K, P] from `encode_text` skips re-encoding the labels for every image.
    """
    labels = list(labels)
    if text_embeds is None:
        text_embeds = encode_text(model, labels, templates, tokenizer)
    if text_embeds.shape[0] != len(labels):
        raise ValueError(f"{len(labels)} labels but {text_embeds.shape[0]} text embeddings")
    xp = model.xp
    text_embeds = to_namespace(text_embeds, xp, dtype=model.dtype, device=model.device)
    pixels = classification_pixels(image, model.config.vision_config.image_size)
    img = image_embedding(model, pixels)  # [1, P]
    probs = softmax((img @ xp.matrix_transpose(text_embeds)) * logit_scale(model))[0, ...]  # [K]
    check_finite(probs, "class probabilities")
    probs = to_numpy(probs).astype(np.float64)
    order = sorted(range(len(probs)), key=lambda i: -probs[i])  # stable: ties keep the labels' order
    return [(labels[i], float(probs[i])) for i in order]
