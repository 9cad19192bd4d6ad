"""Original GroupViT segmentation against straightforward re-computations written here, and the HF-style path.

The model under test is the shipped tiny random checkpoint in float64 with its assignment logits sharpened
(q and k projections x24), so that the final 8 groups really split the image; with the raw random weights one
group takes every pixel and the per-pixel logic would go untested. float64 keeps argmax ties out of the comparison.
"""

from __future__ import annotations

import numpy as np
import pytest
from parity import assert_close
from PIL import Image

from groupvit_np import GroupViTModel, GroupViTVisionModel
from groupvit_np._resources import data_dir
from groupvit_np.preprocessing.tokenizer import CLIPTokenizer
from groupvit_np.tasks.classify import encode_text
from groupvit_np.tasks.datasets import IGNORE_INDEX, dataset_labels
from groupvit_np.tasks.scenes import make_scene
from groupvit_np.tasks.segmentation import segment
from groupvit_np.tasks.segmentation_hf import hf_segment
from groupvit_np.tasks.segmentation_input import rescale_size, resize_linear, segmentation_pixels, sliding_windows

SHARPEN = 24.0


def sharpened(model: GroupViTModel) -> GroupViTModel:
    for stage in model.params["vision_model"]["encoder"]["stages"][:2]:
        for name in ("q_proj", "k_proj"):
            p = stage["downsample"]["assign"][name]
            p["weight"] = p["weight"] * SHARPEN
    return model


@pytest.fixture(scope="module")
def model():
    path = data_dir("weights") / "groupvit-tiny-random"
    return sharpened(GroupViTModel.from_pretrained(path, dtype="float64"))


@pytest.fixture(scope="module")
def tokenizer():
    return CLIPTokenizer.from_pretrained()


def scene(height: int, width: int, seed: int = 3) -> np.ndarray:
    """A procedural scene (coloured shapes on stripes) resized to an odd size."""
    s = make_scene(seed, size=256, objects=(3, 3), radius=(30, 60))
    return np.asarray(Image.fromarray(s.image).resize((width, height), Image.Resampling.BICUBIC))


# ---------------------------------------------------------------------------------------------------------------
# The independent re-computation: mmseg's pipeline as loops over plain NumPy. The network itself is the public
# `GroupViTVisionModel` forward (checked against transformers in test_model.py); everything the original adds on top
# (resize rule, normalisation, projection head, map products, bilinear resizes, top-5 gate, background rule,
# sliding windows) is written here and shares no helper with the package.

MEAN_255 = np.array([123.675, 116.28, 103.53])  # mmseg's img_norm_cfg (ImageNet statistics on the 0-255 scale)
STD_255 = np.array([58.395, 57.12, 57.375])


def bilinear_weights(out: int, inp: int) -> np.ndarray:
    """torch/cv2 bilinear, align_corners=False, one output sample at a time (scale = in/out first, as they do)."""
    w = np.zeros((out, inp))
    for o in range(out):
        src = max((o + 0.5) * (inp / out) - 0.5, 0.0)
        i0 = int(np.floor(src))
        i1 = min(i0 + 1, inp - 1)
        w[o, i0] += 1 - (src - i0)
        w[o, i1] += src - i0
    return w


def resize(x: np.ndarray, height: int, width: int) -> np.ndarray:  # [C, h, w] -> [C, H, W]
    rows, cols = bilinear_weights(height, x.shape[1]), bilinear_weights(width, x.shape[2])
    return np.stack([rows @ channel @ cols.T for channel in x])


def reference_pixels(rgb: np.ndarray, nudge: float = 0.0) -> np.ndarray:
    """mmseg's test pipeline: Resize(2048, 448) keeping the ratio, cv2 bilinear rounded half up, Normalize.

    mmcv's rescale: the largest scale with long side <= 2048 and short side <= 448, sizes rounded half up; mmcv
    normalises by multiplying with 1/std.  # [H, W, 3] uint8 -> [1, 3, h, w] float32
    `nudge` (+-1e-9) moves values that lie within it of a half grey level to one side of the tie.
    """
    h, w = rgb.shape[:2]
    scale = min(2048 / max(h, w), 448 / min(h, w))
    x = resize(rgb.transpose(2, 0, 1).astype(np.float64), int(h * scale + 0.5), int(w * scale + 0.5))
    grey = np.floor(x + 0.5 + nudge)
    x = (grey - MEAN_255[:, None, None]) * (1 / STD_255[:, None, None])
    return x.astype(np.float32)[None]


