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
# # 3. The grouping block: how image tokens become segments
#
# This is the part of GroupViT that makes it a segmentation model. At the end of a grouping stage, every image
# token is **assigned to exactly one group**, and each group's new token is built from the tokens assigned to
# it. With the default configuration 196 patch tokens become 64 group tokens, and in the next stage those
# become 8. Follow the assignments back and every pixel belongs to one of the 8 final segments, learned
# without a single mask, only from captions.
#
# The pieces, in the order this notebook takes them:
#
# 1. the block (`token_assign`) and its inputs;
# 2. assign attention, and why its softmax runs over the **groups** and not over the tokens;
# 3. hard one-hot assignments versus the soft maps;
# 4. the straight-through trick, with its backward pass written by hand and checked against torch autograd;
# 5. Gumbel noise and temperature, the training-time sampling, with explicit noise;
# 6. the `count + 1` normalisation, and what an empty group outputs;
# 7. the two stages together: tokens to groups to segments.
#
# The stages are numbered from 1 in all the notebooks: stage 1 is the first grouping (16 groups in the demo
# checkpoint), stage 2 the second (20 groups). HF's `attentions[0]` and `attentions[1]` hold their soft maps.
# *Why* training makes these groups follow objects is the last section of notebook 4, once the loss is built.

# %%
import inspect

import _common
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm

from groupvit_np import GroupViTModel
from groupvit_np.nn.attention import encoder_layer
from groupvit_np.nn.grouping import (
    assign_attention,
    cross_attention_layer,
    gumbel_softmax,
    hard_softmax,
    one_hot_argmax,
    token_assign,
)
from groupvit_np.nn.ops import layer_norm, linear, mixer_mlp, mlp, softmax
from groupvit_np.nn.vision import vision_embeddings, vision_tower
from groupvit_np.tasks.datasets import generated_colours
from groupvit_np.tasks.viz import blend

_common.figure_style()
model, tokenizer, processor, folder = _common.load(dtype="float64")
vcfg, params = model.config.vision_config, model.params["vision_model"]
print(_common.describe(model, folder))
image = _common.example_image(folder, vcfg.image_size)  # [H, W, 3] uint8
pixels = processor(image)["pixel_values"].astype(np.float64)  # [1, 3, H, W]
k, eps, heads = vcfg.patch_size, vcfg.layer_norm_eps, vcfg.num_attention_heads
gh, gw = pixels.shape[2] // k, pixels.shape[3] // k
N, D = gh * gw, vcfg.hidden_size
S0, S1 = vcfg.num_output_groups[:2]


def on_image(token_labels, n_colours, alpha=0.55, offset=0):
    """Token-grid labels [gh*gw] drawn over the image, one colour per group, blocks of k x k pixels."""
    grid = np.asarray(token_labels).reshape(gh, gw)
    labels = np.repeat(np.repeat(grid, k, axis=0), k, axis=1)  # [H, W]: nearest, so tokens show as blocks
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:n_colours] = generated_colours(n_colours, offset)
    return blend(image, labels, palette, alpha=alpha)


# %% [markdown]
# ## 1. The block and its inputs
#
# The grouping block of stage 1 receives the `N` image tokens and the `G` group tokens as the stage's
# transformer layers left them. We run those layers by hand to hold both:

# %%
stage = params["encoder"]["stages"][0]
x = vision_embeddings(pixels, params["embeddings"], vcfg)  # [1, N, D]
z = np.concatenate([x, np.broadcast_to(stage["group_token"], (1, vcfg.num_group_tokens[0], D))], axis=1)
for layer in stage["layers"]:
    z = encoder_layer(z, layer, heads, vcfg.hidden_act, eps)[0]  # [1, N + G, D]
tokens, groups = z[:, :N], z[:, N:]  # [1, N, D], [1, G, D]
print("image tokens", tokens.shape, " group tokens", groups.shape)

# %% [markdown]
# The block (`groupvit_np.nn.grouping.token_assign`): normalise both inputs; mix the `G` group tokens into `S`
# queries with an MLP along the *token* axis (an MLP-Mixer layer, which is how the count can change); let the
# queries look at the image through one cross-attention layer; then assign every image token to one query and
# average. The output is `S` new tokens, the input of the next stage.

# %%
print(inspect.getsource(token_assign))

