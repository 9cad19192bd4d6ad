"""`CLIPProcessor`: CLIP's tokenizer and image processor behind one call, as HF's `CLIPProcessor`.

`processor(text=[...], images=[...], padding=True)` gives one BatchEncoding with `input_ids` and `attention_mask`
[T, L] from the tokenizer and `pixel_values` [B, 3, 224, 224] from the image processor, ready for `model(**inputs)`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .batch import BatchEncoding
from .image_processor import CLIPImageProcessor


def _default_tokenizer() -> Any:
    from .tokenizer import CLIPTokenizer  # imported late: images alone never need the vocabulary

    return CLIPTokenizer.from_pretrained()


class CLIPProcessor:
    """HF's `CLIPProcessor`: `__call__(text=None, images=None)` -> BatchEncoding(input_ids, attention_mask,
    pixel_values). Without a tokenizer given, the shipped CLIP vocabulary is read the first time text comes."""

    def __init__(self, tokenizer: Any = None, image_processor: CLIPImageProcessor | None = None) -> None:
        self._tokenizer = tokenizer
        self.image_processor = image_processor if image_processor is not None else CLIPImageProcessor()

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = _default_tokenizer()
        return self._tokenizer

    def __call__(
        self,
        text: str | list[str] | None = None,
        images: Any = None,
        *,
        return_tensors: str | None = "np",
        padding: bool | str = False,
        truncation: bool = False,
        max_length: int | None = None,
    ) -> BatchEncoding:
        """Text -> input_ids, attention_mask; images -> pixel_values; both merged (HF's keyword arguments)."""
        if text is None and images is None:
            raise ValueError("CLIPProcessor needs text, images or both")
        texts = [text] if isinstance(text, str) else text
        if texts is not None and not (isinstance(texts, (list, tuple)) and all(isinstance(t, str) for t in texts)):
            # HF 4.57 takes images first when positional; ours takes text first, so say which is which
            raise TypeError(f"text must be a string or a list of strings, got {type(text).__name__}; "
                            "pass pictures as images=...")  # fmt: skip
        out = BatchEncoding()
        if text is not None:
            out.update(
                self.tokenizer(
                    text, padding=padding, truncation=truncation, max_length=max_length, return_tensors=return_tensors
                )
            )
        if images is not None:
            out.update(self.image_processor(images, return_tensors=return_tensors))
        return out

    def decode(self, ids: Any, **kwargs: Any) -> str:
        """The tokenizer's `decode` (HF's processor forwards it the same way)."""
        return self.tokenizer.decode(ids, **kwargs)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, *, revision: str | None = None) -> CLIPProcessor:
        """Tokenizer files and `preprocessor_config.json` from a folder or a Hub repo id at `revision` (the Hugging
        Face cache first, downloading only with the `hub` extra); None gives the shipped CLIP defaults."""
        from .tokenizer import CLIPTokenizer

        tokenizer = CLIPTokenizer.from_pretrained(path, revision=revision) if path is not None else None
        return cls(tokenizer, CLIPImageProcessor.from_pretrained(path, revision=revision))

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write the image processor's config and the tokenizer's files in one folder that HF can read."""
        self.image_processor.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        return Path(directory)
