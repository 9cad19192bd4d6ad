"""Pictures of segmentations, with Pillow only: palettised label PNGs, overlays with class names, group maps, panels.

Mirrors the original demo's modes (`pred`, `input_pred_label`, `first_group`, `final_group`): class colours blended
at 50% (background left untinted), each class name at its region's centroid. Text is white with a dark outline so
it reads on any colour; sizes scale with the image. Inputs are host NumPy: an [H, W, 3] uint8 image and an [H, W]
integer label map (IGNORE_INDEX marks pixels the method never looked at; they are dimmed).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..config import as_if_created
from .datasets import IGNORE_INDEX, generated_colours
from .fonts import default_font, fonts_for, text_size


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write a PNG through a temporary file and a rename, so a reader never sees half a picture."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        image.save(tmp, format="PNG")
        as_if_created(tmp)  # 0644 under the usual umask, not mkstemp's 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def label_png(labels: np.ndarray, palette: np.ndarray) -> Image.Image:
    """The label map as a palettised ("P") image: pixel value = class index, colours from `palette` [256, 3]."""
    if labels.min() < 0 or labels.max() > 255:
        raise ValueError(f"label values must lie in 0..255 to fit a palettised PNG, got {labels.min()}..{labels.max()}")
    image = Image.fromarray(labels.astype(np.uint8, copy=False), mode="P")
    image.putpalette(np.asarray(palette, dtype=np.uint8).reshape(-1).tolist())
    return image


def _boundaries(labels: np.ndarray, thickness: int) -> np.ndarray:
    """Pixels where the label changes to a right or lower neighbour, dilated to `thickness`.  # [H, W] -> bool"""
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    for _ in range(thickness - 1):
        grown = edge.copy()
        grown[:, 1:] |= edge[:, :-1]
        grown[1:, :] |= edge[:-1, :]
        edge = grown
    return edge


