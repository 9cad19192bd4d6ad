"""Assemble a trained demo run and its held-out evaluation into the shipped checkpoint folder.

    python tools/train_demo.py --out /tmp/run ...                 # or --export a run in progress
    python tools/eval_demo.py /tmp/run --out /tmp/run-eval --compare-numpy
    python tools/ship_demo.py /tmp/run /tmp/run-eval weights/groupvit-demo-scenes

Copies the weights, tokenizer, preprocessor config, example picture and training log from the run, the metrics and
the picture of held-out scenes from the evaluation, and writes `segmentation.json`: the background thresholds that
`eval_demo.py` chose on the validation scenes, and as the default method the inference that scored higher there
(never the test scenes). `MODEL_CARD.md`, weights/README.md and the README are written by hand and left as they
are (the closing message lists them). Each file is replaced atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from groupvit_np.tasks.scenes import CLASS_NAMES  # noqa: E402

FROM_RUN = ("config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer_config.json",
            "special_tokens_map.json", "preprocessor_config.json", "example.png", "train_log.jsonl")  # fmt: skip
FROM_EVAL = {"metrics.json": "eval-metrics.json", "segmentation.png": "eval-segmentation.png"}
MAX_BYTES = 16 * 2**20  # the limit on the shipped checkpoint


def segmentation_settings(metrics: dict, preprocessor: dict) -> dict:
    """`segmentation.json` for a checkpoint from `eval_demo.py`'s metrics and its preprocessor config."""
    hf, original = metrics["seg_hf"], metrics["seg_original"]
    method = "hf" if hf["val_fg_miou"] >= original["val_fg_miou"] else "original"
    return {
        "method": method,
        "image_size": preprocessor["crop_size"]["height"],
        "labels": ["background", *CLASS_NAMES],
        "templates": ["a {}"],
        "threshold_original": round(original["threshold"], 4),
        "threshold_hf": round(hf["threshold"], 4),
        "note": (
            f"Background thresholds chosen on {metrics.get('n_val', 200)} validation scenes by tools/eval_demo.py. "
            "threshold_original applies to the original inference's group scores (softmax products), threshold_hf "
            "to segmentation_logits / exp(logit_scale)**2. image_mean / image_std: the statistics the checkpoint "
            "was trained with, which the original inference uses instead of its ImageNet ones. method: the "
            f"inference `groupvit-np segment` runs by default, the one with the higher validation fg mIoU "
            f"(HF-style {hf['val_fg_miou']:.3f}, original-style {original['val_fg_miou']:.3f})."
        ),
        "image_mean": preprocessor["image_mean"],
        "image_std": preprocessor["image_std"],
    }


def _copy_atomic(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def ship(run: Path, evaluation: Path, dest: Path) -> dict:
    missing = [str(run / n) for n in FROM_RUN if not (run / n).is_file()]
    missing += [str(evaluation / n) for n in FROM_EVAL if not (evaluation / n).is_file()]
    if missing:
        sys.exit(f"ship_demo: missing {', '.join(missing)}")
    size = sum((run / n).stat().st_size for n in FROM_RUN) + sum((evaluation / n).stat().st_size for n in FROM_EVAL)
    if size > MAX_BYTES:
        sys.exit(f"ship_demo: the checkpoint would hold {size / 2**20:.1f} MiB, over the 16 MiB limit")
    dest.mkdir(parents=True, exist_ok=True)
    for name in FROM_RUN:
        _copy_atomic(run / name, dest / name)
    for name, shipped in FROM_EVAL.items():
        _copy_atomic(evaluation / name, dest / shipped)
    metrics = json.loads((evaluation / "metrics.json").read_text(encoding="utf-8"))
    preprocessor = json.loads((run / "preprocessor_config.json").read_text(encoding="utf-8"))
    settings = segmentation_settings(metrics, preprocessor)
    tmp = dest / "segmentation.json.tmp"
    tmp.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, dest / "segmentation.json")
    return settings


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path, help="a folder written by train_demo.py (at the end of a run, or --export)")
    p.add_argument("evaluation", type=Path, help="the --out folder of eval_demo.py for that run")
    p.add_argument("dest", type=Path, help="the checkpoint folder to write, e.g. weights/groupvit-demo-scenes")
    a = p.parse_args()
    chosen = ship(a.run, a.evaluation, a.dest)
    print(f"wrote {a.dest}: method {chosen['method']}, threshold_hf {chosen['threshold_hf']}, "
          f"threshold_original {chosen['threshold_original']}. By hand: MODEL_CARD.md (recipe, metrics, limits), "
          "weights/README.md (SHA-256, size, recipe row), the README's example paragraph, then rebuild the "
          "notebooks (tools/build_notebooks.py) and read their CHECKPOINT-DEPENDENT sentences")  # fmt: skip
