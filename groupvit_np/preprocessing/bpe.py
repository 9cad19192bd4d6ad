"""Byte-level BPE, as in openai/CLIP's `simple_tokenizer.py`: bytes as printable characters, then merges.

A pre-token's UTF-8 bytes become one printable character each (`bytes_to_unicode`), "</w>" marks its last symbol,
and `bpe_merge` joins adjacent symbols, the pair with the lowest merge rank first, until no known pair is left.
"""

from __future__ import annotations

import math


def bytes_to_unicode() -> dict[int, str]:
    """Map each byte value to a printable character, so that BPE can treat any UTF-8 bytes as a string.

    Printable Latin-1 bytes stand for themselves; the other 68 (controls, space, NBSP, soft hyphen) take U+0100
    onwards in byte order. Example: `t[ord("a")] == "a"`, `t[0x00] == "Ā"` (U+0100), `t[0x20] == "Ġ"` (space is
    the 33rd unprintable byte, so U+0100 + 32). The dict's order (printables first) is the vocabulary's order.
    """
    table = {b: chr(b) for b in (*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100))}
    unprintable = [b for b in range(256) if b not in table]
    table.update({b: chr(0x100 + i) for i, b in enumerate(unprintable)})
    return table


def get_pairs(word: tuple[str, ...] | list[str]) -> set[tuple[str, str]]:
    """The set of adjacent symbol pairs in a word: `get_pairs(("l", "o", "w</w>")) == {("l", "o"), ("o", "w</w>")}`."""
    return set(zip(word, word[1:], strict=False))


def bpe_merge(word: list[str], ranks: dict[tuple[str, str], int], steps: list | None = None) -> list[str]:
    """Merge a word's symbols, lowest-ranked pair first, until no adjacent pair is a known merge.

    Every occurrence of the chosen pair is merged in one left-to-right pass. With `ranks = {("l", "o"): 0,
    ("lo", "w</w>"): 1}`, `["l", "o", "w</w>"] -> ["lo", "w</w>"] -> ["low</w>"]`. If `steps` is a list, each
    merge is appended to it as `(pair, rank, word_after)`.
    """
    while len(word) > 1:
        pair = min(get_pairs(word), key=lambda p: ranks.get(p, math.inf))
        if pair not in ranks:
            break
        first, second = pair
        merged, i = [], 0
        while i < len(word):
            if word[i] == first and i + 1 < len(word) and word[i + 1] == second:
                merged.append(first + second)
                i += 2
            else:
                merged.append(word[i])
                i += 1
        word = merged
        if steps is not None:
            steps.append((pair, ranks[pair], tuple(word)))
    return word
