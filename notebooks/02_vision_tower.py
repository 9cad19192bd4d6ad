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
# # 2. The vision tower: patches, position, attention, and group tokens
#
# GroupViT's image encoder is a Vision Transformer with one addition: learnable **group tokens** ride along with
# the image tokens, and at the end of a stage every image token is merged into one of them (notebook 3). This
# notebook builds everything up to that merge, from the library's pure functions, and checks each step:
#
# 1. the image as a grid of patch tokens, computed as one matrix product and checked against a convolution loop;
# 2. LayerNorm *before* the position embedding (GroupViT's order, unlike ViT's);
# 3. multi-head self-attention, with the head split drawn as shapes;
# 4. group tokens appended after the image tokens, and what the three stages do to the token count.
#
# Everything runs in float64 here so that hand-written checks agree to ~1e-15; the model runs in float32 as well.

# %%
import inspect

import _common
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyArrowPatch, Rectangle

from groupvit_np.nn.attention import multi_head_attention
from groupvit_np.nn.ops import layer_norm, linear, softmax
from groupvit_np.nn.vision import patch_embed, vision_embeddings, vision_stage, vision_tower

_common.figure_style()
model, tokenizer, processor, folder = _common.load(dtype="float64")
vcfg, params = model.config.vision_config, model.params["vision_model"]
print(_common.describe(model, folder))

# %% [markdown]
# The example image is a held-out procedural scene (coloured shapes on a striped grey background; see
# `groupvit_np.tasks.scenes`), preprocessed exactly as HF's `CLIPImageProcessor`: resize, centre crop, scale to
# [0, 1], normalise with CLIP's per-channel mean and standard deviation. The result is `pixel_values`,
# `[B, 3, H, W]` float32.

# %%
image = _common.example_image(folder, vcfg.image_size)  # [H, W, 3] uint8
pixels = processor(image)["pixel_values"].astype(np.float64)  # [1, 3, H, W]
fig, axes = plt.subplots(1, 4, figsize=(9, 2.5))
axes[0].imshow(image)
axes[0].set_title(f"image {image.shape[0]}x{image.shape[1]}")
for c, name in enumerate("RGB"):
    im = axes[c + 1].imshow(pixels[0, c], cmap="RdBu_r", vmin=-2.2, vmax=2.2)
    axes[c + 1].set_title(f"[0, {c}]: {name}")
fig.colorbar(im, ax=axes[1:], shrink=0.8, label="pixel_values")
for ax in axes:
    ax.axis("off")
plt.show()

# %% [markdown]
# ## 1. Patches as a matrix product
#
# The first layer is a convolution with kernel = stride = patch size $k$. Because the windows do not overlap,
# that convolution is nothing but: cut the image into $k \times k$ patches, flatten each patch into a vector of
# $Ck^2$ numbers, and multiply by the kernel reshaped to a $D \times Ck^2$ matrix. Tokens come out in row-major
# grid order, `index = row * grid_width + col`.

# %%
print(inspect.getsource(patch_embed))

# %%
k = vcfg.patch_size
gh, gw = pixels.shape[2] // k, pixels.shape[3] // k
fig, ax = plt.subplots(figsize=(4.2, 4.2))
ax.imshow(image)
for i in range(1, gh):
    ax.axhline(i * k - 0.5, color="w", lw=0.6)
for j in range(1, gw):
    ax.axvline(j * k - 0.5, color="w", lw=0.6)
for i in range(gh):
    for j in range(gw):
        ax.text(j * k + k / 2, i * k + k / 2, i * gw + j, ha="center", va="center", fontsize=7 if gw <= 10 else 5,
                color="w", fontweight="bold")  # fmt: skip
ax.set_title(f"{gh}x{gw} patches of {k}x{k} px: token index = row*{gw} + col")
ax.axis("off")
plt.show()

# %% [markdown]
# The check: a convolution written the slow way, one output position at a time, straight from its definition
#
# $$
# \mathrm{out}_{d,i,j} = b_d + \sum_{c=1}^{C} \sum_{y=0}^{k-1} \sum_{x=0}^{k-1} w_{d,c,y,x} \,
# \mathrm{image}_{c,\; ik+y,\; jk+x}.
# $$

# %%
conv = params["embeddings"]["patch_embeddings"]["projection"]
w, b = conv["weight"], conv["bias"]  # [D, C, k, k], [D]
direct = np.zeros((gh, gw, w.shape[0]))
for i in range(gh):
    for j in range(gw):
        window = pixels[0, :, i * k : (i + 1) * k, j * k : (j + 1) * k]  # [C, k, k]
        direct[i, j] = (w * window).sum(axis=(1, 2, 3)) + b  # [D]
