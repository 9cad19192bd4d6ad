"""Segmentation of held-out scenes measured through the user's path: `groupvit-np segment` and the PNGs it writes.

    python tools/eval_cli.py                                   # the shipped default checkpoint, 400 test scenes
    python tools/eval_cli.py --weights /tmp/demo --method hf   # a candidate, one inference method forced

The test scenes (`SEED_RANGES["test"]`, disjoint from training) are written as PNG files, segmented by one
`groupvit-np segment` call with the 16 class names as `--labels` (background on, everything else the CLI's and the
checkpoint's defaults), and each `<scene>_labels.png` is compared with the generator's mask:
- foreground mIoU: IoU per class, intersections and unions summed over all scenes, averaged over the 16 classes;
- object-vs-background IoU: the same for "any object" against background, ignoring which class;
- objects named right: the share of objects whose pixels' most common predicted label (background included) is
  their own class; also apart for objects whose colour is unique in their scene and for those that share it
  with another object there ("a yellow circle and a yellow star"), the case the demo checkpoint fails.
Needs no torch: only the package and its CLI.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from groupvit_np.tasks.scenes import CLASS_NAMES, SEED_RANGES, colour_repeats, make_scenes  # noqa: E402

N_CLASSES = len(CLASS_NAMES)


def scores(pred: np.ndarray, gt: np.ndarray, scenes) -> dict:
    """Metrics of predicted label maps [B, H, W] (0 = background, k = CLASS_NAMES[k - 1]) against the masks."""
    per_class = []
    for k in range(1, N_CLASSES + 1):
        p, g = pred == k, gt == k
        if g.any():
            per_class.append(float((p & g).sum() / (p | g).sum()))
    named = np.array([np.bincount(pred[i][gt[i] == k], minlength=N_CLASSES + 1).argmax() == k
                      for i, s in enumerate(scenes) for k in s.class_ids])  # fmt: skip
    shared = np.array([r for s in scenes for r in colour_repeats(s.class_ids)])  # [objects], `named`'s order
    return {
        "scenes": len(scenes),
        "objects": len(named),
        "fg_miou": float(np.mean(per_class)),
        "object_vs_bg_iou": float(((pred > 0) & (gt > 0)).sum() / ((pred > 0) | (gt > 0)).sum()),
        "objects_named_right": float(np.mean(named)),
        "objects_colour_unique": int((~shared).sum()),
        "named_right_colour_unique": float(np.mean(named[~shared])) if (~shared).any() else None,
        "objects_colour_shared": int(shared.sum()),
        "named_right_colour_shared": float(np.mean(named[shared])) if shared.any() else None,
        "per_class_iou": [round(x, 4) for x in per_class],
    }


def run_cli(images: list[Path], out: Path, weights: str | None, method: str | None) -> float:
    """One `groupvit-np segment` call over all images; returns its wall time in seconds."""
    cmd = [sys.executable, "-m", "groupvit_np", "segment", *map(str, images), "--labels", ",".join(CLASS_NAMES),
           "--out", str(out), "--json"]  # fmt: skip
    if weights:
        cmd += ["--weights", weights]
    if method:
        cmd += ["--method", method]
    start = time.time()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"eval_cli: groupvit-np segment failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return time.time() - start


def evaluate(weights: str | None, n: int, method: str | None, first_seed: int) -> dict:
    _, gt, scenes = make_scenes(first_seed + np.arange(n))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = []
        for i, s in enumerate(scenes):
            paths.append(folder / f"scene-{first_seed + i}.png")
            Image.fromarray(s.image).save(paths[-1])
        seconds = run_cli(paths, folder / "out", weights, method)
        pred = np.stack([np.asarray(Image.open(folder / "out" / f"{p.stem}_labels.png")) for p in paths])
    metrics = scores(pred.astype(np.int64), gt, scenes)
    metrics.update(weights=weights or "default", method=method or "checkpoint default", cli_seconds=round(seconds, 1))
    return metrics


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", help="checkpoint folder (default: the CLI's default, the shipped demo checkpoint)")
    p.add_argument("--n", type=int, default=400, help="number of held-out test scenes (default 400)")
    p.add_argument("--method", choices=("hf", "original"), help="force an inference method (default: the CLI's)")
    p.add_argument("--seeds", choices=("test", "validation"), default="test", help="which held-out seed range")
    p.add_argument("--out", help="also write the metrics to this JSON file")
    a = p.parse_args()
    m = evaluate(a.weights, a.n, a.method, SEED_RANGES[a.seeds])
    text = json.dumps(m, indent=2)
    print(text)
    if a.out:
        tmp = Path(a.out).with_name(Path(a.out).name + ".tmp")
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, a.out)
