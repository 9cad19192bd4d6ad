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
# # 1. The tokenizer: from a caption to the integers the text tower reads
#
# GroupViT learns to segment images from nothing but captions, so everything it knows about "cat" or "couch"
# comes in through its text encoder, which is CLIP's. That encoder never sees characters. It sees a `[T, L]`
# array of integers, one row per caption, made by CLIP's byte-level BPE tokenizer.
#
# This notebook follows one caption through that tokenizer, step by step, with `groupvit_np.CLIPTokenizer`
# (its ids equal those of Hugging Face's slow `CLIPTokenizer`, checked by the test suite on a corpus of strings):
#
# 1. cleaning (repair, whitespace, lower case);
# 2. pre-tokenisation with a regular expression;
# 3. bytes mapped to printable characters;
# 4. BPE merges, applied in rank order;
# 5. ids, and back to text;
# 6. batches: padding and the attention mask;
# 7. why the model can summarise a caption at its end-of-text token, and why that needs padding on the **right**.
#
# Shape legend used in all the notebooks: `B` images, `T` texts, `L` text length, `N` image tokens, `G` group
# tokens, `S` output groups, `D` width, `H` heads, `Dh` head width, `P` projection dim.

# %%
import inspect

import _common
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import Rectangle

from groupvit_np import CLIPTokenizer
from groupvit_np.config import GroupViTTextConfig
from groupvit_np.nn.attention import text_attention_mask
from groupvit_np.nn.text import eos_positions, text_tower
from groupvit_np.preprocessing import bpe
from groupvit_np.preprocessing.tokenizer import PATTERN
from groupvit_np.preprocessing.vocab import vocab_from_merges

_common.figure_style()
tok = CLIPTokenizer.from_pretrained()  # the CLIP vocabulary shipped with the package; nothing is downloaded
caption = "Two tabby cats   sleeping on a RED couch 😺 — they're 2 years old!"
print(f"vocabulary: {tok.vocab_size} tokens, {len(tok.bpe_ranks)} merges")

# %% [markdown]
# `tok.trace(text)` records every intermediate result for one text; we walk through its fields.
#
# ## 1. Cleaning
#
# HF's slow tokenizer first repairs the text with `ftfy` (mojibake, HTML entities, odd control characters),
# collapses every run of whitespace to one space, strips the ends and lower-cases everything. CLIP's vocabulary
# has no capital letters at all: "RED" and "red" are the same tokens.

# %%
trace = tok.trace(caption)
print("input  :", repr(caption))
print("cleaned:", repr(trace["cleaned"][0]))
print("ftfy   :", repr(tok.clean("cafÃ© &amp; croissants")))  # UTF-8 read as Latin-1, and an HTML entity

# %% [markdown]
# ## 2. Pre-tokenisation
#
# A regular expression cuts the cleaned text into *pre-tokens*: the special tokens, English contractions
# (`'s 't 're 've 'm 'll 'd`), runs of letters, **single** digits, and runs of anything else that is not a
# space. BPE later works inside one pre-token at a time, so no token ever spans two words. Spaces vanish here;
# they come back as the end-of-word mark `</w>` in step 4.

# %%
print(PATTERN)
print(trace["pre_tokens"])
print("digits are split one by one:", tok.trace("196 tokens")["pre_tokens"])

# %% [markdown]
# ## 3. Bytes as printable characters
#
# BPE merges strings, and any Unicode text must be representable. CLIP works on the UTF-8 **bytes**, but a raw
# byte like 0x20 (space) or 0x0A (newline) would be awkward inside a vocabulary file. So every byte gets one
# printable character: the 188 bytes that are already printable Latin-1 stand for themselves, and the other 68
# (control characters, space, no-break space, soft hyphen) are moved to U+0100 onwards, in byte order.

# %%
table = bpe.bytes_to_unicode()
fig, ax = plt.subplots(figsize=(7.2, 6.6))
moved = np.array([[table[16 * r + c] != chr(16 * r + c) for c in range(16)] for r in range(16)])
ax.imshow(moved, cmap="Pastel1_r", vmin=0, vmax=8)
for r in range(16):
    for c in range(16):
        ax.text(c, r, table[16 * r + c], ha="center", va="center", fontsize=10)
ax.set_xticks(range(16), [f"{c:X}" for c in range(16)])
ax.set_yticks(range(16), [f"{r:X}_" for r in range(16)])
ax.set_title("bytes_to_unicode: byte 0xRC -> character (shaded: the 68 bytes moved to U+0100...)")
plt.show()

# %% [markdown]
# Non-ASCII characters become several symbols, one per UTF-8 byte. The emoji is four bytes and the em dash three:

