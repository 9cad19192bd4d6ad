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
# # 4. Text tower, projection heads, logits and the contrastive loss
#
# GroupViT never sees a mask. Its only training signal is that an image and its caption should be closer to
# each other, in a shared embedding space, than to the other captions and images of the batch. This notebook
# builds the text side of that comparison and the comparison itself:
#
# 1. the text tower, CLIP's causal transformer, pooled at the end-of-text token;
# 2. the projection heads (Linear, BatchNorm with running statistics, ReLU, Linear) into the shared space;
# 3. the logits: scaled cosine similarities between every image and every text;
# 4. the symmetric contrastive (InfoNCE) loss.
#
# Shape legend: `B` images, `T` texts, `L` text length, `D` width, `P` projection dim.

# %%
import inspect

import _common
import matplotlib.pyplot as plt
import numpy as np

from groupvit_np.attention import encoder_layer, text_attention_mask
from groupvit_np.heads import contrastive_logits, contrastive_loss, projection_head
from groupvit_np.ops import batch_norm_eval, l2_normalize, layer_norm, linear, relu
from groupvit_np.scenes import SEED_RANGES
from groupvit_np.text import eos_positions, text_tower
from groupvit_np.vision import vision_tower

_common.figure_style()
model, tokenizer, processor, folder = _common.load(dtype="float64")
tcfg, vcfg = model.config.text_config, model.config.vision_config
print(_common.describe(model, folder))

# %% [markdown]
# A small batch: six held-out scenes and their captions. Image `i` goes with caption `i`.

# %%
scenes = [_common.example_scene(vcfg.image_size, SEED_RANGES["example"] + i) for i in range(6)]
captions = [s.caption for s in scenes]
pixels = processor([s.image for s in scenes])["pixel_values"].astype(np.float64)  # [B, 3, H, W]
enc = tokenizer(captions, padding=True, return_tensors="np")
ids, mask = enc["input_ids"], enc["attention_mask"]  # [T, L]
fig, axes = plt.subplots(1, len(scenes), figsize=(12, 2.4))
for i, (ax, s) in enumerate(zip(axes, scenes, strict=True)):
    ax.imshow(s.image)
    ax.set_title(f"{i}: " + s.caption.replace(" and ", "\n& "), fontsize=8)
    ax.axis("off")
plt.show()
print("input_ids", ids.shape)

# %% [markdown]
# ## 1. The text tower
#
# Token embedding plus a learned position embedding, pre-LN transformer layers with a causal mask (QuickGELU in
# the MLPs, CLIP's choice, where the vision tower uses the exact GELU), a final LayerNorm, and the vector at each
# caption's first EOS (notebook 1 shows why that position, and why right padding).

# %%
print(inspect.getsource(text_tower))

# %% [markdown]
# By hand, keeping each layer's attention weights:

# %%
p = model.params["text_model"]
L = ids.shape[1]
h = p["embeddings"]["token_embedding"]["weight"][ids] + p["embeddings"]["position_embedding"]["weight"][:L]
masks = (text_attention_mask(L, mask, h),)  # causal + padding, additive: [T, 1, L, L]
attn = []
for layer in p["encoder"]["layers"]:
    h, w = encoder_layer(h, layer, tcfg.num_attention_heads, tcfg.hidden_act, tcfg.layer_norm_eps, masks)
    attn.append(w)  # [T, H, L, L]
last = layer_norm(h, p["final_layer_norm"], tcfg.layer_norm_eps)  # [T, L, D]
pooled = last[np.arange(len(ids)), eos_positions(ids, tcfg)]  # [T, D]
lib = text_tower(ids, p, tcfg, attention_mask=mask)
print("max |by hand - text_tower| pooler_output:", np.abs(pooled - lib["pooler_output"]).max())

# %% [markdown]
# What the pooled EOS position reads, layer by layer (attention weights of the EOS row, averaged over heads) for
# the longest caption. Each row sums to 1 over the caption's own tokens; causality gives nothing to later ones.

