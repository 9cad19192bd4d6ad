"""Zero-shot classification and the prompt-ensembled class embeddings, on the shipped tiny checkpoint in float64."""

from __future__ import annotations

import numpy as np
import pytest
from parity import assert_close
from PIL import Image

from groupvit_np import GroupViTModel
from groupvit_np._resources import data_dir
from groupvit_np.preprocessing.tokenizer import CLIPTokenizer
from groupvit_np.tasks.classify import classification_pixels, classify, encode_text
from groupvit_np.tasks.datasets import CLASSIFICATION_TEMPLATES
from groupvit_np.tasks.scenes import make_scene


@pytest.fixture(scope="module")
def model():
    return GroupViTModel.from_pretrained(data_dir("weights") / "groupvit-tiny-random", dtype="float64")


@pytest.fixture(scope="module")
def tokenizer():
    return CLIPTokenizer.from_pretrained()


def image(height=300, width=410):
    s = make_scene(11, size=256, objects=(2, 2), radius=(40, 60))
    return np.asarray(Image.fromarray(s.image).resize((width, height), Image.Resampling.BICUBIC))


def test_templates_are_clips_seven():
    assert len(CLASSIFICATION_TEMPLATES) == 7 and "a origami {}." in CLASSIFICATION_TEMPLATES


def test_encode_text_averages_unnormalised_features_then_normalises(model, tokenizer):
    names, templates = ["cat", "red circle", "a very long name " * 30], CLASSIFICATION_TEMPLATES
    got = np.asarray(encode_text(model, names, templates, tokenizer, batch_size=5))  # chunks straddle classes
    for k, name in enumerate(names):
        feats = []
        for t in templates:  # one prompt at a time, no padding at all
            enc = tokenizer([t.format(name)], truncation=True, return_tensors="np")
            feats.append(np.asarray(model.get_text_features(enc["input_ids"], enc["attention_mask"]))[0])
        mean = np.mean(feats, axis=0)
        # float64; padding only adds masked positions after EOS, so the features agree to rounding
        assert_close(got[k], mean / np.linalg.norm(mean), atol=1e-12)
    # averaging the normalised prompts instead gives another vector: the order matters
    normed = [f / np.linalg.norm(f) for f in feats]
    assert np.abs(got[-1] - np.mean(normed, axis=0) / np.linalg.norm(np.mean(normed, axis=0))).max() > 1e-6


def test_encode_text_rejects_bad_templates(model, tokenizer):
    with pytest.raises(ValueError, match="template"):
        encode_text(model, ["cat"], ["a photo of a cat"], tokenizer)
    with pytest.raises(ValueError, match="no class names"):
        encode_text(model, [], ["{}"], tokenizer)


def test_classify_is_softmax_of_the_models_logits(model, tokenizer):
    labels = ["red circle", "blue square", "cat", "dog"]
    ranked = classify(model, image(), labels, templates=["{}"], tokenizer=tokenizer)
    assert sorted(k for k, _ in ranked) == sorted(labels)
    probs = [p for _, p in ranked]
    assert probs == sorted(probs, reverse=True)
    assert_close(sum(probs), 1.0, atol=1e-12)
    # the same image through the model's own CLIP logits (single template: no averaging; s = 14.3 < 100)
    enc = tokenizer(labels, padding=True, return_tensors="np")
    logits = np.asarray(model(enc["input_ids"], classification_pixels(image()), enc["attention_mask"]).logits_per_image)
    expected = np.exp(logits[0] - logits[0].max())
    expected /= expected.sum()
    # float64 both ways; ranked order and values from the same math
    assert_close([dict(ranked)[k] for k in labels], expected, atol=1e-12)


def test_default_templates_and_precomputed_embeddings_agree(model, tokenizer):
    labels = ["cat", "dog", "car"]
    text = encode_text(model, labels, CLASSIFICATION_TEMPLATES, tokenizer)
    a = classify(model, image(), labels, tokenizer=tokenizer)
    b = classify(model, image(), labels, text_embeds=text)
    assert a == b
    with pytest.raises(ValueError, match="3 labels but 2"):
        classify(model, image(), labels, text_embeds=text[:2])


def torchvision_eval(rgb: np.ndarray, size: int = 224, top_shift: int = 0, left_shift: int = 0, resample=None):
    """The original's eval transform, transcribed from torchvision 0.28 (`transforms/functional.py`): Resize(int(256 /
    224 * size)) on a PIL image (`_compute_resized_output_size`, then PIL's BILINEAR), CenterCrop(size) (top =
    int(round((h - size) / 2.0)), Python's half-to-even), ToTensor (/255 in float32), Normalize (float32).

    torchvision's PyPI wheel cannot be imported beside the reference extra's CPU torch ("operator torchvision::nms
    does not exist"), so its rules are written out here with PIL alone. The shifts and `resample` make the wrong
    variants, to show that the images below tell them apart.  # [H, W, 3] uint8 -> [1, 3, size, size]
    """
    h, w = rgb.shape[:2]
    requested = int(256 / 224 * size)
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = requested, int(requested * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    img = Image.fromarray(rgb).resize((new_w, new_h), resample or Image.Resampling.BILINEAR)
    top, left = int(round((new_h - size) / 2.0)) + top_shift, int(round((new_w - size) / 2.0)) + left_shift
    x = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.float32) / np.float32(255)
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    return ((x - mean) / std).transpose(2, 0, 1)[None]


@pytest.mark.parametrize(
    "height, width",
    [
        (300, 410),  # 256 x 349: left = round(62.5) = 62 (half to even; half up would give 63)
        (300, 412),  # 256 x 351: left = round(63.5) = 64 (floor, as HF's crop, would give 63)
        (412, 300),  # the same, portrait: the top offset
        (1000, 700),  # a real downscale: PIL's bilinear filter widens with the scale (antialiasing)
        (150, 120),  # an upscale
    ],
)
def test_classification_pixels_follow_torchvision_rules(height, width):
    rgb = np.random.default_rng(height * width).integers(0, 256, (height, width, 3), dtype=np.uint8)  # no flat areas
    x = classification_pixels(rgb)
    assert x.shape == (1, 3, 224, 224) and x.dtype == np.float32
    expected = torchvision_eval(rgb)
    np.testing.assert_array_equal(x, expected)  # the same PIL resize and float32 arithmetic: bit for bit
    # The check bites: a crop one pixel off, or another resize filter, gives other pixels.
    portrait = height > width
    for wrong in (torchvision_eval(rgb, **{"top_shift" if portrait else "left_shift": 1}),
                  torchvision_eval(rgb, **{"top_shift" if portrait else "left_shift": -1}),
                  torchvision_eval(rgb, resample=Image.Resampling.BICUBIC)):  # fmt: skip
        assert np.abs(wrong - expected).mean() > 0.05


def test_classification_pixels_normalise_with_imagenet_statistics():
    flat = np.zeros((256, 256, 3), dtype=np.uint8)
    flat[...] = (255, 0, 128)
    got = classification_pixels(flat)[0, :, 100, 100]
    # (1 - 0.485)/0.229, (0 - 0.456)/0.224, (128/255 - 0.406)/0.225: a flat image is unchanged by the resize
    np.testing.assert_allclose(got, [2.2489083, -2.0357141, 0.42649257], rtol=1e-6)  # 8 digits quoted: float32
    assert classification_pixels(np.zeros((3, 5, 3), dtype=np.uint8)).shape == (1, 3, 224, 224)  # upscaled
