"""Pictures: palettised PNGs, 50% overlays with names, group maps, panels; all checked pixel by pixel."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from groupvit_np.tasks.datasets import IGNORE_INDEX, custom_labels, dataset_labels, generated_colours, voc_palette
from groupvit_np.tasks.viz import (
    blend,
    display_size,
    group_overlay,
    label_png,
    overlay,
    panel,
    save_png,
    save_segmentation,
)


def two_regions(h=120, w=200):
    """Grey image; left half class 0 (background), a square of class 2 and a bar of class 5 on the right."""
    image = np.full((h, w, 3), 100, dtype=np.uint8)
    labels = np.zeros((h, w), dtype=np.int64)
    labels[20:80, 110:170] = 2
    labels[90:110, 10:190] = 5
    return image, labels


def test_voc_palette_is_the_standard_colour_map():
    p = voc_palette()
    assert p.shape == (256, 3)
    assert p[1].tolist() == [128, 0, 0] and p[15].tolist() == [192, 128, 128] and p[255].tolist() == [224, 224, 192]


def test_label_sets():
    voc, ctx, coco = dataset_labels("voc"), dataset_labels("context"), dataset_labels("coco")
    assert (len(voc.class_names), len(ctx.class_names), len(coco.class_names)) == (21, 60, 81)
    assert "table" in voc.class_names and "plant" in voc.class_names and "monitor" in voc.class_names
    assert ctx.class_names[1] == "airplane" and "plant" in ctx.class_names and "monitor" in ctx.class_names
    assert coco.class_names[59] == "potted plant"
    assert (voc.threshold, ctx.threshold, coco.threshold) == (0.95, 0.35, 0.95)
    assert ctx.palette[1].tolist() == [180, 120, 120] and coco.palette[1].tolist() == [0, 192, 64]
    custom = custom_labels(["cat", "dog", "sofa"])
    assert custom.class_names == ("background", "cat", "dog", "sofa") and custom.palette[0].tolist() == [0, 0, 0]
    assert custom_labels(["background", "cat"], background=False).background  # the original's convention
    with pytest.raises(ValueError, match="duplicate"):
        custom_labels(["cat", "cat"])
    with pytest.raises(ValueError, match="unknown label set"):
        dataset_labels("ade")
    nobg = voc.without_background()
    assert nobg.class_names[0] == "aeroplane" and nobg.palette[0].tolist() == voc.palette[1].tolist()


def test_generated_colours_are_distinct():
    c = generated_colours(300).astype(int)
    assert len({tuple(r) for r in c}) == 300
    d = np.abs(c[:24, None, :] - c[None, :24, :]).sum(-1) + np.eye(24, dtype=int) * 999
    assert d.min() > 40  # the first two dozen (a typical label list) are far apart in RGB


def test_label_png_keeps_indices_and_palette(tmp_path):
    _, labels = two_regions()
    voc = dataset_labels("voc")
    path = save_png(label_png(labels, voc.palette), tmp_path / "labels.png")
    with Image.open(path) as im:
        assert im.mode == "P" and im.size == (200, 120)
        np.testing.assert_array_equal(np.asarray(im), labels)
        assert im.getpalette()[3 * 2 : 3 * 3] == voc.palette[2].tolist()
    assert [p.name for p in tmp_path.iterdir()] == ["labels.png"]  # the temporary file was renamed away
    with pytest.raises(ValueError, match="0..255"):
        label_png(labels + 300, voc.palette)


def test_blend_is_fifty_percent_and_skips_background():
    image, labels = two_regions()
    palette = voc_palette()
    out = blend(image, labels, palette, skip=(0,))
    assert out[10, 10].tolist() == [100, 100, 100]  # background untinted
    expected = np.floor((100 + palette[2].astype(float)) / 2 + 0.5)  # 50% of grey 100 and class colour
    assert out[50, 140].tolist() == expected.tolist()
    edge = np.floor((100 + palette[2].astype(float)) / 2 * 0.35 + 0.5)  # the square's top row: border at 35%
    assert out[20, 140].tolist() == edge.tolist()
    ignored = labels.copy()
    ignored[:, :50] = IGNORE_INDEX
    assert blend(image, ignored, palette)[10, 10].tolist() == [40, 40, 40]  # never looked at: dimmed to 40%


def test_overlay_writes_names_at_regions():
    image, labels = two_regions(240, 400)
    labels = np.kron(labels[:120, :200], np.ones((2, 2), dtype=np.int64))
    ls = custom_labels(["a", "cat", "b", "c", "long name"])
    picture = np.asarray(overlay(image, labels, ls.palette, ls.class_names, background=True))
    plain = blend(image, labels, ls.palette, skip=(0,))
    changed = np.any(picture != plain, axis=-1)
    assert changed[40:160, 220:340].any() and changed[180:220, 20:380].any()  # "cat" and "long name" drawn
    assert not changed[:30, :150].any()  # nothing written on background
    assert (picture == 255).all(axis=-1).sum() > 50  # white glyphs ...
    assert (picture <= 25).all(axis=-1).sum() > 50  # ... with a dark outline


def test_group_overlay_and_panel():
    image, labels = two_regions()
    groups = group_overlay(image, labels, stage=1)
    assert groups.size == (200, 120)
    tiles = [Image.fromarray(image), groups, Image.new("RGB", (100, 300), (9, 9, 9))]
    out = panel(tiles, ["input", "groups", "tall"], legend={"cat 40%": (255, 0, 0), "dog 10%": (0, 0, 255)})
    # tiles share the tallest height (300, under the 360 cap): widths 500, 500, 100 plus 4 gaps of 8
    assert out.width == 500 + 500 + 100 + 4 * 8 and out.height > 300
    arr = np.asarray(out)
    assert ((arr == [255, 0, 0]).all(-1)).any() and ((arr == [0, 0, 255]).all(-1)).any()  # legend swatches


def test_save_segmentation_draws_big_photos_smaller(tmp_path):
    from groupvit_np.tasks.label_maps import SegmentationResult

    rng = np.random.default_rng(0)
    h, w = 1700, 2000
    labels = np.zeros((h, w), dtype=np.int64)
    labels[200:900, 300:1200] = 1
    labels[1000:1600, 1300:1900] = 3
    result = SegmentationResult(
        labels=labels,
        class_names=("background", "cat", "dog", "sofa"),
        background=True,
        probabilities=np.array([0.5, 0.2, 0.3]),
        group_maps=(rng.random((64, 10, 12)), rng.random((8, 10, 12))),
        box=(0, 0, h, w),
    )
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    paths = save_segmentation(image, result, custom_labels(["cat", "dog", "sofa"]).palette, tmp_path, "photo")
    assert sorted(paths) == ["groups1", "groups2", "labels", "overlay", "panel"]
    assert Image.open(paths["labels"]).size == (2000, 1700)  # the result itself stays at the input's size
    for kind in ("overlay", "groups1", "groups2"):
        assert Image.open(paths[kind]).size == (1600, 1360)  # pictures: long side capped at 1600
    assert display_size(300, 500) == (300, 500)
    assert display_size(64, 64) == (256, 256)  # tiny scenes are drawn as 4x4-pixel blocks, readable