tokens = patch_embed(pixels, conv, k)  # [1, N, D]
print("patch_embed:", tokens.shape, " weight as a matrix:", (w.shape[0], int(np.prod(w.shape[1:]))))
print("max |matrix product - convolution loop| =", _common.below(np.abs(tokens[0] - direct.reshape(gh * gw, -1)).max(),
                                                                  1e-12))  # fmt: skip

# %% [markdown]
# Each row of that matrix is one filter, an RGB patch the token's channel responds to:

# %%
n_show = min(12, w.shape[0])
fig, axes = plt.subplots(1, n_show, figsize=(n_show * 0.8, 1.0))
for d, ax in enumerate(axes):
    f = np.transpose(w[d], (1, 2, 0))  # [k, k, C]
    ax.imshow((f - f.min()) / (f.max() - f.min() + 1e-12))
    ax.axis("off")
fig.suptitle(f"the first {n_show} of {w.shape[0]} patch filters (each rescaled to [0, 1])", y=1.12)
plt.show()

# %% [markdown]
# ## 2. LayerNorm before the position embedding
#
# ViT adds the position table to the raw patch projections. GroupViT first normalises each token with a
# LayerNorm and only then adds the table (the original code's `patch_embed.norm`). There is no CLS token:
# GroupViT pools by averaging its final groups instead.

# %%
print(inspect.getsource(vision_embeddings))

# %% [markdown]
# LayerNorm normalises each token over its own $D$ channels, then applies a learned gain $\gamma$ and bias
# $\beta$:
#
# $$
# \mathrm{LN}(x) = \gamma \odot \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta, \qquad
# \mu = \frac{1}{D}\sum_{c} x_c, \quad \sigma^2 = \frac{1}{D}\sum_{c} (x_c - \mu)^2 .
# $$
#
# The normalised vector $(x - \mu)/\sigma$ has mean 0 and variance 1 over its $D$ entries, so its length is
# exactly $\sqrt{D}$, whatever the brightness or contrast of the patch. So the position table is added to
# vectors of a known scale. The order matters: normalising after adding gives different tokens.

# %%
emb = params["embeddings"]
normed = layer_norm(tokens, emb["layernorm"], vcfg.layer_norm_eps)  # [1, N, D]
table = emb["position_embeddings"]  # [1, N, D]
x0 = vision_embeddings(pixels, emb, vcfg)  # [1, N, D]
raw_norm, ln_norm = np.linalg.norm(tokens[0], axis=-1), np.linalg.norm(normed[0], axis=-1)
pos_norm = np.linalg.norm(table[0], axis=-1)  # [N]
print(f"token norms before LN: {raw_norm.min():.2f} .. {raw_norm.max():.2f};  after: {ln_norm.min():.2f} .. "
      f"{ln_norm.max():.2f};  sqrt(D) = sqrt({vcfg.hidden_size}) = {np.sqrt(vcfg.hidden_size):.2f}")  # fmt: skip
print(f"position rows: norm {pos_norm.mean():.2f} on average, {pos_norm.mean() / ln_norm.mean():.0%} of a token's")
print("max |LN(x) + pos - embeddings| =", _common.below(np.abs(normed + table - x0).max(), 1e-12))
print("max |LN(x + pos) - (LN(x) + pos)| =",
      round(float(np.abs(layer_norm(tokens + table, emb["layernorm"]) - x0).max()), 3))  # fmt: skip

# %% [markdown]
# <!-- CHECKPOINT-DEPENDENT: "position rows are short next to the tokens" (16x16 checkpoint: 8% of a token). -->
# The normalised tokens have length close to $\sqrt{D}$ (the learned $\gamma$ and $\beta$ move it a little
# from the exact value), while the position rows are short next to them: adding the table moves a token by a
# small fraction of its length (printed above). Position is a small, consistent offset that attention can still
# read, because it is the same for every image; the patch content dominates the token.

# %% [markdown]
# The position table itself, seen through cosine similarity: for a few reference tokens (marked), how similar
# every other token's position vector is. Two kinds of structure can show up in a trained table: a
# **neighbourhood** (positions near the reference are similar, similarity falls with distance), or a coarse
# **layout** such as interior versus border (all interior positions alike, all border positions alike). A random
# table shows neither. Two numbers below the picture measure each.

