# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5. Segmentation, end to end
#
# A trained GroupViT has learned, from captions alone, to split an image into a few segments and to embed each
# segment in the same space as text. Zero-shot segmentation is then a matter of naming the segments: compare each
# final segment token with the embedding of every class name, and paint its pixels with the winner. There are two
# ways to do this in circulation, and they give different masks:
#
# * **HF-style**: transformers' `output_segmentation=True`. Soft maps, a weighted sum over all groups, no
#   background class, the logit scale applied twice.
# * **Original-style**: NVlabs' inference (`GroupViTSegInference`). Each pixel takes its argmax group; a group's
#   class scores are gated to the image's top-5 classes; a background threshold.
#
# This notebook runs both on the same pixels, draws the stage-1 and stage-2 groups and the final masks, varies
# the background threshold, and runs at a higher resolution with a resized position table.

# %%
import inspect
from dataclasses import replace

import _common
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from groupvit_np.classify import encode_text
from groupvit_np.datasets import custom_labels
from groupvit_np.heads import (
    grouping_from_attentions,
    normalized_group_embeddings,
    resize_group_maps,
    segmentation_logits,
)
from groupvit_np.resize import resize_position_table
from groupvit_np.scenes import CLASS_NAMES
from groupvit_np.segmentation import group_class_scores, hf_segment, resize_argmax, run_window, segment
from groupvit_np.viz import group_overlay, overlay

_common.figure_style()
model, tokenizer, processor, folder = _common.load(dtype="float32")
vcfg = model.config.vision_config
print(_common.describe(model, folder))

# %% [markdown]
# The scene, its ground-truth mask (the procedural scenes come with one; the model never saw masks), and the
# label set: the 16 "colour shape" classes of the scenes, with "background" first so that all the pictures share
# one palette. The demo checkpoint was trained on captions like "a red circle", so the prompt is "a {}"; other
# weights get CLIP's "a photo of a {}.".

# %%
scene = _common.example_scene(vcfg.image_size)
image = _common.example_image(folder, vcfg.image_size)  # [H, W, 3]; the same scene (the demo ships it)
labels = custom_labels(["background", *CLASS_NAMES])
templates = ("a {}",) if _common.is_demo(folder) else ("a photo of a {}.",)
text = encode_text(model, labels.foreground, templates, tokenizer)  # [K, P], unit rows
pixels = processor(image)["pixel_values"]  # [1, 3, H, W]
H, W = image.shape[:2]


