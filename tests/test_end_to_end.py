"""Raw strings and an image file -> logits_per_image: HF's processor + model vs ours, end to end."""

from __future__ import annotations

import numpy as np
import pytest
from parity import HF_FLOAT64_ATOL, assert_close
from PIL import Image

from groupvit_np import CLIPProcessor, GroupViTModel
from groupvit_np._resources import data_dir

pytestmark = pytest.mark.reference

TEXTS = ["a photo of a cat", "A Dog's toy (ÉTÉ) 🐶", "two  cats\ton a couch, 1990s"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_strings_and_file_to_logits_match_transformers(tmp_path, dtype):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    folder = data_dir("weights") / "groupvit-tiny-random"  # a real 49408-token vocabulary
    image_path = tmp_path / "photo.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(image_path, quality=90)

    hf_proc = transformers.CLIPProcessor.from_pretrained(folder, use_fast=False)
    hf_inputs = hf_proc(text=TEXTS, images=Image.open(image_path), return_tensors="pt", padding=True)
    hf_model = transformers.GroupViTModel.from_pretrained(folder).eval().to(getattr(torch, dtype))
    torch.set_default_dtype(getattr(torch, dtype))  # HF builds its text mask in the default dtype (spec 13)
    try:
        with torch.no_grad():
            hf_logits = hf_model(**{k: v.to(getattr(torch, dtype)) if v.is_floating_point() else v
                                    for k, v in hf_inputs.items()}).logits_per_image.numpy()  # fmt: skip
    finally:
        torch.set_default_dtype(torch.float32)

    ours_inputs = CLIPProcessor.from_pretrained(folder)(text=TEXTS, images=str(image_path), padding=True)
    np.testing.assert_array_equal(ours_inputs["input_ids"], hf_inputs["input_ids"].numpy())
    np.testing.assert_array_equal(ours_inputs["pixel_values"], hf_inputs["pixel_values"].numpy())  # bit-identical
    logits = GroupViTModel.from_pretrained(folder, dtype=dtype)(**ours_inputs).logits_per_image
    # Identical inputs; float64 leaves summation order only, float32 its rounding amplified by exp(logit_scale).
    tol = HF_FLOAT64_ATOL if dtype == "float64" else 1e-4 * np.abs(hf_logits).max()
    assert_close(logits, hf_logits, atol=tol)
