"""HF's slow `CLIPTokenizer` (transformers 4.57.6, ftfy installed) as the reference, and the golden fixture writer.

    python tests/reference_tokenizer.py          # rewrites tests/fixtures/tokenizer_golden.json.gz

There is no Hub here, so HF's vocab.json/merges.txt are written from the shipped `bpe_simple_vocab_16e6.txt.gz`
with the rule OpenAI's and HF's files follow, by `clip_vocab.py`, which shares no code with the package under test
(see tokenizer/README.md). The only file of ours importing transformers.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from tokenizer_corpus import all_texts, batch_cases  # noqa: E402

FIXTURE = HERE / "fixtures" / "tokenizer_golden.json.gz"
MAX_LENGTH = 77  # openai/clip-vit-base-patch32's tokenizer_config.json; HF's constructor alone would use 1e30


def write_hf_files(folder: Path) -> Path:
    """vocab.json + merges.txt as HF's CLIP checkpoints carry them, derived from the gz file by OpenAI's rule."""
    from clip_vocab import write_hf_files as write

    return write(folder)


def hf_tokenizer(folder: Path | None = None):
    """HF's slow CLIPTokenizer over files written by `write_hf_files` (into a temporary folder by default)."""
    import ftfy  # noqa: F401  (HF silently switches to a BERT-style cleaner without it: fail loudly instead)
    from transformers import CLIPTokenizer

    folder = write_hf_files(folder or Path(tempfile.mkdtemp(prefix="clip-hf-")))
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=MAX_LENGTH)
    assert tok.fix_text is not None, "HF's CLIPTokenizer did not pick up ftfy"
    return tok


def hf_from_pretrained(folder: Path):
    """transformers' own loader on a folder (to check that it reads what `save_pretrained` wrote)."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder))


def versions() -> dict[str, str]:
    import ftfy
    import transformers

    return {"transformers": transformers.__version__, "ftfy": ftfy.__version__}


def decode_cases(vocab_size: int) -> list[list[int]]:
    """Id sequences no tokenizer produces: random ids (bytes that are not valid UTF-8), specials in the middle."""
    rng = random.Random(0)
    cases = [[rng.randrange(vocab_size) for _ in range(rng.randrange(1, 12))] for _ in range(40)]
    cases += [[49406, 320, 2368, 49407, 49407, 49407], [320, 49407, 2368], [49406], [49407, 49406], [], [256, 257]]
    cases += [[i] for i in range(0, 512, 37)]  # single bytes, with and without "</w>"
    return cases


def hf_call(tok, texts, kwargs) -> dict:
    """HF's __call__ as plain lists, or the error type when HF raises."""
    try:
        enc = tok(texts, **kwargs)
    except Exception as err:  # recorded, so that ours must raise too
        return {"error": type(err).__name__}
    return {k: enc[k] for k in ("input_ids", "attention_mask")}


def golden(tok) -> dict:
    """Everything the default test compares: per-text tokens/ids/decodes, batch outputs, odd decodes."""
    texts = all_texts()
    rows = []
    for text in texts:
        ids = tok.encode(text)
        rows.append({
            "tokens": tok.tokenize(text), "ids": ids, "decode": tok.decode(ids),
            "decode_skip": tok.decode(ids, skip_special_tokens=True),
        })  # fmt: skip
    batches = [{"texts": t, "kwargs": k, **hf_call(tok, t, k)} for t, k in batch_cases()]
    decodes = [{"ids": ids, "decode": tok.decode(ids), "decode_skip": tok.decode(ids, skip_special_tokens=True)}
               for ids in decode_cases(tok.vocab_size)]  # fmt: skip
    return {"versions": versions(), "texts": texts, "rows": rows, "batches": batches, "decodes": decodes}


def generate(fixtures_dir: Path = FIXTURE.parent) -> Path:
    """Write the golden fixture (gzip JSON, written atomically) and return its path."""
    data = json.dumps(golden(hf_tokenizer()), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    path = Path(fixtures_dir) / FIXTURE.name
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))  # mtime=0: same bytes on every run
    os.replace(tmp, path)
    return path


if __name__ == "__main__":
    out = generate()
    print(f"wrote {out} ({out.stat().st_size / 1024:.1f} KiB)")
