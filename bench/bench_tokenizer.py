"""Ours vs HF's slow CLIPTokenizer (transformers 4.57.6) on the parity corpus, in the same process and run.

    pip install -e '.[reference]' && python bench/bench_tokenizer.py [--repeats 7]

Cases: the whole corpus as one padded, truncated batch (the model's input path), text by text `encode`, and the
same with the BPE memo emptied before every repeat (first sight of every word). Prints median times, the time ratio
ours/HF (lower is better) and the throughput ratio HF/ours (the target is >= 2), and writes
bench/results/tokenizer.json.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests"), str(ROOT)]
from common import interleaved, write_results  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()

    from reference_tokenizer import hf_tokenizer, versions
    from tokenizer_corpus import all_texts

    from groupvit_np.preprocessing.tokenizer import CLIPTokenizer

    texts = all_texts()
    ours, hf = CLIPTokenizer(), hf_tokenizer()
    assert ours(texts, padding=True, truncation=True) == {**hf(texts, padding=True, truncation=True)}, "outputs differ"
    n_tokens = sum(len(ours.encode(t)) for t in texts)
    print(f"{len(texts)} texts, {n_tokens} tokens; {versions()}")

    def cold(tok, reset):
        def run():
            reset(tok)
            for t in texts:
                tok.encode(t)

        return run

    def reset_ours(tok):
        tok._memo = {k: v for k, v in tok._memo.items() if k in ("<|startoftext|>", "<|endoftext|>")}

    def reset_hf(tok):
        tok.cache = {k: v for k, v in tok.cache.items() if k in ("<|startoftext|>", "<|endoftext|>")}

    cases = {
        "batch, padding+truncation (warm memo)": (
            lambda: ours(texts, padding=True, truncation=True),
            lambda: hf(texts, padding=True, truncation=True),
        ),
        "encode text by text (warm memo)": (
            lambda: [ours.encode(t) for t in texts],
            lambda: [hf.encode(t) for t in texts],
        ),
        "encode text by text (memo emptied)": (cold(ours, reset_ours), cold(hf, reset_hf)),
    }
    results = interleaved(cases, repeats=args.repeats)
    for name, r in results.items():
        r["throughput_ratio"] = 1 / r["ratio"]
        print(f"{name:38s} throughput ours/HF = {r['throughput_ratio']:.2f}x")
    meta = {"repeats": args.repeats, "texts": len(texts), "tokens": n_tokens, "machine": platform.machine(),
            "python": platform.python_version(), **versions()}  # fmt: skip
    print("wrote", write_results("tokenizer", {"meta": meta, "cases": results}))


if __name__ == "__main__":
    main()