# %%
p = stage["downsample"]
tokens_n = layer_norm(tokens, p["norm_x"], eps)  # [1, N, D]
queries = layer_norm(mixer_mlp(layer_norm(groups, p["norm_tokens"], eps), p["mlp_inter"]), p["norm_post_tokens"], eps)
queries = cross_attention_layer(queries, tokens_n, p["pre_assign_attn"], heads, eps)  # [1, S, D]
print("queries", queries.shape)

# %% [markdown]
# ## 2. Assign attention: a softmax over the groups
#
# Assign attention is one-head attention with the $S$ queries $g_s$ against the $N$ image tokens $x_n$, scaled
# by $1/\sqrt{D}$ (the full width: there is one head). The difference from ordinary attention is the axis of
# the softmax:
#
# $$
# \ell_{sn} = \frac{(W_q g_s + b_q)^\top (W_k x_n + b_k)}{\sqrt{D}}, \qquad
# P_{sn} = \frac{\exp \ell_{sn}}{\sum_{s'=1}^{S} \exp \ell_{s'n}} .
# $$
#
# The denominator sums over the **groups** $s'$, so every column of $P$ sums to 1: $\sum_s P_{sn} = 1$.
# Ordinary attention normalises each query's row over the keys, so every query spreads one unit of attention
# over the tokens. Assign attention normalises each token's **column over the queries**: every token spreads
# one unit of membership over the groups. That makes it a (soft) partition of the image.
#
# The forward pass then keeps only each token's most likely group and averages the values of the tokens each
# group won (sections 3 and 6 say more):
#
# $$
# A_{sn} = [\,s = \arg\max_{s'} P_{s'n}\,], \qquad
# \mathrm{out}_s = W_p \frac{\sum_n A_{sn} (W_v x_n + b_v)}{\sum_n A_{sn} + \epsilon} + b_p .
# $$
#
# The whole step, written out with NumPy as a reference to read, and checked against the library's
# `assign_attention` (which computes the same with memory layouts that keep NumPy fast) and the vision tower:

# %%
a = p["assign"]
q = linear(queries, a["q_proj"])  # [1, S, D]
kk, v = linear(tokens_n, a["k_proj"]), linear(tokens_n, a["v_proj"])  # [1, N, D]
logits = (q @ kk.transpose(0, 2, 1)) * D**-0.5  # [1, S, N]
soft = softmax(logits, axis=-2)  # over the groups: each column (token) sums to 1
won = one_hot_argmax(soft, axis=-2)  # [1, S, N]: each token's column is one-hot
mean_v = (won @ v) / (won.sum(axis=-1, keepdims=True) + vcfg.assign_eps)  # [1, S, D]: (count + eps) divisor
out_by_hand = linear(mean_v, a["proj"])  # [1, S, D]
lib_out, lib_soft = assign_attention(queries, tokens_n, a, assign_eps=vcfg.assign_eps)
full = vision_tower(pixels, params, vcfg)
print("max |by hand - assign_attention| soft:", _common.below(np.abs(soft - lib_soft).max(), 1e-12),
      "  output:", _common.below(np.abs(out_by_hand - lib_out).max(), 1e-12))  # fmt: skip
print("max |by hand - vision_tower attentions[0]|:", _common.below(np.abs(soft - full["attentions"][0]).max(), 1e-12))

# %% [markdown]
# The two softmaxes side by side, on the same logits. Over groups (left), every column sums to 1, so every
# token is fully owned, and the total each group receives (below) varies: big groups and small ones (the hard
# assignment of section 6 leaves some groups empty). Over tokens (right), every *row* sums to 1 instead: each
# group takes the same total, and nothing makes a token's total membership 1 (below right). It is `S/N` on
# average, and a token can be claimed more than once or, far more often here, hardly at all. That is
# attention, not a partition.

# %%
by_token = softmax(logits, axis=-1)  # ordinary attention: each group's row sums to 1
order = np.argsort(np.argmax(soft[0], axis=0), kind="stable")  # tokens sorted by their group, for the picture
fig, axes = plt.subplots(2, 2, figsize=(10, 5.2), gridspec_kw={"height_ratios": [2.2, 1]})
for col, (m, title) in enumerate([(soft[0], "softmax over groups (axis -2): GroupViT"),
                                  (by_token[0], "softmax over tokens (axis -1): ordinary attention")]):  # fmt: skip
    im = axes[0, col].imshow(m[:, order], aspect="auto", cmap="viridis")
    axes[0, col].set_title(title)
    axes[0, col].set_ylabel("group s")
    axes[0, col].set_xlabel("image token n (sorted by its argmax group)")
    fig.colorbar(im, ax=axes[0, col])
