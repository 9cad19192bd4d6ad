"""CLIP's vocabulary files: OpenAI's gzipped merges list, and HF's vocab.json + merges.txt with their configs.

The merges define the vocabulary: 256 byte symbols, the same with "</w>", one token per merge, BOS and EOS
(`vocab_from_merges`). An HF folder states the ids itself (vocab.json) and names its special tokens, which must be
CLIP's (`read_hf_folder`); `write_hf_folder` writes the four files HF's slow tokenizer reads.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

from .bpe import bytes_to_unicode

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
N_MERGES = 49152 - 256 - 2  # CLIP keeps this many merges: 49152 BPE tokens, less 256 bytes and 2 special tokens
SPECIAL_TOKENS = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}


def parse_merges(text: str) -> list[tuple[str, str]]:
    """The merges CLIP uses from a merges file's text: the first N_MERGES lines after the header line."""
    return [tuple(line.split()) for line in text.strip().split("\n")[1 : N_MERGES + 1]]


def read_bpe_gz(path: str | os.PathLike) -> list[tuple[str, str]]:
    """CLIP's merges from OpenAI's `bpe_simple_vocab_16e6.txt.gz` (its header line is odd; it is skipped)."""
    return parse_merges(gzip.decompress(Path(path).read_bytes()).decode("utf-8"))


def vocab_from_merges(merges: list[tuple[str, str]]) -> dict[str, int]:
    """OpenAI's vocabulary order: 256 bytes, the same + "</w>", one token per merge, then BOS and EOS."""
    chars = list(bytes_to_unicode().values())
    tokens = [*chars, *(c + "</w>" for c in chars), *("".join(m) for m in merges), BOS, EOS]
    return {token: i for i, token in enumerate(tokens)}


def read_hf_folder(folder: str | os.PathLike) -> tuple[dict[str, int], list[tuple[str, str]], dict[str, Any]]:
    """HF's vocab.json and merges.txt, and the options of its tokenizer_config.json / special_tokens_map.json.

    Raises FileNotFoundError for a folder without the two files, ValueError for special tokens that are not CLIP's.
    """
    folder = Path(folder)
    if not (folder / "vocab.json").is_file() or not (folder / "merges.txt").is_file():
        raise FileNotFoundError(f"{folder} is not a folder with vocab.json and merges.txt")
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    merges = parse_merges((folder / "merges.txt").read_text(encoding="utf-8"))
    config = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if (folder / name).is_file():
            config.update(json.loads((folder / name).read_text(encoding="utf-8")))
    for key, expected in (("bos_token", BOS), ("eos_token", EOS), ("pad_token", EOS), ("unk_token", EOS)):
        value = config.get(key, expected)
        if (value["content"] if isinstance(value, dict) else value) != expected:  # a str or an AddedToken dict
            raise ValueError(f"{folder}: {key}={config[key]!r} is not CLIP's {expected!r}; not supported")
    return vocab, merges, config


def write_hf_folder(
    directory: str | os.PathLike, encoder: dict[str, int], ranks: dict[tuple[str, str], int], options: dict[str, Any]
) -> tuple[Path, ...]:
    """Write HF's vocab.json, merges.txt (in rank order), tokenizer_config.json (with `options`) and
    special_tokens_map.json, each atomically."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": options["model_max_length"], "errors": "replace",
              "clean_up_tokenization_spaces": options["clean_up_tokenization_spaces"], **SPECIAL_TOKENS}  # fmt: skip
    merges = sorted(ranks, key=ranks.get)
    files = {
        "vocab.json": json.dumps(encoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
        "merges.txt": "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
        "tokenizer_config.json": json.dumps(config, indent=2) + "\n",
        "special_tokens_map.json": json.dumps(SPECIAL_TOKENS, indent=2) + "\n",
    }
    for name, text in files.items():
        _write_atomic(folder / name, text)
    return tuple(folder / name for name in files)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