def blend(
    image: np.ndarray, labels: np.ndarray, palette: np.ndarray, skip: Sequence[int] = (), alpha: float = 0.5
) -> np.ndarray:
    """Class colours over the image at `alpha`; labels in `skip` stay untinted, IGNORE_INDEX is dimmed; thin dark
    lines mark region borders.  # [H, W, 3] u8, [H, W] -> [H, W, 3] u8"""
    if image.shape[:2] != labels.shape:
        raise ValueError(f"image is {image.shape[:2]} but the label map is {labels.shape}")
    colours = np.asarray(palette, dtype=np.float32)[np.clip(labels, 0, 255)]  # [H, W, 3]
    out = image.astype(np.float32)
    tint = ~np.isin(labels, [*skip, IGNORE_INDEX])
    out[tint] = out[tint] * (1 - alpha) + colours[tint] * alpha
    out[labels == IGNORE_INDEX] *= 0.4
    out[_boundaries(labels, max(1, min(labels.shape) // 300))] *= 0.35
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _erode(mask: np.ndarray, steps: int) -> np.ndarray:
    """Shrink a boolean mask by `steps` pixels (4-neighbour erosion, edges count as outside)."""
    for _ in range(steps):
        inner = mask.copy()
        inner[1:, :] &= mask[:-1, :]
        inner[:-1, :] &= mask[1:, :]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        inner[0, :] = inner[-1, :] = inner[:, 0] = inner[:, -1] = False
        if not inner.any():
            break
        mask = inner
    return mask


def _anchor(labels: np.ndarray, k: int, margin: int) -> tuple[int, int]:
    """Where to write a region's name: its centroid (as the original), moved to the nearest pixel that lies inside
    the region by about `margin` pixels when the centroid is off the region or on a thin sliver of it."""
    mask = labels == k
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean(), xs.mean()
    step = max(1, min(labels.shape) // 300)  # erode a subsampled mask: the same answer at a fraction of the cost
    inner = _erode(mask[::step, ::step], max(1, margin // step))
    iy, ix = np.nonzero(inner)
    iy, ix = iy * step, ix * step
    if not inner[min(int(cy) // step, inner.shape[0] - 1), min(int(cx) // step, inner.shape[1] - 1)] and iy.size:
        i = np.argmin((iy - cy) ** 2 + (ix - cx) ** 2)
        cy, cx = iy[i], ix[i]
    return int(cy), int(cx)


def draw_names(image: Image.Image, labels: np.ndarray, names: dict[int, str], size: int | None = None) -> Image.Image:
    """Each name centred on its region, white with a dark outline, kept inside the picture and not overlapping."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    size = size or text_size(*labels.shape)
    fonts, stroke = fonts_for(list(names.values()), size), max(2, size // 7)
    placed: list[tuple[int, int, int, int]] = []
    for k, name in names.items():
        font = fonts[name]
        cy, cx = _anchor(labels, k, size)
        left, top, right, bottom = draw.textbbox((0, 0), name, font=font, stroke_width=stroke)
        tw, th = right - left, bottom - top
        x = min(max(cx - tw // 2, 0), max(out.width - tw, 0))
        y = min(max(cy - th // 2, 0), max(out.height - th, 0))
        for _ in range(len(placed)):  # nudge down (or up at the bottom) past labels already drawn
            hit = [b for b in placed if x < b[2] and b[0] < x + tw and y < b[3] and b[1] < y + th]
            if not hit:
                break
            y = hit[0][3] + 1 if hit[0][3] + th < out.height else hit[0][1] - th - 1
        placed.append((x, y, x + tw, y + th))
        draw.text((x - left, y - top), name, font=font, fill=(255, 255, 255), stroke_width=stroke,
                  stroke_fill=(20, 20, 20))  # fmt: skip
    return out


def overlay(
    image: np.ndarray, labels: np.ndarray, palette: np.ndarray, class_names: Sequence[str], background: bool
) -> Image.Image:
    """The original's `input_pred_label`: class colours at 50% (background untinted) and names at centroids."""
    present = [int(k) for k in np.unique(labels) if k != IGNORE_INDEX and not (background and k == 0)]
    picture = Image.fromarray(blend(image, labels, palette, skip=(0,) if background else ()))
    return draw_names(picture, labels, {k: class_names[k] for k in present})


def group_overlay(image: np.ndarray, groups: np.ndarray, stage: int) -> Image.Image:
    """The original's `first_group` / `final_group`: each pixel's argmax group in its own colour at 50%."""
    n = int(groups[groups != IGNORE_INDEX].max(initial=0)) + 1
    offset = 0 if stage == 0 else 64  # different colours for the two stages, as the original's palette rows
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:n] = generated_colours(n, offset)
    return Image.fromarray(blend(image, groups, palette))


def _fit(picture: Image.Image, height: int) -> Image.Image:
    width = max(1, round(picture.width * height / picture.height))
    return picture.resize((width, height), Image.Resampling.LANCZOS)


def panel(pictures: Sequence[Image.Image], titles: Sequence[str], legend: dict[str, tuple[int, ...]] | None = None,
          height: int = 360) -> Image.Image:  # fmt: skip
    """Pictures side by side at one height (at most `height`), a title above each, an optional colour legend below."""
    height = min(height, max(p.height for p in pictures))
    tiles = [_fit(p.convert("RGB"), height) for p in pictures]
    gap, size = 8, max(14, height // 22)
    font, fonts = default_font(size), fonts_for(list(legend or {}), size)
    title_h = size + 2 * gap
    width = sum(t.width for t in tiles) + gap * (len(tiles) + 1)
    rows = _legend_rows(legend or {}, fonts, size, width - 2 * gap, gap)
    legend_h = len(rows) * (size + gap) + (gap if rows else 0)
    out = Image.new("RGB", (width, title_h + height + gap + legend_h), (32, 32, 32))
    draw = ImageDraw.Draw(out)
    x = gap
    for tile, title in zip(tiles, titles, strict=True):
        out.paste(tile, (x, title_h))
        draw.text((x, gap), title, font=font, fill=(235, 235, 235))
        x += tile.width + gap
    y = title_h + height + gap
    for row in rows:
        for lx, name, colour in row:
            draw.rectangle((lx, y + 2, lx + size - 4, y + size - 2), fill=tuple(colour), outline=(235, 235, 235))
            draw.text((lx + size + 2, y), name, font=fonts[name], fill=(235, 235, 235))
        y += size + gap
    return out


def _legend_rows(legend: dict[str, tuple[int, ...]], fonts: dict, size: int, width: int, gap: int):
    """Lay legend entries (swatch + text) out left to right, wrapping at `width`."""
    rows, row, x = [], [], gap
    for name, colour in legend.items():
        w = size + 2 + round(fonts[name].getlength(name)) + 3 * gap
        if row and x + w > width:
            rows.append(row)
            row, x = [], gap
        row.append((x, name, colour))
        x += w
    return rows + [row] if row else rows


def display_size(height: int, width: int, longest: int = 1600, shortest: int = 256) -> tuple[int, int]:
    """The size pictures are drawn at: the input's, smaller so that the long side is at most `longest`, or, for
    tiny inputs (the demo's 64 px scenes), a whole multiple large enough to read the names on."""
    if max(height, width) > longest:
        scale = longest / max(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))
    factor = max(1, -(-shortest // min(height, width)))  # ceil, so pixels stay square blocks
    while factor > 1 and max(height, width) * factor > longest:
        factor -= 1
    return height * factor, width * factor


def save_segmentation(image: np.ndarray, result, palette: np.ndarray, out_dir: str | os.PathLike, stem: str):
    """Write the pictures of one segmentation; returns {kind: path}.

    `<stem>_labels.png` (palettised label map at the input's size), and, drawn at `display_size`,
    `<stem>_overlay.png` (colours + names), `<stem>_groups1.png` / `<stem>_groups2.png` (stage group maps, when
    the result has them) and `<stem>_panel.png` (all side by side, with a legend of the classes present).
    """
    out, paths = Path(out_dir), {}
    paths["labels"] = save_png(label_png(result.labels, palette), out / f"{stem}_labels.png")
    h, w = display_size(*result.labels.shape)
    labels = result.labels
    if (h, w) != labels.shape:  # many megapixels: draw smaller; a tiny scene: draw its pixels as blocks
        smooth = Image.Resampling.LANCZOS if h < labels.shape[0] else Image.Resampling.NEAREST
        image = np.asarray(Image.fromarray(image).resize((w, h), smooth))
        small = Image.fromarray(labels.astype(np.uint8, copy=False)).resize((w, h), Image.Resampling.NEAREST)
        labels = np.asarray(small)
    over = overlay(image, labels.astype(np.int64), palette, result.class_names, result.background)
    paths["overlay"] = save_png(over, out / f"{stem}_overlay.png")
    tiles, titles = [Image.fromarray(image), over], ["input", "HF-style" if result.method == "hf" else "segmentation"]
    for stage in range(len(result.group_maps)):
        groups = group_overlay(image, result.group_labels(stage, (h, w)), stage)
        paths[f"groups{stage + 1}"] = save_png(groups, out / f"{stem}_groups{stage + 1}.png")
        tiles.append(groups)
        titles.append(f"stage {stage + 1}: {result.group_maps[stage].shape[0]} groups")
    legend = {f"{name} {_percent(share)}": tuple(int(v) for v in palette[result.class_names.index(name)])
              for name, share in result.fractions().items()}  # fmt: skip
    paths["panel"] = save_png(panel(tiles, titles, legend), out / f"{stem}_panel.png")
    return paths


def _percent(share: float) -> str:
    return "<1%" if share < 0.005 else f"{100 * share:.0f}%"