axes[1, 0].bar(range(S0), soft[0].sum(axis=1), color="#3182bd")
axes[1, 0].set_title("row sums: membership each group receives")
axes[1, 0].set_xlabel("group s")
axes[1, 1].hist(by_token[0].sum(axis=0), bins=30, color="#e6550d")
axes[1, 1].set_title("column sums: how much of each token is claimed")
axes[1, 1].set_xlabel("sum over groups (1 would be a partition)")
plt.tight_layout()
plt.show()
col = by_token[0].sum(axis=0)
print(f"over groups: column sums {soft[0].sum(0).min():.6f} .. {soft[0].sum(0).max():.6f}")
print(f"over tokens: column sums {col.min():.3f} .. {col.max():.3f}")

# %% [markdown]
# ## 3. Hard assignments and soft maps
#
# In the forward pass GroupViT does not use the soft matrix: each token goes wholly to its most likely group, a
# one-hot column (`one_hot_argmax`, first index on ties, as `torch.max`). The soft matrix is what HF returns as
# `attentions` and what its segmentation multiplies (notebook 5). The soft maps can be quite flat, especially
# early in training or with random weights, while the hard partition is always crisp:

# %%
hard = one_hot_argmax(soft, axis=-2)  # [1, S, N]: one 1 per column
owner = np.argmax(soft[0], axis=0)  # [N]: each token's group
sizes = hard[0].sum(axis=1)
big = np.argsort(-sizes, kind="stable")[:3]
fig, axes = plt.subplots(1, 5, figsize=(13, 3.0), layout="constrained")
axes[0].imshow(image)
axes[0].set_title("image")
axes[1].imshow(on_image(owner, S0))
axes[1].set_title(f"hard: argmax group\n({int((sizes > 0).sum())} of {S0} used)")
im = axes[2].imshow(soft[0].max(axis=0).reshape(gh, gw), cmap="magma")
axes[2].set_title(f"max soft probability\n(uniform: {1 / S0:.3f})")
fig.colorbar(im, ax=axes[2], shrink=0.7)
for ax, g in zip(axes[3:], big[:2], strict=True):
    im = ax.imshow(soft[0, g].reshape(gh, gw), cmap="viridis")
    ax.contour(hard[0, g].reshape(gh, gw), levels=[0.5], colors="w", linewidths=1)
    ax.set_title(f"group {g}: soft map\n(white: {int(sizes[g])} hard tokens)")
    fig.colorbar(im, ax=ax, shrink=0.7)
for ax in axes:
    ax.axis("off")
plt.show()

# %% [markdown]
# ## 4. The straight-through trick
#
# The argmax has no useful gradient: move a logit a little and the one-hot does not change. GroupViT (after the
# Gumbel-softmax paper) writes the hard assignment as
#
# $$
# A = \big(\mathrm{onehot}(\arg\max_s y) - \mathrm{sg}(y)\big) + y,
# $$
#
# where $\mathrm{sg}$ is stop-gradient (`detach()`): the identity in the forward pass, zero derivative in the
# backward pass. The **value** is exactly the one-hot; the **gradient** is the gradient of the soft term,
# $\partial A / \partial y = I$. The library writes the same expression (NumPy has no autograd, but the
# forward value must match HF bit for bit):

# %%
print(inspect.getsource(hard_softmax))
st = hard_softmax(logits, axis=-2)
print("max |straight-through value - one-hot| =", _common.below(np.abs(st - hard).max(), 1e-12))

