"""Held-out evaluation of a demo checkpoint on procedural scenes (seeds disjoint from training, see SEED_RANGES).

    python tools/eval_demo.py weights/groupvit-demo-scenes --out /tmp/eval      # metrics.json + pictures

Measured with Hugging Face's GroupViTModel in eval mode, one thread:
- classification: single-object scenes, argmax over the 16 prompts "a {colour} {shape}";
- retrieval: image -> caption among 200 (correct when the retrieved caption text equals the scene's own);
- object-vs-background IoU (class-agnostic), to separate "grouping found the objects" from "named them";
- group usage: share of pixels and of images won by each final group (argmax of the soft pixel->group map);
- segmentation foreground mIoU over the 16 classes (IoU summed over the set), background by a threshold chosen
  on a separate validation set, for two inferences:
  * HF-style: `segmentation_logits` / s^2 (= sum_g grouping_g(pixel) * cos(group_g, text)), argmax over classes;
  * original-style (NVlabs GroupViTSegInference): each pixel takes its argmax group; group score =
    softmax_c(s cos) * softmax_c over the image's top-5 classes; background where the best score < min(thr, max).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_demo import MAX_TEXT, pixel_values  # noqa: E402

from groupvit_np.tasks.scenes import CLASS_NAMES, SEED_RANGES, class_prompt, make_scenes  # noqa: E402

N_CLASSES = len(CLASS_NAMES)


def load(folder: str):
    import torch
    from transformers import CLIPTokenizer, GroupViTModel

    torch.set_num_threads(1)
    model = GroupViTModel.from_pretrained(folder, dtype=torch.float32).eval()
    tok = CLIPTokenizer.from_pretrained(folder)
    return model, tok


def encode_texts(model, tok, texts):
    """L2-normalised text embeddings [T, P]."""
    import torch

    enc = tok(list(texts), padding="max_length", max_length=MAX_TEXT, return_tensors="pt")
    with torch.no_grad():
        emb = model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    return emb / emb.norm(dim=-1, keepdim=True)


def run_scenes(model, tok, images, chunk: int = 100) -> dict[str, np.ndarray]:
    """One eval pass per chunk with output_segmentation over the 16 class prompts; returns NumPy arrays."""
    import torch
    from transformers.models.groupvit.modeling_groupvit import get_grouping_from_attentions

    enc = tok([class_prompt(k + 1) for k in range(N_CLASSES)], padding="max_length", max_length=MAX_TEXT,
              return_tensors="pt")  # fmt: skip
    outs: dict[str, list] = {k: [] for k in ("seg", "cls_logits", "group_embeds", "grouping", "image_embeds")}
    s = float(model.logit_scale.exp())
    with torch.no_grad():
        for i in range(0, len(images), chunk):
            px = pixel_values(images[i : i + chunk])
            o = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=px,
                      output_segmentation=True)  # fmt: skip
            last = o.vision_model_output.last_hidden_state  # [B, S, D]
            ge = model.visual_projection(last.reshape(-1, last.shape[-1]))
            ge = (ge / ge.norm(dim=-1, keepdim=True)).reshape(last.shape[0], last.shape[1], -1)  # [B, S, P]
            outs["seg"].append((o.segmentation_logits / s**2).numpy())  # [B, C, H, W] weighted cosine
            outs["cls_logits"].append(o.logits_per_image.numpy())  # [B, C]
            outs["group_embeds"].append(ge.numpy())  # [B, S, P]
            grouping = get_grouping_from_attentions(o.vision_model_output.attentions, px.shape[2:])  # [B, S, H, W]
            outs["grouping"].append(grouping.numpy())
            outs["image_embeds"].append(o.image_embeds.numpy())
    res = {k: np.concatenate(v) for k, v in outs.items()}
    res["scale"] = np.float64(s)
    res["text_embeds"] = o.text_embeds.numpy()  # [C, P]
    return res


def original_scores(res, top_k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Original-style per-pixel class scores [B, C, H, W] and each image's best group score [B].

    Uses `groupvit_np.tasks.segmentation` (group_class_scores, pixel_scores) when it is importable, else the same
    rule written here: each pixel takes its argmax group's scores pre * post (post: softmax over the top-5).
    """
    s = min(float(res["scale"]), 100.0)
    try:
        from groupvit_np.tasks.segmentation import group_class_scores, pixel_scores
    except ImportError:
        group_class_scores = None
    out, best = [], []
    for i in range(len(res["grouping"])):
        groups, image, text = res["group_embeds"][i], res["image_embeds"][i], res["text_embeds"]
        if group_class_scores is not None:
            score, _ = group_class_scores(groups, image, text, s, top_k)  # [S, C]
            out.append(pixel_scores(res["grouping"][i], score, False, 0.0))  # [C, H, W]
        else:
            logits = s * groups @ text.T  # [S, C]
            pre = np.exp(logits - logits.max(-1, keepdims=True))
            pre /= pre.sum(-1, keepdims=True)
            top = np.argsort(-(image @ text.T), kind="stable")[:top_k]
            gated = np.where(np.isin(np.arange(text.shape[0]), top)[None], logits, -np.inf)
            post = np.exp(gated - gated.max(-1, keepdims=True))
            post /= post.sum(-1, keepdims=True)
            score = pre * post
            out.append(np.moveaxis(score[res["grouping"][i].argmax(0)], -1, 0))  # [C, H, W]
        best.append(float(score.max()))
    res["original_impl"] = "groupvit_np.tasks.segmentation" if group_class_scores is not None else "tools/eval_demo.py"
    return np.stack(out), np.asarray(best)