# %%
unit = table[0] / np.linalg.norm(table[0], axis=-1, keepdims=True)  # [N, D]
refs = [(gh // 4, gw // 4), (gh // 2, gw // 2), (gh - 1, gw - 1)]
fig, axes = plt.subplots(1, len(refs), figsize=(8, 2.8))
for ax, (r, c) in zip(axes, refs, strict=True):
    sim = (unit @ unit[r * gw + c]).reshape(gh, gw)
    im = ax.imshow(sim, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.plot(c, r, "k*", ms=10)
    ax.set_title(f"cos(pos[{r * gw + c}], pos[:])")
    ax.axis("off")
fig.colorbar(im, ax=axes, shrink=0.8)
plt.show()
cos_all = unit @ unit.T  # [N, N]
rr, cc = np.divmod(np.arange(gh * gw), gw)  # each token's grid row and column
dist = np.maximum(np.abs(rr[:, None] - rr[None, :]), np.abs(cc[:, None] - cc[None, :]))  # [N, N] grid distance
border = (rr == 0) | (rr == gh - 1) | (cc == 0) | (cc == gw - 1)  # [N]
same_side = border[:, None] == border[None, :]
print(f"neighbourhood: mean cosine to the 8 neighbours {cos_all[dist == 1].mean():.2f}, to positions at distance "
      f">= {gh // 2}: {cos_all[dist >= gh // 2].mean():.2f}")  # fmt: skip
print(f"layout: mean cosine interior-interior {cos_all[~border][:, ~border].mean():.2f}, border-border "
      f"{cos_all[border][:, border].mean():.2f}, interior-border {cos_all[~same_side].mean():.2f}")  # fmt: skip

# %% [markdown]
# <!-- CHECKPOINT-DEPENDENT: which structure the demo table shows (16x16 checkpoint: both; centre, ring, edge). -->
# Read the picture with those two lines. A neighbourhood shows as neighbours clearly more similar than distant
# positions; a layout as high cosines within the interior and within the border and a low one between them. The 16x16
# demo table has both. Neighbours are alike and distant positions unrelated (the first line). And it has learned a
# layout with three parts rather than two: a central square whose positions are all alike (the first two panels), a
# ring two or three tokens wide around it that is unlike the centre, and the outermost edge, mostly alike along its
# length and mildly like the centre (the third panel; the border-border cosine). The interior-interior mean is low
# because the "interior" of the second line holds both the centre and the ring. A plausible reading, from the scenes:
# object centres lie at least one radius (2 to 3.5 tokens) from the edge, so the edge is nearly always background, the
# centre is where objects are, and the ring is where their outlines usually fall.
#
# ## 3. Multi-head self-attention, the head split as shapes
#
# Both towers use the same pre-LN transformer layer: `x + MHA(LN1(x))`, then `+ MLP(LN2(x))`. Inside the
# attention, `D` channels are cut into `H` heads of `Dh = D / H` channels (channel `c = h * Dh + j`), each head
# attends on its own, and the heads are put back side by side:
#
# $$
# Q = x W_q^\top + b_q,\quad K = x W_k^\top + b_k,\quad V = x W_v^\top + b_v, \qquad
# A_h = \mathrm{softmax}_{j}\!\left(\frac{Q_h K_h^\top}{\sqrt{D_h}}\right),
# $$
#
# $$
# \mathrm{MHA}(x) = \big[\,A_1 V_1 \;\; A_2 V_2 \;\cdots\; A_H V_H\,\big]\, W_o^\top + b_o,
# $$
#
# where $Q_h$ is channels $hD_h \ldots (h+1)D_h - 1$ of $Q$, and the softmax runs over the keys $j$: each query
# row of $A_h$ sums to 1. The picture uses this checkpoint's sizes for the first layer of stage 1, which sees the
# image tokens *and* the group tokens (section 4):

# %%
stages = params["encoder"]["stages"]
H, D = vcfg.num_attention_heads, vcfg.hidden_size
Dh, N, G0 = D // H, gh * gw, vcfg.num_group_tokens[0]
L0 = N + G0


def block(ax, x, y, w, h, label, color, depth=1, text_below=None):
    for i in reversed(range(depth)):  # a stack of `depth` sheets for the head axis
        ax.add_patch(Rectangle((x + 0.12 * i, y + 0.12 * i), w, h, facecolor=color, edgecolor="k", lw=0.8))
    ax.text(x + w / 2, y + h / 2, label, ha="center", va="center", fontsize=8)
    if text_below:
        ax.text(x + w / 2, y - 0.25, text_below, ha="center", va="top", fontsize=7.5, color="0.25")


def arrow(ax, x0, x1, y, label=""):
    ax.add_patch(FancyArrowPatch((x0, y), (x1, y), arrowstyle="-|>", mutation_scale=10, color="0.3"))
    if label:
        ax.text((x0 + x1) / 2, y + 0.18, label, ha="center", va="bottom", fontsize=7)


fig, ax = plt.subplots(figsize=(11, 3.2))
block(ax, 0.0, 0.5, 0.9, 2.2, "x\nLN", "#deebf7", text_below=f"[B, {L0}, {D}]")
arrow(ax, 1.0, 1.8, 1.6, "q,k,v_proj")
block(ax, 1.9, 0.5, 0.9, 2.2, "q k v", "#c6dbef", text_below=f"3 x [B, {L0}, {D}]")
arrow(ax, 2.9, 3.7, 1.6, "split")
block(ax, 3.8, 0.6, 0.45, 2.0, "", "#9ecae1", depth=min(H, 6), text_below=f"[B, {H}, {L0}, {Dh}]")
ax.text(4.3, 2.95, f"{H} heads x {Dh} ch", ha="center", fontsize=7.5)
arrow(ax, 4.95, 5.6, 1.6, "q k^T / sqrt(Dh)")
block(ax, 5.7, 0.6, 1.6, 2.0, "scores\nsoftmax\nover keys", "#fdd0a2", depth=min(H, 6),
      text_below=f"[B, {H}, {L0}, {L0}]")  # fmt: skip
arrow(ax, 8.0, 8.6, 1.6, "@ v")
block(ax, 8.7, 0.6, 0.45, 2.0, "", "#9ecae1", depth=min(H, 6), text_below=f"[B, {H}, {L0}, {Dh}]")
arrow(ax, 9.85, 10.5, 1.6, "merge")
block(ax, 10.6, 0.5, 0.9, 2.2, "out\nproj", "#deebf7", text_below=f"[B, {L0}, {D}]")
ax.set_xlim(-0.2, 11.7)
ax.set_ylim(-0.4, 3.4)
ax.axis("off")
ax.set_title(f"one attention layer: channel c = h*{Dh} + j; each head attends separately")
plt.show()

# %% [markdown]
# The formula, written with `einsum` and an explicit head axis, as a reference to read (the library's
# `multi_head_attention` computes the same with contiguous memory layouts that keep NumPy fast, which is harder
# to read, so we check it against this instead). The $1/\sqrt{D_h}$ scale is applied to $Q$ after its bias, as
# HF does.


# %%
def attention_reference(x, p, H):  # [B, L, D] -> [B, L, D], [B, H, L, L]
    B, L, D = x.shape
    Dh = D // H

    def split(t):  # [B, L, D] -> [B, H, L, Dh]: channel c = h * Dh + j
        return t.reshape(B, L, H, Dh).transpose(0, 2, 1, 3)

    q = split(linear(x, p["q_proj"]) * Dh**-0.5)  # scaled after the bias
    k, v = split(linear(x, p["k_proj"])), split(linear(x, p["v_proj"]))
    weights = softmax(np.einsum("bhid,bhjd->bhij", q, k), axis=-1)  # [B, H, L, L]: each row sums to 1 over keys j
    heads = np.einsum("bhij,bhjd->bhid", weights, v)  # [B, H, L, Dh]
    merged = heads.transpose(0, 2, 1, 3).reshape(B, L, D)  # heads side by side again
    return linear(merged, p["out_proj"]), weights


# %%
g_tok = np.broadcast_to(stages[0]["group_token"], (1, G0, D))  # [1, G0, D]: the learned group tokens
z = np.concatenate([x0, g_tok], axis=1)  # [1, N + G0, D]: image tokens first, group tokens last
layer = stages[0]["layers"][0]
h = layer_norm(z, layer["layer_norm1"], vcfg.layer_norm_eps)  # [1, L0, D]
att = layer["self_attn"]
ours, weights = attention_reference(h, att, H)
lib_out, lib_weights = multi_head_attention(h, h, att, H)
print("max |reference - library| output:", _common.below(np.abs(ours - lib_out).max(), 1e-12),
      " weights:", _common.below(np.abs(weights - lib_weights).max(), 1e-12))  # fmt: skip

# %% [markdown]
# ## 4. Group tokens ride along
#
# At the start of stage 1 the `G` learned group tokens are **appended after** the `N` image tokens, and the
# stage's layers treat all `N + G` tokens alike. The attention weights of that first layer (averaged over
# heads) show four blocks: image-to-image, image-to-group, group-to-image and group-to-group. The group tokens
# gather information from the image through the bottom-left block; that is how they come to stand for regions.

# %%
avg = lib_weights[0].mean(axis=0)  # [L0, L0]
fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.8), gridspec_kw={"width_ratios": [1.15, 1]})
im = axes[0].imshow(avg, cmap="magma", vmax=np.quantile(avg, 0.995))
for ax_line in (axes[0].axhline, axes[0].axvline):
    ax_line(N - 0.5, color="c", lw=1.2)
axes[0].set_title(f"stage 1, first layer: attention, mean over heads [{L0}, {L0}]")
axes[0].set_xlabel(f"key: {N} image tokens | {G0} group tokens")
axes[0].set_ylabel("query")
fig.colorbar(im, ax=axes[0], shrink=0.8)
# where one group token looks in the image: its attention over the image keys, as a grid
g = int(np.argmax(avg[N:, :N].max(axis=1)))  # the group token with the most focused attention
axes[1].imshow(image, alpha=0.5)
axes[1].imshow(avg[N + g, :N].reshape(gh, gw), cmap="magma", alpha=0.65,
               extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5))  # fmt: skip
