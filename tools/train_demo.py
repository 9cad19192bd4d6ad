"""Train the small demo GroupViT on procedural scenes (`groupvit_np.tasks.scenes`) with Hugging Face's GroupViTModel.

    python tools/train_demo.py --out /tmp/demo --patch 4 --depths 3,2,1 --groups 16,20 --batch 64 --steps 6000 \
        --match 1 --min-mass 0.02 --loo 1 --threads 2     # the shipped recipe (issue 18; about 2 hours on 2 cores)
    python tools/train_demo.py --out /tmp/first      # issue 9's first checkpoint: all defaults (an hour, 1 thread)
    python tools/train_demo.py --out /tmp/smoke --smoke   # seconds: 10 steps of batch 16

See docs/demo-training.md for the recipe and the experiments behind it.

The model trains in train mode (Gumbel hard assignment, BatchNorm batch statistics) on `--threads` CPU threads and is
saved with `save_pretrained(safe_serialization=True)` plus the tiny word-level tokenizer (CLIP BPE file format)
and a preprocessor config. Everything is a function of `--seed`: weights, scene seeds, Gumbel noise.
Losses (weights on the command line):
- `clip`: GroupViT's symmetric image-caption InfoNCE; identical captions in a batch are shared positives.
- `multi`: the multi-label phrase loss: the pooled image against each object phrase ("a red circle").
- `pixel` (default on): each final group softly picks one of the 16 phrases or "nothing" (a learned constant
  logit); the soft pixel -> group maps carry that choice to every image token; a phrase counts as present through
  its best 5% of tokens, "nothing" through the best half. Binary cross-entropy against the caption's phrases plus
  "background is present". This is the training-time twin of HF-style segmentation.
- `group` (off by default): the same choice, but presence = max over groups, ignoring how many tokens a group has.
- `match` (off by default): the caption's phrases matched one-to-one to the final groups, DETR-style; every other
  group picks "nothing" (`match_loss`). `--min-mass` lets only groups that hold tokens be matched.
- `loo` (off by default): leave one group out. The image pooled without the group matched to a phrase must show
  only the scene's other phrases (`leave_one_out_rows`), so no other group may carry that phrase.
- `token` (off by default): the `pixel` presence loss read from each image token *before* stage 1 groups it, through
  a training-only head (not saved in the checkpoint), so that the shape reaches the tokens that grouping sorts.
- `where` (off by default): captions say where an object is when its colour repeats ("a left yellow circle and a
  right yellow star", `placed_caption`), in the `clip` loss, and the group matched to such a phrase must tell its
  own position word from the other objects' of that colour (`where_loss`). Two same-coloured objects in one group
  cannot be both "left" and "right", so the text gives grouping a reason to keep them apart.
- `order` (off by default): the same position words read on the token grid (`order_pairs`, `order_loss`): the
  tokens that the soft pixel -> group maps give "a left yellow circle" must lie, on average, left of those they
  give "a right yellow star". The loss knows what the words mean on the grid; it never sees a mask.
Runs are resumable (`--resume`, from the atomic `state.pt` written every few minutes) and log validation proxies.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from groupvit_np.config import as_if_created  # noqa: E402
from groupvit_np.tasks.scenes import (  # noqa: E402
    CLASS_NAMES,
    EXAMPLE_SEED,
    PLACES,
    SEED_RANGES,
    WORDS,
    class_colour,
    class_prompt,
    colour_repeats,
    make_scene,
    make_scenes,
    placed_caption,
    placed_words,
)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_TEXT = 16  # longest caption: 3 placed phrases of 4 words + 2 "and" + bos/eos = 16 tokens


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer files: CLIP's BPE format with a vocabulary of ten words.


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's byte -> printable character table (the 256 base symbols, in CLIP's order)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def tokenizer_files(words=WORDS) -> tuple[dict[str, int], list[str]]:
    """vocab.json and merges.txt contents: 256 bytes, 256 bytes + "</w>", one merge per word suffix, specials.

    Each word is built right to left ("e d</w>" -> "ed</w>", "r ed</w>" -> "red</w>"), so at any time the only
    mergeable pair in a word is the one touching its "</w>" token and BPE must end at the whole word.
    """
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    merges: list[str] = []
    for word in words:
        tail = word[-1] + "</w>"
        for ch in reversed(word[:-1]):
            merge = f"{ch} {tail}"
            tail = ch + tail
            if merge not in merges:
                merges.append(merge)
                vocab.append(tail)
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, merges


def caption_words(args) -> tuple[str, ...]:
    """The words a run's captions use: the scene captions', plus the position words with --where or --order."""
    return WORDS + PLACES if placed(args) else WORDS


def placed(args) -> bool:
    """Whether a run's captions say where same-coloured objects are (`placed_caption`)."""
    return bool(getattr(args, "where", 0.0) or getattr(args, "order", 0.0))


def carry_rows(fresh, trained, old_vocab: dict[str, int], new_vocab: dict[str, int]):
    """A token-embedding table [V_new, D] for a grown vocabulary: the trained row [V_old, D] of every token the old
    vocabulary had (ids may move: the specials come last), the fresh row of every new token."""
    table = fresh.clone()
    for token, i in new_vocab.items():
        if token in old_vocab:
            table[i] = trained[old_vocab[token]]
    return table


