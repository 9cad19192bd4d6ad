"""CLIP's image preprocessing (HF `CLIPImageProcessor`, slow PIL path): files, PIL images, arrays -> pixel_values.

One image `[H, W] -> [3, 224, 224]` float32, bit-identical to transformers 4.57.6: convert to RGB uint8 (`image`)
-> Pillow bicubic resize of the shortest edge to 224 (long edge truncated) -> centre crop 224 (zero padding if
smaller) -> x * (1/255) in float64, cast to float32 -> (x - mean) / std in float32 -> channels first.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..config import write_json_atomic
from .batch import BatchEncoding
from .image import to_rgb_array

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CONFIG_NAME = "preprocessor_config.json"
_METADATA_KEYS = {"image_processor_type", "feature_extractor_type", "processor_class"}


def center_crop(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """HF's centre crop: top = (h - height) // 2; a smaller image is first zero-padded, odd pixel on top/left.

    # [h, w, C] -> [height, width, C]
    """
    pad_h, pad_w = max(height - x.shape[0], 0), max(width - x.shape[1], 0)
    x = np.pad(x, (((pad_h + 1) // 2, pad_h // 2), ((pad_w + 1) // 2, pad_w // 2), (0, 0)))
    top, left = (x.shape[0] - height) // 2, (x.shape[1] - width) // 2
    return x[top : top + height, left : left + width]


def _size_dict(size: Any, square: bool) -> dict[str, int]:
    """HF's get_size_dict: an int is a square (crop) or the shortest edge (resize); a pair is (height, width)."""
    if isinstance(size, dict):
        if set(size) not in ({"shortest_edge"}, {"height", "width"}):
            raise ValueError(f"size must have keys 'shortest_edge' or 'height' and 'width', got {sorted(size)}")
        return dict(size)
    if isinstance(size, int):
        return {"height": size, "width": size} if square else {"shortest_edge": size}
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return {"height": size[0], "width": size[1]}
    raise ValueError(f"cannot read image size {size!r}")


@dataclass
class CLIPImageProcessor:
    """HF's `CLIPImageProcessor` (slow, PIL): `__call__(images)` -> BatchEncoding(pixel_values=[B, 3, 224, 224])."""

    do_resize: bool = True
    size: dict[str, int] = field(default_factory=lambda: {"shortest_edge": 224})
    resample: int = 3  # PIL bicubic
    do_center_crop: bool = True
    crop_size: dict[str, int] = field(default_factory=lambda: {"height": 224, "width": 224})
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: list[float] = field(default_factory=lambda: list(CLIP_MEAN))
    image_std: list[float] = field(default_factory=lambda: list(CLIP_STD))
    do_convert_rgb: bool = True

    def __post_init__(self) -> None:
        self.size = _size_dict(self.size, square=False)
        self.crop_size = _size_dict(self.crop_size, square=True)
        self.resample = int(self.resample)
        for key in ("image_mean", "image_std"):  # HF allows one number for all channels
            value = getattr(self, key)
            value = [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)] * 3
            if len(value) != 3:
                raise ValueError(f"{key} needs 3 values (R, G, B), got {len(value)}")
            setattr(self, key, value)

    def __call__(self, images: Any, return_tensors: str | None = "np") -> BatchEncoding:
        """One image or a list (or an [B, H, W, C] array) -> pixel_values [B, 3, h, w] float32, or a list if None."""
        batch = isinstance(images, (list, tuple)) or (isinstance(images, np.ndarray) and images.ndim == 4)
        items = list(images) if batch else [images]
        if not items:
            raise ValueError("no images given")
        pixels = [self.process(x, f"images[{i}]" if batch else "image") for i, x in enumerate(items)]
        if return_tensors is None:
            return BatchEncoding(pixel_values=pixels)
        if return_tensors != "np":
            raise ValueError(f"return_tensors must be 'np' or None (groupvit_np is NumPy only), got {return_tensors!r}")
        if len({p.shape for p in pixels}) > 1:
            raise ValueError(f"images of different output sizes {[p.shape for p in pixels]} cannot be stacked")
        return BatchEncoding(pixel_values=np.stack(pixels))

    def process(self, image: Any, name: str = "image") -> np.ndarray:
        """One image through the whole pipeline.  # -> [3, h, w] float32"""
        x = to_rgb_array(image, name, convert=self.do_convert_rgb)  # [H, W, 3] uint8
        if self.do_resize:
            h, w = self.output_size(*x.shape[:2])
            x = np.asarray(Image.fromarray(x).resize((w, h), resample=Image.Resampling(self.resample)))
        if self.do_center_crop:
            x = center_crop(x, self.crop_size["height"], self.crop_size["width"])
        if self.do_rescale:  # float64, then cast, as HF: x * float32(1/255) is 1 ulp off on 126 of 256 levels
            x = (x.astype(np.float64) * self.rescale_factor).astype(np.float32)
        if self.do_normalize:
            x = x if x.dtype.kind == "f" else x.astype(np.float32)
            x = (x - np.asarray(self.image_mean, dtype=x.dtype)) / np.asarray(self.image_std, dtype=x.dtype)
        return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)  # [H, W, 3] -> [3, H, W]

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after resizing; the long edge is int(s * long / short), truncated as HF does."""
        if "height" in self.size:
            return self.size["height"], self.size["width"]
        s = self.size["shortest_edge"]
        short, long = min(height, width), max(height, width)
        new_long = int(s * long / short)
        return (new_long, s) if width <= height else (s, new_long)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "image_processor_type": type(self).__name__}

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> CLIPImageProcessor:
        """From HF's preprocessor config, 2022 legacy keys included (int `size`/`crop_size`, feature extractor)."""
        config = dict(config)
        if config.pop("use_square_size", False):  # HF's flag for square resizing to the shortest-edge value
            edge = _size_dict(config["size"], square=False)["shortest_edge"]
            config["size"] = {"height": edge, "width": edge}
        unknown = set(config) - set(cls.__dataclass_fields__) - _METADATA_KEYS
        if unknown:  # an option we do not implement would silently change the pixels
            raise ValueError(f"unsupported image processor options: {sorted(unknown)}")
        return cls(**{k: v for k, v in config.items() if k in cls.__dataclass_fields__})

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, *, revision: str | None = None
                        ) -> CLIPImageProcessor:  # fmt: skip
        """Read `preprocessor_config.json` from a folder (or that file itself) or a Hub repo id at `revision` (the
        Hugging Face cache first, downloading only with the `hub` extra); None gives CLIP's defaults."""
        if path is None:
            return cls()
        from ..hub import resolve

        found = resolve(path, revision, kind="image_processor")
        file = found / CONFIG_NAME if found.is_dir() else found
        if not file.is_file():
            raise FileNotFoundError(f"no {CONFIG_NAME} in {path}")
        try:
            return cls.from_dict(json.loads(file.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as e:  # JSONDecodeError is a ValueError
            raise ValueError(f"{file}: {e}") from None

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write `preprocessor_config.json` (atomically) in HF's layout; returns its path."""
        Path(directory).mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(directory) / CONFIG_NAME, self.to_dict())
        return Path(directory) / CONFIG_NAME
