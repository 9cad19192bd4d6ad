"""The mIoU metric against an independent per-class computation, dataset layouts, and resumable runs."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from groupvit_np.tasks.datasets import voc_palette
from groupvit_np.tasks.evaluate import (
    METRICS_FILE,
    STATE_FILE,
    Progress,
    dataset_samples,
    read_annotation,
    run_evaluation,
)
from groupvit_np.tasks.metrics import confusion_matrix, iou_metrics, iou_table

C = 6


def synthetic(n: int, seed: int = 0):
    """n (prediction, ground truth) pairs of varying sizes; ground truth with 255 borders; class 4 never appears."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        h, w = 20 + 3 * i, 30 + 5 * i
        gt = rng.choice([0, 1, 2, 3, 5], size=(h, w), p=[0.4, 0.2, 0.2, 0.1, 0.1])
        gt[:, :2] = 255
        pred = np.where(rng.random((h, w)) < 0.7, gt, rng.integers(0, 4, size=(h, w)))  # 70% right, else 0..3
        pred[pred == 255] = 0
        pairs.append((pred, gt))
    return pairs


def independent_miou(pairs, num_classes):
    """Per class: |pred = c and gt = c| / |pred = c or gt = c| over all valid pixels of all images."""
    inter, union = np.zeros(num_classes), np.zeros(num_classes)
    for pred, gt in pairs:
        valid = gt != 255
        for c in range(num_classes):
            p, g = (pred == c) & valid, (gt == c) & valid
            inter[c] += (p & g).sum()
            union[c] += (p | g).sum()
    ious = [inter[c] / union[c] for c in range(num_classes) if union[c] > 0]
    return sum(ious) / len(ious), {c: inter[c] / union[c] for c in range(num_classes) if union[c] > 0}


def test_metric_matches_independent_computation():
    pairs = synthetic(5)
    cm = sum(confusion_matrix(p, g, C) for p, g in pairs)
    metrics = iou_metrics(cm)
    miou, per_class = independent_miou(pairs, C)
    # integer counts on both sides, one division each: equal to the last bit, allow 1e-12 for the mean's order
    assert abs(metrics["mIoU"] - miou) < 1e-12
    for c, v in per_class.items():
        assert abs(metrics["IoU"][c] - v) < 1e-12
    assert np.isnan(metrics["IoU"][4])  # never in ground truth nor prediction: excluded from the mean (mmseg)
    valid = sum((g != 255).sum() for _, g in pairs)
    assert cm.sum() == valid  # ignored pixels are not counted
    assert abs(metrics["aAcc"] - sum(((p == g) & (g != 255)).sum() for p, g in pairs) / valid) < 1e-12


def test_confusion_matrix_checks_its_inputs():
    gt = np.array([[0, 1], [255, 7]])
    with pytest.raises(ValueError, match="label 7"):
        confusion_matrix(np.zeros((2, 2), dtype=int), gt, 3)
    with pytest.raises(ValueError, match="differ in size"):
        confusion_matrix(np.zeros((3, 2), dtype=int), gt, 8)
    cm = confusion_matrix(np.array([[0, 0], [1, 1]]), np.array([[0, 1], [255, 1]]), 2)
    assert cm.tolist() == [[1, 0], [1, 1]]  # rows ground truth, columns prediction


def test_iou_table_lists_every_class():
    metrics = iou_metrics(sum(confusion_matrix(p, g, C) for p, g in synthetic(2)))
    text = iou_table(metrics, ["background", "a", "b", "c", "never", "e"])
    assert "never" in text.splitlines()[5] and text.splitlines()[5].split()[-1] == "-"
    assert f"{100 * metrics['mIoU']:.2f}" in text.splitlines()[-2]


def write_voc(root, pairs, palettised=True):
    """A VOC2012-style folder: JPEGImages, SegmentationClass (palettised PNG), ImageSets/Segmentation/val.txt."""
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    names = []
    for i, (_, gt) in enumerate(pairs):
        name = f"2007_{i:06d}"
        Image.fromarray(np.full((*gt.shape, 3), 90, dtype=np.uint8)).save(root / "JPEGImages" / f"{name}.jpg")
        ann = Image.fromarray(gt.astype(np.uint8), mode="P" if palettised else "L")
        if palettised:
            ann.putpalette(voc_palette().reshape(-1).tolist())
        ann.save(root / "SegmentationClass" / f"{name}.png")
        names.append(name)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(names) + "\n")
    return names


def test_layouts(tmp_path):
    pairs = synthetic(3)
    names = write_voc(tmp_path / "VOCdevkit" / "VOC2012", pairs)
    for root in (tmp_path, tmp_path / "VOCdevkit" / "VOC2012"):  # the devkit parent is accepted too
        samples = dataset_samples("voc", root)
        assert [s.name for s in samples] == names
    np.testing.assert_array_equal(read_annotation(samples[1].annotation), pairs[1][1])  # indices, not colours
    coco = tmp_path / "coco"
    (coco / "images" / "val2017").mkdir(parents=True)
    (coco / "annotations" / "val2017").mkdir(parents=True)
    for stem in ("000000000139", "000000000285"):
        Image.new("RGB", (8, 8)).save(coco / "images" / "val2017" / f"{stem}.jpg")
        Image.new("L", (8, 8)).save(coco / "annotations" / "val2017" / f"{stem}_instanceTrainIds.png")
    assert [s.name for s in dataset_samples("coco", coco)] == ["000000000139", "000000000285"]
    with pytest.raises(FileNotFoundError, match="SegmentationClassContext"):
        dataset_samples("context", tmp_path)
    (tmp_path / "VOCdevkit" / "VOC2012" / "SegmentationClass" / f"{names[0]}.png").unlink()
    with pytest.raises(FileNotFoundError, match="1 of 3 samples lack a file"):
        dataset_samples("voc", tmp_path)


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    pairs = synthetic(6, seed=1)
    write_voc(tmp_path / "voc", pairs, palettised=False)
    samples = dataset_samples("voc", tmp_path / "voc")
    preds = {s.image: p for s, (p, _) in zip(samples, pairs, strict=True)}
    classes = [f"c{i}" for i in range(C)]
    key = {"dataset": "voc", "weights": "test"}
    full = run_evaluation(samples, preds.__getitem__, classes, tmp_path / "full", key, progress=False)

    calls = []

    def flaky(path):  # Ctrl-C during the 4th image
        calls.append(path)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return preds[path]

    with pytest.raises(KeyboardInterrupt):
        run_evaluation(samples, flaky, classes, tmp_path / "part", key, progress=False)
    assert json.loads((tmp_path / "part" / STATE_FILE).read_text())["done"] == 3
    resumed = run_evaluation(samples, preds.__getitem__, classes, tmp_path / "part", key, progress=False)
    assert resumed["mIoU"] == full["mIoU"]
    # every class, the never-seen class 4 (NaN) included: the same integer counts give the same bits
    np.testing.assert_array_equal(resumed["IoU"], full["IoU"])
    assert set(resumed) == set(full) and resumed["aAcc"] == full["aAcc"]
    miou, per_class = independent_miou(pairs, C)
    assert abs(full["mIoU"] - miou) < 1e-12  # one division per class on both sides; the mean's order may differ
    assert [c for c in range(C) if np.isnan(full["IoU"][c])] == [4] and all(
        abs(full["IoU"][c] - v) < 1e-12 for c, v in per_class.items()
    )
    saved = json.loads((tmp_path / "part" / METRICS_FILE).read_text())
    assert saved["IoU"][4] is None and saved["images"] == 6  # NaN stored as null
    with pytest.raises(ValueError, match="different run"):
        run_evaluation(samples, preds.__getitem__, classes, tmp_path / "part", {**key, "weights": "other"})


def test_progress_bar_reports():
    stream = io.StringIO()
    bar = Progress(20, "evaluating", stream=stream)
    for _ in range(20):
        bar.update()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10 and lines[-1].startswith("evaluating 20/20 [" + "#" * 24 + "]")  # every 10%
