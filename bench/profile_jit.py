"""Where the time goes: our model under jax.jit against HF's model in ONNX Runtime, image features, full size.

    pip install -e '.[bench]' && python bench/profile_jit.py [--batch 1] [--threads 2] [--repeats 5]
    python bench/profile_jit.py --quick    # the shipped tiny checkpoint: checks that both profiles run, writes nothing

Both sides run with their profilers on, the same weights, input and thread count. Per side, the time of each
kernel is summed over the runs and grouped: matrix products (XLA's library fusions around dots, ORT's
MatMul/Gemm), attention products, softmax, normalisation, GELU and the other elementwise work, and layout copies.
Writes bench/results/profile_b<batch>.json and prints both tables; the totals are kernel time, not wall time.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import full_size_checkpoint, set_threads, tiny_checkpoint, write_results  # noqa: E402


def jax_profile(ckpt: Path, pixels, repeats: int) -> dict[str, float]:
    """Milliseconds per call by kind of XLA kernel (one thunk per fusion, dot or copy), from jax.profiler."""
    import jax

    from groupvit_np import GroupViTModel
    from groupvit_np.nn import functional as F

    model = GroupViTModel.from_pretrained(ckpt, dtype="float32", xp="jax")
    fn = jax.jit(lambda p, x: F.image_features(p, model.config, x),
                 compiler_options={"xla_cpu_enable_xprof_traceme": True})  # fmt: skip
    compiled = fn.lower(model.params, pixels).compile()
    kinds = _hlo_kinds(compiled.as_text())
    jax.block_until_ready(fn(model.params, pixels))
    folder = tempfile.mkdtemp()
    with jax.profiler.trace(folder, create_perfetto_trace=True):
        for _ in range(repeats):
            jax.block_until_ready(fn(model.params, pixels))
    (trace,) = glob.glob(f"{folder}/**/perfetto_trace.json.gz", recursive=True)
    events = json.load(gzip.open(trace))
    events = events["traceEvents"] if isinstance(events, dict) else events
    out: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("ph") == "X" and e["name"] in kinds:
            out[kinds[e["name"]]] += e.get("dur", 0) / 1e3 / repeats
    return dict(out)


def _hlo_kinds(hlo: str) -> dict[str, str]:
    """Instruction name -> kind, from the optimised HLO: what each fused computation contains decides."""
    bodies: dict[str, list[str]] = {}  # computation name -> the ops in it
    instructions: list[tuple[str, str, str]] = []  # (name, op, called computation)
    current, entry = None, False
    for line in hlo.splitlines():
        header = re.match(r"^(ENTRY )?%?([\w.\-]+) .*\{$", line)
        if header:
            current, entry = bodies.setdefault(header.group(2), []), bool(header.group(1))
            continue
        m = re.match(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*? ([a-z][\w\-]*)\(", line)
        if m and current is not None:
            current.append(m.group(2))
            called = re.search(r"calls=%?([\w.\-]+)", line)
            if entry:  # the executable runs the entry computation's instructions, one thunk each
                instructions.append((m.group(1), m.group(2), called.group(1) if called else ""))
    kinds = {}
    for name, op, called in instructions:
        ops = set(bodies.get(called, [])) | {op}
        if "dot" in ops or "convolution" in ops or re.search(r"[xy]nn_fusion", name):
            kinds[name] = "matmul"
        elif "exponential" in ops and "reduce" in ops:
            kinds[name] = "softmax"
        elif "rsqrt" in ops or "sqrt" in ops:
            kinds[name] = "layer norm"
        elif "clamp" in ops and bodies.get(called, []).count("multiply") > 6:
            kinds[name] = "gelu (rational erf)"
        elif ops <= {"parameter", "copy", "transpose", "bitcast", "fusion", "reshape"}:
            kinds[name] = "layout copies"
        else:
            kinds[name] = "other elementwise"
    return kinds


ORT_KINDS = {
    "MatMul": "matmul", "Gemm": "matmul", "FusedMatMul": "matmul", "MatMulNBits": "matmul", "Conv": "matmul",
    "Softmax": "softmax", "LayerNormalization": "layer norm", "SimplifiedLayerNormalization": "layer norm",
    "Gelu": "gelu (rational erf)", "BiasGelu": "gelu (rational erf)", "Erf": "gelu (rational erf)",
    "FastGelu": "gelu (rational erf)", "Transpose": "layout copies", "Reshape": "layout copies",
    "Concat": "layout copies", "Slice": "layout copies", "Split": "layout copies",
}  # fmt: skip


def ort_profile(ckpt: Path, pixels, repeats: int, threads: int) -> dict[str, float]:
    """Milliseconds per call by kind of ONNX Runtime node, from its own profiler (kernel time of each node)."""
    import onnxruntime as ort
    from bench_memory import ensure_onnx

    ensure_onnx(ckpt)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.enable_profiling = True
    opts.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    session = ort.InferenceSession(str(ckpt / "onnx" / "image_features.onnx"), opts, providers=["CPUExecutionProvider"])
    session.run(None, {"pixel_values": pixels})
    for _ in range(repeats):
        session.run(None, {"pixel_values": pixels})
    events = json.loads(Path(session.end_profiling()).read_text())
    runs = [e for e in events if e.get("name") == "model_run"]
    after_warmup = runs[0]["ts"] + runs[0]["dur"]  # the first run allocates ORT's memory arena: left out
    out: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] > after_warmup:
            op = e.get("args", {}).get("op_name", "")
            out[ORT_KINDS.get(op, "other elementwise")] += e["dur"] / 1e3 / (len(runs) - 1)
    return dict(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--checkpoint", type=Path, default=Path(tempfile.gettempdir()) / "groupvit-full-random")
    ap.add_argument("--quick", action="store_true",
                    help="check that both profiles run: the tiny checkpoint, one repeat, nothing written")  # fmt: skip
    args = ap.parse_args()
    set_threads(args.threads)
    import numpy as np

    if args.quick:
        args.repeats = 1
        ckpt = tiny_checkpoint(Path(tempfile.gettempdir()) / "groupvit-tiny-bench-float32")
    else:
        ckpt = full_size_checkpoint(args.checkpoint)
    pixels = np.random.default_rng(0).normal(size=(args.batch, 3, 224, 224)).astype(np.float32)
    sides = {"jax": jax_profile(ckpt, pixels, args.repeats), "ort": ort_profile(ckpt, pixels, args.repeats,
                                                                                 args.threads)}  # fmt: skip
    kinds = sorted({k for side in sides.values() for k in side}, key=lambda k: -sides["jax"].get(k, 0))
    print(f"image features, batch {args.batch}: kernel milliseconds per call")
    print(f"{'':22s} {'jax':>8s} {'ort':>8s}")
    for k in kinds:
        print(f"{k:22s} {sides['jax'].get(k, 0):8.1f} {sides['ort'].get(k, 0):8.1f}")
    print(f"{'total':22s} {sum(sides['jax'].values()):8.1f} {sum(sides['ort'].values()):8.1f}")
    if args.quick:
        print("quick run: both profiles ran; nothing written")
        return
    print("wrote", write_results(f"profile_b{args.batch}", {"batch": args.batch, "threads": args.threads,
                                                             "ms_per_call": sides}))  # fmt: skip


if __name__ == "__main__":
    main()
