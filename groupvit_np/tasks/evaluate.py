"""Segmentation evaluation on a dataset folder, as mmseg scores it (the metric itself is in `metrics`).

Every image of the split is segmented and compared with its ground truth; one confusion matrix accumulates over the
whole dataset and gives per-class IoU and mIoU at the end. Folder layouts are the original's
(segmentation/configs/_base_/datasets/*.py). Runs are resumable: after every image the confusion matrix and the
count so far go to a small state file, written atomically.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from PIL import Image

from ..config import write_json_atomic
from .metrics import confusion_matrix, iou_metrics, json_safe

STATE_FILE = "evaluate_state.json"
METRICS_FILE = "metrics.json"

# ---------------------------------------------------------------------------------------------------------------
# Datasets on disk.


@dataclass(frozen=True)
class Sample:
    name: str
    image: Path
    annotation: Path


# dataset -> (image folder, annotation folder, annotation suffix, split file or None, where the root may sit)
_CONTEXT_SPLIT = "ImageSets/SegmentationContext/val.txt"
LAYOUTS = {
    "voc": ("JPEGImages", "SegmentationClass", ".png", "ImageSets/Segmentation/val.txt", "VOCdevkit/VOC2012"),
    "context": ("JPEGImages", "SegmentationClassContext", ".png", _CONTEXT_SPLIT, "VOCdevkit/VOC2010"),
    "coco": ("images/val2017", "annotations/val2017", "_instanceTrainIds.png", None, "coco"),
}


def dataset_samples(dataset: str, root: str | Path) -> list[Sample]:
    """The evaluation images and annotations of `dataset` under `root` (or its VOCdevkit/... or coco/ subfolder)."""
    if dataset not in LAYOUTS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(LAYOUTS)}")
    images, annotations, suffix, split, nested = LAYOUTS[dataset]
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} is not a folder")
    if not (root / images).is_dir() and (root / nested / images).is_dir():
        root = root / nested
    expected = f"{root}/{images}/*.jpg, {root}/{annotations}/*{suffix}" + (f", {root}/{split}" if split else "")
    if not (root / images).is_dir() or not (root / annotations).is_dir():
        raise FileNotFoundError(f"{dataset} layout not found: expected {expected}")
    if split:
        if not (root / split).is_file():
            raise FileNotFoundError(f"{dataset} split file missing: expected {root / split}")
        names = [line.strip() for line in (root / split).read_text().splitlines() if line.strip()]
    else:  # mmseg without a split file: every image in the folder, sorted
        names = sorted(p.stem for p in (root / images).glob("*.jpg"))
    samples = [Sample(n, root / images / f"{n}.jpg", root / annotations / f"{n}{suffix}") for n in names]
    missing = [s for s in samples if not s.image.is_file() or not s.annotation.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(samples)} samples lack a file, e.g. {missing[0].image} or "
                                f"{missing[0].annotation}")  # fmt: skip
    if not samples:
        raise FileNotFoundError(f"no samples found: expected {expected}")
    return samples


def read_annotation(path: str | Path) -> np.ndarray:
    """A ground-truth PNG as class indices (palettised files give their indices, not colours).  # -> [H, W]"""
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L", "I", "I;16"):
                raise ValueError(f"{path}: annotation mode {image.mode}, expected indices (P or L)")
            return np.asarray(image).astype(np.int64)
    except (OSError, SyntaxError) as e:  # Pillow's errors for truncated or foreign files
        raise ValueError(f"cannot read annotation {path}: {_first_line(e)}") from None


# ---------------------------------------------------------------------------------------------------------------
# Progress and the resumable loop.