axes[1].set_title(f"group token {g}: its attention over the image")
axes[1].axis("off")
plt.show()
print(f"share of the attention mass that image queries give to group keys: {avg[:N, N:].sum(1).mean():.3f}")

# %% [markdown]
# After its layers a stage splits the tokens again: the last `G` are the group tokens, the first `N` the image
# tokens, and the grouping block (notebook 3) merges the `N` image tokens into the output groups. The stage as
# the library writes it:

# %%
print(inspect.getsource(vision_stage))

# %% [markdown]
# Running the stages by hand, and the shapes at each step. The notebooks number the stages from 1: stages 1 and 2
# group (16 then 20 output groups for the demo), stage 3 has no group tokens and is a plain transformer over the
# final segment tokens. Stage 2's group tokens get a token-mixing projection of stage 1's, passed as
# `prev_groups` (the library's `stage` argument is the 0-based index into the list of stages).

# %%
x, prev = x0, None
print(f"embeddings: {tuple(x.shape)}")
for s, stage in enumerate(stages):
    n_in = x.shape[1]
    x, groups, soft = vision_stage(x, prev, stage, vcfg, s)
    prev = groups if groups is not None else prev
    extra = (f"+ {groups.shape[1]} group tokens -> assignment {tuple(soft.shape)}" if soft is not None
             else "(no group tokens)")  # fmt: skip
    print(f"stage {s + 1}: {vcfg.depths[s]} layer(s) over {n_in} image tokens {extra} -> {tuple(x.shape)}")
