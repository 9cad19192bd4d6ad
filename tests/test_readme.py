"""Every Python block of the README runs, on the shipped tiny checkpoint and a generated image."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from groupvit_np._resources import data_dir

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, tmp_path, monkeypatch):
    if "import jax" in BLOCKS[index]:
        pytest.importorskip("jax", reason="this README example needs jax: pip install -e '.[jax]'")
    image = tmp_path / "cats.jpg"
    Image.fromarray(np.random.default_rng(index).integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(image)
    monkeypatch.chdir(tmp_path)
    tiny = str(data_dir("weights") / "groupvit-tiny-random")
    code = BLOCKS[index].replace('"nvidia/groupvit-gcc-yfcc"', repr(tiny))
    namespace: dict = {}
    exec(compile(code, f"README block {index}", "exec"), namespace)  # noqa: S102 - our own README
    if "probs" in namespace:
        np.testing.assert_allclose(namespace["probs"].sum(1), 1, rtol=1e-6)
    if "text_features" in namespace:
        assert namespace["text_features"].shape == (2, 32)  # the tiny checkpoint projects to 32
    if "grads" in namespace:
        assert "vision_model.embeddings.layernorm.weight" in namespace["grads"]
        assert float(abs(namespace["grads"]["logit_scale"])) > 0