def write_tokenizer(folder: Path, words=WORDS):
    """Write vocab.json + merges.txt and let HF's CLIPTokenizer add its config files; return the tokenizer."""
    from transformers import CLIPTokenizer

    vocab, merges = tokenizer_files(words)
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomic(folder / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    _write_atomic(folder / "merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=MAX_TEXT)
    tok.save_pretrained(str(folder))
    for word in words:  # each caption word must be one token
        assert tok(word)["input_ids"] == [vocab["<|startoftext|>"], vocab[word + "</w>"], vocab["<|endoftext|>"]]
    return tok


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_preprocessor(folder: Path, size: int) -> None:
    """A CLIPImageProcessor config for size x size inputs (our scenes pass through unresized)."""
    cfg = {
        "image_processor_type": "CLIPImageProcessor",
        "processor_class": "CLIPProcessor",
        "do_resize": True,
        "size": {"shortest_edge": size},
        "resample": 3,
        "do_center_crop": True,
        "crop_size": {"height": size, "width": size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(CLIP_MEAN),
        "image_std": list(CLIP_STD),
        "do_convert_rgb": True,
    }
    _write_atomic(folder / "preprocessor_config.json", json.dumps(cfg, indent=2) + "\n")


def write_example(folder: Path, size: int) -> None:
    """example.png: the held-out scene EXAMPLE_SEED at the model's input size (what the README segments)."""
    from PIL import Image

    tmp = folder / "example.tmp.png"
    Image.fromarray(make_scene(EXAMPLE_SEED, size=size).image).save(tmp)
    os.replace(tmp, folder / "example.png")


def pixel_values(images: np.ndarray):
    """[B, H, W, 3] uint8 -> [B, 3, H, W] float32 torch tensor, CLIP-normalised."""
    import torch

    x = (images.astype(np.float32) / 255.0 - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


class TextCache:
    """Tokenise once per distinct string: (ids, mask) torch tensors padded with <|endoftext|> to MAX_TEXT."""

    def __init__(self, tok):
        self.tok, self.memo = tok, {}

    def __call__(self, texts):
        import torch

        for t in texts:
            if t not in self.memo:
                self.memo[t] = self.tok(t, padding="max_length", max_length=MAX_TEXT)
        ids = torch.tensor([self.memo[t]["input_ids"] for t in texts])
        mask = torch.tensor([self.memo[t]["attention_mask"] for t in texts])
        return ids, mask


# ---------------------------------------------------------------------------------------------------------------
# Model.


def build_config(args, vocab_size: int, bos: int, eos: int):
    from transformers import GroupViTConfig

    text = dict(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=MAX_TEXT, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos,
    )  # fmt: skip
    groups = [int(g) for g in args.groups.split(",")]
    vision = dict(
        hidden_size=96, intermediate_size=384, depths=[int(d) for d in args.depths.split(",")],
        num_hidden_layers=sum(int(d) for d in args.depths.split(",")), num_group_tokens=groups[:2] + [0],
        num_output_groups=groups + [groups[-1]], num_attention_heads=4, image_size=args.size,
        patch_size=args.patch,
    )  # fmt: skip
    return GroupViTConfig(text_config=text, vision_config=vision, projection_dim=64, projection_intermediate_dim=256)


def sincos_positions(side: int, dim: int, norm: float = 1.0) -> np.ndarray:
    """A smooth 2-D position table [side*side, dim]: sines and cosines of the row (first half of the channels)
    and of the column (second half) at dim/4 frequencies from 1 down to 1/(2 side) radian per token (MAE's go
    down to 1/10000, which on a grid this small leaves opposite corners alike: cosine 0.59 instead of 0.08);
    every row has the given norm."""
    freqs = (2.0 * side) ** -(np.arange(dim // 4) / (dim // 4 - 1))  # [dim/4] geometric, 1 ... 1/(2 side)
    angle = np.arange(side)[:, None] * freqs  # [side, dim/4]
    axis = np.concatenate([np.sin(angle), np.cos(angle)], axis=1)  # [side, dim/2]
    rows, cols = np.repeat(axis, side, axis=0), np.tile(axis, (side, 1))  # [side*side, dim/2] each
    return np.concatenate([rows, cols], axis=1) * (norm / np.sqrt(dim / 2))  # [side*side, dim]


def build_model(config, init: str, seed: int):
    import torch
    from transformers import GroupViTModel

    torch.manual_seed(seed)
    model = GroupViTModel(config)
    if init in ("original", "sincos"):  # HF leaves group tokens and the position table at zero; the original
        with torch.no_grad():  # draws them
            table = model.vision_model.embeddings.position_embeddings  # [1, N, D]
            torch.nn.init.trunc_normal_(table, std=0.02)
            for stage in model.vision_model.encoder.stages:
                if stage.group_token is not None:
                    torch.nn.init.trunc_normal_(stage.group_token, std=0.02)
            if init == "sincos":  # a smooth table, so that two same-coloured objects' tokens differ by where
                # they are: rows of norm 0.4 sqrt(D), 40% of a LayerNorm'd patch token's (docs/demo-training.md);
                # it replaces the draw above, which stays so the random stream matches --init original
                side, dim = int(table.shape[1] ** 0.5), table.shape[2]
                table.copy_(torch.from_numpy(sincos_positions(side, dim, 0.4 * dim**0.5)[None]))
    return model


# ---------------------------------------------------------------------------------------------------------------
# Losses.


def soft_ce(logits, targets):
    """Cross-entropy against row-stochastic targets, averaged over rows."""
    return -(targets * logits.log_softmax(-1)).sum(-1).mean()


def presence_loss(q, present):
    """Multiple-instance presence from per-token distributions `q` [B, N, C+1] over the phrases and "nothing":
    a phrase is present by the mean of its best 5% of tokens (an object covers at least that), "nothing" by the
    mean of its best half (at least half of a scene is background); binary cross-entropy against the caption's
    phrases `present` [B, C] and "background is present"."""
    import torch
    import torch.nn.functional as F

    b, n_tok = q.shape[0], q.shape[1]
    obj = q[..., :-1].topk(max(1, n_tok // 20), dim=1).values.mean(1)  # [B, C]
    bg = q[..., -1].topk(n_tok // 2, dim=1).values.mean(1, keepdim=True)  # [B, 1]
    prob = torch.cat([obj, bg], dim=1).clamp(1e-6, 1 - 1e-6)
    return F.binary_cross_entropy(prob, torch.cat([present, torch.ones(b, 1)], dim=1))


def losses(model, extra, images, scenes, texts: TextCache, weights):
    """The weighted training losses for one batch (see the module docstring); returns (total, dict of floats)."""
    import torch
    import torch.nn.functional as F

    b = len(scenes)
    soft_maps = bool(weights["pixel"] or weights["match"] or weights["loo"] or weights["where"] or weights["order"])
    stage1 = []  # --token: the output of stage 1's last layer, image tokens then group tokens [B, N + G, D]
    last = model.vision_model.encoder.stages[0].layers[-1]
    hook = last.register_forward_hook(lambda _m, _i, out: stage1.append(out[0])) if weights["token"] else None
    vis = model.vision_model(pixel_values=images, output_attentions=soft_maps)
    if hook is not None:
        hook.remove()
    groups = vis.last_hidden_state  # [B, S, D], after the final LayerNorm
    s_out = groups.shape[1]
    # one BatchNorm call for pooled and per-group features so it sees both (both are used at inference)
    linear, norm, _, out_linear = model.visual_projection
    hidden = norm(linear(torch.cat([vis.pooler_output, groups.reshape(b * s_out, -1)])))  # [B + B*S, H]
    proj = out_linear(hidden.relu())
    img = F.normalize(proj[:b], dim=-1)  # [B, P]
    grp = F.normalize(proj[b:], dim=-1).reshape(b, s_out, -1)  # [B, S, P]

    prompts = [class_prompt(k + 1) for k in range(len(CLASS_NAMES))]
    captions = [placed_caption(s) if weights["where"] or weights["order"] else s.caption for s in scenes]
    rivals = where_rivals(scenes) if weights["where"] else []  # (scene, phrase index, its variants, the right one)
    variants = [v for _, _, vs, _ in rivals for v in vs]
    ids, mask = texts(captions + prompts + variants)
    txt = model.text_model(input_ids=ids, attention_mask=mask).pooler_output
    txt = F.normalize(model.text_projection(txt), dim=-1)
    cap, cls, var = txt[:b], txt[b : b + len(prompts)], txt[b + len(prompts) :]  # [B, P], [C, P], [V, P]

    present = torch.zeros(b, len(prompts))  # [B, C] multi-hot
    for i, s in enumerate(scenes):
        present[i, [k - 1 for k in s.class_ids]] = 1.0
    same = torch.tensor([[a == c for c in captions] for a in captions], dtype=torch.float32)

    scale = model.logit_scale.clamp(max=math.log(100)).exp()
    logits = scale * img @ cap.T  # [B, B]; identical captions are shared positives
    parts = {"clip": 0.5 * (soft_ce(logits, same / same.sum(1, keepdim=True)) + soft_ce(logits.T, same / same.sum(0)))}

    if weights["multi"]:  # pooled image vs the phrase of every object (GroupViT's multi-label loss, shared prompts)
        ml = extra["multi_scale"].clamp(max=math.log(100)).exp() * img @ cls.T  # [B, C]
        keep = present.sum(0) > 0
        parts["multi"] = 0.5 * (
            soft_ce(ml, present / present.sum(1, keepdim=True))
            + soft_ce(ml.T[keep], (present.T / present.sum(0, keepdim=True).T)[keep])
        )
    if weights["group"]:  # each group picks one phrase or "nothing"; presence = max over groups
        gl = extra["group_scale"].clamp(max=math.log(100)).exp() * grp @ cls.T  # [B, S, C]
        gl = torch.cat([gl, extra["group_bg"].expand(b, s_out, 1)], dim=-1)  # [B, S, C+1]
        prob = gl.softmax(-1).amax(1).clamp(1e-6, 1 - 1e-6)  # [B, C+1]
        if not weights["bg_present"]:  # optionally every scene also has background: some group must pick "nothing"
            prob = prob[:, :-1]
        target = torch.cat([present, torch.ones(b, 1)], dim=1)[:, : prob.shape[1]]
        parts["group"] = F.binary_cross_entropy(prob, target)
    if soft_maps:  # each final group's choice among the phrases and "nothing"
        gl = extra["group_scale"].clamp(max=math.log(100)).exp() * grp @ cls.T  # [B, S, C]
        choice_logits = torch.cat([gl, extra["group_bg"].expand(b, s_out, 1)], dim=-1)  # [B, S, C+1]
        att = vis.attentions[0].transpose(1, 2)  # [B, N, S0]: soft maps, columns sum to 1 over groups
        for a in vis.attentions[1:]:
            att = att @ a.transpose(1, 2)  # [B, N, S]
    if weights["match"] or weights["loo"] or weights["where"]:  # each caption phrase's group, matched once
        logp = choice_logits.log_softmax(-1)  # [B, S, C+1]
        table, mass = logp.detach().numpy(), att.mean(1).detach()  # [B, S, C+1], [B, S]: token share per group
        matches = [matched_groups(table[i], mass[i].numpy(), [k - 1 for k in sc.class_ids], weights["min_mass"])
                   for i, sc in enumerate(scenes)]  # fmt: skip
    if weights["match"]:  # one group per caption phrase (one-to-one), every other group picks "nothing"
        parts["match"] = match_loss(logp, mass, scenes, matches)
    if weights["loo"]:  # without the group that holds a phrase, the image no longer shows that phrase
        rows = leave_one_out_rows(scenes, matches)
        # the pooled feature is the mean over groups and Linear and BatchNorm are affine maps, so the left-out
        # mean is formed after them: the same batch statistics, no second BatchNorm update
        h = hidden[b:].reshape(b, s_out, -1)  # [B, S, H]
        scene, group = torch.from_numpy(rows[:, 0]), torch.from_numpy(rows[:, 1])
        h = (h.sum(1)[scene] - h[scene, group]) / (s_out - 1)  # [M, H]
        loo = F.normalize(out_linear(h.relu()), dim=-1)  # [M, P]
        keep_phrases = torch.tensor(rows[:, 2:], dtype=torch.float32)  # [M, C]: the scene's other phrases
        ll = extra["multi_scale"].clamp(max=math.log(100)).exp() * loo @ cls.T  # [M, C]
        parts["loo"] = soft_ce(ll, keep_phrases / keep_phrases.sum(1, keepdim=True)) if len(ll) else ll.sum()
    if weights["where"]:  # the group of "a left yellow star" tells "left" from the other yellow objects' words
        group_scale = extra["group_scale"].clamp(max=math.log(100)).exp()
        parts["where"] = where_loss(group_scale, grp, var, rivals, matches)
    if weights["pixel"] or weights["order"]:  # the choice seen through the soft pixel -> group maps
        q = att @ choice_logits.softmax(-1)  # [B, N, C+1]: each token's choice through its groups
    if weights["pixel"]:  # what segmentation uses: presence of each phrase among the tokens
        parts["pixel"] = presence_loss(q, present)
    if weights["order"]:  # "a left yellow circle"'s tokens lie left of "a right yellow star"'s
        parts["order"] = order_loss(q, order_pairs(scenes))
    if weights["token"]:  # the same presence read from each image token *before* stage 1 groups it
        tok = stage1[0][:, : stage1[0].shape[1] - model.config.vision_config.num_group_tokens[0]]  # [B, N, D]
        tl = extra["group_scale"].clamp(max=math.log(100)).exp() * F.normalize(tok @ extra["token_proj"].T, dim=-1)
        tl = torch.cat([tl @ cls.T, extra["token_bg"].expand(b, tok.shape[1], 1)], dim=-1)  # [B, N, C+1]
        parts["token"] = presence_loss(tl.softmax(-1), present)
    total = sum(weights[k] * v for k, v in parts.items())
    return total, {k: float(v.detach()) for k, v in parts.items()}


def where_rivals(scenes) -> list[tuple[int, int, list[str], int]]:
    """For every phrase that says where its object is (`placed_words`): (scene, the phrase's index in the caption,
    the phrase with each position word used by its colour in that scene, the index of its own): "a left yellow star"
    gives (i, j, ["a left yellow star", "a right yellow star"], 0)."""
    rows = []
    for i, scene in enumerate(scenes):
        words = placed_words(scene)
        for j, k in enumerate(scene.class_ids):
            if k in words:
                used = sorted((w for q, w in words.items() if class_colour(q) == class_colour(k)), key=PLACES.index)
                rows.append((i, j, [class_prompt(k, w) for w in used], used.index(words[k])))
    return rows


def where_loss(scale, grp, var, rivals, matches):
    """Cross-entropy of each placed phrase's matched group (`grp` [B, S, P]) over its variants' text embeddings
    (`var` [V, P], in `rivals` order): the group must say where its object is among the objects of its colour."""
    import torch

    if not rivals:
        return grp.sum() * 0.0
    terms, start = [], 0
    for i, j, variants, right in rivals:
        logits = scale * var[start : start + len(variants)] @ grp[i, matches[i][j]]  # [n]
        terms.append(-logits.log_softmax(-1)[right])
        start += len(variants)
    return torch.stack(terms).mean()


ORDER = {"left": 0, "top": 0, "middle": 1, "right": 2, "bottom": 2}  # rank of a position word along its axis


def order_pairs(scenes) -> list[tuple[int, int, int, int]]:
    """(scene, phrase a, phrase b, axis) for every two same-coloured objects next to each other in the order their
    captions' position words give (`placed_words`): phrase b (a class index, 0..15) lies after phrase a along
    axis 0 (rows: "top" before "bottom") or 1 (columns: "left" before "right"). Read from the caption alone."""
    pairs = []
    for i, scene in enumerate(scenes):
        words = placed_words(scene)
        for colour in sorted({class_colour(k) for k in words}):
            same = sorted((k for k in words if class_colour(k) == colour), key=lambda k: ORDER[words[k]])
            axis = int(any(words[k] in ("left", "right") for k in same))
            pairs += [(i, a - 1, b - 1, axis) for a, b in itertools.pairwise(same)]
    return pairs


def order_loss(q, pairs, tau: float = 0.05):
    """Each pair's phrases' token centroids in order: softplus(-(centroid b - centroid a) / tau) along the pair's
    axis, in units of the image side, averaged over pairs. `q` [B, N, C+1]: each image token's soft choice (its
    groups' picks through the soft maps); a centroid is the mean token position weighted by the phrase's share.
    Two same-coloured objects lie at least about a fifth of the image apart along their axis (0.2 / tau = 4:
    a loss of 0.02); one group holding both puts the two centroids together (0.69)."""
    import torch

    if not pairs:
        return q.sum() * 0.0
    side = int(round(q.shape[1] ** 0.5))
    centre = (torch.arange(side, dtype=q.dtype) + 0.5) / side  # [side]
    where = torch.stack([centre.repeat_interleave(side), centre.repeat(side)], dim=1)  # [N, 2]: (row, column)
    i, a, b, axis = (torch.tensor(col) for col in zip(*pairs, strict=True))  # [M] each
    wa, wb = q[i, :, a], q[i, :, b]  # [M, N]
    pos = where[:, axis].T  # [M, N]: each token's coordinate along its pair's axis
    gap = (wb * pos).sum(1) / (wb.sum(1) + 1e-6) - (wa * pos).sum(1) / (wa.sum(1) + 1e-6)  # [M]
    return torch.nn.functional.softplus(-gap / tau).mean()


def best_assignment(score: np.ndarray) -> tuple[int, ...]:
    """Distinct rows (groups) for the columns (phrases) maximising the summed score, by trying all of them at
    once: an n-dimensional table of sums over [S]^n with repeated groups masked out (n <= 3 phrases here)."""
    s_out, n = score.shape
    total = np.zeros((s_out,) * n)
    for j in range(n):
        total = total + score[:, j].reshape((1,) * j + (s_out,) + (1,) * (n - j - 1))
    grids = np.indices(total.shape)
    for a in range(n):
        for c in range(a + 1, n):
            total = np.where(grids[a] == grids[c], -np.inf, total)
    return tuple(int(g) for g in np.unravel_index(int(np.argmax(total)), total.shape))


def matched_groups(table: np.ndarray, mass: np.ndarray, phrases: list[int], min_mass: float) -> tuple[int, ...]:
    """The final group matched to each phrase (`best_assignment` on the groups' log-probabilities `table` [S, C+1]);
    with `min_mass` > 0 only groups holding at least that share of the image tokens compete (all of them when too
    few do), so a phrase cannot be claimed by an empty group that names it through its cross-attention alone."""
    score = table[:, phrases]
    eligible = mass >= min_mass
    if min_mass > 0 and eligible.sum() >= len(phrases):
        score = np.where(eligible[:, None], score, -1e9)
    return best_assignment(score)


def leave_one_out_rows(scenes, matches) -> np.ndarray:
    """Rows (scene, group, the other phrases as a multi-hot over the classes) for every phrase of every scene with
    two or more objects, the group being the one matched to the phrase (`matches[i]`: `matched_groups` of scene
    i, a group per phrase in caption order). The loss asks the image pooled without that group to show exactly the
    other phrases: a phrase must live in the group that holds its object, not leak into the others (whose tokens
    attend to the whole image). Labels come from the caption only."""
    rows = []
    for i, scene in enumerate(scenes):
        phrases = [k - 1 for k in scene.class_ids]
        if len(phrases) < 2:
            continue
        for phrase, g in zip(phrases, matches[i], strict=True):
            others = np.zeros(len(CLASS_NAMES), dtype=np.int64)
            others[[q for q in phrases if q != phrase]] = 1
            rows.append([i, g, *others])
    return np.array(rows, dtype=np.int64).reshape(-1, 2 + len(CLASS_NAMES))


def match_loss(logp, mass, scenes, matches):
    """Set supervision of the final groups by the caption's phrases (as DETR matches queries to objects).

    `logp` [B, S, C+1]: each group's log-probabilities over the C phrases and "nothing"; `mass` [B, S]: the share of
    image tokens each group holds; `matches[i]`: the group of each phrase of scene i (`matched_groups`: the phrases
    of a caption matched one-to-one to the groups that name them best). A matched group is asked for its phrase; an
    unmatched group for "nothing", weighted by its token share, so an empty group costs nothing. A group that holds
    two objects can name only one of them, so the other phrase needs a group of its own: the loss is meant to pull
    apart objects that the multiple-instance loss lets share a group. Measured (docs/demo-training.md): with 4 final
    groups the model keeps shared prototype groups; with 20 the sharing falls slowly. Labels come from the caption
    only.
    """
    import torch

    b, s_out, nothing = logp.shape[0], logp.shape[1], logp.shape[2] - 1
    rows, cols, weight = [], [], []
    for i, (scene, best) in enumerate(zip(scenes, matches, strict=True)):
        phrases = [k - 1 for k in scene.class_ids]
        for g in range(s_out):
            rows.append(i * s_out + g)
            if g in best:
                cols.append(phrases[best.index(g)])
                weight.append(1.0 / len(phrases))
            else:
                cols.append(nothing)
                weight.append(float(mass[i, g]))
    flat = logp.reshape(b * s_out, -1)[torch.tensor(rows), torch.tensor(cols)]  # [B*S]
    return -(torch.tensor(weight) * flat).sum() / b


# ---------------------------------------------------------------------------------------------------------------
# Training loop.


def texture_at(step: int, args, rng: np.random.Generator, n: int) -> np.ndarray:
    """Curriculum: the stripe strength ceiling rises from 0 to 1 over the first `--curriculum` of the steps."""
    ceiling = 1.0 if args.curriculum <= 0 else min(1.0, step / (args.curriculum * args.steps))
    return np.minimum(1.0, ceiling * rng.uniform(0, 1.25, size=n))


def shares_colour(class_ids) -> bool:
    """Whether two objects of a scene have the same colour."""
    return any(colour_repeats(class_ids))


def train_seeds(step: int, args) -> np.ndarray:
    """The scene seeds of one step [batch]: a function of (seed, step) only, so a resumed run draws the same data.

    With `--shared-colour p` the first round(p * batch) slots hold scenes in which two objects share a colour
    ("a yellow circle and a yellow star"): each such slot takes the first of its 16 candidate seeds (a range of
    its own, above the plain slots') whose scene shares a colour. Only the caption decides this, never a mask.
    """

    def shared(seed) -> bool:
        return shares_colour(make_scene(int(seed), size=args.size, radius=tuple(args.radius)).class_ids)

    base = SEED_RANGES["train"] + args.seed * 1_000_000
    seeds = base + step * args.batch + np.arange(args.batch)  # [batch]
    for j in range(round(args.shared_colour * args.batch)):
        candidates = base + 500_000 + (step * args.batch + j) * 16 + np.arange(16)  # [16]
        seeds[j] = next((c for c in candidates if shared(c)), candidates[-1])
    return seeds


RECIPE = (
    "seed",
    "steps",
    "batch",
    "lr",
    "size",
    "patch",
    "depths",
    "groups",
    "radius",
    "init",
    "multi",
    "group",
    "pixel",
    "bg_present",
    "curriculum",
    "match",
    "min_mass",
    "loo",
    "shared_colour",
    "token",
    "where",
    "order",
)  # the arguments a resumed run must share with the interrupted one


def log_before(path: Path, step: int) -> list[str]:
    """The lines of a training log that a state at `step` covers: every record of an earlier step, and the records
    without a step (the arguments, resume marks)."""
    records = [(line, json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line, rec in records if rec.get("step", -1) < step]


def _save_atomic(obj, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename it into place."""
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _resume_state(out: Path, args):
    """The state an interrupted run left in `out/state.pt`, after checking the recipe is the same."""
    import torch

    path = out / "state.pt"
    if not path.is_file():
        sys.exit(f"train_demo: --resume: {path} does not exist (start without --resume)")
    state = torch.load(path, weights_only=False)
    given = {k: getattr(args, k) for k in RECIPE}
    defaults = vars(parse_args(["--out", str(out)]))  # states written before an argument existed
    saved = {k: state["args"].get(k, defaults[k]) for k in RECIPE}
    if {k: list(v) if isinstance(v, tuple) else v for k, v in given.items()} != {
        k: list(v) if isinstance(v, tuple) else v for k, v in saved.items()
    }:
        diff = ", ".join(f"--{k} {saved[k]} (given {given[k]})" for k in RECIPE if saved[k] != given[k])
        sys.exit(f"train_demo: --resume: {path} was started with a different recipe: {diff}")
    return state


def validate(model, tok_cache: TextCache, size: int, n: int = 100) -> dict:
    """Cheap held-out proxies logged during training (validation seeds, eval mode, no effect on training RNG).

    Foreground mIoU here is HF-style with the best of a few background thresholds chosen on the same scenes, so
    it is optimistic; tools/eval_demo.py measures the real figures on the test seeds.
    """
    import torch

    prompts = [class_prompt(k + 1) for k in range(len(CLASS_NAMES))]
    ids, mask = tok_cache(prompts)
    imgs, gt, _ = make_scenes(SEED_RANGES["validation"] + np.arange(n), size=size)
    single, _, single_scenes = make_scenes(SEED_RANGES["validation"] + 500_000 + np.arange(n), size=size,
                                           objects=(1, 1))  # fmt: skip
    model.eval()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, pixel_values=pixel_values(imgs), output_segmentation=True)
        seg = (out.segmentation_logits / float(model.logit_scale.exp()) ** 2).numpy()  # [B, C, H, W] cosines
        att = out.vision_model_output.attentions
        cls = model(input_ids=ids, attention_mask=mask, pixel_values=pixel_values(single)).logits_per_image
    model.train()
    maps = att[0].transpose(1, 2)
    for a in att[1:]:
        maps = maps @ a.transpose(1, 2)  # [B, N, S]
    grid = int(round(maps.shape[1] ** 0.5))
    group = maps.argmax(-1).reshape(n, grid, grid).numpy()
    group = group.repeat(size // grid, 1).repeat(size // grid, 2)  # [B, H, W]: each pixel's final group (nearest)
    truth = np.array([s.class_ids[0] - 1 for s in single_scenes])
    best, label = seg.max(1), seg.argmax(1) + 1  # [B, H, W]
    scores = []
    for thr in np.quantile(best, np.linspace(0.3, 0.9, 13)):
        pred = np.where(best < thr, 0, label)
        ious = [((pred == k) & (gt == k)).sum() / ((pred == k) | (gt == k)).sum() for k in np.unique(gt[gt > 0])]
        binary = ((pred > 0) & (gt > 0)).sum() / ((pred > 0) | (gt > 0)).sum()
        scores.append((float(np.mean(ious)), float(binary), pred))
    miou, binary, pred = max(scores, key=lambda t: t[0])
    named, shared, objects, named_twin, twins = 0, 0, 0, 0, 0
    for i in range(n):  # diagnostics only: the masks never reach a loss
        ids_here = [k for k in np.unique(gt[i]) if k > 0]
        main = {k: np.bincount(group[i][gt[i] == k]).argmax() for k in ids_here}
        for k, repeats in zip(ids_here, colour_repeats(ids_here), strict=True):
            right = int(np.bincount(pred[i][gt[i] == k]).argmax() == k)
            objects += 1
            named += right
            shared += int(any(main[k] == main[j] for j in ids_here if j != k))
            if repeats:  # another object here has its colour
                twins += 1
                named_twin += right
    return {"val_fg_miou": round(miou, 4), "val_object_iou": round(binary, 4),
            "val_classification": float((cls.argmax(1).numpy() == truth).mean()),
            "val_named": round(named / objects, 4), "val_shared_group": round(shared / objects, 4),
            "val_named_colour_shared": round(named_twin / max(1, twins), 4)}  # fmt: skip


def train(args) -> Path:
    """Train (or, with --resume, continue) a run; returns the output folder with the saved checkpoint.

    Every `--checkpoint-minutes` the whole training state (model, extra parameters, optimiser, schedule, both
    random generators, the step and the time spent) goes to `out/state.pt` atomically, so a run killed at any
    moment continues with --resume exactly as if it had not stopped (same thread count: torch's CPU reductions
    depend on it). The scenes of step t are a function of (seed, t), so the data position is the step.
    """
    import torch
    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state = _resume_state(out, args) if args.resume else None
    tok = write_tokenizer(out, caption_words(args))
    texts = TextCache(tok)
    vocab = tok.get_vocab()
    config = build_config(args, len(vocab), vocab["<|startoftext|>"], vocab["<|endoftext|>"])
    model = build_model(config, args.init, args.seed)
    extra = torch.nn.ParameterDict({
        "multi_scale": torch.nn.Parameter(torch.tensor(math.log(1 / 0.07))),
        "group_scale": torch.nn.Parameter(torch.tensor(math.log(1 / 0.07))),
        "group_bg": torch.nn.Parameter(torch.tensor(0.0)),
    })  # fmt: skip
    if args.token:  # --token: a head from stage-1 tokens to the phrase space (training only, not in the checkpoint)
        extra["token_proj"] = torch.nn.Parameter(
            0.02 * torch.randn(config.projection_dim, config.vision_config.hidden_size)
        )
        extra["token_bg"] = torch.nn.Parameter(torch.tensor(0.0))
    if args.init_from and state is None:  # a second phase: the weights of another run, a fresh optimiser
        start = torch.load(args.init_from, weights_only=False)
        own = model.state_dict()
        fits = {k: v for k, v in start["model"].items() if k in own and own[k].shape == v.shape}
        rows = "text_model.embeddings.token_embedding.weight"  # a grown vocabulary keeps the rows of known tokens
        if rows not in fits and rows in start["model"]:
            old, _ = tokenizer_files(caption_words(argparse.Namespace(**start["args"])))
            fits[rows] = carry_rows(own[rows], start["model"][rows], old, vocab)
        model.load_state_dict(fits, strict=False)  # tensors whose shape changed keep their fresh init
        extra.load_state_dict(start["extra"], strict=False)  # a head new to this phase keeps its init
        print(f"--init-from: {len(fits)} of {len(own)} tensors taken; new: {sorted(set(own) - set(fits))}",
              file=sys.stderr)  # fmt: skip
    weights = {
        "clip": 1.0,
        "multi": args.multi,
        "group": args.group,
        "bg_present": args.bg_present,
        "pixel": args.pixel,
        "match": args.match,
        "min_mass": args.min_mass,
        "loo": args.loo,
        "token": args.token,
        "where": args.where,
        "order": args.order,
    }

    def decays(name, p):  # no weight decay on norms, biases, group tokens and position tables
        return p.ndim >= 2 and "group_token" not in name and "position" not in name

    decay = [p for n, p in model.named_parameters() if decays(n, p)]
    other = [p for n, p in model.named_parameters() if not decays(n, p)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": other + list(extra.values()), "weight_decay": 0.0}],
        lr=args.lr,
    )
    warm = max(1, args.steps // 20)

    def lr_factor(s):  # linear warm-up over 5% of the steps, cosine decay to 2%
        return min(1.0, (s + 1) / warm) * (0.02 + 0.49 * (1 + math.cos(math.pi * min(1.0, s / args.steps))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    rng = np.random.default_rng(args.seed)  # textures for the curriculum
    first, spent = 0, 0.0
    log_path = out / "train_log.jsonl"
    if state is None:
        log_path.write_text(json.dumps({"args": vars(args)}) + "\n", encoding="utf-8")
    else:
        model.load_state_dict(state["model"])
        extra.load_state_dict(state["extra"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        first, spent = state["step"], state["seconds"]
        # keep the log of the steps the state covers, drop what was logged after it (those steps are redone)
        kept = log_before(log_path, first)
        kept.append(json.dumps({"resumed_at_step": first, "seconds_so_far": round(spent, 1)}))
        log_path.write_text("\n".join(kept) + "\n", encoding="utf-8")
        print(f"resuming {out} at step {first} of {args.steps} ({spent / 60:.0f} min trained)", file=sys.stderr)

    def checkpoint(next_step: int, seconds: float) -> None:
        snapshot = {"step": next_step, "seconds": seconds, "args": vars(args), "model": model.state_dict(),
                 "extra": extra.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                 "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()}  # fmt: skip
        _save_atomic(snapshot, out / "state.pt")

    model.train()
    log = open(log_path, "a", encoding="utf-8")
    start = time.time() - spent
    last_save = time.time()
    bar = tqdm(range(first, args.steps), desc="train", mininterval=10, file=sys.stderr, initial=first, total=args.steps)
    for step in bar:
        seeds = train_seeds(step, args)  # [batch]
        tex = texture_at(step, args, rng, args.batch)
        scenes = [make_scenes([sd], size=args.size, radius=tuple(args.radius), texture=float(t))[2][0]
                  for sd, t in zip(seeds, tex, strict=True)]  # fmt: skip
        images = pixel_values(np.stack([s.image for s in scenes]))
        loss, parts = losses(model, extra, images, scenes, texts, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(extra.values()), 5.0)
        opt.step()
        sched.step()
        if step % 25 == 0 or step == args.steps - 1:
            rec = {"step": step, "loss": float(loss.detach()), **parts, "lr": sched.get_last_lr()[0],
                   "scale": float(model.logit_scale.detach().exp()), "texture_max": float(tex.max()),
                   "time": round(time.time() - start, 1)}  # fmt: skip
            if args.eval_every and (step % args.eval_every == 0 or step == args.steps - 1) and step > 0:
                rec.update(validate(model, texts, args.size))
            log.write(json.dumps(rec) + "\n")
            log.flush()
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", **{k: f"{v:.3f}" for k, v in parts.items()})
        if time.time() - last_save > 60 * args.checkpoint_minutes and step < args.steps - 1:
            checkpoint(step + 1, time.time() - start)
            last_save = time.time()
        if step + 1 == args.stop_at:  # a deliberate interruption (tests of --resume)
            checkpoint(step + 1, time.time() - start)
            log.close()
            print(f"stopped at step {step + 1}; continue with --resume", file=sys.stderr)
            return out
    seconds = time.time() - start
    log.write(json.dumps({"done": args.steps, "train_seconds": round(seconds, 1), "threads": args.threads}) + "\n")
    log.close()
    checkpoint(args.steps, seconds)
    export(model, out, args.size)
    print(f"saved {out} after {seconds:.0f} s of training", file=sys.stderr)
    return out


def export(model, folder: Path, size: int) -> None:
    """The shippable files: model (eval mode, safetensors), preprocessor config and example image."""
    model.eval()
    model.save_pretrained(str(folder), safe_serialization=True)
    as_if_created(folder / "model.safetensors")  # transformers writes it 0600; give it the umask's mode, as the rest
    write_preprocessor(folder, size)
    write_example(folder, size)


def export_state(state_dir: Path, folder: Path) -> None:
    """Write the checkpoint of an unfinished run (its last state.pt) as a loadable folder, for mid-run evaluation."""
    import torch

    state = torch.load(state_dir / "state.pt", weights_only=False)
    args = argparse.Namespace(**state["args"])
    tok = write_tokenizer(folder, caption_words(args))
    vocab = tok.get_vocab()
    model = build_model(build_config(args, len(vocab), vocab["<|startoftext|>"], vocab["<|endoftext|>"]), args.init,
                        args.seed)  # fmt: skip
    model.load_state_dict(state["model"])
    export(model, folder, args.size)
    log = state_dir / "train_log.jsonl"
    if log.is_file() and log.resolve() != (folder / "train_log.jsonl").resolve():  # the log up to the state's step
        _write_atomic(folder / "train_log.jsonl", "\n".join(log_before(log, state["step"])) + "\n")
    print(f"exported step {state['step']} of {state_dir} to {folder}", file=sys.stderr)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder for the checkpoint, tokenizer and train_log.jsonl")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--patch", type=int, default=8)
    p.add_argument("--depths", default="2,2,1")
    p.add_argument("--groups", default="16,4", help="output groups of grouping stages 1 and 2 (stage 3 keeps the last)")
    p.add_argument("--radius", type=float, nargs=2, default=(8.0, 14.0))
    inits = ("hf", "original", "sincos")  # sincos: the original's, with the smooth table of sincos_positions
    p.add_argument("--init", choices=inits, default="original", help=f"one of {inits}")
    p.add_argument("--multi", type=float, default=1.0, help="weight of the multi-label phrase loss (0 = off)")
    p.add_argument("--group", type=float, default=0.0, help="weight of the group multiple-instance loss (0 = off)")
    p.add_argument("--pixel", type=float, default=1.0, help="weight of the token-level (pixel) MIL loss (0 = off)")
    p.add_argument("--match", type=float, default=0.0, help="weight of the phrase-to-group matching loss (0 = off)")
    p.add_argument(
        "--min-mass",
        type=float,
        default=0.0,
        help="matching (--match, --loo) considers only groups holding at least this share of the tokens",
    )
    p.add_argument("--loo", type=float, default=0.0, help="weight of the leave-one-group-out loss (0 = off)")
    p.add_argument(
        "--token",
        type=float,
        default=0.0,
        help="weight of the presence loss read from stage-1 tokens before grouping (0 = off)",
    )
    p.add_argument(
        "--shared-colour",
        type=float,
        default=0.0,
        help="share of each batch drawn from scenes in which two objects have the same colour (0 = natural rate)",
    )
    p.add_argument(
        "--where",
        type=float,
        default=0.0,
        help="weight of the position-word loss; also puts position words in the captions (0 = off)",
    )
    p.add_argument(
        "--order",
        type=float,
        default=0.0,
        help="weight of the loss that reads the position words on the token grid; also puts them in the captions",
    )
    p.add_argument("--init-from", metavar="STATE", help="start from the weights of another run's state.pt")
    p.add_argument("--bg-present", type=int, default=1, help="group loss also asks one group to pick 'nothing'")
    p.add_argument("--curriculum", type=float, default=0.3, help="fraction of steps over which stripes ramp in")
    p.add_argument("--smoke", action="store_true", help="a cheap check: 10 steps of batch 16")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads (default: all)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its state.pt")
    p.add_argument("--checkpoint-minutes", type=float, default=5.0, help="how often state.pt is written")
    p.add_argument("--eval-every", type=int, default=250, help="log validation proxies every N steps (0 = never)")
    p.add_argument("--stop-at", type=int, default=0, help="write state.pt and stop after this many steps")
    p.add_argument("--export", metavar="FOLDER", help="write the model of --out's state.pt to FOLDER and exit")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.batch = 10, 16
    matching = args.match or args.loo or args.where or args.order  # the losses that match a group to each phrase
    if matching and int(args.groups.split(",")[-1]) < 3:  # a scene has up to 3 phrases
        p.error("--match, --loo, --where and --order need at least 3 final groups (--groups), one per phrase")
    return args


if __name__ == "__main__":
    a = parse_args()
    if a.export:
        export_state(Path(a.out), Path(a.export))
    else:
        train(a)
