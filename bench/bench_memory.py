"""Peak resident memory of a fresh process that loads the full-size model and runs one forward pass.

    pip install -e '.[bench]' && python bench/bench_memory.py
    python bench/bench_memory.py --quick    # the shipped tiny checkpoint: checks every side runs, nothing written

Each side runs in its own subprocess (imports included, as a user would see it); writes bench/results/memory.json.
Two tasks: the full forward with segmentation (1 image, 2 texts) and image features of one image, the task the
ONNX Runtime side runs (HF's image tower exported to ONNX, see bench_model.py). The JAX side includes its
compilation; its weights are device buffers copied from the memory-mapped file.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import full_size_checkpoint, set_threads, tiny_checkpoint, write_results  # noqa: E402

CHILD = r"""
import json, sys
import numpy as np
side, ckpt, storage, task = sys.argv[1:5]
rng = np.random.default_rng(0)
pixels = rng.normal(size=(1, 3, 224, 224)).astype(np.float32)
ids = np.array([[49406, 320, 1125, 539, 320, 2368, 49407], [49406, 320, 1125, 539, 320, 1929, 49407]])
if side in ("ours", "jax", "torch"):
    from groupvit_np import GroupViTModel
    xp = {"ours": None, "jax": "jax", "torch": "torch"}[side]
    model = GroupViTModel.from_pretrained(ckpt, dtype="float32", storage_dtype=None if storage == "-" else storage,
                                          xp=xp)
    if task == "forward":
        out = model(input_ids=ids, pixel_values=pixels, output_segmentation=True).segmentation_logits
    else:
        out = model.get_image_features(pixels)
    np.asarray(out)  # waits for JAX's asynchronous result
elif side == "ort":
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    session = ort.InferenceSession(ckpt + "/onnx/image_features.onnx", opts, providers=["CPUExecutionProvider"])
    out = session.run(None, {"pixel_values": pixels})
else:
    import torch
    from transformers import GroupViTModel
    model = GroupViTModel.from_pretrained(ckpt, dtype=torch.float32).eval()
    with torch.no_grad():
        if task == "forward":
            out = model(input_ids=torch.from_numpy(ids), pixel_values=torch.from_numpy(pixels),
                        output_segmentation=True)
        else:
            out = model.get_image_features(torch.from_numpy(pixels))
# VmHWM is this process image's peak RSS; ru_maxrss would also count the forked parent's pages before exec.
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"peak_rss_mb": int(hwm.split()[1]) / 1024}))
"""


def measure(side: str, ckpt: Path, storage: str = "-", task: str = "forward") -> float:
    cmd = [sys.executable, "-c", CHILD, side, str(ckpt), storage, task]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{side} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="check that every side runs: the shipped tiny checkpoint, no results written (its figures "
                         "mean nothing)")  # fmt: skip
    args = ap.parse_args()
    set_threads(2)
    tmp = Path(tempfile.gettempdir())
    has_jax = importlib.util.find_spec("jax") is not None
    has_ort = importlib.util.find_spec("onnxruntime") is not None
    results = {}
    for storage in ("float32", "float16"):
        if args.quick:
            ckpt = tiny_checkpoint(tmp / f"groupvit-tiny-bench-{storage}", storage)
        else:
            ckpt = full_size_checkpoint(tmp / f"groupvit-full-random-{storage}", storage)
        ours, hf = measure("ours", ckpt), measure("hf", ckpt)
        results[f"{storage} checkpoint"] = {"ours_mb": ours, "hf_mb": hf, "ratio": ours / hf}
        print(f"{storage} checkpoint: ours {ours:7.1f} MB   hf {hf:7.1f} MB   ratio {ours / hf:.2f}", flush=True)
        if storage == "float16":  # weight matrices kept in half precision, computed in float32
            half = measure("ours", ckpt, "float16")
            results["float16 checkpoint, storage_dtype=float16"] = {"ours_mb": half, "hf_mb": hf, "ratio": half / hf}
            print(f"{storage} checkpoint, half storage: ours {half:7.1f} MB   ratio {half / hf:.2f}", flush=True)
            continue
        # The other sides, float32 checkpoint: forward + segmentation, then image features (ONNX Runtime's task).
        for task in ("forward", "image"):
            row = {"hf_mb": hf if task == "forward" else measure("hf", ckpt, task=task)}
            row["numpy_mb"] = ours if task == "forward" else measure("ours", ckpt, task=task)
            row["torch_mb"] = measure("torch", ckpt, task=task)
            if has_jax:
                row["jax_mb"] = measure("jax", ckpt, task=task)
            if has_ort and task == "image":
                ensure_onnx(ckpt)
                row["ort_mb"] = measure("ort", ckpt, task=task)
            results[f"float32 checkpoint, {task}, every side"] = row
            print(f"float32 {task}: " + "  ".join(f"{k} {v:7.1f}" for k, v in row.items()), flush=True)
    if args.quick:
        print("quick run: every side ran; nothing written")
        return
    print("wrote", write_results("memory", {"cases": results, "note": "peak RSS (VmHWM), fp32 compute"}))


def ensure_onnx(ckpt: Path) -> None:
    """HF's image tower as ONNX under ckpt/onnx/ (the export bench_model.py makes), made here if missing."""
    if (ckpt / "onnx" / "image_features.onnx").is_file():
        return
    import torch
    from bench_model import inputs, ort_models
    from transformers import GroupViTModel

    torch.set_num_threads(2)
    hf = GroupViTModel.from_pretrained(ckpt).eval()
    img1, _, ids77, mask77, ids10, mask10, longest = inputs()
    ort_models(hf, ckpt, img1, ids77, mask77, ids10, mask10, longest, 2)


if __name__ == "__main__":
    main()