# %%
t = int(np.argmax(mask.sum(1)))
eos = int(eos_positions(ids, tcfg)[t])
names = [tokenizer.convert_ids_to_tokens(int(i)).replace("</w>", "") for i in ids[t, : eos + 1]]
names = [{"<|startoftext|>": "BOS", "<|endoftext|>": "EOS"}.get(n, n) for n in names]
rows = np.stack([a[t].mean(axis=0)[eos, : eos + 1] for a in attn])  # [layers, eos + 1]
fig, ax = plt.subplots(figsize=(0.55 * len(names) + 1.5, 0.45 * len(rows) + 1.0))
im = ax.imshow(rows, cmap="Blues", vmin=0)
ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
ax.set_yticks(range(len(rows)), [f"layer {i}" for i in range(len(rows))])
ax.set_title(f'EOS attention in "{captions[t]}"')
fig.colorbar(im)
plt.show()

# %% [markdown]
# ## 2. Projection heads, and BatchNorm's running statistics
#
# Both towers end in a head that maps their pooled vector (`D` differs per tower) into the shared `P`-dimensional
# space: `Linear -> BatchNorm1d -> ReLU -> Linear`. In HF's state dict the head is a `Sequential`, so its
# parameters sit under indices 0, 1 and 3 (the ReLU, index 2, has none).

# %%
print(inspect.getsource(projection_head))
print(inspect.getsource(batch_norm_eval))

# %% [markdown]
# In evaluation, BatchNorm does not look at the batch at all: it normalises each channel with the
# `running_mean` and `running_var` averaged during training, then applies its gain and bias. Their spread, per
# channel of the hidden layer (a freshly initialised model has mean 0 and variance 1 everywhere):

