"""Every Python block of the README runs, on the shipped tiny checkpoint and a generated image."""

from __future__ import annotations

import re
import shutil
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


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs_with_its_repo_id(index, tmp_path, monkeypatch):
    """The blocks as written, "nvidia/groupvit-gcc-yfcc" and all, on a Hugging Face cache holding the tiny model."""
    cache = tmp_path / "hub"
    snapshot = cache / "models--nvidia--groupvit-gcc-yfcc" / "snapshots" / ("c" * 40)
    shutil.copytree(data_dir("weights") / "groupvit-tiny-random", snapshot)
    (cache / "models--nvidia--groupvit-gcc-yfcc" / "refs").mkdir()
    (cache / "models--nvidia--groupvit-gcc-yfcc" / "refs" / "main").write_text("c" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may be downloaded
    image = tmp_path / "cats.jpg"
    Image.fromarray(np.random.default_rng(index).integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(image)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(BLOCKS[index], f"README block {index}", "exec"), namespace)  # noqa: S102 - our own README
    assert "nvidia/groupvit-gcc-yfcc" in BLOCKS[index]
    if "text_features" in namespace:
        assert namespace["text_features"].shape == (2, 32)  # the tiny checkpoint projects to 32
