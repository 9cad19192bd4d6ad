"""Peak resident memory of a fresh process that loads the full-size model and runs one forward pass.

    pip install -e '.[reference]' && python bench/bench_memory.py

Each side runs in its own subprocess (imports included, as a user would see it); writes bench/results/memory.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import full_size_checkpoint, set_threads, write_results  # noqa: E402

CHILD = r"""
import json, sys
import numpy as np
side, ckpt, storage = sys.argv[1], sys.argv[2], sys.argv[3]
rng = np.random.default_rng(0)
pixels = rng.normal(size=(1, 3, 224, 224)).astype(np.float32)
ids = np.array([[49406, 320, 1125, 539, 320, 2368, 49407], [49406, 320, 1125, 539, 320, 1929, 49407]])
if side == "ours":
    from groupvit_np import GroupViTModel
    model = GroupViTModel.from_pretrained(ckpt, dtype="float32", storage_dtype=None if storage == "-" else storage)
    out = model(input_ids=ids, pixel_values=pixels, output_segmentation=True)
else:
    import torch
    from transformers import GroupViTModel
    model = GroupViTModel.from_pretrained(ckpt, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), pixel_values=torch.from_numpy(pixels), output_segmentation=True)
# VmHWM is this process image's peak RSS; ru_maxrss would also count the forked parent's pages before exec.
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"peak_rss_mb": int(hwm.split()[1]) / 1024}))
"""


def measure(side: str, ckpt: Path, storage: str = "-") -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, side, str(ckpt), storage], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{side} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def main() -> None:
    set_threads(2)
    tmp = Path(tempfile.gettempdir())
    results = {}
    for storage in ("float32", "float16"):
        ckpt = full_size_checkpoint(tmp / f"groupvit-full-random-{storage}", storage)
        ours, hf = measure("ours", ckpt), measure("hf", ckpt)
        results[f"{storage} checkpoint"] = {"ours_mb": ours, "hf_mb": hf, "ratio": ours / hf}
        print(f"{storage} checkpoint: ours {ours:7.1f} MB   hf {hf:7.1f} MB   ratio {ours / hf:.2f}", flush=True)
        if storage == "float16":  # weight matrices kept in half precision, computed in float32
            half = measure("ours", ckpt, "float16")
            results["float16 checkpoint, storage_dtype=float16"] = {"ours_mb": half, "hf_mb": hf, "ratio": half / hf}
            print(f"{storage} checkpoint, half storage: ours {half:7.1f} MB   ratio {half / hf:.2f}", flush=True)
    print("wrote", write_results("memory", {"cases": results, "note": "peak RSS (ru_maxrss), fp32 compute"}))


if __name__ == "__main__":
    main()