final = layer_norm(x, params["layernorm"], vcfg.layer_norm_eps)  # [1, S, D]
out = vision_tower(pixels, params, vcfg)
print("max |by hand - vision_tower| last_hidden_state:",
      _common.below(np.abs(final - out["last_hidden_state"]).max(), 1e-12))  # fmt: skip
print("pooler_output = mean of the final segment tokens, max difference:",
      _common.below(np.abs(final.mean(1) - out["pooler_output"]).max(), 1e-12))  # fmt: skip
print("hidden_states:", [tuple(t.shape) for t in out["hidden_states"]])
print("attentions (soft assignments):", [tuple(a.shape) for a in out["attentions"]])

# %% [markdown]
# The same in float32 through the HF-shaped facade, `GroupViTModel.get_image_features` (the pooled output through
# the projection head of notebook 4), agrees with float64 to float32 rounding:

# %%
model32 = _common.load(dtype="float32")[0]
f32, f64 = model32.get_image_features(pixels.astype(np.float32)), model.get_image_features(pixels)
print("relative difference float32 vs float64:", _common.below(np.abs(f32 - f64).max() / np.abs(f64).max(), 1e-5),
      " (float32 resolves about 6e-8 relative; ~20 layers accumulate it)")  # fmt: skip

# %% [markdown]
# **Summary.** Patch tokens are a matrix product; they are normalised, then given positions; group tokens are
# appended and attend with the image tokens; each grouping stage ends with one token per output group (here
# 256 -> 16 -> 20: the count is set by the configuration, and need not shrink).
# Notebook 3 opens the grouping block that does the merging.
