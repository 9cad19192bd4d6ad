# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 6. Verification: our outputs against transformers'
#
# The notebooks so far took the model apart and checked each piece against the library's own functions. This one
# checks the library against the reference it reproduces: Hugging Face `transformers`' `GroupViTModel`, with the
# same weights and inputs, output by output.
#
# * **Committed fixtures** (always run): `tests/fixtures/model_hf_tiny/` holds a checkpoint written by
#   transformers (HF's own unit-test configuration, every parameter and BatchNorm statistic moved off its
#   initial value), the inputs, and every output HF computed in float64. No torch needed.
# * **Live** (when torch and transformers are installed): the same checkpoint through transformers now, and the
#   notebooks' checkpoint on a real caption and scene.
#
# What to expect: in float64 the two implementations differ only by the order of floating-point sums (1e-13 at
# most). In float32 the rounding of ~20 layers accumulates to ~1e-6 relative, amplified where the logit scale
# $s$ multiplies (and $s^2$ in segmentation). The one non-smooth spot is the hard argmax: two nearly tied groups
# can swap under rounding, so the fixture generator keeps, of the seeds it tries, the one whose closest
# top-1/top-2 gap is largest (section 1 says what that does and does not prove).

# %%
import json
import warnings

import _common
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from groupvit_np import GroupViTModel
from groupvit_np.backend import to_numpy

_common.figure_style()
fixture = _common.repo_path("tests", "fixtures", "model_hf_tiny")
print("fixture:", fixture.relative_to(fixture.parents[2]) if fixture else None)


def flat_outputs(model, inputs):
    """Every output of one call (and the two feature getters) under HF's flat names, as NumPy."""
    o = model(**inputs, return_loss=True, output_attentions=True, output_hidden_states=True, output_segmentation=True)
    out = {k: to_numpy(o[k]) for k in ("loss", "logits_per_image", "logits_per_text", "segmentation_logits",
                                       "text_embeds", "image_embeds")}  # fmt: skip
    for tower in ("text_model_output", "vision_model_output"):
        for field in ("last_hidden_state", "pooler_output", "hidden_states", "attentions"):
            value = getattr(o[tower], field)
            items = enumerate(value) if isinstance(value, tuple) else [(None, value)]
            for i, v in items:
                out[f"{tower}.{field}" + ("" if i is None else f".{i}")] = to_numpy(v)
    out["text_features"] = to_numpy(model.get_text_features(inputs["input_ids"], inputs["attention_mask"]))
    out["image_features"] = to_numpy(model.get_image_features(inputs["pixel_values"]))
    return out


def error_rows(ours64, ours32, ref):
    rows = []
    for key, expected in ref.items():
        scale = float(np.abs(expected).max()) or 1.0
        e64 = float(np.abs(ours64[key] - expected).max())
        e32 = float(np.abs(ours32[key].astype(np.float64) - expected).max())
        rows.append((key, expected.shape, scale, e64, e32, e32 / scale))
    return rows