def predict(scores: np.ndarray, thr: float, image_best: np.ndarray | None = None) -> np.ndarray:
    """Class map [B, H, W] (0 = background): argmax class, background where the best score is below the cut.

    The cut is thr (HF-style) or min(thr, the image's best group score) (original-style, so the best group of an
    image is never thresholded away).
    """
    best = scores.max(1)  # [B, H, W]
    cut = thr if image_best is None else np.minimum(thr, image_best)[:, None, None]
    return np.where(best < cut, 0, scores.argmax(1) + 1)


def fg_miou(pred: np.ndarray, gt: np.ndarray) -> tuple[float, list[float]]:
    """Mean IoU over the 16 foreground classes (intersections and unions summed over the whole set)."""
    ious = []
    for k in range(1, N_CLASSES + 1):
        p, g = pred == k, gt == k
        union = np.logical_or(p, g).sum()
        if g.any():
            ious.append(float(np.logical_and(p, g).sum() / union))
    return float(np.mean(ious)), ious


def choose_threshold(scores, gt, image_best=None) -> tuple[float, float]:
    """The background threshold with the best foreground mIoU on the validation scenes."""
    grid = np.quantile(scores.max(1), np.linspace(0.0, 0.99, 60))
    best = max((fg_miou(predict(scores, t, image_best), gt)[0], float(t)) for t in grid)
    return best[1], best[0]


def group_usage(res) -> dict[str, list[float]]:
    group = res["grouping"].argmax(1)  # [B, H, W]
    n = res["grouping"].shape[1]
    pixel_share = [float((group == g).mean()) for g in range(n)]
    image_share = [float((group == g).reshape(len(group), -1).any(-1).mean()) for g in range(n)]
    per_image = float(np.mean([len(np.unique(m)) for m in group]))
    return {"pixel_share": pixel_share, "image_share": image_share, "groups_per_image": per_image}


