"""CLIP's byte-level BPE tokenizer, giving the same tokens, ids and decoded text as HF 4.57.6's slow `CLIPTokenizer`.

Steps (`trace()` shows each one): split out special tokens written in the text, clean each piece (ftfy, collapse
whitespace, strip, lowercase), pre-tokenise with CLIP's regex, map UTF-8 bytes to printable characters, apply BPE
merges in rank order with "</w>" marking the end of a word (`bpe`), then look up the ids (`vocab`). Contract:
`str | list[str]` -> `BatchEncoding(input_ids, attention_mask)`, with [L] or [T, L] ids padded on the right with
49407 (`batch.pad_rows`).
"""

from __future__ import annotations

import os
from pathlib import Path

import ftfy
import numpy as np
import regex

from .batch import BatchEncoding, pad_rows
from .bpe import bpe_merge, bytes_to_unicode
from .vocab import BOS, EOS, read_bpe_gz, read_hf_folder, vocab_from_merges, write_hf_folder

# CLIP's pre-tokeniser: special tokens | English contractions | letter runs | one digit | other non-space runs.
# HF compiles it with IGNORECASE; the flag matters even on lowercased text (e.g. "'ſ" still matches 's).
PATTERN = r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+"


def _kinds(items: list) -> str:
    """The types in a list that should hold only strings, for an error message: "str, NoneType"."""
    return ", ".join(dict.fromkeys(type(t).__name__ for t in items))


