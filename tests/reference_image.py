"""Live HF reference for the image processor (imports transformers; used by fixture generation and live tests).

Runs transformers 4.57.6's slow (PIL) `CLIPImageProcessor` on the cases of `test_image.py`, by HF's own correct
route where HF's plain one is wrong, and writes `fixtures/image_pixel_values.json`: per case the sha256 of the input
and of HF's float32 pixel_values bytes, their shape, and seven values keyed "b,c,y,x" (so a failure shows numbers).
"""

from __future__ import annotations

import importlib.metadata
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import transformers
from test_image import CASES, Case, input_digest, pixel_digest, sample_indices

from groupvit_np.config import write_json_atomic


def _hf_form(x: Any) -> Any:
    """HF opens only `str` paths (a `Path` is not an image to it)."""
    return [_hf_form(item) for item in x] if isinstance(x, list) else str(x) if isinstance(x, Path) else x


def hf_pixel_values(case: Case, tmp: Path, plain: bool = False) -> np.ndarray:
    """HF's pixel_values for a case; `plain=True` feeds HF our input as is, with no corrective arguments."""
    processor = transformers.CLIPImageProcessor.from_dict(case.config)
    x = case.make(tmp) if plain or case.hf is None else case.hf(tmp)
    out = processor(_hf_form(x), return_tensors="np", **({} if plain else case.hf_kwargs))["pixel_values"]
    assert out.dtype == np.float32
    return out


def generate(fixtures_dir: Path) -> None:
    cases = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, case in sorted(CASES.items()):
            (Path(tmp) / name).mkdir()
            x = case.make(Path(tmp) / name)
            pixels = hf_pixel_values(case, Path(tmp) / name)
            cases[name] = {
                "input_sha256": input_digest(x),
                "sha256": pixel_digest(pixels),
                "shape": list(pixels.shape),
                "samples": {",".join(map(str, i)): float(pixels[i]) for i in sample_indices(pixels.shape)},
            }
    versions = {p: importlib.metadata.version(p) for p in ("transformers", "pillow", "numpy")}
    fixtures_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(fixtures_dir / "image_pixel_values.json", {"versions": versions, "cases": cases})
    print(f"image_pixel_values.json: {len(cases)} cases from {versions}")
