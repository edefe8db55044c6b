"""Caption tokenization with open_clip's CLIP BPE tokenizer (its vocabulary ships with the package)."""

from __future__ import annotations

import torch
from open_clip.tokenizer import SimpleTokenizer


class Tokenizer:
    """Captions -> LongTensor [N, context_length]: <|startoftext|> tokens <|endoftext|> then zeros.

    Captions longer than the context are truncated and still end with the end token.
    """

    pad_id = 0

    def __init__(self, context_length: int = 77):
        self.context_length = context_length
        self._bpe = SimpleTokenizer(context_length=context_length)
        self.sot_id: int = self._bpe.sot_token_id
        self.eot_id: int = self._bpe.eot_token_id
        self.mask_id: int | None = self._bpe.encoder.get("<|mask|>")  # not in the standard vocabulary
        self.vocab_size = len(self._bpe.encoder)

    def __call__(self, texts: str | list[str]) -> torch.LongTensor:
        return self._bpe(texts, context_length=self.context_length)

    def decode(self, tokens: torch.Tensor) -> str:
        """The text of one row of token ids (special and padding tokens removed)."""
        ids = [t for t in tokens.tolist() if t not in (self.pad_id, self.sot_id, self.eot_id)]
        return self._bpe.decode(ids).strip()
