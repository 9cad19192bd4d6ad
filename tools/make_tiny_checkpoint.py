"""Write weights/groupvit-tiny-random/: a tiny random GroupViT with CLIP's real 49408-token vocabulary.

It exists for smoke runs (CLI, notebooks, end-to-end tests): real shapes everywhere that matters to the code
paths (224 px, patch 16, 64 -> 8 groups, CLIP ids), tiny widths. It recognises nothing. Reproduce with
    pip install -e '.[reference]' && python tools/make_tiny_checkpoint.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from transformers import GroupViTConfig, GroupViTModel

SEED = 0
OUT = Path(__file__).resolve().parents[1] / "weights" / "groupvit-tiny-random"


def main() -> None:
    torch.manual_seed(SEED)
    config = GroupViTConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4),
        vision_config=dict(hidden_size=32, intermediate_size=64, depths=[1, 1, 1], num_hidden_layers=3,
                           num_attention_heads=4),
        projection_dim=32,
        projection_intermediate_dim=64,
    )  # fmt: skip
    model = GroupViTModel(config).eval()
    with torch.no_grad():  # HF zero-inits these; random values make the grouping non-degenerate
        for stage in model.vision_model.encoder.stages:
            if stage.group_token is not None:
                stage.group_token.normal_(std=0.02)
        model.vision_model.embeddings.position_embeddings.normal_(std=0.02)
    model.half().save_pretrained(OUT, safe_serialization=True)
    # Tokenizer and preprocessor files, as a Hub repo has them, written by our own CLIPProcessor (HF reads them);
    # vocab.json and merges.txt then come from tests/clip_vocab.py, which shares no code with the package, so the
    # tests that hand these files to transformers do not check the package against its own output.
    from groupvit_np import CLIPProcessor

    CLIPProcessor.from_pretrained().save_pretrained(OUT)
    sys.path.insert(0, str(OUT.parents[1] / "tests"))
    from clip_vocab import write_hf_files

    write_hf_files(OUT)
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
