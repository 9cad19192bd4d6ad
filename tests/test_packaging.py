"""The shipped data (CLIP vocabulary, checkpoints) is found from a built wheel installed in a fresh venv.

The nested venv sees nothing of the base interpreter (no system site-packages): its dependencies come from the
environment running the tests, through a .pth file naming "shadow" folders that link to every entry of that
environment's site-packages except groupvit-np's own. pip installs the wheel with `--no-index`, so its declared
dependencies must be met by what the running environment has: nothing is downloaded, and nothing is taken from
packages installed by hand into the base interpreter.
"""

from __future__ import annotations

import importlib.util
import os
import re
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
assert not any(p.startswith(sys.base_prefix) and "-packages" in p for p in sys.path), sys.path  # no base packages
assert CLIPTokenizer.from_pretrained()("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
model = GroupViTModel.from_pretrained(data_dir("weights") / "groupvit-tiny-random")
print("ok", model.config.text_config.vocab_size)
"""


def _ours(name: str) -> bool:
    """groupvit-np's own entries in a site-packages folder: the package, its metadata, editable-install hooks."""
    return re.sub(r"[-_.]+", "_", name.lower()).lstrip("_").startswith(("groupvit_np", "editable_impl_groupvit_np"))


def _site_dirs() -> list[Path]:
    """The running environment's package folders in import order (a venv may chain others through .pth files)."""
    dirs = []
    for entry in sys.path:
        path = Path(entry or ".").resolve()
        if path.name in ("site-packages", "dist-packages") and path.is_dir():
            dirs.append(path)
    return list(dict.fromkeys(dirs))


def _shadow(site_dir: Path, dst: Path) -> Path:
    """A folder of links to everything in `site_dir` except groupvit-np and .pth files (which would not run)."""
    dst.mkdir(parents=True)
    for entry in site_dir.iterdir():
        if not _ours(entry.name) and entry.suffix != ".pth":
            (dst / entry.name).symlink_to(entry)
    return dst


def _build_wheel(dist: Path) -> Path:
    """`pip wheel` of the clone; with hatchling importable here, without build isolation (nothing downloaded)."""
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("hatchling") else []
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *isolation, "-w", str(dist), str(ROOT)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert built.returncode == 0, f"the wheel does not build:\n{built.stderr[-3000:]}"
    wheels = list(dist.glob("groupvit_np-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.mark.slow
def test_wheel_carries_its_data(tmp_path):
    wheel = _build_wheel(tmp_path / "dist")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=False, with_pip=True)
    python = env_dir / "bin" / "python"
    site_packages = Path(
        subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       capture_output=True, text=True, check=True).stdout.strip()
    )  # fmt: skip
    shadows = [_shadow(d, tmp_path / f"shadow{i}") for i, d in enumerate(_site_dirs())]
    assert shadows, f"no site-packages folder on the running environment's path {sys.path}"
    (site_packages / "zz_running_environment.pth").write_text("".join(f"{s}\n" for s in shadows))

    # The dependencies are resolved, not skipped: one the running environment lacks fails here, by name.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k not in ("PYTHONPATH", "PYTHONHOME")}
    clean.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONNOUSERSITE="1")
    installed = subprocess.run([python, "-m", "pip", "install", "--no-index", "-q", str(wheel)], env=clean,
                               capture_output=True, text=True)  # fmt: skip
    assert installed.returncode == 0, f"the wheel's dependencies are not met:\n{installed.stderr[-3000:]}"
    out = subprocess.run([python, "-c", CHECK], capture_output=True, text=True, cwd=tmp_path, env=clean)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok 49408"
