"""Segmentation metrics as mmseg scores them: a confusion matrix over the whole dataset, per-class IoU, mIoU.

Pixels whose ground truth is 255 are ignored; a class's IoU is intersection / union summed over all images, NaN for
a class that appears in neither ground truth nor predictions, and mIoU is the mean of the others (mmseg's nanmean).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from .datasets import IGNORE_INDEX


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX):
    """Counts of (ground truth, prediction) pairs over the non-ignored pixels.  # [H, W], [H, W] -> [C, C] int64"""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    valid = gt != ignore_index
    g, p = gt[valid].astype(np.int64), pred[valid].astype(np.int64)
    if g.size and (g.min() < 0 or g.max() >= num_classes):
        raise ValueError(f"ground truth holds label {g.max()} but the label set has {num_classes} classes")
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f"prediction holds label {p.max()} outside 0..{num_classes - 1}")
    return np.bincount(g * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_metrics(cm: np.ndarray) -> dict[str, Any]:
    """mIoU, per-class IoU and accuracy from a confusion matrix (rows: ground truth), as fractions."""
    tp = np.diag(cm).astype(np.float64)
    gt_area, pred_area = cm.sum(axis=1), cm.sum(axis=0)
    union = gt_area + pred_area - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt_area > 0, tp / gt_area, np.nan)
    return {
        "mIoU": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "mAcc": float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan"),
        "aAcc": float(tp.sum() / cm.sum()) if cm.sum() else float("nan"),
        "IoU": iou.tolist(),
        "Acc": acc.tolist(),
    }


def iou_table(metrics: dict[str, Any], class_names: Sequence[str]) -> str:
    """A plain-text table: one row per class (IoU and accuracy in percent), then the summary."""
    width = max(len(n) for n in class_names) + 2
    lines = [f"{'class':<{width}}{'IoU':>8}{'Acc':>8}"]
    for name, iou, acc in zip(class_names, metrics["IoU"], metrics["Acc"], strict=True):
        lines.append(f"{name:<{width}}{_pct(iou):>8}{_pct(acc):>8}")
    lines.append(f"{'mean':<{width}}{_pct(metrics['mIoU']):>8}{_pct(metrics['mAcc']):>8}")
    lines.append(f"pixel accuracy {_pct(metrics['aAcc'])}")
    return "\n".join(lines)


def _pct(v: float) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{100 * v:.2f}"


def json_safe(obj: Any) -> Any:
    """NaN is not JSON: per-class values of absent classes become null."""
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_safe(v) for v in obj]
    return obj


def json_metrics(metrics: dict[str, Any]) -> str:
    """The metrics as JSON text (NaN as null)."""
    return json.dumps(json_safe(metrics), indent=2, sort_keys=True)
