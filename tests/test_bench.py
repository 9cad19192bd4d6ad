"""The benchmarks still run: `--quick` on the shipped tiny checkpoint, every installed side (the times mean nothing
there and are not checked; the figures come from full runs on a quiet machine)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, args, expected",
    [
        ("bench_model.py", ["--threads", "1"], ["numpy", "jax", "torch", "hf", "first call: numpy"]),
        ("bench_memory.py", [], ["numpy_mb", "jax_mb", "torch_mb", "hf_mb", "storage"]),
    ],
)
def test_benchmark_quick_mode_runs_every_side(script, args, expected, tmp_path):
    pytest.importorskip("torch", reason="the benchmarks need torch: pip install -e '.[bench]'")
    pytest.importorskip("transformers", reason="the benchmarks need transformers: pip install -e '.[bench]'")
    pytest.importorskip("jax", reason="the benchmarks' jax side: pip install -e '.[bench]'")
    results = {p: p.stat().st_mtime_ns for p in (BENCH / "results").iterdir()}
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the tiny checkpoint and its ONNX files go here
    done = subprocess.run([sys.executable, str(BENCH / script), "--quick", *args], capture_output=True, text=True,
                          timeout=600, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "quick run: every side ran; nothing written" in done.stdout
    for word in expected:
        assert word in done.stdout, (word, done.stdout[-2000:])
    assert {p: p.stat().st_mtime_ns for p in (BENCH / "results").iterdir()} == results  # nothing written
