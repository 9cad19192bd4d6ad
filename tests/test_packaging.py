"""The shipped data (CLIP vocabulary, checkpoints) is found from a built wheel installed in a fresh venv."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHECK = r"""
import sys, groupvit_np
from groupvit_np import CLIPTokenizer, GroupViTModel
from groupvit_np._resources import data_dir
pkg = groupvit_np.__file__
assert "site-packages" in pkg and sys.prefix in pkg, pkg  # the wheel, not the clone
assert str(data_dir("tokenizer")).startswith(sys.prefix), data_dir("tokenizer")
assert CLIPTokenizer.from_pretrained()("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
model = GroupViTModel.from_pretrained(data_dir("weights") / "groupvit-tiny-random")
print("ok", model.config.text_config.vocab_size)
"""


@pytest.mark.slow
def test_wheel_carries_its_data(tmp_path):
    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
        capture_output=True, text=True,
    )  # fmt: skip
    if built.returncode:
        pytest.skip(f"cannot build a wheel here (no build backend available?): {built.stderr[-300:]}")
    wheel = next(dist.glob("groupvit_np-*.whl"))
    env_dir = tmp_path / "venv"
    # System site-packages supply NumPy & co. without a download; the venv's own site-packages come first, so
    # the wheel shadows any editable install of the clone.
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True)
    out = subprocess.run([python, "-c", CHECK], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok 49408"