def markdown_table(rows, ref_name):
    lines = [f"| output | shape | max abs ({ref_name}) | float64 max abs error | float32 max abs error | "
             "float32 relative |", "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for key, shape, scale, e64, e32, rel in rows:
        lines.append(f"| `{key}` | {tuple(shape)} | {scale:.3g} | {e64:.1e} | {e32:.1e} | {rel:.1e} |")
    return Markdown("\n".join(lines))


# %% [markdown]
# ## 1. Against the committed HF float64 outputs

# %%
if fixture is None:
    print("tests/fixtures is not here (installed from a wheel?): nothing to compare against offline")
else:
    inputs = dict(np.load(fixture / "inputs.npz"))
    ref = dict(np.load(fixture / "outputs.npz"))
    meta = json.loads((fixture / "meta.json").read_text())
    ours64 = flat_outputs(GroupViTModel.from_pretrained(fixture, dtype="float64"), inputs)
    ours32 = flat_outputs(GroupViTModel.from_pretrained(fixture, dtype="float32"), inputs)
    assert sorted(ours64) == sorted(ref), "every HF output is produced, and nothing else"
    rows = error_rows(ours64, ours32, ref)
    print({k: v.shape for k, v in inputs.items()}, f" smallest top-1/top-2 assignment gap: "
          f"{meta['min_assignment_gap']:.3g}")  # fmt: skip
    display(markdown_table(rows, "HF"))
    worst = max(r[3] for r in rows)
    print(f"float64: worst max abs error over {len(rows)} outputs {_common.below(worst, 1e-12)} "
          "(the test suite requires 1e-10)")  # fmt: skip

# %% [markdown]
# **The smallest top-1/top-2 gap.** For every image token the generator looked at the soft assignment
# probabilities of the two most likely groups, and kept the fixture whose closest pair is farthest apart. The
# printed gap, 2.75e-7, looks like float32's resolution (the spacing of float32 numbers near 1 is 1.2e-7), but
# the probabilities in question are small, and float32's spacing is relative to the number's size:

# %%
if fixture is not None:
    key = "vision_model_output.attentions.0"  # the stage with the closest pair
    probs = np.sort(ref[key], axis=-2)  # [B, S, N], sorted over the groups
    gaps = probs[:, -1] - probs[:, -2]  # [B, N]
    b, n = np.unravel_index(np.argmin(gaps), gaps.shape)
    p1, p2 = probs[b, -1, n], probs[b, -2, n]
    step32, step64 = float(np.spacing(np.float32(p1))), float(np.spacing(p1))
    print(f"closest pair: image {b}, token {n}: p = {p1:.8f} vs {p2:.8f} (uniform over {probs.shape[1]} groups: "
          f"{1 / probs.shape[1]:.6f}); gap {p1 - p2:.3g}")  # fmt: skip
    print(f"number spacing at p: float32 {step32:.2g} (gap = {(p1 - p2) / step32:.0f} steps), "
          f"float64 {step64:.2g} (gap = {(p1 - p2) / step64:.1e} steps)")  # fmt: skip
    err32 = np.abs(ours32[key].astype(np.float64) - ref[key]).max()
    same = all((np.argmax(ours32[k], axis=-2) == np.argmax(ref[k], axis=-2)).all() for k in ref if "attentions" in k
               and k.startswith("vision"))  # fmt: skip
    print(f"our float32 error on {key}: {_common.below(err32, 5e-8)};  float32 hard choices equal HF float64's "
          f"everywhere: {same}")  # fmt: skip

# %% [markdown]
# What this **proves**: in float64 no hard choice can differ from HF's by accident. The closest pair is
# $\sim 10^{11}$ float64 steps apart and our float64 errors are $\sim 10^{-13}$, so every token picks the same
# group in both implementations, and the float64 comparison tests everything else without a hidden flip. For this
# fixture our float32 run also picks the same groups, with the pipeline's float32 error below the gap.
#
# What it does **not** prove: that float32 always picks what float64 (or HF's float32) picks. The margin here is a
# factor of tens (the gap against our float32 error on these maps, in the table above), the generator *chose* the seed
# with the widest closest gap (others were narrower), and real images, bigger models and more groups produce much
# closer pairs. When a near-tie flips, one token changes group: a discrete change in that token's segment and a small
# jump in the pooled outputs, not a rounding-sized difference, and not a bug in either implementation.

# %% [markdown]
# The same table as a picture: float64 errors sit at the level of double-precision rounding, float32 errors at
# float32 rounding scaled by each output's magnitude (segmentation logits are the largest numbers and carry `s^2`).

# %%
if fixture is not None:
    fig, ax = plt.subplots(figsize=(10, 3.4))
    x = np.arange(len(rows))
    tiny = 1e-18  # exact zeros (the token + position embeddings) drawn as stubs at 1e-18
    ax.bar(x - 0.2, [max(r[3], tiny) for r in rows], width=0.4, label="float64 vs HF float64", color="#3182bd")
    ax.bar(x + 0.2, [max(r[4], tiny) for r in rows], width=0.4, label="float32 vs HF float64", color="#e6550d")
    ax.set_yscale("log")
    ax.set_ylim(tiny / 10, 1)
    ax.axhline(1e-10, color="0.4", ls="--", lw=1, label="float64 tolerance 1e-10")
    ax.set_xticks(x, [r[0].replace("_model_output", "").replace("hidden_states", "hs") for r in rows], rotation=70,
                  ha="right", fontsize=7)  # fmt: skip
    ax.set_ylabel("max abs error")
    ax.legend(fontsize=8, loc="upper left")
    plt.show()

# %% [markdown]
# ## 2. Live, with transformers
#
# The committed numbers are only as good as their provenance, so when torch and transformers are installed we
# run HF now: first on the fixture checkpoint (HF again equals its committed outputs, and ours), then on the
# notebooks' checkpoint with a real caption and scene, in float32, the precision people run.

# %%
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's notice about Jupyter widgets
try:
    import torch
    import transformers
except ImportError:
    torch = transformers = None
    print("torch/transformers are not installed: skipping the live comparison "
          "(pip install -e '.[reference]'); the table above used the committed HF outputs")  # fmt: skip


def hf_flat(hf_model, inputs, dtype):
    """HF's outputs under the same names; float64 needs torch's default dtype set (HF builds its mask with it)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        t = {k: torch.from_numpy(v) for k, v in inputs.items()}
        t["pixel_values"] = t["pixel_values"].to(dtype)
        with torch.no_grad():
            o = hf_model(**t, return_loss=True, output_attentions=True, output_hidden_states=True,
                         output_segmentation=True)  # fmt: skip
            out = {k: o[k].numpy() for k in ("loss", "logits_per_image", "logits_per_text", "segmentation_logits",
                                              "text_embeds", "image_embeds")}  # fmt: skip
            for tower in ("text_model_output", "vision_model_output"):
                for field in ("last_hidden_state", "pooler_output", "hidden_states", "attentions"):
                    value = o[tower][field]
                    items = enumerate(value) if isinstance(value, tuple) else [(None, value)]
                    for i, v in items:
                        out[f"{tower}.{field}" + ("" if i is None else f".{i}")] = v.numpy()
            out["text_features"] = hf_model.get_text_features(t["input_ids"], t["attention_mask"]).numpy()
            out["image_features"] = hf_model.get_image_features(t["pixel_values"]).numpy()
    finally:
        torch.set_default_dtype(previous)
    return out


if transformers is not None and fixture is not None:
    torch.set_num_threads(2)
    print(f"transformers {transformers.__version__}, torch {torch.__version__.split('+')[0]}")
    hf64 = transformers.GroupViTModel.from_pretrained(fixture).double().eval()
    live = hf_flat(hf64, inputs, torch.float64)
    print("live HF vs committed HF outputs, worst max abs difference:",
          _common.below(max(float(np.abs(live[k] - ref[k]).max()) for k in ref), 1e-12))  # fmt: skip
    print("live HF vs ours (float64), worst max abs difference:",
          _common.below(max(float(np.abs(live[k] - ours64[k]).max()) for k in ref), 1e-12))  # fmt: skip

# %% [markdown]
# On the notebooks' checkpoint, a scene and its caption plus two other captions (right-padded), through our
# tokenizer and image processor, both models in float32:

# %%
if transformers is not None:
    model, tokenizer, processor, folder = _common.load(dtype="float32")
    model64 = _common.load(dtype="float64")[0]
    scene = _common.example_scene(model.config.vision_config.image_size)
    captions = [scene.caption, "a yellow triangle", "a blue circle and a red square"]
    enc = tokenizer(captions, padding=True, return_tensors="np")
    pixels = processor([scene.image] * 3)["pixel_values"]
    case = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "pixel_values": pixels}
    hf32 = transformers.GroupViTModel.from_pretrained(folder, dtype=torch.float32).eval()
    theirs = hf_flat(hf32, case, torch.float32)
    rows = error_rows(flat_outputs(model64, case), flat_outputs(model, case), theirs)
    display(markdown_table(rows, "HF float32"))
    ours_lpi = flat_outputs(model, case)["logits_per_image"]
    print(f"{folder.name}: logits_per_image (rounded), ours:\n{np.round(ours_lpi, 2)}\n"
          f"HF:\n{np.round(theirs['logits_per_image'], 2)}")  # fmt: skip

# %% [markdown]
# The `loss` row of that table is large, far above the chance level $\log 3 \approx 1.1$, in both
# implementations. That is the input, not a fault: the case feeds the **same** scene three times, with three
# different captions, and the contrastive loss pairs image $i$ with caption $i$. Only caption 0 describes the
# scene, so every image's row prefers caption 0: image 0 is right, and images 1 and 2 are "wrong" by the full
# logit margin. Each column sees three identical images, so each caption's cross-entropy is exactly $\log 3$:

# %%
if transformers is not None:
    lpi = theirs["logits_per_image"].astype(np.float64)  # [B, T]

    def cross_entropies(z):  # per row, target on the diagonal
        z = z - z.max(1, keepdims=True)
        return np.log(np.exp(z).sum(1)) - np.diag(z)

    rows_ce, cols_ce = cross_entropies(lpi), cross_entropies(lpi.T)
    print("image -> caption, per image:", np.round(rows_ce, 1), " mean", round(float(rows_ce.mean()), 1))
    print("caption -> image, per caption:", np.round(cols_ce, 2), " mean", round(float(cols_ce.mean()), 2),
          f"(log 3 = {np.log(3):.2f})")  # fmt: skip
    print(f"loss = ({rows_ce.mean():.1f} + {cols_ce.mean():.2f}) / 2 = {(rows_ce.mean() + cols_ce.mean()) / 2:.1f}; "
          f"reported: {float(theirs['loss']):.1f}")  # fmt: skip

# %% [markdown]
# Here the reference is HF in float32, so the "float64" column is our float64 against HF's float32: it measures
# HF's own float32 rounding.
#
# **What this shows.** Every output transformers' GroupViT produces (logits, embeddings, loss, hidden states,
# soft assignments, segmentation logits, the two feature getters) is reproduced: to 1e-13 in float64, and to
# float32 rounding in float32. The test suite asserts the same with stated tolerances (`tests/test_model.py`,
# `tests/test_reference_live.py`), on NumPy, on `array_api_strict` on a non-default device, and on CuPy when a
# GPU is present.