# %% [markdown]
# ### The backward pass, by hand
#
# Take the assignment step alone, with the training-time options (noise $g$ and temperature $\tau$; eval mode is
# $g = 0$, and the hard choice does not depend on $\tau$), and an arbitrary upstream gradient
# $d\mathrm{Out} = \partial L / \partial \mathrm{Out}$. Writing $dX$ for $\partial L / \partial X$:
#
# | forward | backward |
# |---|---|
# | $\ell = Q K^\top / \sqrt{D}$ | $dQ = d\ell \, K / \sqrt{D}$, $\; dK = d\ell^\top Q / \sqrt{D}$ |
# | $y = \mathrm{softmax}_s((\ell + g)/\tau)$ | $d\ell_{sn} = y_{sn} (dy_{sn} - \sum_{s'} y_{s'n} dy_{s'n}) / \tau$ |
# | $A = \mathrm{onehot}(\arg\max_s y) - \mathrm{sg}(y) + y$ | $dy = dA$ (straight through) |
# | $c_s = \sum_n A_{sn} + \epsilon$, $\; W = A / c$ | $dA_{sn} = dW_{sn} / c_s - \sum_{n'} dW_{sn'} A_{sn'} / c_s^2$ |
# | $\mathrm{Out} = W V$ | $dW = d\mathrm{Out} \, V^\top$, $\; dV = W^\top d\mathrm{Out}$ |
#
# The softmax runs over the groups, hence the sum over $s'$ in its row; the row normalisation $c_s$ depends on the
# whole row, hence its second term. Written in NumPy, on the block's real $Q$, $K$, $V$:

# %%
rng = np.random.default_rng(0)
Q, K, V = q[0], kk[0], v[0]  # [S, D], [N, D], [N, D]
noise = -np.log(-np.log(rng.uniform(size=(S0, N))))  # Gumbel(0, 1)
tau, assign_eps = 0.5, vcfg.assign_eps
d_out = rng.normal(size=(S0, D))  # the gradient arriving from the layers above: L = sum(dOut * Out)
scale = D**-0.5

# forward
l = Q @ K.T * scale  # [S, N]
y = softmax((l + noise) / tau, axis=0)  # [S, N], softmax over groups
A = one_hot_argmax(y, axis=0)  # the value of the straight-through expression
c = A.sum(axis=1, keepdims=True) + assign_eps  # [S, 1]: count + 1
W = A / c
out = W @ V  # [S, D]

# backward
dW = d_out @ V.T  # [S, N]
dV = W.T @ d_out  # [N, D]
dA = dW / c - (dW * A).sum(axis=1, keepdims=True) / c**2  # through the row normalisation
dy = dA  # straight through: the one-hot's gradient is the soft y's
dl = y * (dy - (y * dy).sum(axis=0, keepdims=True)) / tau  # softmax over axis 0, then the 1/tau
dQ, dK = dl @ K * scale, dl.T @ Q * scale
print("hand-written gradients:", {n: g.shape for n, g in [("dQ", dQ), ("dK", dK), ("dV", dV)]})

# %% [markdown]
# The same computation in torch, where the straight-through expression is written exactly as in HF
# (`y_hard - y_soft.detach() + y_soft`) and autograd does the backward pass:

# %%
try:
    import torch
except ImportError:
    torch = None
    print("torch is not installed: skipping the autograd check (pip install -e '.[reference]' to run it)")

if torch is not None:
    Qt, Kt, Vt = (torch.tensor(t, dtype=torch.float64, requires_grad=True) for t in (Q, K, V))
    yt = torch.softmax((Qt @ Kt.T * scale + torch.tensor(noise)) / tau, dim=0)
    y_hard = torch.zeros_like(yt).scatter_(0, yt.argmax(dim=0, keepdim=True), 1.0)
    At = y_hard - yt.detach() + yt
    out_t = (At / (At.sum(dim=1, keepdim=True) + assign_eps)) @ Vt
    (out_t * torch.tensor(d_out)).sum().backward()
    for name, mine, auto in [("Out", out, out_t.detach()), ("dQ", dQ, Qt.grad), ("dK", dK, Kt.grad),
                             ("dV", dV, Vt.grad)]:  # fmt: skip
        err = np.abs(mine - auto.numpy()).max() / np.abs(auto.numpy()).max()
        print(f"{name}: max relative difference from autograd {err:.1e}")

# %% [markdown]
# The gradient reaches **every** group's logit for every token, not only the winners': the soft term spreads
# it, most where the choice is uncertain. Without the trick `dl` would be exactly zero and the queries and keys
# would never learn where to cut. (Log scale: the magnitudes span many decades.)

# %%
fig, ax = plt.subplots(figsize=(8, 2.6))
mag = np.abs(dl[:, order])
im = ax.imshow(mag, aspect="auto", cmap="magma", norm=LogNorm(vmin=max(mag.max() * 1e-8, mag[mag > 0].min())))
ax.set_title("|dL/dlogits| through the straight-through one-hot [S, N] (tokens sorted by group)")
ax.set_xlabel("image token")
ax.set_ylabel("group")
fig.colorbar(im)
plt.show()
print(f"non-zero entries: {np.mean(dl != 0):.1%}")