def reference_head(x: np.ndarray, p: list) -> np.ndarray:
    """HF's projection: Linear, BatchNorm1d (eval, eps 1e-5), ReLU, Linear.  # [..., D] -> [..., P]"""
    h = x @ p[0]["weight"].T + p[0]["bias"]
    bn = p[1]
    h = (h - bn["running_mean"]) / np.sqrt(bn["running_var"] + 1e-5) * bn["weight"] + bn["bias"]
    return np.maximum(h, 0) @ p[3]["weight"].T + p[3]["bias"]


def network(model, pixels):
    """The vision network on one window, through the public tower model.  # -> [S, D], [D], [[64, N], [8, 64]]"""
    tower = GroupViTVisionModel(model.config.vision_config, {"vision_model": model.params["vision_model"]}, model.xp)
    out = tower(pixels, output_attentions=True, interpolate_pos_encoding=True)
    return out.last_hidden_state[0], out.pooler_output[0], [a[0] for a in out.attentions]


def softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max())
    return e / e.sum()


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def reference_window(model, pixels, text, background, threshold, top_k=5):
    """GroupViTSegInference.encode_decode for one window.  # [1, 3, h, w] -> [C, h, w]"""
    h, w = pixels.shape[-2:]
    gh, gw = h // 16, w // 16
    last, pooled, (a1, a2) = network(model, pixels[:, :, : gh * 16, : gw * 16])  # a1 [64, N], a2 [8, 64]
    n_groups = a2.shape[0]
    pixel_group = np.zeros((n_groups, gh * gw))
    for g in range(n_groups):  # soft map of final group g over tokens: sum over stage-1 groups j of A1[j] A2[g, j]
        for j in range(a1.shape[0]):
            pixel_group[g] += a2[g, j] * a1[j]
    maps = resize(pixel_group.reshape(n_groups, gh, gw), h, w)  # [8, h, w]
    head = model.params["visual_projection"]
    groups, image = unit(reference_head(last, head)), unit(reference_head(pooled, head))  # [8, P], [P]
    s = min(float(np.exp(model.params["logit_scale"])), 100.0)
    k = text.shape[0]
    image_probs = softmax(s * (text @ image))
    top = sorted(range(k), key=lambda c: -image_probs[c])[: min(top_k, k)]  # ties: the lower index, as torch
    scores = np.zeros((n_groups, k))
    for g in range(n_groups):
        logits = s * (text @ groups[g])
        pre = softmax(logits)
        post = np.zeros(k)
        post[top] = softmax(logits[top])
        scores[g] = post * pre
    out = np.zeros((k + 1 if background else k, h, w))
    best = np.argmax(maps, axis=0)  # [h, w]: each pixel's group (first on ties, as torch)
    for g in range(n_groups):  # every pixel of group g takes g's scores
        where = best == g
        out[-k:, where] = scores[g][:, None]
        if background and scores[g].max() < min(threshold, scores.max()):
            out[0, where] = 1.0
    return out, top


def reference_segment(model, image, text, background, threshold, mode, top_k=5):
    """Labels [H, W] and, in whole mode, the image-level top classes the gate kept."""
    pixels = reference_pixels(image)
    height, width = image.shape[:2]
    h, w = pixels.shape[-2:]
    top = None
    if mode == "whole":
        logits, top = reference_window(model, pixels, text, background, threshold, top_k)
    else:
        logits, count = None, np.zeros((h, w))
        rows, cols = max(h - 448 + 223, 0) // 224 + 1, max(w - 448 + 223, 0) // 224 + 1
        for r in range(rows):
            for c in range(cols):
                y2, x2 = min(r * 224 + 448, h), min(c * 224 + 448, w)
                y1, x1 = max(y2 - 448, 0), max(x2 - 448, 0)
                part = reference_window(model, pixels[:, :, y1:y2, x1:x2], text, background, threshold, top_k)[0]
                logits = np.zeros((part.shape[0], h, w)) if logits is None else logits
                logits[:, y1:y2, x1:x2] += part
                count[y1:y2, x1:x2] += 1
        logits = logits / count
    return np.argmax(resize(logits, height, width), axis=0), top


NAMES = ["red circle", "blue square", "green star", "grey stripes", "cat", "sky", "yellow triangle", "dog", "tree",
         "car", "boat", "house", "person", "bird", "road", "water"]  # fmt: skip
