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
    return {"median_s": statistics.median(samples), "q1_s": q[0], "q3_s": q[2], "n": len(samples)}


def interleaved(cases: dict[str, tuple], repeats: int, warmup: int = 1) -> dict[str, dict]:
    """Time each case's (ours, hf) callables alternately, so both see the same machine load."""
    out = {}
    for name, (ours, hf) in cases.items():
        for _ in range(warmup):
            ours(), hf()
        t_ours, t_hf = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            ours()
            t1 = time.perf_counter()
            hf()
            t2 = time.perf_counter()
            t_ours.append(t1 - t0)
            t_hf.append(t2 - t1)
        a, b = stats(t_ours), stats(t_hf)
        out[name] = {"ours": a, "hf": b, "ratio": a["median_s"] / b["median_s"]}
        print(f"{name:38s} ours {a['median_s'] * 1e3:8.1f} ms   hf {b['median_s'] * 1e3:8.1f} ms   "
              f"ratio {out[name]['ratio']:.2f}", flush=True)  # fmt: skip
    return out


def write_results(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)
    return path