# %% [markdown]
# ### The whole model, differentiated by JAX
#
# The hand-written backward covers one assignment step. The library's forward pass, written once against the
# Array API, can also be differentiated whole: `jax.numpy` is an Array API namespace, so `jax.grad` takes
# `groupvit_np.nn.functional.loss` (HF's contrastive loss as a pure function of the parameter tree) unchanged. The
# only line written for autodiff is the stop in `straight_through`, HF's `.detach()` (without it `-soft + soft`
# would cancel and every gradient above the assignment would be zero):

# %%
from groupvit_np.nn.grouping import straight_through

print(inspect.getsource(straight_through))

# %% [markdown]
# On the small test checkpoint (`tests/fixtures/model_small_legacy`, 3 images and 3 captions), in float64:
# `jax.jit` compiles the gradient of the whole model once (about a minute), then it runs in milliseconds.

# %%
import jax

from groupvit_np.nn import functional as F

jax.config.update("jax_enable_x64", True)  # float64 in JAX

grad_fixture = _common.repo_path("tests", "fixtures", "model_small_legacy")
if grad_fixture is None:
    print("tests/fixtures not found: skipping the gradient comparison")
else:
    small = GroupViTModel.from_pretrained(grad_fixture, dtype="float64", xp="jax")
    batch = dict(np.load(grad_fixture / "inputs.npz"))
    args = [batch[k] for k in ("input_ids", "pixel_values", "attention_mask")]  # F.loss moves them into JAX
    grad_fn = jax.value_and_grad(lambda p: F.loss(p, small.config, *args))
    # unoptimised machine code compiles twice as fast, and these arrays are tiny
    value, tree = jax.jit(grad_fn, compiler_options={"xla_backend_optimization_level": 0})(small.params)
    grads = {k: np.asarray(g) for k, g in F.named_leaves(tree).items()}  # the checkpoint's own key names
    print(f"loss {float(value):.6f}; {len(grads)} gradient tensors, e.g.")
    for key in ("logit_scale", "vision_model.encoder.stages.0.downsample.assign.q_proj.weight"):
        print(f"  {key}: shape {grads[key].shape}, max |grad| {np.abs(grads[key]).max():.3e}")

# %% [markdown]
# What the straight-through gradient is *not*: the derivative of the forward value. Nudge `logit_scale`, which
# acts after the grouping, and the loss moves as its gradient says. Nudge a weight of the assignment's query
# projection, which only decides the argmax, and the loss does not move beyond rounding (the one-hot is locally
# constant), yet its straight-through gradient is far from zero: that is the signal that teaches the groups.
# (Central differences of the NumPy model, step 1e-6.)

# %%
if grad_fixture is not None:
    host = GroupViTModel.from_pretrained(grad_fixture, dtype="float64")  # NumPy
    host_args = [batch[k] for k in ("input_ids", "pixel_values", "attention_mask")]

    def nudged(path, i, h):
        """The loss with one entry of one tensor moved by h (a copy of the tree along the path)."""

        def edit(node, keys):
            if not keys:
                out = np.array(node, copy=True)
                out.reshape(-1)[i] += h
                return out
            k, rest = keys[0], keys[1:]
            if isinstance(node, list):
                return [edit(v, rest) if j == int(k) else v for j, v in enumerate(node)]
            return {**node, k: edit(node[k], rest)}

        return float(F.loss(edit(host.params, path.split(".")), host.config, *host_args))

    for key, i in (("logit_scale", 0), ("vision_model.encoder.stages.0.downsample.assign.q_proj.weight", 7)):
        fd = (nudged(key, i, 1e-6) - nudged(key, i, -1e-6)) / 2e-6
        entry = f"{key}[{i}]" if grads[key].ndim else key
        print(f"{entry}: central difference {fd:+.6e}   jax.grad {grads[key].reshape(-1)[i]:+.6e}")

# %% [markdown]
# And against HF: torch autograd through transformers' own `GroupViTModel(..., return_loss=True)` on the same
# weights (the test suite does this for both fixture configs, also in train mode with Gumbel noise; see
# `tests/test_gradients.py`). A few gradients are zero by symmetry (each `k_proj.bias` shifts all of a query's
# logits equally); both sides hold rounding noise there, so they are left out of the relative error.

# %%
try:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tqdm's notice about notebook widgets, printed as transformers loads
        import transformers
except ImportError:
    transformers = None