CASES = [  # (mode, background, number of labels, threshold): every branch of the scoring at least once
    ("whole", False, 16, 0.6),  # the top-5 gate bites: without it a class outside the image's top 5 wins pixels
    ("whole", True, 16, 0.05),  # the gate and the background rule together (about 3/4 background)
    ("slide", False, 16, 0.6),  # each window gates its own top 5: 5 classes here, 6 without the gates
    ("slide", True, 16, 0.05),
    ("whole", True, 3, 0.3),  # fewer than 5 labels: the gate keeps all; two classes and 30% background
    ("slide", True, 3, 0.25),
    ("whole", False, 3, 0.6),
    ("whole", True, 1, 0.6),  # one class: every group scores 1 = the max score, so nothing is background
]


def test_preprocessing_matches_independent_recomputation():
    for image in (scene(333, 517), scene(150, 230), scene(310, 470, seed=5)):
        pixels, size = segmentation_pixels(image)
        assert size == image.shape[:2]
        # Same weights and the same rounding rule. A value exactly half-way between two grey levels rounds up or
        # down depending on the float64 summation order (the library blends gathered neighbours, the reference
        # multiplies dense matrices), so at such ties either neighbour is right; everywhere else, exactly equal.
        up, down = reference_pixels(image, 1e-9), reference_pixels(image, -1e-9)
        assert ((pixels == up) | (pixels == down)).all()
        assert (up != down).mean() < 1e-4  # ties are rare: a few pixels per image


@pytest.mark.parametrize("mode,background,k,threshold", CASES)
def test_matches_independent_recomputation(model, tokenizer, mode, background, k, threshold):
    image = scene(333, 517)
    names = (["background"] if background else []) + NAMES[:k]
    text = encode_text(model, NAMES[:k], ["a photo of a {}."], tokenizer)
    result = segment(model, image, names, mode=mode, threshold=threshold, text_embeds=text)
    expected, top = reference_segment(model, image, np.asarray(text), background, threshold, mode)
    assert result.labels.shape == (333, 517)
    assert result.class_names == tuple(names)
    # float64 on both sides, only summation order differs: the label maps are identical.
    np.testing.assert_array_equal(result.labels, expected)
    fg = result.labels[result.labels > 0] - 1 if background else result.labels.ravel()
    classes = set(np.unique(fg).tolist())
    if background:  # real scores: both background and foreground cover a real part of the image
        assert 0.05 < (result.labels == 0).mean() < 0.95 or k == 1
    if k == 1:
        assert (result.labels == 1).all()
    if mode == "whole" and k > 5:
        assert classes <= set(top) and len(top) == 5  # only the image's top 5 classes win pixels
    if k > 5:  # the gate bites: without it a tenth or more of the pixels change
        ungated, _ = reference_segment(model, image, np.asarray(text), background, threshold, mode, top_k=k)
        assert (ungated != expected).mean() > 0.1
        np.testing.assert_array_equal(
            segment(model, image, names, mode=mode, threshold=threshold, text_embeds=text, top_k=k).labels, ungated
        )


def test_whole_mode_groups_split_the_image(model, tokenizer):
    result = segment(model, scene(333, 517), ["background", *NAMES[:4]], threshold=0.6, tokenizer=tokenizer)
    assert [m.shape for m in result.group_maps] == [(64, 28, 43), (8, 28, 43)]  # 448 x 696 -> 28 x 43 tokens
    # soft maps: each token's cumulative assignment over the groups of a stage sums to 1
    for m in result.group_maps:
        assert_close(m.sum(axis=0), 1.0, atol=1e-12)  # float64 sums of softmax products
    stage2 = result.group_labels(1)
    assert stage2.shape == (333, 517) and len(np.unique(stage2)) >= 3
    assert len(np.unique(result.labels)) >= 2  # background and at least one class
    assert result.group_scores.shape == (8, 4)
    assert_close(result.probabilities.sum(), 1.0, atol=1e-12)


def test_slide_mode_has_no_group_maps(model, tokenizer):
    result = segment(model, scene(333, 517), NAMES[:3], mode="slide", tokenizer=tokenizer)
    assert result.group_maps == ()
    with pytest.raises(ValueError, match="whole mode"):
        result.group_labels(0)