# %%
for word, mapped in zip(trace["pre_tokens"], trace["byte_mapped"], strict=True):
    if not word.isascii():
        print(f"{word!r}: bytes {word.encode('utf-8').hex(' ')} -> {mapped!r}")

# %% [markdown]
# ## 4. BPE merges, step by step
#
# Each pre-token starts as a list of these one-byte symbols, the last one carrying `</w>` ("end of word", so
# that "a" inside a word and the word "a" are different tokens). Then, repeatedly, the adjacent pair with the
# **lowest rank** in the merge list is fused everywhere in the word, until no adjacent pair is a known merge.
# The rank is the order in which the merges were learned from CLIP's training text, so low ranks are frequent
# pairs: `i n` has rank 0. This is the library's loop:

# %%
print(inspect.getsource(bpe.bpe_merge))

# %% [markdown]
# The merges for every pre-token of our caption, as `(pair) rank`. Frequent words finish in a few merges;
# "tabby" needs a rare merge (rank 35633). The ranks are not applied left to right: in "sleeping", `in` (rank 0)
# and `ing</w>` (7) come before anything at the start of the word.

# %%
for word, steps in zip(trace["pre_tokens"], trace["merges"], strict=True):
    merges = "  ".join(f"({a} {b}) {rank}" for (a, b), rank, _ in steps) or "(a single symbol: nothing to merge)"
    print(f"{word:>9}: {merges}")

# %% [markdown]
# The same merges for "sleeping" as a picture: one row per step, the pair that merges at that step outlined.

# %%
word = "sleeping"
steps = trace["merges"][trace["pre_tokens"].index(word)]
mapped = trace["byte_mapped"][trace["pre_tokens"].index(word)]
rows = [(*mapped[:-1], mapped[-1] + "</w>")] + [after for _, _, after in steps]  # start, then after each step
fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 0.4))
for r, symbols in enumerate(rows):
    pair = steps[r][0] if r < len(steps) else None
    x = 0.0
    for i, s in enumerate(symbols):
        w = 0.25 + 0.16 * len(s)
        merging = pair is not None and i + 1 < len(symbols) and (s, symbols[i + 1]) == pair
        merging |= pair is not None and i > 0 and (symbols[i - 1], s) == pair
        ax.add_patch(Rectangle((x, -r - 0.4), w - 0.05, 0.8, facecolor="#fdd49e" if merging else "#deebf7",
                               edgecolor="#d94701" if merging else "#6baed6", lw=1.5 if merging else 0.8))  # fmt: skip
        ax.text(x + (w - 0.05) / 2, -r, s, ha="center", va="center", family="monospace", fontsize=9)
        x += w
    label = f"merge ({pair[0]} {pair[1]}), rank {steps[r][1]}" if pair else "done: one token"
    ax.text(4.3, -r, label, va="center", fontsize=9)
ax.set_xlim(-0.1, 7.6)
ax.set_ylim(-len(rows) + 0.4, 0.6)
ax.axis("off")
ax.set_title(f'BPE on "{word}": lowest-ranked pair first')
plt.show()

# %% [markdown]
# A word the merges never saw whole still gets tokens, just more of them: nothing is ever out of vocabulary,
# because in the worst case every byte is its own token.

# %%
print(tok.tokenize("groupvit segments images"))

# %% [markdown]
# ## 5. Ids, and back
#
# The vocabulary's order is fixed by construction: the 256 byte symbols, the same 256 with `</w>`, one token per
# merge (48 894 of them), then `<|startoftext|>` (49406) and `<|endoftext|>` (49407). Encoding wraps the ids in
# these two special tokens.

# %%
ids = trace["ids"]
print(ids)
print([tok.convert_ids_to_tokens(i) for i in ids])
layout = vocab_from_merges(sorted(tok.bpe_ranks, key=tok.bpe_ranks.get))
print("'a' ->", layout["a"], " 'a</w>' ->", layout["a</w>"], " first merge 'in' ->", layout["in"])

# %% [markdown]
# Decoding maps ids to tokens, tokens to bytes, and each `</w>` to a space. It is not the input text: cleaning
# lower-cased it, and every pre-token now ends with a space ("they 're", "old !").

# %%
print(repr(tok.decode(ids, skip_special_tokens=True)))

# %% [markdown]
# ## 6. Batches: padding and the attention mask
#
# The model takes one rectangular `[T, L]` array. `padding=True` pads every caption **on the right** to the
# longest in the batch, with the end-of-text id 49407 (CLIP has no separate pad token), and `attention_mask` is 0
# on the pads. `padding="max_length"` pads to 77, CLIP's context length; `truncation=True` cuts longer texts and
# keeps the final EOS.

# %%
captions = ["a photo of a cat", "two tabby cats sleeping on a red couch", "a dog"]
batch = tok(captions, padding=True, return_tensors="np")
print(batch["input_ids"])
print(batch["attention_mask"])