if grad_fixture is None or torch is None or transformers is None:
    print("torch or transformers is not installed: skipping the comparison (pip install -e '.[reference]')")
else:
    hf = transformers.GroupViTModel.from_pretrained(grad_fixture, dtype=torch.float64).eval()
    torch.set_default_dtype(torch.float64)  # HF builds its text mask in the default dtype
    try:
        hf(**{k: torch.from_numpy(v) for k, v in batch.items()}, return_loss=True).loss.backward()
    finally:
        torch.set_default_dtype(torch.float32)
    top = max(p.grad.abs().max().item() for p in hf.parameters())
    errors = {k: np.abs(grads[k] - p.grad.numpy()).max() / p.grad.abs().max().item()
              for k, p in hf.named_parameters() if p.grad.abs().max().item() > 1e-12 * top}  # fmt: skip
    worst = max(errors, key=errors.get)
    print(f"{len(errors)} of {len(list(hf.parameters()))} parameters (the rest are zero by symmetry)")
    print(f"max relative difference from torch autograd: {errors[worst]:.1e} ({worst})")


# %% [markdown]
# ## 5. Gumbel noise and temperature
#
# In training, the assignment is sampled instead of taken greedily: Gumbel(0, 1) noise is added to the logits
# before the argmax. The **Gumbel-max trick**: with independent $u_s \sim \mathrm{Uniform}(0, 1)$,
#
# $$
# g_s = -\log(-\log u_s) \quad\Longrightarrow\quad
# \Pr\big[\arg\max_s (\ell_s + g_s) = k\big] = \frac{e^{\ell_k}}{\sum_s e^{\ell_s}} = \mathrm{softmax}(\ell)_k ,
# $$
#
# so the noisy argmax is a sample from the softmax, and a token with an uncertain distribution lands in
# different groups on different steps. The library takes the noise as an argument, so a run is reproducible:

# %%
print(inspect.getsource(gumbel_softmax))

# %% [markdown]
# The trick, checked on one token (the one with the most peaked distribution): 4000 noise draws, the share of
# draws that picked each group against the softmax probabilities.

# %%
n_tok = int(np.argmax(soft[0].max(axis=0)))
draws = 4000
col_logits = np.broadcast_to(logits[0, :, n_tok : n_tok + 1], (draws, S0, 1))  # [R, S, 1]
g = -np.log(-np.log(rng.uniform(size=(draws, S0, 1))))
picked = gumbel_softmax(col_logits, g, axis=-2)[:, :, 0]  # [R, S] one-hot rows (straight-through value)
freq = picked.mean(axis=0)
top = np.argsort(-soft[0, :, n_tok])[:10]
fig, ax = plt.subplots(figsize=(7, 2.6))
ax.bar(np.arange(len(top)) - 0.2, soft[0, top, n_tok], width=0.4, label="softmax(l)")
ax.bar(np.arange(len(top)) + 0.2, freq[top], width=0.4, label=f"share of {draws} draws of argmax(l + g)")
ax.set_xticks(range(len(top)), [str(t) for t in top])
ax.set_xlabel(f"group (the 10 most likely for token {n_tok})")
ax.legend()
plt.show()
print(f"total variation distance: {0.5 * np.abs(freq - soft[0, :, n_tok]).sum():.4f}  (sampling error of {draws} "
      f"draws: about {np.sqrt(1 / draws):.3f} or less)")  # fmt: skip

# %% [markdown]
# Over the whole image: for each token, the share of 200 noise draws in which it lands in its eval-mode group,
# and the histogram of group sizes (tokens per group) over the draws against eval mode. Where the soft
# distribution is flat the training-time assignment scatters.

# %%
draws = 200
g = -np.log(-np.log(rng.uniform(size=(draws, S0, N))))
samples = np.argmax(gumbel_softmax(np.broadcast_to(logits, (draws, S0, N)), g, axis=-2), axis=-2)  # [R, N]
stable = (samples == owner[None, :]).mean(axis=0)  # [N]
counts = np.stack([np.bincount(s, minlength=S0) for s in samples])  # [R, S]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), gridspec_kw={"width_ratios": [1, 1.6]})
im = axes[0].imshow(stable.reshape(gh, gw), cmap="magma", vmin=0, vmax=1)
axes[0].set_title("share of draws matching eval's group")
axes[0].axis("off")
fig.colorbar(im, ax=axes[0], shrink=0.8)
axes[1].hist(counts.ravel(), bins=np.arange(counts.max() + 2) - 0.5, density=True, alpha=0.7, label="Gumbel draws")
axes[1].hist(sizes, bins=np.arange(counts.max() + 2) - 0.5, density=True, alpha=0.7, label="eval (argmax)")
axes[1].set_xlabel("tokens in a group")
axes[1].set_ylabel("share of groups")
axes[1].legend()
plt.show()

