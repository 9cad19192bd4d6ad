"""Shared helpers for the benchmarks: thread settings, a full-size checkpoint on disk, timing statistics."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def set_threads(n: int) -> None:
    """Pin BLAS/OpenMP threads before NumPy, torch or XLA start their pools (the same count for every side).

    XLA's CPU client sizes its Eigen pool from `intra_op_parallelism_threads`; ONNX Runtime takes the count per
    session (`ort_session`).
    """
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={n}".strip()


def full_size_checkpoint(directory: Path, dtype: str = "float32") -> Path:
    """A random full-size GroupViT (the nvidia/groupvit-gcc-yfcc architecture) saved by transformers."""
    import torch
    from transformers import GroupViTConfig, GroupViTModel

    if not (directory / "model.safetensors").is_file():
        torch.manual_seed(0)
        model = GroupViTModel(GroupViTConfig()).eval()
        with torch.no_grad():
            for stage in model.vision_model.encoder.stages:
                if stage.group_token is not None:
                    stage.group_token.normal_(std=0.02)
            model.vision_model.embeddings.position_embeddings.normal_(std=0.02)
        model.to(getattr(torch, dtype)).save_pretrained(directory, safe_serialization=True)
    return directory


def tiny_checkpoint(directory: Path, dtype: str = "float32") -> Path:
    """The shipped tiny random GroupViT (width 32, CLIP's vocabulary) re-saved by transformers in `dtype`: what the
    benchmarks' `--quick` runs use, to check in seconds that every side runs (their times mean nothing)."""
    import torch
    from transformers import GroupViTModel

    from groupvit_np._resources import data_dir

    if not (directory / "model.safetensors").is_file():
        model = GroupViTModel.from_pretrained(data_dir("weights") / "groupvit-tiny-random").eval()
        model.to(getattr(torch, dtype)).save_pretrained(directory, safe_serialization=True)
    return directory


def onnx_export(module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
                dynamic_axes: dict | None = None) -> Path:  # fmt: skip
    """Export a torch module to ONNX once (TorchScript exporter, `dynamo=False`, opset 17) and keep the file.

    This is how a user who wants fast CPU inference gets GroupViT into ONNX Runtime today. The eval-mode hard
    assignment exports as ArgMax + ScatterElements.
    """
    import torch

    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        module.eval()  # a wrapper module starts in training mode, and BatchNorm would use batch statistics
        tmp = path.with_suffix(".tmp")
        with torch.no_grad():
            torch.onnx.export(module, args, tmp, dynamo=False, opset_version=17, input_names=input_names,
                              output_names=output_names, dynamic_axes=dynamic_axes)  # fmt: skip
        tmp.replace(path)
    return path


def ort_session(path: Path, threads: int):
    """An ONNX Runtime CPU session with all graph optimisations and `threads` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def stats(samples: list[float]) -> dict[str, float]:
    q = statistics.quantiles(samples, n=4) if len(samples) > 1 else [samples[0]] * 3
    return {"median_s": statistics.median(samples), "q1_s": q[0], "q3_s": q[2], "min_s": min(samples),
            "n": len(samples)}  # fmt: skip


def interleaved(cases: dict[str, tuple], repeats: int, warmup: int = 1, gap_s: float = 0.3) -> dict[str, dict]:
    """Time each case's (ours, hf) callables alternately, so both see the same machine load.

    Each call is followed by `gap_s` of sleep: after a product OpenBLAS's worker threads spin for about 0.1 s
    (OPENBLAS_THREAD_TIMEOUT, 2^28 cycles by default) and torch's OpenMP threads also wait busily, so a call
    made straight after the other library's loses a core to it (HF batch 1 measured 185 ms right after ours,
    119 ms after a pause).
    """
    wide = interleaved_sides({name: {"ours": ours, "hf": hf} for name, (ours, hf) in cases.items()}, repeats, warmup,
                             gap_s, quiet=True)  # fmt: skip
    out = {}
    for name, r in wide.items():
        a, b = r["sides"]["ours"], r["sides"]["hf"]
        # The median ratio is the headline; on a shared machine the ratio of best times is the steadier one (the
        # least-disturbed run of each side), so both are kept.
        out[name] = {"ours": a, "hf": b, "ratio": r["ratio"]["ours"], "ratio_min": r["ratio_min"]["ours"]}
        print(f"{name:42s} ours {a['median_s'] * 1e3:8.1f} ms   hf {b['median_s'] * 1e3:8.1f} ms   "
              f"ratio {out[name]['ratio']:.2f}   (best times: {out[name]['ratio_min']:.2f})", flush=True)  # fmt: skip
    return out


def interleaved_sides(
    cases: dict[str, dict[str, Callable[[], object]]], repeats: int, warmup: int = 1, gap_s: float = 0.3,
    reference: str = "hf", quiet: bool = False,
) -> dict[str, dict]:  # fmt: skip
    """Time any number of sides per case in turn (round robin, `gap_s` of sleep before every call, as above).

    Per case: each side's statistics, its median and best-time ratios against `reference`, and the time of the
    untimed warm-up call each side makes first (`warmup_s`; a compiled side's compilation is timed by the caller,
    on its very first call).
    """
    out = {}
    for name, sides in cases.items():
        first = {}
        for side, fn in sides.items():
            time.sleep(gap_s)
            t0 = time.perf_counter()
            fn()
            first[side] = time.perf_counter() - t0
        for _ in range(warmup - 1):
            for fn in sides.values():
                fn()
        samples: dict[str, list[float]] = {side: [] for side in sides}
        for _ in range(repeats):
            for side, fn in sides.items():
                time.sleep(gap_s)
                t0 = time.perf_counter()
                fn()
                samples[side].append(time.perf_counter() - t0)
        st = {side: stats(v) for side, v in samples.items()}
        ref = st[reference]
        out[name] = {
            "sides": st,
            "ratio": {side: s["median_s"] / ref["median_s"] for side, s in st.items()},
            "ratio_min": {side: s["min_s"] / ref["min_s"] for side, s in st.items()},
            "warmup_s": first,
        }
        if not quiet:
            cells = "  ".join(f"{side} {s['median_s'] * 1e3:7.1f} ms ({out[name]['ratio'][side]:.2f}|"
                              f"{out[name]['ratio_min'][side]:.2f})" for side, s in st.items())  # fmt: skip
            print(f"{name:42s} {cells}", flush=True)
    return out


def write_results(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)
    return path
