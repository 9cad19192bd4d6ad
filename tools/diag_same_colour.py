"""Can a checkpoint tell two objects of the same colour apart before its first grouping?

    python tools/diag_same_colour.py weights/groupvit-demo-scenes            # 400 validation scenes
    python tools/diag_same_colour.py weights/groupvit-demo-scenes --table sincos --norm 1

For every pair of objects in a scene (each covering at least two tokens), the tokens of the two objects are
classified by the nearer of the two objects' mean features (nearest centroid; 0.5 is chance), in four spaces:
the position table alone, the embeddings (LayerNorm'd patches plus the table), the tokens entering stage 1's
grouping block, and that block's assignment keys. Pairs of one colour and pairs of two colours are reported
apart, with the share of pairs whose two objects have the same main stage-1 group. `--table sincos` swaps the
checkpoint's table for the smooth one of `train_demo.sincos_positions` (rows of norm `--norm`, by default
`--init sincos`'s 0.4 sqrt(D)) in the first two columns: what the embeddings would be with it; the last three
always come from the checkpoint as it is.
Measured with Hugging Face's GroupViTModel (forward hooks), one thread.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_demo import load  # noqa: E402
from train_demo import pixel_values, sincos_positions  # noqa: E402

from groupvit_np.tasks.scenes import SEED_RANGES, class_colour, make_scenes  # noqa: E402


def token_labels(gt: np.ndarray, side: int) -> np.ndarray:
    """Each token's most common pixel class.  # [B, H, W] -> [B, side*side]"""
    b, h, w = gt.shape
    p = h // side
    patches = gt.reshape(b, side, p, side, p).transpose(0, 1, 3, 2, 4).reshape(b, side * side, p * p)
    counts = (patches[..., None] == np.arange(gt.max() + 1)).sum(2)  # [B, N, K]
    return counts.argmax(-1)


def nearest_centroid(feats: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Share of the tokens of objects a and b (boolean masks over N) nearer their own object's mean feature."""
    fa, fb = feats[a], feats[b]  # [Na, D], [Nb, D]
    ca, cb = fa.mean(0), fb.mean(0)
    dist = lambda f, c: ((f - c) ** 2).sum(1)  # noqa: E731
    right = np.r_[dist(fa, ca) < dist(fa, cb), dist(fb, cb) < dist(fb, ca)]
    return float(right.mean())


def diagnose(folder: str, n: int = 400, table: str = "own", norm: float | None = None) -> dict[str, dict[str, float]]:
    import torch

    model, _ = load(folder)
    images, gt, scenes = make_scenes(SEED_RANGES["validation"] + np.arange(n))
    seen = {}
    embeddings = model.vision_model.embeddings
    block = model.vision_model.encoder.stages[0].downsample  # stage 1's grouping block

    def before_grouping(module, args, out):
        tokens, _ = args
        seen["tokens"] = tokens.numpy()  # [B, N, D]
        seen["keys"] = module.assign.k_proj(module.norm_x(tokens)).numpy()  # [B, N, D]
        seen["assign"] = out[1].numpy()  # [B, S, N]

    hooks = [
        embeddings.register_forward_hook(lambda m, a, out: seen.__setitem__("embeddings", out.numpy())),
        block.register_forward_hook(before_grouping),
    ]
    with torch.no_grad():
        model.vision_model(pixel_values=pixel_values(images), output_attentions=True)
    for h in hooks:
        h.remove()
    positions = embeddings.position_embeddings[0].detach().numpy()  # [N, D]
    side, dim = int(round(positions.shape[0] ** 0.5)), positions.shape[1]
    if table == "sincos":
        patches = seen["embeddings"] - positions  # [B, N, D]: the LayerNorm'd patch tokens
        positions = sincos_positions(side, dim, 0.4 * dim**0.5 if norm is None else norm)  # [N, D]
        seen["embeddings"] = patches + positions
    labels = token_labels(gt, side)  # [B, N]
    main_group = seen["assign"].argmax(1)  # [B, N]
    rows: dict[str, list] = {"one colour": [], "two colours": []}
    for i, scene in enumerate(scenes):
        present = [k for k in scene.class_ids if (labels[i] == k).sum() >= 2]
        for u, ku in enumerate(present):
            for kv in present[u + 1 :]:
                a, b = labels[i] == ku, labels[i] == kv
                spaces = (positions, seen["embeddings"][i], seen["tokens"][i], seen["keys"][i])
                merged = np.bincount(main_group[i][a]).argmax() == np.bincount(main_group[i][b]).argmax()
                kind = "one colour" if class_colour(ku) == class_colour(kv) else "two colours"
                rows[kind].append([nearest_centroid(f, a, b) for f in spaces] + [float(merged)])
    names = ("position table", "embeddings", "stage-1 tokens", "assignment keys", "same main stage-1 group")
    return {
        kind: {"pairs": len(r), **dict(zip(names, np.mean(r, axis=0).round(3).tolist(), strict=True))}
        for kind, r in rows.items()
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("weights")
    p.add_argument("--scenes", type=int, default=400)
    p.add_argument("--table", choices=("own", "sincos"), default="own")
    p.add_argument("--norm", type=float, help="row norm of the sincos table (default 0.4 sqrt(D))")
    args = p.parse_args()
    for kind, row in diagnose(args.weights, args.scenes, args.table, args.norm).items():
        print(kind, row)


if __name__ == "__main__":
    main()
