"""CLIP's `vocab.json` and `merges.txt` built from OpenAI's merges file, sharing no code with `groupvit_np`.

The reference data the tests give transformers (and the shipped tiny checkpoint's tokenizer files) come from here,
so that a mistake in the vocabulary rule of `groupvit_np.preprocessing` cannot be copied into the reference it is
checked against. The rules are CLIP's published ones (openai/CLIP `simple_tokenizer.py`), derived here in another way:

- byte -> character: a Latin-1 byte that shows as a visible character (`str.isprintable()` and not a space) stands
  for itself; the other 68 (controls, space, DEL, NBSP, soft hyphen) take U+0100, U+0101, ... in byte order;
- the vocabulary: the 256 characters (visible ones first, in byte order, then the shifted ones), the same with
  "</w>", one token per merge line in order (the first 49152 - 256 - 2 lines after the header), then the two
  specials; a merge's rank is its line number.

`PUBLIC_IDS` are ids stated in public sources (HF's CLIP documentation and tests, OpenAI's CLIP), for checking.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

GZ = Path(__file__).resolve().parents[1] / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2  # CLIP's context of 49152 tokens: bytes, bytes + </w>, merges, then the 2 specials

# Ids a reader can look up outside this repository: `CLIPTokenizer` docs/tests in transformers
# ("a photo of a cat" -> [49406, 320, 1125, 539, 320, 2368, 49407]) and CLIP's vocabulary size and specials.
PUBLIC_IDS = {"<|startoftext|>": 49406, "<|endoftext|>": 49407, "a</w>": 320, "photo</w>": 1125, "of</w>": 539,
              "cat</w>": 2368, "dog</w>": 1929, "!": 0}  # fmt: skip
PUBLIC_VOCAB_SIZE = 49408
A_PHOTO_OF_A_CAT = [49406, 320, 1125, 539, 320, 2368, 49407]


def byte_alphabet() -> list[tuple[int, str]]:
    """(byte, character) in vocabulary order: visible Latin-1 bytes as themselves, then the rest shifted."""
    visible = [b for b in range(256) if chr(b).isprintable() and not chr(b).isspace()]
    hidden = [b for b in range(256) if b not in visible]
    return [(b, chr(b)) for b in visible] + [(b, chr(256 + i)) for i, b in enumerate(hidden)]


def clip_merges(gz: Path = GZ) -> list[str]:
    """The merge lines CLIP uses ("i n", ...), header dropped."""
    lines = gzip.decompress(gz.read_bytes()).decode("utf-8").split("\n")
    return lines[1 : 1 + N_MERGES]


def clip_vocab(merges: list[str]) -> dict[str, int]:
    chars = [c for _, c in byte_alphabet()]
    tokens = chars + [c + "</w>" for c in chars] + [line.replace(" ", "") for line in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}


def hf_files() -> dict[str, str]:
    """The text of HF's vocab.json and merges.txt, in the layout transformers' `save_pretrained` writes."""
    merges = clip_merges()
    return {
        "vocab.json": json.dumps(clip_vocab(merges), indent=2, sort_keys=True, ensure_ascii=False) + "\n",
        "merges.txt": "#version: 0.2\n" + "".join(line + "\n" for line in merges),
    }


def write_hf_files(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in hf_files().items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder
