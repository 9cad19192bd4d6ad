"""Built-in label sets (PASCAL VOC, PASCAL Context, COCO-Object), their palettes, thresholds and prompt templates.

Class lists follow NVlabs GroupViT's segmentation/datasets/*.py, which renames a few mmseg classes so they read as
natural words in a prompt (diningtable -> table, pottedplant -> plant, tvmonitor -> monitor, aeroplane -> airplane
in Context). Entry 0 of each list is "background": it is never encoded as text; it is what pixels become when no
class is confident enough (`segmentation`). Palettes are 256 RGB rows so that label maps save as palettised
PNGs; row 255 is the "ignore" colour of VOC's own files.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, replace

import numpy as np

IGNORE_INDEX = 255  # "void" in VOC/Context/COCO ground truth; also marks pixels a method never looked at

SEGMENTATION_TEMPLATES = ("a photo of a {}.",)  # the original's `simple` set, used for segmentation
CLASSIFICATION_TEMPLATES = (  # CLIP's 7-prompt ImageNet subset, the original's `subset` set
    "itap of a {}.",
    "a bad photo of a {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "table", "dog", "horse", "motorbike", "person", "plant", "sheep", "sofa", "train", "monitor")  # fmt: skip

CONTEXT_CLASSES = ("background", "airplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book",
    "bottle", "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup",
    "curtain", "dog", "door", "fence", "floor", "flower", "food", "grass", "ground", "horse", "keyboard", "light",
    "motorbike", "mountain", "mouse", "person", "plate", "platform", "plant", "road", "rock", "sheep", "shelves",
    "sidewalk", "sign", "sky", "snow", "sofa", "table", "track", "train", "tree", "truck", "monitor", "wall", "water",
    "window", "wood")  # fmt: skip

COCO_OBJECT_CLASSES = ("background", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck",
    "boat", "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse",
    "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase",
    "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
    "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
    "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush")  # fmt: skip

# mmseg's PascalContextDataset palette (60 rows, background first).
_CONTEXT_RGB = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80), (140, 140, 140),
    (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7), (150, 5, 61), (120, 120, 70),
    (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4), (255, 51, 7), (204, 70, 3), (0, 102, 200),
    (61, 230, 250), (255, 6, 51), (11, 102, 255), (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220),
    (255, 9, 92), (112, 9, 255), (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10),
    (7, 255, 255), (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255), (140, 140, 140),
    (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0), (153, 255, 0), (0, 0, 255),
    (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
)  # fmt: skip

# NVlabs' COCOObjectDataset palette (81 rows, background first; it repeats some colours, kept as published).
_COCO_RGB = (
    (0, 0, 0), (0, 192, 64), (0, 192, 64), (0, 64, 96), (128, 192, 192), (0, 64, 64), (0, 192, 224), (0, 192, 192),
    (128, 192, 64), (0, 192, 96), (128, 192, 64), (128, 32, 192), (0, 0, 224), (0, 0, 64), (0, 160, 192),
    (128, 0, 96), (128, 0, 192), (0, 32, 192), (128, 128, 224), (0, 0, 192), (128, 160, 192), (128, 128, 0),
    (128, 0, 32), (128, 32, 0), (128, 0, 128), (64, 128, 32), (0, 160, 0), (0, 0, 0), (192, 128, 160), (0, 32, 0),
    (0, 128, 128), (64, 128, 160), (128, 160, 0), (0, 128, 0), (192, 128, 32), (128, 96, 128), (0, 0, 128),
    (64, 0, 32), (0, 224, 128), (128, 0, 0), (192, 0, 160), (0, 96, 128), (128, 128, 128), (64, 0, 160),
    (128, 224, 128), (128, 128, 64), (192, 0, 32), (128, 96, 0), (128, 0, 192), (0, 128, 32), (64, 224, 0),
    (0, 0, 64), (128, 128, 160), (64, 96, 0), (0, 128, 192), (0, 128, 160), (192, 224, 0), (0, 128, 64),
    (128, 128, 32), (192, 32, 128), (0, 64, 192), (0, 0, 32), (64, 160, 128), (128, 64, 64), (128, 0, 160),
    (64, 32, 128), (128, 192, 192), (0, 0, 160), (192, 160, 128), (128, 192, 0), (128, 0, 96), (192, 32, 0),
    (128, 64, 128), (64, 128, 96), (64, 160, 0), (0, 64, 0), (192, 128, 224), (64, 32, 0), (0, 192, 128),
    (64, 128, 224), (192, 160, 0),
)  # fmt: skip


def voc_palette() -> np.ndarray:
    """VOC's colour map: the bits of the index spread over R, G, B from the high bit down.  # -> [256, 3] uint8

    Example: 1 -> (128, 0, 0), 15 -> (192, 128, 128), 255 -> (224, 224, 192).
    """
    out = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, rgb = i, [0, 0, 0]
        for bit in range(8):
            for ch in range(3):
                rgb[ch] |= ((c >> ch) & 1) << (7 - bit)
            c >>= 3
        out[i] = rgb
    return out


def generated_colours(n: int, offset: int = 0) -> np.ndarray:
    """`n` distinct colours for custom labels and groups: rows offset..offset+n of a fixed sequence.  # -> [n, 3]

    Farthest-point sampling over 300 saturated HSV colours (60 hues x 5 saturation/brightness levels), starting
    from orange: each next colour is the candidate farthest (in RGB) from all those before it, so the first few
    dozen are far apart. Deterministic, so a label keeps its colour between runs.
    """
    levels = ((0.9, 0.95), (0.55, 0.95), (0.95, 0.6), (0.5, 0.7), (0.75, 0.8))
    cands = np.asarray([colorsys.hsv_to_rgb(h / 60, s, v) for s, v in levels for h in range(60)]) * 255  # [300, 3]
    order = [int(np.argmin(np.abs(cands - (230, 120, 40)).sum(axis=1)))]
    dist = np.linalg.norm(cands - cands[order[0]], axis=1)
    while len(order) < min(offset + n, len(cands)):
        order.append(int(np.argmax(dist)))
        dist = np.minimum(dist, np.linalg.norm(cands - cands[order[-1]], axis=1))
    rows = np.rint(cands[order]).astype(np.uint8)
    while len(rows) < offset + n:  # past 300: the sequence repeats, slightly darkened each round
        rows = np.concatenate([rows, (rows[: len(cands)] * 0.8).astype(np.uint8)])
    return rows[offset : offset + n]


def _full_palette(rows: np.ndarray | tuple) -> np.ndarray:
    """Pad class colours to 256 rows with VOC's map, so index 255 (ignore) keeps its usual colour."""
    out = voc_palette()
    rows = np.asarray(rows, dtype=np.uint8)
    out[: len(rows)] = rows
    return out


@dataclass(frozen=True)
class LabelSet:
    """A class list for segmentation: names (background first when `background`), palette and threshold."""

    name: str
    class_names: tuple[str, ...]
    palette: np.ndarray  # [256, 3] uint8; row k colours class k
    background: bool
    threshold: float  # the original's test_cfg.bg_thresh

    @property
    def foreground(self) -> tuple[str, ...]:
        """The names that are encoded as text (all but background)."""
        return self.class_names[1:] if self.background else self.class_names

    def without_background(self) -> LabelSet:
        """The same classes with the background rule off; each class keeps its colour."""
        if not self.background:
            return self
        palette = np.concatenate([self.palette[1:IGNORE_INDEX], self.palette[IGNORE_INDEX - 1 :]])  # shift by one
        return replace(self, class_names=self.class_names[1:], palette=palette, background=False)

    def with_threshold(self, threshold: float) -> LabelSet:
        return replace(self, threshold=float(threshold))


DATASETS = {
    "voc": (VOC_CLASSES, 0.95),
    "context": (CONTEXT_CLASSES, 0.35),
    "coco": (COCO_OBJECT_CLASSES, 0.95),
}


def dataset_labels(name: str) -> LabelSet:
    """The built-in label set `voc`, `context` or `coco` (COCO-Object), with the original's threshold."""
    key = name.strip().lower()
    if key not in DATASETS:
        raise ValueError(f"unknown label set {name!r}; choose one of {', '.join(DATASETS)}")
    classes, threshold = DATASETS[key]
    rows = {"voc": voc_palette()[:21], "context": _CONTEXT_RGB, "coco": _COCO_RGB}[key]
    return LabelSet(key, classes, _full_palette(rows), True, threshold)


def custom_labels(names: list[str] | tuple[str, ...], background: bool = True, threshold: float = 0.95) -> LabelSet:
    """A label set from the user's names; generated colours, black for background (drawn untinted)."""
    names = tuple(n.strip() for n in names)
    if not names or any(not n for n in names):
        raise ValueError("labels must be non-empty names, e.g. --labels 'cat,dog'")
    if names[0].lower() == "background":  # the original's convention: a leading "background" is not encoded
        names, background = names[1:], True
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate labels: {', '.join(dupes)}")
    if not names:
        raise ValueError("labels need at least one class besides background")
    classes = ("background", *names) if background else names
    if len(classes) > IGNORE_INDEX:
        raise ValueError(f"at most {IGNORE_INDEX} classes fit a palettised PNG, got {len(classes)}")
    rows = generated_colours(len(names))
    if background:
        rows = np.concatenate([np.zeros((1, 3), dtype=np.uint8), rows])
    return LabelSet("custom", classes, _full_palette(rows), background, threshold)


def parse_labels(text: str) -> list[str]:
    """Split a comma-separated label list: "cat, dog,sofa" -> ["cat", "dog", "sofa"] (empty items dropped)."""
    return [part.strip() for part in text.split(",") if part.strip()]