# %% [markdown]
# The temperature `tau` divides `l + g` before the softmax (HF trains with `tau = 1`). A positive factor cannot
# change which entry is largest, so the **hard** assignment is the same for every `tau`; only the soft term,
# and so the gradient, changes: small `tau` concentrates it on the winner, large `tau` spreads it.

# %%
g1 = -np.log(-np.log(rng.uniform(size=(S0, N))))
fig, axes = plt.subplots(1, 3, figsize=(10, 2.4), sharey=True)
for ax, t in zip(axes, [0.25, 1.0, 4.0], strict=True):
    y_t = softmax((logits[0] + g1) / t, axis=0)
    same = np.argmax(gumbel_softmax(logits[0], g1, tau=t, axis=0), axis=0) == np.argmax(logits[0] + g1, axis=0)
    ax.bar(range(S0), y_t[:, n_tok], color="#756bb1")
    ax.set_title(f"tau = {t}: soft y of token {n_tok}\nhard equals argmax(l + g): {bool(same.all())}")
    ax.set_xlabel("group")
plt.show()

# %% [markdown]
# The explicit noise makes HF's training mode reproducible. The test fixtures hold the Gumbel noise torch drew
# in train mode and the vision outputs it produced; the same noise through our vision tower gives the same
# tokens (skipped when the repository's tests folder is not there, e.g. from an installed wheel):

# %%
fixture = _common.repo_path("tests", "fixtures", "model_hf_tiny")
if fixture is None:
    print("tests/fixtures not found: skipping the train-mode comparison")
else:
    ref = np.load(fixture / "gumbel.npz")
    tiny = GroupViTModel.from_pretrained(fixture, dtype="float64")
    px = np.load(fixture / "inputs.npz")["pixel_values"][:2]
    ours = vision_tower(px, tiny.params["vision_model"], tiny.config.vision_config,
                        gumbel_noise=[ref["gumbel_noise.0"], ref["gumbel_noise.1"]])  # fmt: skip
    evals = vision_tower(px, tiny.params["vision_model"], tiny.config.vision_config)
    train_gap = np.abs(ours["last_hidden_state"] - ref["last_hidden_state"]).max()
    print("train mode, max |ours - HF|:", _common.below(train_gap, 1e-12))
    print("eval mode differs from train mode by:",
          round(float(np.abs(evals["last_hidden_state"] - ref["last_hidden_state"]).max()), 4))  # fmt: skip

# %% [markdown]
# ## 6. Dividing by `count + 1`, and empty groups
#
# Each group's output is the average of the values $V$ of its tokens, but the divisor is $c + \epsilon$ with
# `assign_eps` $\epsilon = 1$: a **count**, not a tiny epsilon. A group with $c$ tokens outputs $c/(c + 1)$ times
# their mean (a one-token group gets half its token), and a group that won no token gets a zero row, so after
# the output projection of assign attention it is exactly `proj.bias`. That is not yet the block's output: the
# block adds the group's refined query and then an MLP (`token_assign`, section 1), so an empty group still
# passes its query on to the next stage. Often many groups are empty; the next stage still receives all $S$
# tokens.

# %%
empty = np.flatnonzero(sizes == 0)
fig, ax = plt.subplots(figsize=(9, 2.4))
ax.bar(range(S0), sizes, color=np.where(sizes == 0, "#d62728", "#3182bd"))
ax.set_xlabel("group")
ax.set_ylabel("tokens")
ax.set_title(f"tokens per group: {len(empty)} of {S0} groups are empty (red ticks)")
ax.plot(empty, np.zeros_like(empty), "|", color="#d62728", ms=12)
plt.show()
norm = hard[0] / (hard[0].sum(axis=1, keepdims=True) + assign_eps)  # [S, N]
print("row sums c/(c+1) for the first groups:", np.round(norm.sum(axis=1)[:8], 3))
if len(empty):
    gap = np.abs(lib_out[0, empty] - a["proj"]["bias"]).max()
    print(f"empty groups {empty[:8].tolist()}: max |assign attention output - proj.bias| = {_common.below(gap, 1e-12)}")
    x_e = lib_out[0, empty] + queries[0, empty]  # proj.bias + the refined query
    x_e = x_e + mlp(layer_norm(x_e, p["norm_new_x"], eps), p["mlp_channels"], "gelu")  # + MLP: the block's output
    block = full["hidden_states"][1][0, empty]  # [E, D]: what stage 2 receives for the empty groups
    far = np.linalg.norm(block - a["proj"]["bias"], axis=-1).min()
    print("block output of the empty groups = proj.bias + query + MLP, max difference:",
          _common.below(np.abs(x_e - block).max(), 1e-12) + f"; distance from proj.bias {far:.1f} or more")  # fmt: skip

