"""Peak resident memory and wall time of `groupvit-np segment` on one 12000 x 12000 picture, JPEG and PNG.

    python bench/bench_big_image.py [SIDE_PATH]

Each run is a fresh process (imports included, as a user would see it) on the shipped demo checkpoint. SIDE_PATH
(optional) is put first on the child's PYTHONPATH, to measure another checkout of groupvit_np the same way.
Writes bench/results/big_image.json (for this checkout only).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

SIZE = 12000
CHILD = r"""
import sys
from groupvit_np.cli import main
rc = main(["segment", sys.argv[1], "--labels", "red circle,blue circle", "--out", sys.argv[2]])
# VmHWM is this process image's peak RSS; ru_maxrss would also count the forked parent's pages before exec.
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(rc, int(hwm.split()[1]) / 1024)
"""


def picture(n: int) -> np.ndarray:
    """Two gradients and two discs: smooth, so the files stay a few MB.  # -> [n, n, 3] uint8"""
    ramp = np.linspace(0, 255, n, dtype=np.float32).astype(np.uint8)
    rgb = np.empty((n, n, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = ramp[None, :], ramp[:, None], 128
    yy, xx = np.ogrid[0:n, 0:n]
    discs = ((n // 4, n // 4, n // 6, (220, 30, 30)), (2 * n // 3, 7 * n // 12, n // 5, (30, 30, 220)))
    for cy, cx, r, colour in discs:
        rgb[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = colour
    return rgb


def main() -> None:
    side = sys.argv[1] if len(sys.argv) > 1 else None
    env = {**os.environ, **({"PYTHONPATH": side} if side else {})}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        rgb = picture(SIZE)
        for fmt in ("jpg", "png"):
            Image.fromarray(rgb).save(Path(tmp) / f"big.{fmt}", quality=90, compress_level=1)
        del rgb
        for fmt in ("jpg", "png"):
            start = time.monotonic()
            out = subprocess.run([sys.executable, "-c", CHILD, str(Path(tmp) / f"big.{fmt}"), str(Path(tmp) / "out")],
                                 env=env, cwd=tmp, capture_output=True, text=True, check=True)  # fmt: skip
            rc, peak = out.stdout.split()[-2:]
            results[fmt] = {"seconds": round(time.monotonic() - start, 1), "peak_rss_mb": round(float(peak)),
                            "rc": int(rc)}  # fmt: skip
            print(fmt, results[fmt], out.stderr.strip()[-300:])
    if side is None:  # another checkout's figures are printed only
        write_results("big_image", {"size": SIZE, "results": results})


if __name__ == "__main__":
    main()