# %%
fig, axes = plt.subplots(1, 4, figsize=(12, 2.4))
for i, head in enumerate(["visual_projection", "text_projection"]):
    bn = model.params[head][1]
    axes[2 * i].hist(bn["running_mean"], bins=40, color="#3182bd")
    axes[2 * i].set_title(f"{head}.1.running_mean", fontsize=9)
    axes[2 * i + 1].hist(bn["running_var"], bins=40, color="#e6550d")
    axes[2 * i + 1].set_title(f"{head}.1.running_var", fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# Because the statistics are fixed, eval-mode BatchNorm is a per-channel affine map, and it can be folded into
# the Linear before it: `W' = diag(gamma / sqrt(var + eps)) W`, `b' = (b - mean) gamma / sqrt(var + eps) + beta`.
# The head is then just `Linear -> ReLU -> Linear`:

# %%
head = model.params["text_projection"]
bn = head[1]
gain = bn["weight"] / np.sqrt(bn["running_var"] + 1e-5)  # [hidden]
folded = {
    "weight": head[0]["weight"] * gain[:, None],
    "bias": (head[0]["bias"] - bn["running_mean"]) * gain + bn["bias"],
}
text_features = projection_head(pooled, head)  # [T, P]
print(
    "max |folded head - projection_head|:", np.abs(linear(relu(linear(pooled, folded)), head[3]) - text_features).max()
)

# %% [markdown]
# In training mode BatchNorm uses the statistics of the batch itself, so a caption's features depend on which
# other captions share its batch. Inference (HF's and this library's) is eval mode, where that cannot happen; a
# four-line training-mode head shows the difference:


# %%
def head_with_batch_stats(x, p):  # training-mode BatchNorm, for comparison only
    z = linear(x, p[0])
    z = (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5) * p[1]["weight"] + p[1]["bias"]
    return linear(relu(z), p[3])


whole, half = head_with_batch_stats(pooled, head), head_with_batch_stats(pooled[:3], head)
print("train-mode BN, caption 0 in a batch of 6 vs 3:", np.abs(whole[0] - half[0]).max())
print(
    "eval-mode BN, caption 0 in a batch of 6 vs 3: ",
    np.abs(text_features[0] - projection_head(pooled[:3], head)[0]).max(),
)

# %% [markdown]
# ## 3. Logits: scaled cosine similarities
#
# Both sides are L2-normalised, so their dot products are cosines in [-1, 1], and multiplied by
# `s = exp(logit_scale)`, a learned scalar (CLIP initialises it at 1/0.07; HF does not clamp it, the original
# clamps at 100). `logits_per_text[t, b] = s cos(text_t, image_b)`, and `logits_per_image` is its transpose.
# `get_text_features` / `get_image_features` return the projections *before* normalisation.

# %%
vis = vision_tower(pixels, model.params["vision_model"], vcfg)
image_embeds = l2_normalize(projection_head(vis["pooler_output"], model.params["visual_projection"]))  # [B, P]
text_embeds = l2_normalize(text_features)  # [T, P]
s = float(np.exp(model.params["logit_scale"]))
logits_per_text = contrastive_logits(text_embeds, image_embeds, model.params["logit_scale"])  # [T, B]
out = model(input_ids=ids, pixel_values=pixels, attention_mask=mask, return_loss=True)
print(f"s = exp({float(model.params['logit_scale']):.4f}) = {s:.3f}")
print("max |by hand - model| logits_per_text:", np.abs(logits_per_text - out.logits_per_text).max())
print("get_text_features is unnormalised:", np.abs(model.get_text_features(ids, mask) - text_features).max(),
      " norms", np.round(np.linalg.norm(text_features, axis=-1), 2))  # fmt: skip

# %%
fig, ax = plt.subplots(figsize=(5.2, 4.0))
lpi = out.logits_per_image
im = ax.imshow(lpi, cmap="viridis")
mid = (lpi.max() + lpi.min()) / 2
for b in range(len(scenes)):
    for t_ in range(len(captions)):
        ax.text(
            t_, b, f"{lpi[b, t_]:.1f}", ha="center", va="center", fontsize=8, color="k" if lpi[b, t_] > mid else "w"
        )
    ax.add_patch(plt.Rectangle((b - 0.5, b - 0.5), 1, 1, fill=False, edgecolor="#d62728", lw=2))
ax.set_xticks(range(len(captions)), [f"text {i}" for i in range(len(captions))])
ax.set_yticks(range(len(scenes)), [f"image {i}" for i in range(len(scenes))])
ax.set_title("logits_per_image [B, T] (text i is image i's caption)")
fig.colorbar(im)
plt.show()

# %% [markdown]
# ## 4. The contrastive loss
#
# Read each row of `logits_per_image` as a classification of the image over the `T` captions, with the right
# answer on the diagonal; read each column the other way round. The loss is the mean of the two cross-entropies:
#
# `loss = (CE(logits_per_text, arange) + CE(logits_per_image, arange)) / 2`,
#
# which needs as many texts as images, pair `i` being the positive for row and column `i`. By hand:


# %%
def mean_cross_entropy_diagonal(logits):
    log_probs = logits - logits.max(1, keepdims=True)
    log_probs = log_probs - np.log(np.exp(log_probs).sum(1, keepdims=True))  # log softmax per row
    return -np.mean(np.diag(log_probs))


by_hand = (mean_cross_entropy_diagonal(logits_per_text) + mean_cross_entropy_diagonal(logits_per_text.T)) / 2
print(f"by hand {by_hand:.10f}  contrastive_loss {float(contrastive_loss(logits_per_text)):.10f}  "
      f"model(return_loss=True) {float(out.loss):.10f}  chance level log(B) = {np.log(len(scenes)):.4f}")  # fmt: skip

# %% [markdown]
# The scale `s` sets how sharp these softmaxes are. With the cosines held fixed, the loss as a function of `s`:
# too small and every caption looks alike (the loss tends to `log B`); larger `s` rewards a correct ordering
# and punishes a wrong one harder. That is why the temperature is learned along with the weights.

# %%
cos = text_embeds @ image_embeds.T  # [T, B]
scales = np.geomspace(0.5, 200, 60)
losses = [float(contrastive_loss(cos * sc)) for sc in scales]
fig, ax = plt.subplots(figsize=(6, 2.8))
ax.semilogx(scales, losses)
ax.axhline(np.log(len(scenes)), color="0.5", ls="--", lw=1, label="log B (chance)")
ax.axvline(s, color="#d62728", lw=1, label=f"this checkpoint's s = {s:.1f}")
ax.set_xlabel("logit scale s")
ax.set_ylabel("contrastive loss")
ax.legend()
plt.show()

# %% [markdown]
# **Summary.** Texts go through a causal transformer pooled at EOS, images through the grouping tower pooled by
# averaging the final segments; both are projected (BatchNorm with frozen statistics in eval) and normalised;
# `s` times their cosines are the logits, and a symmetric cross-entropy over the batch is the whole training
# signal. Notebook 5 reuses the same heads on each *segment* token to turn groups into labelled masks.