class CLIPTokenizer:
    """CLIP's tokenizer (HF `CLIPTokenizer`, slow). `vocab=None` derives ids from `merges`; both None: shipped file."""

    model_input_names = ("input_ids", "attention_mask")

    def __init__(self, vocab=None, merges=None, *, model_max_length: int = 77, clean_up_tokenization_spaces=False):
        if merges is None:
            if vocab is not None:
                raise ValueError("CLIPTokenizer needs `merges` when `vocab` is given")
            from .._resources import data_file

            merges = read_bpe_gz(data_file("tokenizer", "bpe_simple_vocab_16e6.txt.gz"))
        self.encoder = dict(vocab) if vocab is not None else vocab_from_merges(merges)
        missing = [t for t in (BOS, EOS) if t not in self.encoder]
        if missing:
            raise ValueError(f"the vocabulary lacks CLIP's special tokens {missing}")
        self.decoder = {i: t for t, i in self.encoder.items()}
        self.bpe_ranks = {tuple(m): rank for rank, m in enumerate(merges)}
        self.model_max_length = model_max_length
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self.bos_token, self.eos_token, self.pad_token, self.unk_token = BOS, EOS, EOS, EOS
        self.bos_token_id = self.encoder[BOS]
        self.eos_token_id = self.pad_token_id = self.unk_token_id = self.encoder[EOS]
        self.all_special_ids = [self.bos_token_id, self.eos_token_id]
        self.byte_encoder = bytes_to_unicode()
        self._to_bytes = {ord(c): b for b, c in self.byte_encoder.items()}  # both are str.translate tables
        self._pattern = regex.compile(PATTERN, regex.IGNORECASE)
        self._whitespace = regex.compile(r"\s+")
        self._specials = regex.compile(r"(<\|startoftext\|>|<\|endoftext\|>)")  # case-sensitive, as HF's trie
        # The BPE memo, pre-token -> (pieces, ids); seeded so that special tokens the regex finds stay whole.
        self._memo = {t: ((t,), (self.encoder[t],)) for t in (BOS, EOS)}

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def __len__(self) -> int:
        """The vocabulary size with added tokens, as HF's `len(tokenizer)` (CLIP adds none beyond BOS/EOS)."""
        return len(self.encoder)

    def get_vocab(self) -> dict[str, int]:
        """A copy of the token -> id mapping, as HF's `get_vocab()`."""
        return dict(self.encoder)

    def words_not_in_vocab(self, text: str) -> list[str]:
        """The pre-tokens of `text` (after cleaning) that BPE cannot merge into one vocabulary token, in order.

        With CLIP's 49k-token vocabulary these are rare words, which CLIP reads fine as pieces; with a small word
        vocabulary (the demo checkpoint's) they are words the model never saw: "a cat" -> ["cat"].
        """
        return [w for w in self._pattern.findall(self.clean(text)) if len(self._bpe(w)[0]) > 1]

    # --- loading and saving ------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, *, revision: str | None = None,
                        **kwargs) -> CLIPTokenizer:  # fmt: skip
        """None: the shipped CLIP file; a .gz file (or a folder holding one); a folder with HF's vocab.json +
        merges.txt (+ tokenizer_config.json / special_tokens_map.json); or a Hub repo id at `revision` (the
        Hugging Face cache first, downloading only with the `hub` extra)."""
        if path is not None:
            from ..hub import resolve

            path = resolve(path, revision, kind="tokenizer")
            if (path / "bpe_simple_vocab_16e6.txt.gz").is_file():
                path = path / "bpe_simple_vocab_16e6.txt.gz"
        if path is None or str(path).endswith(".gz"):
            return cls(None, read_bpe_gz(path) if path else None, **kwargs)
        vocab, merges, config = read_hf_folder(path)
        for key in ("model_max_length", "clean_up_tokenization_spaces"):
            if key in config:
                kwargs.setdefault(key, config[key])
        return cls(vocab, merges, **kwargs)

    def save_pretrained(self, directory: str | os.PathLike) -> tuple[Path, ...]:
        """Write HF's vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json."""
        options = {"model_max_length": self.model_max_length,
                   "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces}  # fmt: skip
        return write_hf_folder(directory, self.encoder, self.bpe_ranks, options)

    # --- text -> tokens ----------------------------------------------------------------------------------------
    def clean(self, text: str) -> str:
        """HF's cleaning when ftfy is installed: fix mojibake/entities/controls, collapse whitespace, lowercase."""
        return self._whitespace.sub(" ", ftfy.fix_text(text)).strip().lower()

    def _parts(self, text: str) -> list[str]:
        # HF cuts special tokens out of the raw text before cleaning (case-sensitive, like its trie), so ftfy and
        # the regex see the pieces between them separately. Odd positions hold the special tokens.
        return self._specials.split(text) if "<|" in text else [text]

    def _symbols(self, word: str) -> list[str]:
        """A pre-token as BPE's starting symbols: one printable character per UTF-8 byte, "</w>" on the last."""
        chars = word.encode("utf-8").decode("latin-1").translate(self.byte_encoder)  # Latin-1 text: char i is byte i
        return [*chars[:-1], chars[-1] + "</w>"]

    def _bpe(self, word: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """One pre-token -> its BPE pieces and their ids, memoised on the instance."""
        found = self._memo.get(word)
        if found is None:
            pieces = tuple(bpe_merge(self._symbols(word), self.bpe_ranks))
            found = self._memo[word] = (pieces, tuple(self.encoder.get(p, self.unk_token_id) for p in pieces))
        return found

    def _words(self, text: str):
        for i, part in enumerate(self._parts(text)):
            if i % 2:
                yield self._memo[part]
            elif part:
                yield from map(self._bpe, self._pattern.findall(self.clean(part)))

    def tokenize(self, text: str) -> list[str]:
        """Text -> BPE pieces, e.g. "a photo" -> ["a</w>", "photo</w>"]."""
        return [piece for pieces, _ in self._words(text) for piece in pieces]

    def _ids(self, text: str) -> list[int]:
        return [i for _, ids in self._words(text) for i in ids]

    def encode(self, text: str, add_special_tokens: bool = True, **kwargs) -> list[int]:
        """Text -> ids, with BOS/EOS by default; `kwargs` are `__call__`'s (truncation, max_length, padding)."""
        return self(text, add_special_tokens=add_special_tokens, **kwargs)["input_ids"]

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | list[int]:
        """Unknown tokens map to the unk id 49407, as in HF."""
        if isinstance(tokens, str):
            return self.encoder.get(tokens, self.unk_token_id)
        return [self.encoder.get(t, self.unk_token_id) for t in tokens]

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False) -> str | list[str]:
        """Ids -> tokens; an id outside the vocabulary raises (HF would give None and fail later)."""
        if isinstance(ids, (int, np.integer)):
            return self._token(int(ids))
        skip = set(self.all_special_ids) if skip_special_tokens else ()
        return [self._token(int(i)) for i in ids if int(i) not in skip]

    def _token(self, i: int) -> str:
        if i not in self.decoder:
            raise ValueError(f"token id {i} is outside the vocabulary (0..{self.vocab_size - 1})")
        return self.decoder[i]

    # --- ids -> text -------------------------------------------------------------------------------------------
    def decode(self, ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None) -> str:
        """Ids -> text: bytes back to UTF-8 (bad bytes become U+FFFD), each "</w>" a space, then strip.

        Special tokens come out as their text, glued to their neighbours as in HF: "<|startoftext|>a cat <|endoftext|>".
        """
        tokens = self.convert_ids_to_tokens(np.asarray(ids).reshape(-1).tolist(), skip_special_tokens)
        raw = "".join(tokens).translate(self._to_bytes).encode("latin-1")
        text = raw.decode("utf-8", errors="replace").replace("</w>", " ").strip()
        if self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces:
            for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                                  (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):  # fmt: skip
                text = text.replace(before, after)
        return text

    def batch_decode(self, sequences, **kwargs) -> list[str]:
        return [self.decode(ids, **kwargs) for ids in sequences]

    # --- batches -----------------------------------------------------------------------------------------------
    def __call__(self, text, *, padding=False, truncation=None, max_length=None, return_tensors=None,
                 add_special_tokens=True, return_attention_mask=True) -> BatchEncoding:  # fmt: skip
        """A text or a list of texts -> `input_ids` (+ `attention_mask`), by HF's padding and truncation rules.

        padding: False, True/"longest" (to the longest in the batch) or "max_length" (to max_length, default 77).
        truncation: None/False or True; None with a max_length and no padding also truncates (HF's legacy rule).
        return_tensors="np": int64 arrays [T, L] ([1, L] for one text), which needs rows of equal length.
        """
        modes = {False: None, "do_not_pad": None, True: "longest", "longest": "longest", "max_length": "max_length"}
        if padding not in modes or return_tensors not in (None, "np"):
            raise ValueError(f"unsupported padding={padding!r} or return_tensors={return_tensors!r}")
        if truncation not in (None, False, True, "do_not_truncate", "longest_first", "only_first"):
            raise ValueError(f"unsupported truncation={truncation!r} (single sequences only)")
        legacy = truncation is None and max_length is not None and padding is False
        truncate = legacy or truncation not in (None, False, "do_not_truncate")
        if max_length is None and (truncate or modes[padding] == "max_length"):
            max_length = self.model_max_length
        texts = [text] if isinstance(text, str) else list(text) if isinstance(text, (list, tuple)) else None
        if texts is None or not all(isinstance(t, str) for t in texts):
            got = type(text).__name__ if texts is None else f"a list holding {_kinds(texts)}"
            raise TypeError(f"CLIPTokenizer takes a string or a list of strings, got {got}")
        rows, n_special = [], 2 if add_special_tokens else 0
        for t in texts:
            ids = self._ids(t)
            excess = len(ids) + n_special - max_length if truncate else 0
            if 0 < excess < len(ids):  # HF keeps a row whole when it cannot cut enough (max_length <= 2)
                ids = ids[:-excess]
            rows.append([self.bos_token_id, *ids, self.eos_token_id] if add_special_tokens else ids)
        mode = modes[padding]
        width = max(map(len, rows), default=0) if mode == "longest" else max_length if mode == "max_length" else 0
        return pad_rows(rows, width, self.pad_token_id, return_attention_mask, return_tensors == "np",
                        single=isinstance(text, str))  # fmt: skip

    # --- teaching ----------------------------------------------------------------------------------------------
    def trace(self, text: str) -> dict:
        """Show the work for one text: cleaned parts, pre-tokens, their byte-mapped form, merges with ranks, ids.

        `merges[k]` lists `(pair, rank, word_after)` for `pre_tokens[k]` in the order BPE applied them.
        """
        out = {"text": text, "cleaned": [], "pre_tokens": [], "byte_mapped": [], "merges": [], "tokens": []}
        for i, part in enumerate(self._parts(text)):
            if not part:
                continue
            cleaned = part if i % 2 else self.clean(part)
            out["cleaned"].append(cleaned)
            for word in [part] if i % 2 else self._pattern.findall(cleaned):
                steps = []
                if word in (BOS, EOS):  # kept whole, as special tokens
                    mapped, pieces = word, [word]
                else:
                    symbols = self._symbols(word)
                    mapped, pieces = "".join(symbols)[:-4], bpe_merge(symbols, self.bpe_ranks, steps)
                out["pre_tokens"].append(word)
                out["byte_mapped"].append(mapped)
                out["merges"].append(steps)
                out["tokens"].extend(pieces)
        out["ids"] = [self.bos_token_id, *self.convert_tokens_to_ids(out["tokens"]), self.eos_token_id]
        return out