# %%
def draw_batch(batch, tokenizer, title):
    ids, mask = batch["input_ids"], batch["attention_mask"]
    first_eos = eos_positions(ids, GroupViTTextConfig())  # CLIP's ids: the first 49407
    fig, ax = plt.subplots(figsize=(1.0 * ids.shape[1] + 0.6, 0.55 * ids.shape[0] + 0.8))
    ax.imshow(mask, cmap=ListedColormap(["#ececec", "#c6dbef"]), vmin=0, vmax=1, aspect="auto")
    for t in range(ids.shape[0]):
        for j in range(ids.shape[1]):
            token = tokenizer.convert_ids_to_tokens(int(ids[t, j])).replace("</w>", "")
            token = {"<|startoftext|>": "BOS", "<|endoftext|>": "EOS"}.get(token, token)
            ax.text(j, t - 0.12, token, ha="center", va="center", fontsize=8, color="k" if mask[t, j] else "0.45")
            ax.text(j, t + 0.27, int(ids[t, j]), ha="center", va="center", fontsize=7, color="0.3")
        ax.add_patch(Rectangle((first_eos[t] - 0.5, t - 0.5), 1, 1, fill=False, edgecolor="#d94701", lw=2))
    ax.set_xticks(range(ids.shape[1]))
    ax.set_yticks(range(ids.shape[0]))
    ax.set_xlabel("position j")
    ax.set_ylabel("text t")
    ax.set_title(title)
    plt.show()


draw_batch(batch, tok, "input_ids (token above, id below); blue: attention_mask 1, grey: 0; outlined: first EOS")

# %%
long = " ".join(["a very long caption"] * 30)
print("no truncation:", len(tok(long)["input_ids"]), "ids (the model would refuse more than 77)")
cut = tok(long, truncation=True)["input_ids"]
print("truncation=True:", len(cut), "ids, ending with", cut[-3:])

# %% [markdown]
# ## 7. The end-of-text token summarises the caption, and padding goes on the right
#
# The text tower (notebook 4) is a causal transformer: position `i` attends only to positions `j <= i`. So the
# first EOS is the first position that has seen the whole caption, and CLIP (and GroupViT) read the caption's
# embedding there. The pooling rule, from `groupvit_np.nn.text`:

# %%
print(inspect.getsource(eos_positions))

# %% [markdown]
# We now use the notebook checkpoint and its own tokenizer (the demo checkpoint has a small vocabulary of its
# own, in CLIP's file format), with captions from its world of coloured shapes. The additive attention mask
# for a right-padded caption is the causal triangle plus the padded key columns. The EOS row (outlined) sees
# exactly the caption, nothing after it.

# %%
model, mtok, _, folder = _common.load(dtype="float64")
cfg, p = model.config.text_config, model.params["text_model"]
print(_common.describe(model, folder))
texts = ["a red circle and a blue star", "a green square"]
enc = mtok(texts, padding=True, return_tensors="np")
ids, mask = enc["input_ids"], enc["attention_mask"]
additive = np.asarray(text_attention_mask(ids.shape[1], mask, np.zeros(1)))  # [T, 1, L, L]
row = 1  # the padded caption
eos = int(eos_positions(ids, cfg)[row])
fig, ax = plt.subplots(figsize=(4.2, 4.2))
ax.imshow(additive[row, 0] == 0, cmap="Greys_r", vmin=-0.3, vmax=1)
ax.add_patch(Rectangle((-0.5, eos - 0.5), ids.shape[1], 1, fill=False, edgecolor="#d94701", lw=2))
labels = [mtok.convert_ids_to_tokens(int(i)).replace("</w>", "").replace("<|startoftext|>", "BOS")
          .replace("<|endoftext|>", "EOS") for i in ids[row]]  # fmt: skip
ax.set_xticks(range(len(labels)), labels, rotation=90)
ax.set_yticks(range(len(labels)), labels)
ax.set_xlabel("key j")
ax.set_ylabel("query i")
ax.set_title(f'"{texts[row]}": white = may attend')
plt.show()

# %% [markdown]
# With padding on the right the pads come *after* every real token, and causality already hides them. So the
# padding mask cannot change any real position, and the pooled EOS vector is the same whether the caption is
# alone, padded, masked or not masked:

# %%
alone = text_tower(mtok([texts[row]], return_tensors="np")["input_ids"], p, cfg)["pooler_output"]
masked = text_tower(ids, p, cfg, attention_mask=mask)
unmasked = text_tower(ids, p, cfg, attention_mask=None)
real = mask.astype(bool)
delta = np.abs(masked["last_hidden_state"] - unmasked["last_hidden_state"]).max(axis=-1)  # [T, L]
print("max change from the padding mask, real tokens:", _common.below(delta[real].max(), 1e-12),
      "  pad tokens:", round(float(delta[~real].max()), 4))  # fmt: skip