def palette(ids: np.ndarray) -> np.ndarray:
    """Class or group map -> RGB: background dark grey, class colours lightened per shape."""
    base = np.array([[215, 45, 40], [40, 170, 60], [45, 85, 215], [225, 205, 40]], dtype=np.float64)
    table = [np.array([40.0, 40.0, 40.0])]
    for k in range(N_CLASSES):
        table.append(base[k // 4] * (1 - 0.18 * (k % 4)) + 255 * 0.18 * (k % 4))
    return np.stack(table)[ids].astype(np.uint8)


GROUP_COLOURS = np.array(
    [[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230],
     [210, 245, 60]], dtype=np.uint8)  # fmt: skip


def save_pictures(path: Path, images, gt, hf_pred, orig_pred, groups, n: int = 8) -> None:
    """One row per scene: image | ground truth | HF-style | original-style | final groups (x3 nearest)."""
    from PIL import Image

    rows = []
    for i in range(min(n, len(images))):
        cells = [images[i], palette(gt[i]), palette(hf_pred[i]), palette(orig_pred[i]),
                 GROUP_COLOURS[groups[i] % len(GROUP_COLOURS)]]  # fmt: skip
        rows.append(np.concatenate([np.pad(c, ((2, 2), (2, 2), (0, 0)), constant_values=255) for c in cells], 1))
    grid = np.concatenate(rows, 0)
    img = Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST)
    tmp = path.with_suffix(".tmp.png")
    img.save(tmp)
    os.replace(tmp, path)


def evaluate(folder: str, n_test: int = 400, n_val: int = 200, n_cls: int = 400, out: str | None = None) -> dict:
    model, tok = load(folder)
    size = model.config.vision_config.image_size
    metrics: dict = {"checkpoint": str(folder), "n_test": n_test, "n_val": n_val, "n_classification": n_cls}

    # classification: single-object scenes
    imgs, masks, scenes = make_scenes(SEED_RANGES["classification"] + np.arange(n_cls), size=size, objects=(1, 1))
    res = run_scenes(model, tok, imgs)
    truth = np.array([s.class_ids[0] - 1 for s in scenes])
    metrics["classification_acc"] = float((res["cls_logits"].argmax(1) == truth).mean())

    # test scenes: retrieval among 200, group usage, segmentation
    imgs, gt, scenes = make_scenes(SEED_RANGES["test"] + np.arange(n_test), size=size)
    res = run_scenes(model, tok, imgs)
    hits = []
    for start in range(0, n_test - 199, 200):
        caps = [s.caption for s in scenes[start : start + 200]]
        sim = res["image_embeds"][start : start + 200] @ encode_texts(model, tok, caps).numpy().T  # [200, 200]
        hits += [caps[j] == caps[i] for i, j in enumerate(sim.argmax(1))]
    metrics["retrieval_acc_200"] = float(np.mean(hits))
    metrics["group_usage"] = group_usage(res)

    vimgs, vgt, _ = make_scenes(SEED_RANGES["validation"] + np.arange(n_val), size=size)
    vres = run_scenes(model, tok, vimgs)
    preds = {}
    val_scores = {"hf": (vres["seg"], None), "original": original_scores(vres)}
    test_scores = {"hf": (res["seg"], None), "original": original_scores(res)}
    metrics["original_style_impl"] = res["original_impl"]
    for name in ("hf", "original"):
        thr, val_miou = choose_threshold(val_scores[name][0], vgt, val_scores[name][1])
        preds[name] = predict(test_scores[name][0], thr, test_scores[name][1])
        miou, per_class = fg_miou(preds[name], gt)
        binary = float(((preds[name] > 0) & (gt > 0)).sum() / ((preds[name] > 0) | (gt > 0)).sum())
        metrics[f"seg_{name}"] = {"fg_miou": miou, "threshold": thr, "val_fg_miou": val_miou,
                                   "object_vs_bg_iou": binary,
                                   "per_class_iou": [round(x, 4) for x in per_class]}  # fmt: skip
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        save_pictures(Path(out) / "segmentation.png", imgs, gt, preds["hf"], preds["original"],
                      res["grouping"].argmax(1))  # fmt: skip
        tmp = Path(out) / "metrics.json.tmp"
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
        os.replace(tmp, Path(out) / "metrics.json")
    return metrics


def compare_numpy(folder: str, n: int = 8) -> float:
    """Max |logits_np - logits_hf| on n test scenes and the 16 prompts, with groupvit_np loading the same folder."""
    import torch

    import groupvit_np

    model, tok = load(folder)
    imgs, _, _ = make_scenes(SEED_RANGES["test"] + np.arange(n), size=model.config.vision_config.image_size)
    enc = tok([class_prompt(k + 1) for k in range(N_CLASSES)], padding="max_length", max_length=MAX_TEXT,
              return_tensors="pt")  # fmt: skip
    px = pixel_values(imgs)
    with torch.no_grad():
        ref = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=px)
    ours = groupvit_np.GroupViTModel.from_pretrained(folder)
    got = ours(input_ids=enc["input_ids"].numpy(), attention_mask=enc["attention_mask"].numpy(),
               pixel_values=px.numpy())  # fmt: skip
    return float(np.abs(np.asarray(got.logits_per_image) - ref.logits_per_image.numpy()).max())


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder")
    p.add_argument("--out", default=None, help="folder for metrics.json and segmentation.png")
    p.add_argument("--n-test", type=int, default=400)
    p.add_argument("--n-val", type=int, default=200)
    p.add_argument("--compare-numpy", action="store_true", help="also check groupvit_np's logits against HF")
    a = p.parse_args()
    m = evaluate(a.folder, a.n_test, a.n_val, out=a.out)
    if a.compare_numpy:
        m["numpy_vs_hf_max_abs_logit_diff"] = compare_numpy(a.folder)
        if a.out:
            tmp = Path(a.out) / "metrics.json.tmp"
            tmp.write_text(json.dumps(m, indent=2) + "\n")
            os.replace(tmp, Path(a.out) / "metrics.json")
    print(json.dumps(m, indent=2))
