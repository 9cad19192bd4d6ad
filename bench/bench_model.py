"""Ours (NumPy eager, JAX jit, torch tensors) vs HF transformers and ONNX Runtime on the full-size model.

    pip install -e '.[bench]' && python bench/bench_model.py [--threads 2] [--repeats 7] [--sides numpy,jax,...]
    python bench/bench_model.py --quick    # seconds: the shipped tiny checkpoint, every side runs, nothing written

Same weights, inputs and thread count for every side, timed round robin in one process with a pause before each
call (common.interleaved_sides). Sides:
  numpy  our model code, eager NumPy (the reference path)
  jax    the same code through jax.jit (compiled once per input shape; the first call's time is reported apart)
  torch  the same code on torch tensors through array-api-compat (eager)
  ort    HF's model exported to ONNX (TorchScript exporter, opset 17) in ONNX Runtime: fast CPU inference today
  hf     transformers' GroupViTModel in torch, the reference every ratio is against
Prints median times and ratios side/HF (median | best times) and each side's first call, which for JAX is the
compilation for that input shape (`compile_s` = first call - median), and writes bench/results/model.json. Peak
memory of every side is bench_memory.py's.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    full_size_checkpoint,
    interleaved_sides,
    onnx_export,
    ort_session,
    set_threads,
    tiny_checkpoint,
    write_results,
)

ALL_SIDES = ("numpy", "jax", "torch", "ort", "hf")


def inputs():
    """Images [1|8, 3, 224, 224] and 8 texts of CLIP ids padded to 77, as the earlier benchmarks used."""
    import numpy as np

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
    return img1, img8, ids77, mask77, ids10, mask10, longest


def ort_models(hf, ckpt: Path, img1, ids77, mask77, ids10, mask10, longest, threads: int) -> dict:
    """ONNX Runtime sessions of HF's model, one per task: image features (dynamic batch), text features and the
    forward with segmentation (static shapes, one file per benchmark shape). Exported once into ckpt/onnx/."""
    import torch

    class Image(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixel_values):
            return self.m.get_image_features(pixel_values)

    class Text(Image):
        def forward(self, input_ids, attention_mask):
            return self.m.get_text_features(input_ids, attention_mask)

    class Forward(Image):
        def forward(self, input_ids, pixel_values, attention_mask):
            o = self.m(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                       output_segmentation=True)  # fmt: skip
            return o.logits_per_image, o.segmentation_logits

    t = torch.from_numpy
    d = ckpt / "onnx"
    files = {
        "image": onnx_export(
            Image(hf),
            (t(img1),),
            d / "image_features.onnx",
            ["pixel_values"],
            ["image_features"],
            {"pixel_values": {0: "batch"}, "image_features": {0: "batch"}},
        ),
        "text77": onnx_export(
            Text(hf),
            (t(ids77), t(mask77)),
            d / "text_features_8x77.onnx",
            ["input_ids", "attention_mask"],
            ["text_features"],
        ),
        f"text{longest}": onnx_export(
            Text(hf),
            (t(ids77[:, :longest]), t(mask77[:, :longest])),
            d / f"text_features_8x{longest}.onnx",
            ["input_ids", "attention_mask"],
            ["text_features"],
        ),
        "forward": onnx_export(
            Forward(hf),
            (t(ids10), t(img1), t(mask10)),
            d / "forward_segmentation_1x10.onnx",
            ["input_ids", "pixel_values", "attention_mask"],
            ["logits_per_image", "segmentation_logits"],
        ),
    }
    return {name: ort_session(path, threads) for name, path in files.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--checkpoint", type=Path, default=Path(tempfile.gettempdir()) / "groupvit-full-random")
    ap.add_argument("--sides", default=",".join(ALL_SIDES), help=f"comma-separated subset of {','.join(ALL_SIDES)}")
    ap.add_argument("--quick", action="store_true",
                    help="check that every side runs: the shipped tiny checkpoint, one repeat, no pauses, no results "
                         "written (its times mean nothing)")  # fmt: skip
    args = ap.parse_args()
    if args.quick:
        args.repeats = 1
    sides = [s for s in args.sides.split(",") if s]
    missing = {"jax": "jax", "ort": "onnxruntime"}
    for side, module in missing.items():
        if side in sides and importlib.util.find_spec(module) is None:
            print(f"skipping the {side} side: {module} is not installed (pip install -e '.[bench]')")
            sides.remove(side)
    if "hf" not in sides:
        sides.append("hf")
    set_threads(args.threads)

    import numpy as np
    import torch
    from transformers import GroupViTModel as HFModel

    from groupvit_np import GroupViTModel

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.gettempdir())
    ckpt = tiny_checkpoint(tmp / "groupvit-tiny-bench-float32") if args.quick else full_size_checkpoint(args.checkpoint)
    hf = HFModel.from_pretrained(ckpt).eval()
    img1, img8, ids77, mask77, ids10, mask10, longest = inputs()
    ids_l, mask_l = ids77[:, :longest], mask77[:, :longest]
    t = torch.from_numpy

    def no_grad(fn, *a, **k):
        def run():
            with torch.no_grad():
                return fn(*a, **k)

        return run

    def ours(model, finish=lambda x: x):
        """Our model's five calls; `finish` waits for asynchronous results (JAX dispatches and returns)."""
        return {
            "image features, batch 1": lambda: finish(model.get_image_features(img1)),
            "image features, batch 8": lambda: finish(model.get_image_features(img8)),
            "text features, batch 8, padded to 77": lambda: finish(model.get_text_features(ids77, mask77)),
            "text features, batch 8, padded to longest": lambda: finish(model.get_text_features(ids_l, mask_l)),
            "forward + segmentation, 1 image x 10 texts": lambda: finish(
                model(
                    input_ids=ids10, pixel_values=img1, attention_mask=mask10, output_segmentation=True
                ).segmentation_logits
            ),
        }

    per_side = {}
    if "numpy" in sides:
        per_side["numpy"] = ours(GroupViTModel.from_pretrained(ckpt, dtype="float32"))
    if "jax" in sides:
        import jax

        per_side["jax"] = ours(GroupViTModel.from_pretrained(ckpt, dtype="float32", xp="jax"), jax.block_until_ready)
    if "torch" in sides:
        per_side["torch"] = {k: no_grad(f) for k, f in ours(GroupViTModel.from_pretrained(ckpt, xp="torch")).items()}
    if "ort" in sides:
        s = ort_models(hf, ckpt, img1, ids77, mask77, ids10, mask10, longest, args.threads)
        per_side["ort"] = {
            "image features, batch 1": lambda: s["image"].run(None, {"pixel_values": img1}),
            "image features, batch 8": lambda: s["image"].run(None, {"pixel_values": img8}),
            "text features, batch 8, padded to 77": lambda: s["text77"].run(
                None, {"input_ids": ids77, "attention_mask": mask77}
            ),
            "text features, batch 8, padded to longest": lambda: s[f"text{longest}"].run(
                None, {"input_ids": ids_l, "attention_mask": mask_l}
            ),
            "forward + segmentation, 1 image x 10 texts": lambda: s["forward"].run(
                None, {"input_ids": ids10, "pixel_values": img1, "attention_mask": mask10}
            ),
        }
    per_side["hf"] = {
        "image features, batch 1": no_grad(hf.get_image_features, t(img1)),
        "image features, batch 8": no_grad(hf.get_image_features, t(img8)),
        "text features, batch 8, padded to 77": no_grad(hf.get_text_features, t(ids77), t(mask77)),
        "text features, batch 8, padded to longest": no_grad(hf.get_text_features, t(ids_l), t(mask_l)),
        "forward + segmentation, 1 image x 10 texts": no_grad(
            hf, input_ids=t(ids10), pixel_values=t(img1), attention_mask=t(mask10), output_segmentation=True
        ),
    }
    agreement, first_call = check_outputs(per_side)
    cases = {name: {side: per_side[side][name] for side in sides} for name in per_side["hf"]}
    results = interleaved_sides(cases, args.repeats, gap_s=0.0 if args.quick else 0.3)
    for name, r in results.items():
        r["first_call_s"] = first_call[name]
        if "jax" in sides:
            r["compile_s"] = {"jax": first_call[name]["jax"] - r["sides"]["jax"]["median_s"]}
        print(f"{name:42s} first call: " + "  ".join(f"{side} {t:.2f} s" for side, t in first_call[name].items()),
              flush=True)  # fmt: skip
    meta = {
        "threads": args.threads,
        "repeats": args.repeats,
        "sides": sides,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "blas": np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"],
        "max_abs_vs_hf": agreement,
    }
    for side, module in (("jax", "jax"), ("ort", "onnxruntime")):
        if side in sides:
            meta[module] = importlib.import_module(module).__version__
    if args.quick:
        print("quick run: every side ran; nothing written")
        return
    print("wrote", write_results("model", {"meta": meta, "cases": results}))