class Progress:
    """A one-line progress bar on stderr (count, bar, rate, time left). Off a terminal it prints every 10%."""

    def __init__(self, total: int, desc: str = "", start: int = 0, stream: TextIO | None = None) -> None:
        self.total, self.desc, self.n, self.start = total, desc, start, start
        self.stream = stream if stream is not None else sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0, self.last = time.monotonic(), 0.0

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        step = max(1, self.total // 10)
        if (self.tty and now - self.last > 0.2) or (not self.tty and self.n % step == 0) or self.n == self.total:
            self.last = now
            end = "\n" if not self.tty or self.n == self.total else ""
            self.stream.write(("\r" if self.tty else "") + self.line(now) + end)
            self.stream.flush()

    def line(self, now: float) -> str:
        done, rate = self.n / max(self.total, 1), (self.n - self.start) / max(now - self.t0, 1e-9)
        bar = "#" * int(24 * done) + "." * (24 - int(24 * done))
        left = (self.total - self.n) / rate if rate > 0 else float("inf")
        eta = f"{int(left // 60)}:{int(left % 60):02d}" if np.isfinite(left) else "?"
        return f"{self.desc} {self.n}/{self.total} [{bar}] {rate:.2f}/s, {eta} left"


def run_evaluation(
    samples: Sequence[Sample],
    predict: Callable[[Path], np.ndarray],
    class_names: Sequence[str],
    out_dir: str | Path,
    key: dict[str, Any],
    restart: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict every sample, accumulate the confusion matrix, write metrics.json; resume from the state file.

    `key` describes the run (dataset, weights, mode...): a state file from a different run is refused rather than
    silently mixed in. Interrupting (Ctrl-C) loses at most the image in progress.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_path, c = out / STATE_FILE, len(class_names)
    key = {**key, "samples": len(samples), "classes": list(class_names)}
    cm, done = np.zeros((c, c), dtype=np.int64), 0
    if state_path.is_file() and not restart:
        cm, done = read_state(state_path, key, len(samples))
    bar = Progress(len(samples), "evaluating", start=done) if progress and done < len(samples) else None
    for i in range(done, len(samples)):
        sample = samples[i]
        pred, truth = predict(sample.image), read_annotation(sample.annotation)
        try:
            cm = cm + confusion_matrix(pred, truth, c)
        except ValueError as e:
            raise ValueError(f"{sample.annotation}: {e} (image {sample.image})") from None
        write_json_atomic(state_path, {"key": key, "done": i + 1, "confusion": cm.tolist()})
        if bar:
            bar.update()
    metrics = {**iou_metrics(cm), "classes": list(class_names), "images": len(samples), "key": key}
    write_json_atomic(out / METRICS_FILE, json_safe(metrics))
    return metrics


def read_state(path: Path, key: dict[str, Any], total: int) -> tuple[np.ndarray, int]:
    """The confusion matrix and image count saved in a state file of the run `key`; a file that is not one, or
    belongs to another run, is a ValueError that names it and says how to start over."""
    again = "pass --restart to start over, or use another --out"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:  # JSONDecodeError, or bytes that are not UTF-8
        raise ValueError(f"{path} is not a saved evaluation state ({_first_line(e)}); {again}") from None
    if not isinstance(state, dict) or not {"key", "done", "confusion"} <= set(state):
        raise ValueError(f"{path} is not a saved evaluation state (expected an object with key, done and "
                         f"confusion); {again}")  # fmt: skip
    if state["key"] != key:
        raise ValueError(f"{path} belongs to a different run; {again}")
    c = len(key["classes"])
    try:
        cm, done = np.asarray(state["confusion"], dtype=np.int64), state["done"]
    except (TypeError, ValueError, OverflowError):
        cm, done = None, None
    if cm is None or cm.shape != (c, c) or (cm < 0).any() or type(done) is not int or not 0 <= done <= total:
        raise ValueError(f"{path} is damaged (its count or {c}x{c} confusion matrix is not valid); {again}")
    return cm, done


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def evaluate(
    model: Any,
    dataset: str,
    root: str | Path,
    out_dir: str | Path,
    *,
    mode: str = "slide",
    limit: int | None = None,
    restart: bool = False,
    tokenizer: Any = None,
    weights: str = "",
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate the original GroupViT inference on a dataset folder: mIoU, per-class IoU (see `run_evaluation`)."""
    from .classify import encode_text
    from .datasets import SEGMENTATION_TEMPLATES, dataset_labels
    from .segmentation import segment

    labels = dataset_labels(dataset)
    samples = dataset_samples(dataset, root)[:limit]
    text = encode_text(model, labels.foreground, SEGMENTATION_TEMPLATES, tokenizer)  # once for the whole run

    def predict(path: Path) -> np.ndarray:
        return segment(model, path, labels, mode=mode, text_embeds=text).labels

    key = {"dataset": dataset, "root": str(Path(root).resolve()), "mode": mode, "weights": weights,
           "threshold": labels.threshold}  # fmt: skip
    return run_evaluation(samples, predict, labels.class_names, out_dir, key, restart, progress)