def test_dataset_label_set_uses_its_threshold(model, tokenizer):
    voc = dataset_labels("voc")
    result = segment(model, scene(120, 160), voc, tokenizer=tokenizer)
    assert result.class_names == voc.class_names and result.meta["threshold"] == 0.95
    assert result.labels.max() <= 20


def test_thin_image_is_handled_and_thinner_rejected(model, tokenizer):
    text = encode_text(model, NAMES[:2], ["a photo of a {}."], tokenizer)
    rgb = np.full((17, 2000, 3), 128, dtype=np.uint8)
    rgb[:, 1000:] = (200, 30, 30)
    for mode in ("whole", "slide"):
        result = segment(model, rgb, NAMES[:2], mode=mode, text_embeds=text)
        assert result.labels.shape == (17, 2000)  # long side capped at 2048: 17 x 2048, one row of 128 tokens
        assert result.meta["resized"] == (17, 2048)
    with pytest.raises(ValueError, match="smaller than one 16-pixel patch"):
        segment(model, rgb[:5], NAMES[:2], text_embeds=text)  # 5 x 2048 after resizing: no token row


def test_rejects_bad_arguments(model, tokenizer):
    with pytest.raises(ValueError, match="mode"):
        segment(model, scene(64, 64), NAMES[:2], mode="tiles", tokenizer=tokenizer)
    with pytest.raises(TypeError, match="list of names"):
        segment(model, scene(64, 64), "cat,dog", tokenizer=tokenizer)


# ---------------------------------------------------------------------------------------------------------------
# Preprocessing and windows.


def test_rescale_size_is_mmcv_rule():
    assert rescale_size(333, 517) == (448, 696)  # 517 * 448/333 = 695.5 -> rounds half up to 696
    assert rescale_size(500, 375) == (597, 448)
    assert rescale_size(17, 2000) == (17, 2048)  # the long side limits the scale
    assert rescale_size(448, 448) == (448, 448)


def test_resize_linear_matches_loop_bilinear():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for h, w in ((80, 111), (20, 31)):  # up and down: cv2's INTER_LINEAR never antialiases
        expected = np.stack([resize(rgb[..., c][None].astype(np.float64), h, w)[0] for c in range(3)], axis=-1)
        expected = np.floor(expected + 0.5)
        got = resize_linear(rgb, h, w).astype(np.float64)
        # same weights, different summation order: a value within 1e-12 of .5 could round either way
        assert np.abs(got - expected).max() <= 1 and (got == expected).mean() > 0.999


