"""`CLIPProcessor` glue: arguments reach the right half, outputs merge, and the whole matches HF's processor.

The glue is tested with a recording stand-in tokenizer, so it needs no vocabulary; the rest uses the real
`groupvit_np.preprocessing.tokenizer.CLIPTokenizer` and the shipped vocabulary.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from groupvit_np import BatchEncoding, CLIPImageProcessor, CLIPProcessor

CAPTIONS = ["a photo of a cat", "a photo of two dogs on a sofa"]


def image(seed: int = 0, width: int = 320, height: int = 240) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


class RecordingTokenizer:
    """Returns fixed ids and remembers how it was called."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, text, **kwargs):
        self.calls.append((text, kwargs))
        return BatchEncoding(input_ids=np.array([[49406, 320, 49407]]), attention_mask=np.ones((1, 3), np.int64))

    def decode(self, ids, **kwargs):
        return f"decoded {list(ids)} {kwargs}"


def test_text_and_images_merge_into_one_encoding():
    tok = RecordingTokenizer()
    out = CLIPProcessor(tokenizer=tok)(text=CAPTIONS, images=[image(0), image(1)], padding="max_length",
                                       truncation=True, max_length=77)  # fmt: skip
    assert sorted(out) == ["attention_mask", "input_ids", "pixel_values"] and out.input_ids.shape == (1, 3)
    assert tok.calls == [(CAPTIONS, dict(padding="max_length", truncation=True, max_length=77, return_tensors="np"))]
    # exact: the same processor on the same pixels
    np.testing.assert_array_equal(out.pixel_values, CLIPImageProcessor()([image(0), image(1)]).pixel_values)


def test_each_half_alone():
    tok = RecordingTokenizer()
    processor = CLIPProcessor(tokenizer=tok, image_processor=CLIPImageProcessor(crop_size=112))
    assert list(processor(images=image())) == ["pixel_values"] and not tok.calls
    assert processor(images=image()).pixel_values.shape == (1, 3, 112, 112)
    assert sorted(processor("one caption")) == ["attention_mask", "input_ids"]
    assert tok.calls[0] == ("one caption", dict(padding=False, truncation=False, max_length=None, return_tensors="np"))
    assert processor.decode([1, 2], skip_special_tokens=True) == "decoded [1, 2] {'skip_special_tokens': True}"


def test_images_alone_never_load_a_tokenizer():
    processor = CLIPProcessor()
    processor(images=image())
    assert processor._tokenizer is None  # the vocabulary is read only when text comes


def test_bad_calls():
    processor = CLIPProcessor(tokenizer=RecordingTokenizer())
    with pytest.raises(ValueError, match="text, images or both"):
        processor()
    with pytest.raises(TypeError, match="images=..."):  # HF 4.57's positional order is (images, text)
        processor(Image.fromarray(image()))
    with pytest.raises(TypeError, match="list of strings"):
        processor(["fine", 3])


# --- with the real tokenizer ---------------------------------------------------------------------------------------


def test_shipped_defaults():
    processor = CLIPProcessor.from_pretrained()
    out = processor(text=CAPTIONS, images=image(), padding=True)
    ids, mask = np.asarray(out.input_ids), np.asarray(out.attention_mask)
    assert ids.shape == mask.shape and ids.shape[0] == 2 and out.pixel_values.shape == (1, 3, 224, 224)
    assert ids[0, 0] == 49406 and ids[1, int(mask[1].sum()) - 1] == 49407  # BOS first, EOS last real token
    assert np.all(ids[mask == 0] == 49407)  # right padding with the EOS id
    assert processor.image_processor == CLIPImageProcessor()


def test_save_and_load_round_trip(tmp_path):
    processor = CLIPProcessor.from_pretrained()
    processor.save_pretrained(tmp_path)
    again = CLIPProcessor.from_pretrained(tmp_path)
    assert again.image_processor == processor.image_processor
    a, b = processor(text=CAPTIONS, padding=True), again(text=CAPTIONS, padding=True)
    np.testing.assert_array_equal(a.input_ids, b.input_ids)


@pytest.mark.reference
def test_matches_hf_processor_end_to_end(tmp_path):
    # Raw strings and an image file through HF's slow tokenizer + slow image processor and through ours.
    transformers = pytest.importorskip("transformers")
    from clip_vocab import hf_files

    CLIPProcessor.from_pretrained().save_pretrained(tmp_path)
    for name, text in hf_files().items():  # HF reads CLIP's vocabulary as built independently of the package
        assert (tmp_path / name).read_text(encoding="utf-8") == text, name
    hf = transformers.CLIPProcessor(
        image_processor=transformers.CLIPImageProcessor.from_pretrained(tmp_path),
        tokenizer=transformers.CLIPTokenizer.from_pretrained(tmp_path),
    )
    Image.fromarray(image(3, 640, 480)).save(tmp_path / "photo.jpg", quality=90)
    kwargs = dict(text=CAPTIONS, images=str(tmp_path / "photo.jpg"), padding=True, return_tensors="np")
    theirs, ours = hf(**kwargs), CLIPProcessor.from_pretrained(tmp_path)(**kwargs)
    assert sorted(ours) == sorted(theirs)
    for key in theirs:  # ids exactly, pixels bit-identical (tolerance 0, see test_image.py)
        np.testing.assert_array_equal(np.asarray(ours[key]), theirs[key], err_msg=key)
