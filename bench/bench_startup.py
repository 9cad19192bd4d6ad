"""Cold start to the first segmentation result: `groupvit-np segment` vs an equivalent transformers script.

    pip install -e '.[reference]' && python bench/bench_startup.py [--repeats 5]

Both load the same full-size checkpoint, segment one image with two labels and write a label PNG; each run is a
fresh process (imports included). Writes bench/results/startup.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import full_size_checkpoint, set_threads, write_results  # noqa: E402

HF_SCRIPT = r"""
import sys
import torch
from PIL import Image
from transformers import CLIPProcessor, GroupViTModel
ckpt, image, out = sys.argv[1:4]
model = GroupViTModel.from_pretrained(ckpt).eval()
processor = CLIPProcessor.from_pretrained(ckpt)
inputs = processor(text=["a photo of a cat.", "a photo of a dog."], images=Image.open(image), return_tensors="pt",
                   padding=True)
with torch.no_grad():
    seg = model(**inputs, output_segmentation=True).segmentation_logits
Image.fromarray(seg[0].argmax(0).numpy().astype("uint8")).save(out)
"""


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{cmd[:3]} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    set_threads(2)
    tmp = Path(tempfile.mkdtemp())
    ckpt = full_size_checkpoint(Path(tempfile.gettempdir()) / "groupvit-full-random-float32")
    if not (ckpt / "vocab.json").is_file():
        from groupvit_np import CLIPProcessor

        CLIPProcessor.from_pretrained().save_pretrained(ckpt)
    image = tmp / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(image)
    groupvit_np_cli = [sys.executable, "-m", "groupvit_np", "segment", str(image), "--labels", "cat,dog",
                       "--weights", str(ckpt), "--out", str(tmp / "ours")]  # fmt: skip
    hf = [sys.executable, "-c", HF_SCRIPT, str(ckpt), str(image), str(tmp / "hf.png")]
    # --hf is the equivalent job (224 crop, HF's segmentation_logits); the default original-style inference runs at
    # a 448 short side (5x the tokens) and is reported beside it.
    runs = {"ours --hf": groupvit_np_cli + ["--hf"], "ours (original inference)": groupvit_np_cli, "hf": hf}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, cmd in runs.items():
            times[name].append(timed(cmd))
    med = {name: statistics.median(t) for name, t in times.items()}
    for name in runs:
        print(
            f"cold start to first segmentation, {name:26s} {med[name]:.2f} s   ratio to hf {med[name] / med['hf']:.2f}"
        )
    env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    print("wrote", write_results("startup", {"seconds": times, "median_s": med, "env": env}))


if __name__ == "__main__":
    main()