def test_segmentation_pixels_are_imagenet_normalised():
    rgb = np.zeros((448, 600, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    pixels, size = segmentation_pixels(rgb)
    assert size == (448, 600) and pixels.shape == (1, 3, 448, 600) and pixels.dtype == np.float32
    # (255 - 123.675) / 58.395 and (0 - 116.28) / 57.12 for a pure red image at its native size (no resize)
    np.testing.assert_allclose(pixels[0, :, 0, 0], [2.2489083, -2.0357141, -1.8044444], rtol=1e-6)


def test_sliding_windows_cover_like_mmseg():
    assert sliding_windows(448, 597) == [(0, 448, 0, 448), (0, 448, 149, 597)]
    assert sliding_windows(448, 448) == [(0, 448, 0, 448)]
    assert sliding_windows(17, 700) == [(0, 17, 0, 448), (0, 17, 224, 672), (0, 17, 252, 700)]
    wins = sliding_windows(600, 900)
    cover = np.zeros((600, 900), dtype=int)
    for y1, y2, x1, x2 in wins:
        assert y2 - y1 == 448 and x2 - x1 == 448
        cover[y1:y2, x1:x2] += 1
    assert cover.min() >= 1


# ---------------------------------------------------------------------------------------------------------------
# HF-style maps.


def test_hf_segment_is_argmax_of_hf_segmentation_logits(model, tokenizer):
    image = scene(224, 224)  # at 224 the processor's crop is the whole image and no resize happens
    from groupvit_np.preprocessing.image_processor import CLIPImageProcessor

    names = NAMES[:4]
    enc = tokenizer([f"a photo of a {n}." for n in names], padding=True, return_tensors="np")
    pixels = CLIPImageProcessor()(image)["pixel_values"]
    out = model(enc["input_ids"], pixels, enc["attention_mask"], output_segmentation=True)
    result = hf_segment(model, image, names, tokenizer=tokenizer)
    np.testing.assert_array_equal(result.labels, np.argmax(out.segmentation_logits[0], axis=0))
    assert result.box == (0, 0, 224, 224) and result.method == "hf"


def test_hf_segment_background_is_a_threshold_on_the_weighted_cosine(model, tokenizer):
    image = scene(224, 224)  # the crop is the whole image: labels are the logits' argmax, no resize
    from groupvit_np.preprocessing.image_processor import CLIPImageProcessor

    names = NAMES[:4]
    enc = tokenizer([f"a photo of a {n}." for n in names], padding=True, return_tensors="np")
    out = model(enc["input_ids"], CLIPImageProcessor()(image)["pixel_values"], enc["attention_mask"],
                output_segmentation=True)  # fmt: skip
    cosine = out.segmentation_logits[0] / np.exp(model.params["logit_scale"]) ** 2  # [K, H, W], in [-1, 1]
    best = cosine.max(0)
    values = np.unique(best)
    i = int(0.4 * len(values))
    threshold = float(values[i - 1] + values[i]) / 2  # a cut that splits the image, halfway between two pixels
    expected = np.where(best < threshold, 0, cosine.argmax(0) + 1)
    assert 0.3 < (expected == 0).mean() < 0.5
    result = hf_segment(model, image, ["background", *names], tokenizer=tokenizer, threshold=threshold)
    np.testing.assert_array_equal(result.labels, expected)
    assert result.meta["threshold"] == threshold
    never = hf_segment(model, image, ["background", *names], tokenizer=tokenizer)  # no threshold: HF's rule
    np.testing.assert_array_equal(never.labels, cosine.argmax(0) + 1)


def test_segmentation_pixels_take_the_checkpoints_statistics():
    rgb = np.full((448, 448, 3), 255, dtype=np.uint8)
    clip_mean, clip_std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    pixels, _ = segmentation_pixels(rgb, mean=clip_mean, std=clip_std)
    # (1 - mean) / std for a white image, as CLIP's processor normalises
    np.testing.assert_allclose(
        pixels[0, :, 0, 0], [(1 - m) / s for m, s in zip(clip_mean, clip_std, strict=True)], rtol=1e-6
    )


def test_hf_segment_maps_the_centre_crop_back(model, tokenizer):
    result = hf_segment(model, scene(333, 517), dataset_labels("voc"), tokenizer=tokenizer)
    # 333 x 517 -> 224 x 347 (HF truncates), crop left (347 - 224) // 2 = 61 -> 61 * 517/347 = 90.9 in the input
    assert result.box == (0, 91, 333, 425)
    assert (result.labels[:, :91] == IGNORE_INDEX).all() and (result.labels[:, 425:] == IGNORE_INDEX).all()
    inside = result.labels[:, 91:425]
    assert inside.min() >= 1 and inside.max() <= 20  # background keeps index 0 but HF never predicts it
    assert result.group_labels(1).shape == (333, 517)


# ---------------------------------------------------------------------------------------------------------------
# The original code itself, literally, in torch (F.interpolate, topk, scatter, masked_fill, one_hot), on
# transformers' own GroupViT modules with the same sharpened weights: nothing of the package but `segment`.


@pytest.mark.reference
@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_matches_the_original_torch_code(model, tokenizer, mode):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    F = torch.nn.functional
    hf = transformers.GroupViTModel.from_pretrained(data_dir("weights") / "groupvit-tiny-random").double().eval()
    with torch.no_grad():
        for stage in hf.vision_model.encoder.stages[:2]:  # the same sharpening as `sharpened` (x24 is exact)
            stage.downsample.assign.q_proj.weight *= SHARPEN
            stage.downsample.assign.k_proj.weight *= SHARPEN
    image, names = scene(310, 470, seed=5), NAMES[:6]
    text = encode_text(model, names, ["a photo of a {}."], tokenizer)
    text_t = torch.from_numpy(np.asarray(text))

    def encode_decode(img):  # GroupViTSegInference.encode_decode, with_bg=True, bg_thresh=0.6
        h, w = img.shape[-2:]
        vm = hf.vision_model  # its forward has no interpolate_pos_encoding: the same steps, spelled out
        x = vm.embeddings(img[:, :, : h // 16 * 16, : w // 16 * 16], interpolate_pos_encoding=True)
        enc = vm.encoder(hidden_states=x, output_attentions=True, return_dict=True)
        last = vm.layernorm(enc.last_hidden_state)
        prev = None
        for att in enc.attentions:
            m = att.transpose(1, 2)  # [B, N, G]
            prev = m if prev is None else prev @ m
        n = prev.shape[1]
        scale = (h * w // n) ** 0.5  # resize_attn_map's grid recovery
        fh = h // int(np.round(scale)) if h <= w else n // (w // int(np.round(scale)))
        attn = F.interpolate(prev.transpose(1, 2).reshape(1, -1, fh, n // fh), size=(h, w), mode="bilinear",
                             align_corners=False)[0].permute(1, 2, 0)  # fmt: skip
        feat = F.normalize(hf.visual_projection(last[0]), dim=-1)
        avg = F.normalize(hf.visual_projection(last.mean(dim=1)), dim=-1)
        onehot = F.one_hot(attn.argmax(dim=-1), num_classes=attn.shape[-1]).to(attn.dtype)
        s = torch.clamp(hf.logit_scale.exp(), max=100)
        gam = (feat @ text_t.T) * s
        pre = F.softmax(gam, dim=-1)
        avg_aff = F.softmax((avg @ text_t.T) * s, dim=-1)
        mask = torch.zeros_like(avg_aff)
        topk = avg_aff.topk(dim=-1, k=min(5, text_t.shape[0]))
        mask.scatter_add_(dim=-1, index=topk.indices, src=torch.ones_like(topk.values))
        gam.masked_fill_(~mask.bool(), float("-inf"))
        gam = F.softmax(gam, dim=-1) * pre
        out = torch.zeros(text_t.shape[0] + 1, h, w, dtype=gam.dtype)
        out[1:] = (onehot @ gam).permute(2, 0, 1)
        thr = min(0.6, gam.max().item())
        out[0, (onehot @ gam).max(dim=-1).values < thr] = 1
        return out[None]

    height, width = image.shape[:2]
    img = torch.from_numpy(reference_pixels(image)).double()
    with torch.no_grad():
        if mode == "whole":
            logits = encode_decode(img)
        else:  # mmseg 0.18 slide_inference
            h_img, w_img = img.shape[-2:]
            h_grids, w_grids = max(h_img - 448 + 223, 0) // 224 + 1, max(w_img - 448 + 223, 0) // 224 + 1
            logits = img.new_zeros((1, len(names) + 1, h_img, w_img))
            count = img.new_zeros((1, 1, h_img, w_img))
            for h_idx in range(h_grids):
                for w_idx in range(w_grids):
                    y2, x2 = min(h_idx * 224 + 448, h_img), min(w_idx * 224 + 448, w_img)
                    y1, x1 = max(y2 - 448, 0), max(x2 - 448, 0)
                    logits += F.pad(encode_decode(img[:, :, y1:y2, x1:x2]), (x1, w_img - x2, y1, h_img - y2))
                    count[:, :, y1:y2, x1:x2] += 1
            logits = logits / count
        expected = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False).argmax(1)[0]
    result = segment(model, image, ["background", *names], mode=mode, threshold=0.6, text_embeds=text)
    assert len(np.unique(result.labels)) >= 2  # background and at least one class
    np.testing.assert_array_equal(result.labels, expected.numpy())  # float64 on both sides


# ---------------------------------------------------------------------------------------------------------------
# Backends: array_api_strict on a non-default device refuses silent host round trips; CuPy when a GPU is there.


def test_every_backend_gives_the_numpy_labels(model, tokenizer, backend):
    xp, device = backend
    other = sharpened(GroupViTModel.from_pretrained(data_dir("weights") / "groupvit-tiny-random", dtype="float64",
                                                    xp=xp, device=device))  # fmt: skip
    image, names = scene(150, 230), ["background", *NAMES[:3]]
    text = np.asarray(encode_text(model, names[1:], ["a photo of a {}."], tokenizer))
    for mode in ("whole", "slide"):
        ours = segment(other, image, names, mode=mode, threshold=0.6, text_embeds=text)  # moved to the device
        ref = segment(model, image, names, mode=mode, threshold=0.6, text_embeds=text)
        # float64 everywhere; the same operations, possibly another BLAS: identical argmax maps
        np.testing.assert_array_equal(ours.labels, ref.labels)
        assert_close(ours.probabilities, ref.probabilities, atol=1e-12)
    hf = hf_segment(other, image, names[1:], tokenizer=tokenizer)  # encoded on the device
    np.testing.assert_array_equal(hf.labels, hf_segment(model, image, names[1:], text_embeds=text).labels)
