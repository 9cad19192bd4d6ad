"""CLIP image preprocessing: bit-identical to HF 4.57.6's slow `CLIPImageProcessor`, documented departures, errors.

Every input is built here from a seed (`CASES`), so nothing big is committed. `tests/reference_image.py` runs HF on
the same cases and stores digests of its float32 pixel_values in `fixtures/image_pixel_values.json`.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from groupvit_np import CLIPImageProcessor
from groupvit_np.preprocessing.image import load_image, to_rgb_array
from groupvit_np.preprocessing.image_processor import center_crop

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "image_pixel_values.json"
LEGACY_2022 = {  # nvidia/groupvit-gcc-yfcc's preprocessor_config.json as saved in June 2022
    "crop_size": 224,
    "do_center_crop": True,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "size": 224,
}

# --- deterministic inputs ----------------------------------------------------------------------------------------


def rgb(width: int, height: int, seed: int = 0) -> np.ndarray:
    """[H, W, 3] uint8: two ramps, a hard diagonal edge and noise, so the bicubic filter meets every kind of content."""
    rng = np.random.default_rng(seed)
    y, x = np.ogrid[0:height, 0:width]
    ramps = [
        255 * x / max(width - 1, 1) + 0 * y,
        255 * y / max(height - 1, 1) + 0 * x,
        np.where(x * height > y * width, 200, 40),
    ]
    noise = rng.integers(-60, 61, size=(height, width, 3), dtype=np.int16)
    return np.clip(np.stack(ramps, -1).astype(np.float32) + noise, 0, 255).astype(np.uint8)


def alpha(width: int, height: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8))


def pil(mode: str, width: int = 301, height: int = 300, seed: int = 1) -> Image.Image:
    """A seeded image in any Pillow mode the tests use (alpha random, 16/32-bit and float from the gray ramp)."""
    image = Image.fromarray(rgb(width, height, seed))
    gray = np.asarray(image.convert("L"))
    if mode == "LA":
        return Image.merge("LA", [image.convert("L"), alpha(width, height, seed)])
    if mode == "RGBA":
        return Image.merge("RGBA", [*image.split(), alpha(width, height, seed)])
    if mode == "P":
        return image.convert("P", palette=Image.Palette.ADAPTIVE, colors=50)
    if mode == "I;16":  # 16-bit: the gray ramp spread over 0..65535 with sub-8-bit detail
        return Image.fromarray(uint16(gray, seed))
    if mode == "I":
        return Image.fromarray(gray.astype(np.int32))
    if mode == "F":
        return Image.fromarray(gray.astype(np.float32) / 255)
    return image.convert(mode)


def uint16(gray: np.ndarray, seed: int) -> np.ndarray:
    return gray.astype(np.uint16) * 257 + np.random.default_rng(seed).integers(0, 257, gray.shape, dtype=np.uint16)


def to8(u16: np.ndarray) -> np.ndarray:
    """Our documented 16 -> 8 bit rule, round(v / 257), written independently in floats."""
    return np.floor(u16 / 257 + 0.5).astype(np.uint8)


def saved(image: Image.Image, path: Path, **kwargs: Any) -> str:
    image.save(path, **kwargs)
    return str(path)


def exif_jpeg(tmp: Path) -> str:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    return saved(Image.fromarray(rgb(320, 200, 7)), tmp / "exif.jpg", quality=92, exif=exif)


@dataclass(frozen=True)
class Case:
    """`make(tmp)` builds our input; `hf(tmp)` HF's input for the right answer (default: the same input) and
    `hf_kwargs` its extra call arguments; `config` feeds both processors' `from_dict`; `hf_wrong` says why HF's
    plain route on our input is wrong ("" where HF is right)."""

    make: Callable[[Path], Any]
    hf: Callable[[Path], Any] | None = None
    hf_kwargs: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    hf_wrong: str = ""


LAST = {"input_data_format": "channels_last"}
SCALED = {"do_rescale": False}  # HF's correct route for [0, 1] floats
CASES: dict[str, Case] = {
    **{f"rgb_{w}x{h}": Case(lambda t, w=w, h=h: Image.fromarray(rgb(w, h, w + h)))
       for w, h in [(224, 224), (640, 480), (480, 640), (301, 300), (1000, 50), (50, 1000), (3, 5), (3000, 2000)]},
    "rgb_5x3": Case(lambda t: Image.fromarray(rgb(5, 3, 8)), lambda t: rgb(5, 3, 8), LAST,
                    hf_wrong="HF reads the (3, 5, 3) array as channels-first"),
    "rgb_1x1": Case(lambda t: Image.fromarray(rgb(1, 1, 2)), lambda t: rgb(1, 1, 2), LAST,
                    hf_wrong="HF reads (1, 1, 3) as channels-first and fails"),
    **{f"mode_{m}": Case(lambda t, m=m: pil(m)) for m in ["L", "LA", "RGBA", "P", "CMYK", "1", "I"]},
    "mode_I16": Case(lambda t: pil("I;16"), lambda t: Image.fromarray(to8(np.asarray(pil("I;16")))),
                     hf_wrong="convert('RGB') clips 16-bit values at 255"),
    "mode_F": Case(lambda t: pil("F"), lambda t: np.repeat(np.asarray(pil("F"))[..., None], 3, -1), SCALED,
                   hf_wrong="convert('RGB') reads [0, 1] floats as 0..255"),
    **{f"png_{m}": Case(lambda t, m=m: saved(pil(m, 97, 61, 3), t / f"{m}.png"))
       for m in ["RGB", "RGBA", "LA", "L", "P", "1"]},
    "png_I16": Case(lambda t: saved(pil("I;16", 97, 61, 3), t / "i16.png"),
                    lambda t: Image.fromarray(to8(np.asarray(pil("I;16", 97, 61, 3)))),
                    hf_wrong="convert('RGB') clips 16-bit values at 255"),
    **{f"jpeg_{m}": Case(lambda t, m=m: saved(pil(m, 400, 250, 4), t / f"{m}.jpg", quality=90))
       for m in ["RGB", "L", "CMYK"]},
    "jpeg_exif_path": Case(exif_jpeg),  # HF's load_image applies EXIF orientation to paths, as we do
    "jpeg_exif_pil": Case(lambda t: Image.open(exif_jpeg(t)), exif_jpeg,
                          hf_wrong="HF ignores EXIF orientation on PIL images"),
    "array_uint8": Case(lambda t: rgb(200, 300, 5)),
    "array_int64": Case(lambda t: rgb(200, 300, 5).astype(np.int64)),
    "array_gray": Case(lambda t: rgb(90, 70, 6)[..., 1], lambda t: Image.fromarray(rgb(90, 70, 6)[..., 1]),
                       hf_wrong="HF rejects [H, W] arrays"),
    "array_hw1": Case(lambda t: rgb(90, 70, 6)[..., 1:2], lambda t: Image.fromarray(rgb(90, 70, 6)[..., 1]),
                      hf_wrong="HF keeps one channel and fails on the 3-value mean"),
    "array_rgba": Case(lambda t: np.dstack([rgb(90, 70, 6), rgb(90, 70, 9)[..., 0]]), lambda t: rgb(90, 70, 6),
                       hf_wrong="HF cannot infer the channel axis of 4 channels"),
    "array_float_levels": Case(lambda t: rgb(90, 70, 6).astype(np.float32) / 255, lambda t: rgb(90, 70, 6),
                               hf_wrong="HF rescales [0, 1] floats twice by default"),
    "array_float01": Case(lambda t: np.random.default_rng(3).random((70, 90, 3)), None, SCALED,
                          hf_wrong="HF rescales [0, 1] floats twice by default"),
    "array_uint16": Case(lambda t: uint16(rgb(90, 70, 6), 6), lambda t: to8(uint16(rgb(90, 70, 6), 6)),
                         hf_wrong="HF refuses values above 255"),
    "batch_mixed": Case(lambda t: [Image.fromarray(rgb(640, 480, 1)), Path(saved(pil("RGBA", 97, 61), t / "b.png")),
                                   rgb(33, 250, 2), pil("P", 260, 230)]),
    "config_legacy_2022": Case(lambda t: pil("RGB", 640, 427, 11), config=LEGACY_2022),
    "config_resize_hw_pads": Case(lambda t: pil("RGB", 150, 90, 12), config={"size": {"height": 101, "width": 150}}),
    "config_no_resize_pads": Case(lambda t: pil("RGB", 51, 30, 13), config={"do_resize": False}),
    "config_bilinear_custom": Case(lambda t: pil("RGB", 500, 333, 14), config={
        "resample": 2, "size": 200, "crop_size": {"height": 190, "width": 170}, "rescale_factor": 1 / 127.5,
        "image_mean": 0.5, "image_std": [0.2, 0.3, 0.4]}),
    "config_no_normalize": Case(lambda t: pil("RGB", 300, 301, 15), config={"do_normalize": False}),
}  # fmt: skip

# --- digests shared with the fixture generator -------------------------------------------------------------------


def input_digest(x: Any) -> str:
    """sha256 of the raw input (decoded pixels for files), to tell a changed environment from a changed result."""
    h = hashlib.sha256()
    for item in x if isinstance(x, list) else [x]:
        if isinstance(item, (str, Path)):
            with Image.open(item) as image:
                item = image.copy()
        if isinstance(item, Image.Image):
            h.update(f"{item.mode}{item.size}".encode() + item.tobytes())
        else:
            h.update(f"{item.dtype.str}{item.shape}".encode() + np.ascontiguousarray(item).tobytes())
    return h.hexdigest()


def pixel_digest(pixels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(pixels, dtype="<f4").tobytes()).hexdigest()


def sample_indices(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    flat = np.linspace(0, np.prod(shape) - 1, 7).astype(np.int64)
    return [tuple(int(i) for i in np.unravel_index(f, shape)) for f in flat]


@cache
def fixture() -> dict:
    return json.loads(FIXTURE.read_text())


# --- HF parity ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_bit_identical_to_hf_fixture(name, tmp_path):
    case, ref = CASES[name], fixture()["cases"][name]
    x = case.make(tmp_path)
    if input_digest(x) != ref["input_sha256"]:
        pytest.skip("this NumPy/Pillow builds a different input than the fixture's (e.g. another JPEG codec)")
    out = CLIPImageProcessor.from_dict(case.config)(x).pixel_values
    assert out.dtype == np.float32 and out.shape == tuple(ref["shape"])
    # Tolerance 0: the same uint8 resize, the same float64 rescale and float32 normalise give the same bits.
    assert {i: float(out[tuple(map(int, i.split(",")))]) for i in ref["samples"]} == ref["samples"]
    assert pixel_digest(out) == ref["sha256"]


# The cases on which HF's plain route fails outright (transformers 4.57.6), with the error it gives; on the other
# `hf_wrong` cases it returns pixels, which must differ from ours.
HF_PLAIN_RAISES = {
    "array_gray": "Could not make a flat list of images",  # [H, W]
    "array_hw1": "mean must have 1 elements",  # one channel kept, then the 3-value mean
    "array_rgba": "Unable to infer channel dimension format",
    "array_uint16": r"outside the range \[0, 255\]",
    "rgb_1x1": "mean must have 1 elements",  # (1, 1, 3) read as channels-first
}


@pytest.mark.reference
@pytest.mark.parametrize("name", sorted(CASES))
def test_bit_identical_to_live_hf(name, tmp_path):
    pytest.importorskip("transformers")
    import reference_image

    case = CASES[name]
    ours = CLIPImageProcessor.from_dict(case.config)(case.make(tmp_path)).pixel_values
    np.testing.assert_array_equal(ours, reference_image.hf_pixel_values(case, tmp_path))  # exact, see above
    assert set(HF_PLAIN_RAISES) <= {n for n, c in CASES.items() if c.hf_wrong}
    if name in HF_PLAIN_RAISES:  # HF's plain route fails on this input, and for the reason `hf_wrong` gives
        with pytest.raises(ValueError, match=HF_PLAIN_RAISES[name]):
            reference_image.hf_pixel_values(case, tmp_path, plain=True)
    elif case.hf_wrong:  # HF's plain route on our input must really be wrong, or the departure is unjustified
        plain = reference_image.hf_pixel_values(case, tmp_path, plain=True)
        assert plain.shape != ours.shape or not np.array_equal(plain, ours), case.hf_wrong


# --- the pipeline by hand ----------------------------------------------------------------------------------------


def test_constant_image_gives_normalised_constant():
    out = CLIPImageProcessor()(np.full((50, 80, 3), [10, 128, 255], dtype=np.uint8)).pixel_values
    assert out.shape == (1, 3, 224, 224)
    # Bicubic keeps a constant exactly; then the float64 rescale and float32 normalise, written out independently.
    mean = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
    std = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
    expected = ((np.array([10, 128, 255]) / 255).astype(np.float32) - mean) / std
    np.testing.assert_array_equal(out[0, :, 0, 0], expected)
    assert np.all(out == out[:, :, :1, :1])


@pytest.mark.parametrize(
    ("hw", "expected"),
    [((480, 640), (224, 298)), ((640, 480), (298, 224)), ((300, 301), (224, 224)), ((50, 1000), (224, 4480)),
     ((3, 5), (224, 373)), ((224, 224), (224, 224))],
)  # fmt: skip
def test_output_size_truncates_the_long_edge(hw, expected):
    # 224 * 640 / 480 = 298.67 -> 298 and 224 * 301 / 300 = 224.75 -> 224 (the spec's COCO example: 298 x 224)
    assert CLIPImageProcessor().output_size(*hw) == expected


def test_center_crop_pads_with_the_odd_pixel_on_top_and_left():
    x = np.arange(1, 7, dtype=np.uint8).reshape(2, 3, 1)  # [2, 3, 1]
    out = center_crop(x, 5, 4)[..., 0]
    np.testing.assert_array_equal(out, [[0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 2, 3], [0, 4, 5, 6], [0, 0, 0, 0]])
    np.testing.assert_array_equal(center_crop(np.arange(10).reshape(1, 10, 1), 1, 3)[0, :, 0], [3, 4, 5])


# --- documented departures from HF, checked without HF ----------------------------------------------------------


def test_16_bit_scales_with_rounding():
    v = np.array([[0, 128, 129, 257, 385, 386, 65535]], dtype=np.uint16)  # 385/257 = 1.498, 386/257 = 1.502
    np.testing.assert_array_equal(to_rgb_array(v)[0, :, 0], [0, 0, 1, 1, 1, 2, 255])
    np.testing.assert_array_equal(to_rgb_array(Image.fromarray(v)), to_rgb_array(v))  # PIL I;16 == uint16 array
    big_endian = Image.frombytes("I;16B", (7, 1), v.astype(">u2").tobytes())  # convert("I;16B") would clip
    np.testing.assert_array_equal(to_rgb_array(big_endian), to_rgb_array(v))


def test_exif_orientation_is_applied_to_pil_images(tmp_path):
    path = exif_jpeg(tmp_path)
    with Image.open(path) as raw:
        assert raw.size == (320, 200)
        upright = to_rgb_array(raw)
    assert upright.shape == (320, 200, 3)  # rotated: 200 wide, 320 tall
    np.testing.assert_array_equal(upright, to_rgb_array(path))


def test_alpha_is_dropped_not_composited():
    image = pil("RGBA", 40, 30)
    transparent = image.copy()
    transparent.putalpha(0)
    np.testing.assert_array_equal(to_rgb_array(transparent), np.asarray(image)[..., :3])


def test_arrays_follow_pil_conversions():
    gray = rgb(40, 30)[..., 0]
    np.testing.assert_array_equal(to_rgb_array(gray), np.asarray(Image.fromarray(gray).convert("RGB")))
    np.testing.assert_array_equal(to_rgb_array(gray.astype(np.float64) / 255), to_rgb_array(gray))
    np.testing.assert_array_equal(to_rgb_array(np.array([[0.5, 0.999]])), [[[127] * 3, [254] * 3]])  # truncated
    np.testing.assert_array_equal(to_rgb_array(np.ones((1, 1))), [[[255] * 3]])  # HF would read whole floats as 0..255


def test_batches_lists_and_4d_arrays(tmp_path):
    images = np.stack([rgb(60, 40, 1), rgb(60, 40, 2)])
    out = CLIPImageProcessor()(images).pixel_values
    assert out.shape == (2, 3, 224, 224)
    np.testing.assert_array_equal(out, CLIPImageProcessor()(list(images)).pixel_values)
    np.testing.assert_array_equal(out[1], CLIPImageProcessor()(images[1]).pixel_values[0])
    listed = CLIPImageProcessor()(list(images), return_tensors=None).pixel_values
    assert isinstance(listed, list) and len(listed) == 2


# --- configuration -----------------------------------------------------------------------------------------------


def test_legacy_2022_config_reads_as_clip_defaults(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(LEGACY_2022))
    loaded = CLIPImageProcessor.from_pretrained(tmp_path)
    assert loaded == CLIPImageProcessor() == CLIPImageProcessor.from_pretrained(None)
    assert loaded.size == {"shortest_edge": 224} and loaded.crop_size == {"height": 224, "width": 224}


def test_save_and_load_round_trip(tmp_path):
    custom = CLIPImageProcessor(size=256, crop_size=(240, 200), resample=2, image_mean=0.5, do_convert_rgb=False)
    path = custom.save_pretrained(tmp_path / "new")
    saved_json = json.loads(path.read_text())
    assert saved_json["image_processor_type"] == "CLIPImageProcessor"
    assert saved_json["crop_size"] == {"height": 240, "width": 200} and saved_json["image_mean"] == [0.5] * 3
    assert CLIPImageProcessor.from_pretrained(tmp_path / "new") == custom
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["preprocessor_config.json"]  # no temporary left


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="do_pad"):
        CLIPImageProcessor.from_dict({**LEGACY_2022, "do_pad": True})
    with pytest.raises(ValueError, match="shortest_edge"):
        CLIPImageProcessor(size={"longest_edge": 224})
    with pytest.raises(ValueError, match="3 values"):
        CLIPImageProcessor(image_std=[0.5, 0.5])
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json"):
        CLIPImageProcessor.from_pretrained(tmp_path)


@pytest.mark.reference
def test_configs_load_both_ways_with_hf(tmp_path):
    hf_module = pytest.importorskip("transformers")
    custom = CLIPImageProcessor(size={"height": 250, "width": 260}, crop_size=200, rescale_factor=0.5)
    theirs = hf_module.CLIPImageProcessor.from_pretrained(custom.save_pretrained(tmp_path / "ours").parent)
    hf_module.CLIPImageProcessor.from_dict(LEGACY_2022).save_pretrained(tmp_path / "hf")
    assert CLIPImageProcessor.from_pretrained(tmp_path / "hf") == CLIPImageProcessor()
    assert {k: getattr(theirs, k) for k in custom.to_dict() if k != "image_processor_type"} == vars(custom)


# --- bad input ---------------------------------------------------------------------------------------------------


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels but holds none: enough for Pillow's size check."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_bad_files_name_the_file(tmp_path):
    good = Path(saved(pil("RGB", 300, 200), tmp_path / "good.png"))
    jpeg = Path(saved(pil("RGB", 300, 200), tmp_path / "good.jpg"))
    files = {
        "truncated.png": good.read_bytes()[: good.stat().st_size // 2],
        "truncated.jpg": jpeg.read_bytes()[: jpeg.stat().st_size // 2],
        "junk.png": b"this is not an image",
        "empty.jpg": b"",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(OSError, match=f"cannot read image file .*{name}"):
            CLIPImageProcessor()(str(tmp_path / name))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        CLIPImageProcessor()([str(good), tmp_path / "missing.png"])
    with pytest.raises(IsADirectoryError, match="is a folder, not an image file"):
        load_image(tmp_path)
    with pytest.raises(ValueError, match="never downloads"):
        load_image("https://example.com/cat.png")


def test_decompression_bombs_are_refused_with_advice(tmp_path):
    # 20000 x 20000 = 4e8 pixels, over twice Pillow's default MAX_IMAGE_PIXELS: refused before any pixel is decoded.
    (tmp_path / "huge.png").write_bytes(png_header_only(20000, 20000))
    with pytest.raises(ValueError, match=r"huge\.png.*MAX_IMAGE_PIXELS"):
        CLIPImageProcessor()(tmp_path / "huge.png")


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((0, 5, 3), np.uint8), "empty image"),
        (Image.new("RGB", (0, 4)), "empty image"),
        (np.zeros((5, 5, 2), np.uint8), r"channels last\) array, got shape \(5, 5, 2\)"),
        (np.zeros((5, 5, 5), np.uint8), "got shape"),
        (np.zeros((3, 40, 50), np.uint8), "channels last"),
        (np.zeros(7, np.uint8), "got shape"),
        (np.zeros((1, 2, 5, 5, 3), np.uint8), "got shape"),
        (np.zeros((5, 5, 3), bool), "dtype bool"),
        (np.zeros((5, 5, 3), complex), "dtype complex"),
        (np.full((5, 5, 3), 1.5), r"\[0, 1\], got \[1.5"),
        (np.full((5, 5, 3), np.nan), r"\[0, 1\]"),
        (np.full((5, 5), 300), "0..255"),
        (np.full((5, 5), -1, np.int8), "0..255"),
        (Image.fromarray(np.full((5, 5), 1000, np.int32)), "0..255"),
        (Image.new("La", (4, 4)), "cannot convert mode La"),
        (12, "got int"),
    ],
)
def test_bad_images_raise_clear_errors(image, message):
    with pytest.raises((ValueError, TypeError), match=message):
        CLIPImageProcessor()(image)


def test_bad_calls():
    with pytest.raises(ValueError, match=r"images\[1\].*shape"):
        CLIPImageProcessor()([rgb(10, 10), np.zeros((5, 5, 2), np.uint8)])
    with pytest.raises(ValueError, match="no images"):
        CLIPImageProcessor()([])
    with pytest.raises(ValueError, match="'np' or None"):
        CLIPImageProcessor()(rgb(10, 10), return_tensors="pt")
    with pytest.raises(ValueError, match="cannot be stacked"):
        CLIPImageProcessor(do_center_crop=False)([rgb(10, 10), rgb(20, 10)])
    with pytest.raises(ValueError, match="mode L is not RGB"):
        CLIPImageProcessor(do_convert_rgb=False)(pil("L"))
