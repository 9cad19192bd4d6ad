"""`BatchEncoding`: the dict the tokenizer and processors return, readable as `enc["input_ids"]` or `enc.input_ids`.

It mirrors HF's `BatchEncoding`/`BatchFeature` just enough that `model(**processor(...))` works unchanged.
`pad_rows` makes token rows one batch by HF's rules: padded on the right, with a mask of the real tokens.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class BatchEncoding(dict):
    """A plain dict whose keys are also attributes (HF's `BatchEncoding` / `BatchFeature`)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}; it has {sorted(self)}") from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict.__repr__(self)})"


def pad_rows(rows: list[list[int]], width: int, pad_id: int, attention_mask: bool, as_array: bool, single: bool
             ) -> BatchEncoding:  # fmt: skip
    """Token rows padded on the right to `width` (shorter rows only) -> input_ids (+ attention_mask: 1 for a token,
    0 for padding). `as_array`: int64 arrays [T, L], which needs rows of equal length; else lists, one row's
    without its batch axis when `single`."""
    enc = {"input_ids": [r + [pad_id] * (width - len(r)) for r in rows]}
    if attention_mask:
        enc["attention_mask"] = [[1] * len(r) + [0] * (width - len(r)) for r in rows]
    if as_array:
        if len({len(r) for r in enc["input_ids"]}) > 1:
            raise ValueError("texts of different token lengths cannot form one array: pass padding=True "
                             "(and truncation=True for texts over 77 tokens), or return_tensors=None")  # fmt: skip
        enc = {k: np.array(v, dtype=np.int64).reshape(len(v), -1 if v else 0) for k, v in enc.items()}
    elif single:
        enc = {k: v[0] for k, v in enc.items()}
    return BatchEncoding(enc)
