"""Shared helpers for the benchmarks: thread settings, a full-size checkpoint on disk, timing statistics."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def set_threads(n: int) -> None:
    """Pin BLAS/OpenMP threads before NumPy or torch start their pools (the same count for both sides)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


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
    out = {}
    for name, (ours, hf) in cases.items():
        for _ in range(warmup):
            ours(), hf()
        t_ours, t_hf = [], []
        for _ in range(repeats):
            time.sleep(gap_s)
            t0 = time.perf_counter()
            ours()
            t1 = time.perf_counter()
            time.sleep(gap_s)
            t2 = time.perf_counter()
            hf()
            t3 = time.perf_counter()
            t_ours.append(t1 - t0)
            t_hf.append(t3 - t2)
        a, b = stats(t_ours), stats(t_hf)
        # The median ratio is the headline; on a shared machine the ratio of best times is the steadier one (the
        # least-disturbed run of each side), so both are kept.
        out[name] = {"ours": a, "hf": b, "ratio": a["median_s"] / b["median_s"], "ratio_min": a["min_s"] / b["min_s"]}
        print(f"{name:42s} ours {a['median_s'] * 1e3:8.1f} ms   hf {b['median_s'] * 1e3:8.1f} ms   "
              f"ratio {out[name]['ratio']:.2f}   (best times: {out[name]['ratio_min']:.2f})", flush=True)  # fmt: skip
    return out


def write_results(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)
    return path