def check_outputs(per_side: dict) -> tuple[dict, dict]:
    """Every side's first output against HF's, per case (max abs difference): the sides compute the same thing.

    Also the time of each side's very first call per case: for JAX, the compilation for that shape plus one run.
    """
    import time

    import numpy as np

    from groupvit_np.backend import to_numpy

    def first(x):
        if isinstance(x, list | tuple):  # ONNX Runtime returns a list of outputs
            x = x[-1] if len(x) == 2 else x[0]  # forward: the segmentation logits
        if hasattr(x, "segmentation_logits"):
            x = x.segmentation_logits
        return to_numpy(x.detach() if hasattr(x, "detach") else x)

    def timed(fn):
        t0 = time.perf_counter()
        result = first(fn())  # to host: waits for asynchronous results
        return result, time.perf_counter() - t0

    out, first_call = {}, {}
    for name, ref_fn in per_side["hf"].items():
        ref, t_hf = timed(ref_fn)
        out[name], first_call[name] = {}, {}
        for side, fns in per_side.items():
            if side != "hf":
                got, first_call[name][side] = timed(fns[name])
                out[name][side] = float(np.abs(got - ref).max())
        first_call[name]["hf"] = t_hf
        print(f"{name:42s} max |side - hf|: " + ", ".join(f"{s} {v:.2g}" for s, v in out[name].items()), flush=True)
    return out, first_call


if __name__ == "__main__":
    main()
