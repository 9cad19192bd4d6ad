"""Ours vs HF transformers (torch CPU) on the full-size model, same weights, inputs and thread count.

    pip install -e '.[reference]' && python bench/bench_model.py [--threads 2] [--repeats 7]

Prints median times and the ratio ours/HF per case (lower is better) and writes bench/results/model.json.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import full_size_checkpoint, interleaved, set_threads, write_results  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--checkpoint", type=Path, default=Path(tempfile.gettempdir()) / "groupvit-full-random")
    args = ap.parse_args()
    set_threads(args.threads)

    import numpy as np
    import torch
    from transformers import GroupViTModel as HFModel

    from groupvit_np import GroupViTModel

    torch.set_num_threads(args.threads)
    ckpt = full_size_checkpoint(args.checkpoint)
    ours = GroupViTModel.from_pretrained(ckpt, dtype="float32")
    hf = HFModel.from_pretrained(ckpt).eval()

    rng = np.random.default_rng(0)
    img1 = rng.normal(size=(1, 3, 224, 224)).astype(np.float32)
    img8 = rng.normal(size=(8, 3, 224, 224)).astype(np.float32)
    lengths = [7, 9, 12, 5, 16, 8, 10, 6]
    ids77 = np.full((8, 77), 49407, np.int64)
    mask77 = np.zeros((8, 77), np.int64)
    for i, n in enumerate(lengths):
        ids77[i, :n] = [49406, *rng.integers(300, 40000, n - 2), 49407]
        mask77[i, :n] = 1
    longest = max(lengths)
    ids10 = np.concatenate([ids77, ids77[:2]])[:, :longest]
    mask10 = np.concatenate([mask77, mask77[:2]])[:, :longest]
    t = torch.from_numpy

    def hf_call(fn, *a, **k):
        def run():
            with torch.no_grad():
                return fn(*a, **k)

        return run

    cases = {
        "image features, batch 1": (lambda: ours.get_image_features(img1), hf_call(hf.get_image_features, t(img1))),
        "image features, batch 8": (lambda: ours.get_image_features(img8), hf_call(hf.get_image_features, t(img8))),
        "text features, batch 8, padded to 77": (
            lambda: ours.get_text_features(ids77, mask77),
            hf_call(hf.get_text_features, t(ids77), t(mask77)),
        ),
        "text features, batch 8, padded to longest": (
            lambda: ours.get_text_features(ids77[:, :longest], mask77[:, :longest]),
            hf_call(hf.get_text_features, t(ids77[:, :longest]), t(mask77[:, :longest])),
        ),
        "forward + segmentation, 1 image x 10 texts": (
            lambda: ours(input_ids=ids10, pixel_values=img1, attention_mask=mask10, output_segmentation=True),
            hf_call(hf, input_ids=t(ids10), pixel_values=t(img1), attention_mask=t(mask10), output_segmentation=True),
        ),
    }
    results = interleaved(cases, args.repeats)
    meta = {
        "threads": args.threads,
        "repeats": args.repeats,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "blas": np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"],
    }
    print("wrote", write_results("model", {"meta": meta, "cases": results}))


if __name__ == "__main__":
    main()
