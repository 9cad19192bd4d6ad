"""Fonts for class names in pictures: Pillow's own where it draws every character, else a system font that does.

Pillow's built-in font covers Latin letters only; names in other scripts (кот, 猫) take the first font of
`FONT_FILES` found on the system that draws them, and `undrawable` says which characters no font here can draw.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import ImageFont

# Fonts tried, in order, for a name Pillow's own font (Latin letters only) cannot draw. Pillow finds them by file
# name in the system's font folders (Linux: $XDG_DATA_DIRS/fonts; macOS and Windows: their font folders).
FONT_FILES = ("DejaVuSans.ttf", "NotoSans-Regular.ttf", "NotoSansCJK-Regular.ttc", "NotoSansCJKsc-Regular.otf",
              "NotoSansArabic-Regular.ttf", "NotoSansDevanagari-Regular.ttf", "Arial Unicode.ttf", "arialuni.ttf",
              "msyh.ttc", "malgun.ttf", "PingFang.ttc", "Hiragino Sans GB.ttc", "DroidSansFallbackFull.ttf",
              "wqy-zenhei.ttc", "FreeSans.ttf", "unifont.ttf")  # fmt: skip


def default_font(size: int) -> ImageFont.ImageFont:
    """Pillow's own font at `size` pixels."""
    try:
        return ImageFont.load_default(size=size)  # a scalable font (Pillow >= 10.1 with FreeType)
    except (TypeError, OSError):  # pragma: no cover - old Pillow or no FreeType: the small bitmap font
        return ImageFont.load_default()


def _glyph(font: ImageFont.FreeTypeFont, char: str) -> tuple:
    mask = font.getmask(char)
    return mask.size, bytes(mask)


def missing_chars(font: ImageFont.ImageFont, text: str) -> set[str]:
    """The characters of `text` that `font` would draw as its "missing glyph" box."""
    if not isinstance(font, ImageFont.FreeTypeFont):
        return set()
    box = _glyph(font, "\U0010fffd")  # a private-use code point: no font has it
    return {c for c in set(text) if not c.isspace() and _glyph(font, c) == box}


def fonts_for(names: Sequence[str], size: int) -> dict[str, ImageFont.ImageFont]:
    """A font for each name: Pillow's own when it draws every character, else the first of FONT_FILES on this
    system that does (or the one that misses fewest)."""
    default, system, out = default_font(size), None, {}
    for name in names:
        out[name] = default
        if missing_chars(default, name):
            if system is None:  # looked up once per call, only when some name needs it
                system = [f for f in map(lambda n: _open_font(n, size), FONT_FILES) if f is not None]
            out[name] = min([default, *system], key=lambda f: len(missing_chars(f, name)))  # ties: the first
    return out


def _open_font(name: str, size: int) -> ImageFont.FreeTypeFont | None:
    try:
        return ImageFont.truetype(name, size)
    except OSError:  # not on this system
        return None


def undrawable(names: Sequence[str]) -> str:
    """The characters of `names` that no font on this system draws (they would show as boxes), sorted."""
    fonts = fonts_for(names, 20)
    return "".join(sorted(set().union(*(missing_chars(fonts[n], n) for n in names))))


def text_size(height: int, width: int) -> int:
    """Label font size in pixels: about 4% of the short side, at least 14."""
    return max(14, round(0.04 * min(height, width)))