def zoom(a):  # pictures only: small images are enlarged (nearest) to >= 256 px, so the class names fit
    f = 1 if a.shape[0] >= 200 else -(-256 // a.shape[0])
    return np.repeat(np.repeat(a, f, axis=0), f, axis=1)


def draw_labels(img, lab):  # class colours and names over the image (groupvit_np.viz, the original's style)
    return overlay(zoom(img), zoom(lab), labels.palette, labels.class_names, background=True)


def draw_groups(img, groups, stage):  # each pixel's argmax group in its own colour
    return group_overlay(zoom(img), zoom(groups), stage)


def show(ax, picture, title):
    ax.imshow(np.asarray(picture))
    ax.set_title(title, fontsize=9)
    ax.axis("off")


truth = draw_labels(image, scene.mask)
print("caption:", scene.caption, "  text embeddings:", tuple(text.shape))

# %% [markdown]
# ## 1. HF-style, taken apart
#
# `GroupViTModel(..., output_segmentation=True)` returns `segmentation_logits` `[B, T, H, W]`, one map per text
# passed in. It is built from three pieces:
#
# 1. each final segment token through the *image* projection head and normalised, `[B, S, P]`;
# 2. the pixel-to-segment map: the product of the two soft assignment matrices, `att0^T att1^T` `[B, N, S]`,
#    reshaped to the token grid and resized bilinearly to pixels;
# 3. `seg[t, pixel] = s * sum_g (s cos(group_g, text_t)) * map_g(pixel)`: the scale `s` twice.

# %%
print(inspect.getsource(segmentation_logits))

# %%
prompts = tokenizer([templates[0].format(name) for name in labels.foreground], padding=True, return_tensors="np")
out = model(**prompts, pixel_values=pixels, output_segmentation=True)
vis = out.vision_model_output
groups = normalized_group_embeddings(vis.last_hidden_state, model.params["visual_projection"])  # [1, S, P]
token_maps = grouping_from_attentions(vis.attentions)  # [1, N, S]: pixel token -> final segment
maps = resize_group_maps(np.swapaxes(token_maps, 1, 2), H, W)  # [1, S, H, W]
s = np.exp(model.params["logit_scale"])
cos = groups[0] @ out.text_embeds.T  # [S, K]
seg = s * np.einsum("sk,shw->khw", s * cos, maps[0])  # [K, H, W]
gap = float(np.abs(seg - out.segmentation_logits[0]).max() / np.abs(seg).max())
print("segmentation_logits", out.segmentation_logits.shape, " max |by hand - model| / max |seg|:", gap)
print("each pixel's segment weights sum to 1:", float(np.abs(maps[0].sum(0) - 1).max()) < 1e-5)

# %% [markdown]
# The final segments as soft maps, each titled with the class its token is closest to. A pixel's logit for a
# class is a weighted sum over *all* segments, so a segment that covers a pixel only weakly still votes there.

# %%
S = maps.shape[1]
fig, axes = plt.subplots(1, S, figsize=(1.6 * S + 1.0, 2.4), layout="constrained")
for g, ax in enumerate(np.atleast_1d(axes)):
    im = ax.imshow(maps[0, g], cmap="magma", vmin=0, vmax=maps.max())
    best = int(np.argmax(cos[g]))
    ax.set_title(f"segment {g}\n{labels.foreground[best]}\ncos {cos[g, best]:.2f}", fontsize=8)
    ax.axis("off")
fig.suptitle("soft pixel -> segment maps (att0^T att1^T, resized), each with its nearest class")
fig.colorbar(im, ax=axes, shrink=0.8)
plt.show()

# %% [markdown]
# The library's `hf_segment` wraps exactly this (with prompt ensembling and the processor's crop) and returns
# a label map: the argmax over classes. It also keeps the stage maps, to draw each pixel's argmax group at
# stage 1 and stage 2. HF's maps have no background, so every pixel gets some class.

# %%
hf = hf_segment(model, image, labels, templates=templates, tokenizer=tokenizer, processor=processor)
hf_picture = draw_labels(image, hf.labels)
fig, axes = plt.subplots(1, 5, figsize=(13, 3.0))
show(axes[0], image, "image")
for stage in range(2):
    n = hf.group_maps[stage].shape[0]
    show(axes[1 + stage], draw_groups(image, hf.group_labels(stage), stage), f"stage {stage + 1}: {n} groups")
show(axes[3], hf_picture, "HF-style labels")
show(axes[4], truth, "ground truth")
plt.show()

# %% [markdown]
# ## 2. Original-style
#
# NVlabs' inference scores the same final segments differently:
#
# * every pixel takes its **argmax** segment (the soft maps only decide the winner);
# * a segment's class scores are `softmax(s cos)` times the same softmax restricted to the image's **top-5**
#   classes (from the pooled image embedding), so at most five classes can appear in an image;
# * a pixel is **background** when its best score is below `min(threshold, best score anywhere)`, so the
#   image's most confident segment always keeps its class.

# %%
print(inspect.getsource(group_class_scores))

# %% [markdown]
# `run_window` is that inference for one window of pixels; we give it the same pixels as the HF-style run. The
# score matrix `[S, K]` shows which classes each segment can win:

# %%
logits, probs, extras = run_window(model, pixels, text, background=True, threshold=labels.threshold)
scores = np.asarray(extras["group_scores"])  # [S, K]
top = np.argsort(-np.asarray(probs))[:5]
fig, ax = plt.subplots(figsize=(9, 0.35 * S + 1.6))
im = ax.imshow(scores, cmap="Greens", vmin=0)
ax.set_xticks(range(len(labels.foreground)), labels.foreground, rotation=60, ha="right", fontsize=8)
for k in top:
    ax.get_xticklabels()[k].set_color("#d62728")
ax.set_yticks(range(S), [f"segment {g}" for g in range(S)])
ax.set_title("group scores pre * post (red classes: the image's top 5)")
fig.colorbar(im)
plt.show()

# %%
original = resize_argmax(logits, H, W)  # [H, W], 0 = background
fig, axes = plt.subplots(1, 3, figsize=(8, 3.0))
show(axes[0], hf_picture, "HF-style")
show(axes[1], draw_labels(image, original),
     f"original-style (threshold {labels.threshold})")  # fmt: skip
show(axes[2], truth, "ground truth")
plt.show()


def iou_report(pred, name):
    present = [k for k in np.unique(scene.mask) if k != 0]
    ious = [np.sum((pred == k) & (scene.mask == k)) / np.sum((pred == k) | (scene.mask == k)) for k in present]
    per = ", ".join(f"{labels.class_names[k]} {v:.2f}" for k, v in zip(present, ious, strict=True))
    print(f"{name:>15}: IoU with the true objects: {per}; pixel accuracy {np.mean(pred == scene.mask):.2f}")


if image.shape[:2] == scene.mask.shape:
    iou_report(hf.labels, "HF-style")
    iou_report(original, "original-style")

# %% [markdown]
# ## 3. The background threshold
#
# The threshold trades background for foreground: at 0 nothing is background (every pixel keeps its segment's
# class); as it rises, less confident segments fall to background. The cut-off is `min(threshold, best score)`,
# so the image's most confident segment keeps its class, on the pixels it wins (if it wins any). The original
# uses 0.95 for PASCAL VOC and COCO and 0.35 for PASCAL Context.

# %%
thresholds = [0.0, 0.2, 0.4, 0.6, 0.95]
fig, axes = plt.subplots(1, len(thresholds), figsize=(2.6 * len(thresholds), 2.8))
for ax, thr in zip(axes, thresholds, strict=True):
    lab = resize_argmax(run_window(model, pixels, text, background=True, threshold=thr)[0], H, W)
    show(ax, draw_labels(image, lab),
         f"threshold {thr}: {np.mean(lab == 0):.0%} background")  # fmt: skip
plt.show()
print("best segment score:", float(scores.max()))

# %% [markdown]
# ## 4. Higher resolution
#
# The position table is learned for one grid (`image_size / patch_size` tokens a side). HF's
# `interpolate_pos_encoding` resizes it bicubically (PyTorch's kernel, `align_corners=False`) to any other grid,
# so the model can take larger images: four times the tokens at twice the size, while the number of groups
# stays the same. The original evaluates this way (images resized to a short side of 448 for a model trained at
# 224). One channel of the table at the native and the doubled grid:

# %%
table = model.params["vision_model"]["embeddings"]["position_embeddings"]  # [1, N, D]
g = vcfg.image_size // vcfg.patch_size
big = resize_position_table(table, 2 * g, 2 * g)  # [1, 4N, D]
channel = int(np.argmax(np.asarray(table[0]).std(axis=0)))  # the channel that varies most
fig, axes = plt.subplots(1, 2, figsize=(5.5, 2.6))
for ax, tab, n in [(axes[0], table, g), (axes[1], big, 2 * g)]:
    ax.imshow(np.asarray(tab[0, :, channel]).reshape(n, n), cmap="RdBu_r")
    ax.set_title(f"{n}x{n} grid, channel {channel}")
    ax.axis("off")
plt.show()

# %% [markdown]
# The same scene at twice the size (upsampled, so the content is identical), through HF-style segmentation with
# `interpolate_pos_encoding=True` (the library's `hf_segment` and `segment` always pass it):

# %%
image2 = np.asarray(Image.fromarray(image).resize((2 * W, 2 * H), Image.Resampling.BICUBIC))
processor2 = replace(processor, size={"shortest_edge": 2 * H}, crop_size={"height": 2 * H, "width": 2 * W})
hf2 = hf_segment(model, image2, labels, templates=templates, tokenizer=tokenizer, processor=processor2)
print("tokens:", hf.group_maps[0].shape[1:], "->", hf2.group_maps[0].shape[1:], "  groups per stage:",
      [m.shape[0] for m in hf2.group_maps])  # fmt: skip
fig, axes = plt.subplots(1, 4, figsize=(10.5, 2.9))
show(axes[0], draw_groups(image, hf.group_labels(1), 1), f"{H} px: final groups")
show(axes[1], hf_picture, f"{H} px: labels")
show(axes[2], draw_groups(image2, hf2.group_labels(1), 1), f"{2 * H} px: final groups")
show(axes[3], draw_labels(image2, hf2.labels), f"{2 * H} px: labels")
plt.show()

# %% [markdown]
# ## 5. In one call
#
# `segment` is the complete original pipeline: mmseg's preprocessing (resize to a short side, ImageNet mean and
# std), `whole` (one window) or `slide` (overlapping windows, the paper's evaluation) inference, the background
# rule, and the scores resized back to the input. `hf_segment` is the HF-style counterpart. Both return a
# `SegmentationResult`; `groupvit_np.viz` draws it (here at the model's native size).

# %%
result = segment(model, image, labels, templates=templates, tokenizer=tokenizer, short_side=H)
print(result.fractions())
fig, ax = plt.subplots(figsize=(2.6, 2.6))
show(ax, draw_labels(image, result.labels), "segment(...)")
plt.show()

# %% [markdown]
# **Summary.** Both methods read the same model outputs: final segment tokens projected into the text space and
# the product of the soft assignment maps. HF-style blends all segments softly and has no background;
# original-style hands each pixel to one segment, restricts the classes to the image's top five and thresholds
# the weak ones to background. Larger inputs work through a bicubically resized position table. Notebook 6
# checks all of these outputs against transformers itself.
