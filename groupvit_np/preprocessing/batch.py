"""`BatchEncoding`: the dict the tokenizer and processors return, readable as `enc["input_ids"]` or `enc.input_ids`.

It mirrors HF's `BatchEncoding`/`BatchFeature` just enough that `model(**processor(...))` works unchanged.
"""

from __future__ import annotations

from typing import Any


class BatchEncoding(dict):
    """A plain dict whose keys are also attributes (HF's `BatchEncoding` / `BatchFeature`)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}; it has {sorted(self)}") from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict.__repr__(self)})"
