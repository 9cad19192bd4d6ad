"""What the walkthrough notebooks share: which checkpoint they run, its tokenizer and processor, an example scene.

The checkpoint is the trained demo (`weights/groupvit-demo-scenes/`) when it is there, else the tiny random one
(`weights/groupvit-tiny-random/`). One environment variable switches to other weights, e.g. a local copy of
nvidia/groupvit-gcc-yfcc:

    GROUPVIT_WEIGHTS=/path/to/groupvit-gcc-yfcc python tools/build_notebooks.py

Nothing here is model code: the notebooks import that from `groupvit_np`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from groupvit_np import CLIPImageProcessor, CLIPTokenizer, GroupViTModel
from groupvit_np._resources import data_dir
from groupvit_np.preprocessing.image import load_image
from groupvit_np.tasks.scenes import EXAMPLE_SEED, make_scene

WEIGHTS_ENV = "GROUPVIT_WEIGHTS"
SHIPPED = ("groupvit-demo-scenes", "groupvit-tiny-random")  # in order of preference


def checkpoint_dir() -> Path:
    """The folder the notebooks run on: $GROUPVIT_WEIGHTS, else the first shipped checkpoint that exists."""
    chosen = os.environ.get(WEIGHTS_ENV)
    if chosen:
        path = Path(chosen).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{WEIGHTS_ENV}={chosen} is not a checkpoint folder with a config.json")
        return path
    weights = data_dir("weights")
    for name in SHIPPED:
        if (weights / name / "model.safetensors").is_file():
            return weights / name
    raise FileNotFoundError(f"no shipped checkpoint under {weights} (looked for {', '.join(SHIPPED)})")


def is_demo(folder: Path) -> bool:
    """True for the demo checkpoint trained on procedural scenes (it ships its own small vocabulary)."""
    return folder.name == "groupvit-demo-scenes" or (folder / "train_log.jsonl").is_file()


def load_tokenizer(folder: Path) -> CLIPTokenizer:
    """The checkpoint's own vocabulary when its folder has one (HF's vocab.json + merges.txt), else CLIP's."""
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return CLIPTokenizer.from_pretrained(folder)
    return CLIPTokenizer.from_pretrained()


def load_processor(model: GroupViTModel, folder: Path) -> CLIPImageProcessor:
    """The checkpoint's preprocessor config if it has one; else CLIP's, cropping to the model's input size."""
    if (folder / "preprocessor_config.json").is_file():
        return CLIPImageProcessor.from_pretrained(folder)
    size = model.config.vision_config.image_size
    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def load(dtype: str = "float32") -> tuple[GroupViTModel, CLIPTokenizer, CLIPImageProcessor, Path]:
    """Model, tokenizer, image processor and folder of the notebooks' checkpoint."""
    folder = checkpoint_dir()
    model = GroupViTModel.from_pretrained(folder, dtype=dtype)
    return model, load_tokenizer(folder), load_processor(model, folder), folder


def example_scene(size: int, seed: int = EXAMPLE_SEED):
    """A held-out procedural scene (`groupvit_np.tasks.scenes`) drawn at `size` pixels, objects scaled with it."""
    scale = size / 64  # the scenes' default radii are for 64-pixel images
    return make_scene(seed, size=size, radius=(8.0 * scale, 14.0 * scale))


def example_image(folder: Path, size: int) -> np.ndarray:
    """The checkpoint's example.png when it ships one, else the example scene at the model's size.  # [H, W, 3]"""
    if (folder / "example.png").is_file():
        return np.asarray(load_image(folder / "example.png").convert("RGB"))
    return example_scene(size).image


def describe(model: GroupViTModel, folder: Path) -> str:
    """One paragraph on the checkpoint: what it is and its main sizes."""
    v, t = model.config.vision_config, model.config.text_config
    kind = (
        "the demo checkpoint trained on procedural scenes"
        if is_demo(folder)
        else "the tiny *random* checkpoint (it recognises nothing; pictures show mechanics, not meaning)"
        if folder.name == "groupvit-tiny-random"
        else f"the weights in {folder}"
    )
    grid = v.image_size // v.patch_size
    return (
        f"Running on **{folder.name}**: {kind}. Vision: {v.image_size} px images, {v.patch_size} px patches "
        f"({grid}x{grid} = {grid * grid} tokens), width {v.hidden_size}, depths {v.depths}, group tokens "
        f"{v.num_group_tokens[:2]} -> output groups {v.num_output_groups[:2]}. Text: vocabulary {t.vocab_size}, "
        f"width {t.hidden_size}, {t.num_hidden_layers} layers. Set `{WEIGHTS_ENV}` to a checkpoint folder to use "
        "other weights."
    )


def below(value, bound: float) -> str:
    """`"< 1e-12"` when |value| is below `bound`, else the value: a printed check that reads the same on any machine.

    Rounding differences (float64 ~1e-16, float32 ~1e-7) depend on the BLAS build, so the notebooks print a check
    as the bound it meets rather than its exact size; tests/test_notebooks.py compares printed outputs.
    """
    size = float(abs(value))
    return f"< {bound:g}" if size < bound else f"{size:.3g} (NOT below {bound:g})"


def repo_path(*parts: str) -> Path | None:
    """A path inside the repository clone (tests/fixtures, ...), or None when running from an installed wheel."""
    path = Path(__file__).resolve().parents[1].joinpath(*parts)
    return path if path.exists() else None


def figure_style() -> None:
    """Modest, consistent matplotlib figures, shown as 256-colour PNGs.

    Matplotlib's colour maps have 256 entries, so a palette PNG looks the same and takes a fraction of the bytes;
    that keeps the executed notebooks light enough to read on GitHub. Outside IPython only the style is set.
    """
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80, "font.size": 9, "axes.titlesize": 10,
                         "figure.max_open_warning": 0})  # fmt: skip
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None or not hasattr(shell, "display_formatter"):
        return
    from matplotlib.figure import Figure

    shell.run_line_magic("matplotlib", "inline")  # set up the inline backend now, so our formatter stays last
    shell.display_formatter.formatters["image/png"].for_type(Figure, _palette_png)


def _palette_png(fig) -> bytes:
    """A figure as an 8-bit palette PNG (median-cut colours, no dithering)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", facecolor="white")
    rgb = Image.open(buf).convert("RGB")
    out = io.BytesIO()
    rgb.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, format="png", optimize=True)
    return out.getvalue()