# %% [markdown]
# ## 7. Two stages: tokens, groups, segments
#
# Stage 1's grouping turns the $N$ patch tokens into $S_1$ group tokens (`S0` in the code, HF's
# `num_output_groups[0]`); stage 2 does the same to those, giving $S_2$ segments (`S1`). The HF output
# `attentions` holds both soft matrices, `att0` $= P^{(1)}$ `[1, S0, N]` and `att1` $= P^{(2)}$ `[1, S1, S0]`.
# Follow the hard choices and every token lands in one final segment (what the forward pass did). Segmentation
# code instead multiplies the soft matrices and takes the argmax per token:
#
# $$
# M = {P^{(1)}}^\top {P^{(2)}}^\top \in \mathbb{R}^{N \times S_2}, \qquad
# M_{ng} = \sum_{j} P^{(1)}_{jn} P^{(2)}_{gj} ,
# $$
#
# the probability that token $n$ reaches segment $g$ through any stage-1 group $j$. The two agree where the
# soft maps are confident and can differ where they are flat, as with random weights.

# %%
att0, att1 = full["attentions"]
hidden = full["hidden_states"]
print("token counts through the tower:", [h.shape[1] for h in hidden], " soft maps:", [a.shape for a in (att0, att1)])
stage1 = np.argmax(att0[0], axis=0)  # [N]: token -> stage-1 group
chained = np.argmax(att1[0], axis=0)[stage1]  # [N]: -> the stage-2 segment that stage-1 group joined
product = np.argmax(att0[0].T @ att1[0].T, axis=1)  # [N]: argmax of the soft product
print(f"hard chain vs argmax of the soft product: {np.mean(chained == product):.0%} of tokens agree")

fig, axes = plt.subplots(1, 4, figsize=(12, 3.2), gridspec_kw={"width_ratios": [1, 1, 1, 1.25]})
axes[0].imshow(image)
axes[0].set_title(f"image: {N} tokens")
axes[1].imshow(on_image(stage1, S0))
axes[1].set_title(f"stage 1: {len(np.unique(stage1))} of {S0} groups used")
axes[2].imshow(on_image(chained, S1, offset=64))
axes[2].set_title(f"stage 2: {len(np.unique(chained))} of {S1} segments")
for ax in axes[:3]:
    ax.axis("off")
used = np.unique(stage1)
im = axes[3].imshow(att1[0][:, used], aspect="auto", cmap="viridis")
axes[3].plot(range(len(used)), np.argmax(att1[0][:, used], axis=0), "w.", ms=5)
axes[3].set_title("att1 over the used stage-1 groups\n(dots: where each group goes)")
axes[3].set_xticks(range(len(used)), used.tolist(), fontsize=6, rotation=90)
axes[3].set_xlabel("stage-1 group")
axes[3].set_ylabel("segment")
axes[3].set_yticks(range(S1))
axes[3].set_ylim(S1 - 0.5, -0.5)
fig.colorbar(im, ax=axes[3])
plt.tight_layout()
plt.show()

# %% [markdown]
# **Summary.** Groups are queries that every image token chooses between (a softmax over groups, then a hard
# argmax); the choice is crisp in the forward pass and differentiable through the straight-through soft term;
# in training it is sampled with Gumbel noise; each group averages its tokens with a `count + 1` divisor, so for
# an empty group assign attention's projection outputs only its bias, and the block passes on the group's
# refined query (plus an MLP of it). Two such stages turn patches into a handful of segments. Notebook 4 builds
# the text side and the loss that teaches all this from captions, and explains why the groups come to follow
# objects; notebook 5 turns the segments into masks.