print("pooled: alone vs in the padded batch, max difference:",
      _common.below(np.abs(alone[0] - masked["pooler_output"][row]).max(), 1e-12))  # fmt: skip

# %% [markdown]
# Pad on the **left** instead and both pooling rules (the first EOS, or the "largest id" rule of 2022 configs)
# pick position 0: a pad, not the caption's end. What that pad's vector holds depends on the attention mask.
#
# * **No mask.** Causality lets position 0 see only itself, and the pad token is the same in every caption, so
#   every left-padded caption pools to the *same* vector: it carries nothing about the caption.
# * **With the mask.** At position 0 causality blocks every later key and the padding rule blocks the pad
#   itself: the softmax row has no allowed key at all. The library (like HF 4.x) writes a very large negative
#   number, `finfo.min`, where one rule blocks and $-\infty$ where both do. The softmax subtracts the row's
#   maximum, so the keys blocked by only one rule (the pad itself and the caption's real tokens, *after* it) tie
#   at the top and share the attention equally, and the pad ends up reading the whole caption, future included.
#
# Compare each left-padded pooled vector with the right-padded (correct) one, and, as the yardstick, with how
# similar the correct vectors of *different* captions are to each other:

# %%
width = ids.shape[1]
bodies = [mtok(t)["input_ids"] for t in ["a green square", "a red star", "a blue circle"]]
lengths = np.array([len(b) for b in bodies])
right = np.array([b + [mtok.pad_token_id] * (width - len(b)) for b in bodies])  # pads last: correct
left = np.array([[mtok.pad_token_id] * (width - len(b)) + b for b in bodies])  # pads first: wrong
right_mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
left_mask = right_mask[:, ::-1].copy()
print("pooled at (right):", np.asarray(eos_positions(right, cfg)), " (left):", np.asarray(eos_positions(left, cfg)))


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


good = unit(text_tower(right, p, cfg, attention_mask=right_mask)["pooler_output"])
left_none = unit(text_tower(left, p, cfg)["pooler_output"])
left_run = text_tower(left, p, cfg, attention_mask=left_mask)
left_masked = unit(left_run["pooler_output"])
others = (good @ good.T)[~np.eye(len(good), dtype=bool)]
print("yardstick: cosine between the correct vectors of different captions:", np.round(others.min(), 2), "..",
      np.round(others.max(), 2))  # fmt: skip
print("left, no mask: cosine between the three captions\n", np.round(left_none @ left_none.T, 6))
print("cosine(left-padded, right-padded) per caption, no mask:", np.round((left_none * good).sum(-1), 2))
print("cosine(left-padded, right-padded) per caption, masked: ", np.round((left_masked * good).sum(-1), 2))
print("masked: is each left-padded vector nearest its own caption's correct one?",
      (np.argmax(left_masked @ good.T, axis=1) == np.arange(len(good))).tolist())  # fmt: skip
keys = [mtok.convert_ids_to_tokens(int(i)).replace("</w>", "") for i in left[0]]
print("masked, layer 1: what the pad at position 0 attends to (mean over heads), caption 0:")
print({f"{j}:{k}": round(float(w), 3) for j, (k, w) in enumerate(zip(keys, left_run["attentions"][0][0].mean(0)[0],
                                                                     strict=True))})  # fmt: skip

# %% [markdown]
# <!-- CHECKPOINT-DEPENDENT: the reading of the cosines below (16x16 checkpoint, second phase: masked 0.95-0.97,
# unmasked 0.93-0.94, yardstick 0.87-0.88; first phase: 0.96-0.97, 0.92-0.95, 0.86-0.87). -->
# Read the numbers against the yardstick. Without the mask the three captions share one vector (cosine 1
# between them), so its cosine with each correct vector only says how typical that caption is: it identifies
# nothing. With the mask the left-padded vectors sit *closer* to their own captions than different captions sit
# to each other, so the masked version is not useless: the pad really did read the caption. But it read it
# through an accident of how two masks combine (all tokens at once, equally weighted, ignoring causality), not
# the summary the model was trained to produce at the EOS, so it is still not the caption's embedding, and
# another library's way of combining masks (all $-\infty$, giving NaN; or a different fill value) gives
# something else again. Pad on the right.

# %% [markdown]
# **Summary.** Text becomes ids by cleaning, a regex split, a byte-to-character map and BPE merges in rank order;
# a batch is right-padded with EOS and masked. The caption's embedding is read at its first EOS, which works
# because the tower is causal and the padding sits after it. Next: the vision tower (notebook 2).
