"""Caption tokenization: open_clip's CLIP BPE tokenizer (its vocabulary ships with the package), or a text
tower's own Hugging Face tokenizer behind the same interface."""

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
        self.random_range = (1, self.sot_id - 1)  # word pieces BERT-style masking may draw

    def __call__(self, texts: str | list[str]) -> torch.LongTensor:
        return self._bpe(texts, context_length=self.context_length)

    def decode(self, tokens: torch.Tensor) -> str:
        """The text of one row of token ids (special and padding tokens removed)."""
        ids = [t for t in tokens.tolist() if t not in (self.pad_id, self.sot_id, self.eot_id)]
        return self._bpe.decode(ids).strip()


class PretrainedTokenizer:
    """A Hugging Face tokenizer (WordPiece for BERT) with ``Tokenizer``'s interface.

    Rows are ``[CLS] tokens [SEP]`` then ``pad_id``: the start and end tokens are the tokenizer's own
    (``sot_id``/``eot_id``), and so are its mask token and padding id. ``random_range`` holds the ids of
    ordinary word pieces (after every bracketed special or unused entry), where BERT-style masking draws
    its random replacements.
    """

    def __init__(self, tokenizer, context_length: int):
        if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None or tokenizer.pad_token_id is None:
            raise ValueError(
                "the tokenizer has no [CLS]/[SEP]/[PAD] tokens (an encoder such as BERT has them)"
            )
        self.context_length = context_length
        self._hf = tokenizer
        self.pad_id: int = tokenizer.pad_token_id
        self.sot_id: int = tokenizer.cls_token_id
        self.eot_id: int = tokenizer.sep_token_id
        self.mask_id: int | None = tokenizer.mask_token_id
        self.vocab_size = len(tokenizer)
        specials = [
            i for tok, i in tokenizer.get_vocab().items() if tok.startswith("[") and tok.endswith("]")
        ]
        self.random_range = (max([*specials, *tokenizer.all_special_ids]) + 1, self.vocab_size)

    def __call__(self, texts: str | list[str]) -> torch.LongTensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        encoded = self._hf(
            texts, padding="max_length", truncation=True, max_length=self.context_length, return_tensors="pt"
        )
        return encoded["input_ids"]

    def decode(self, tokens: torch.Tensor) -> str:
        """The text of one row of token ids (special and padding tokens removed)."""
        return self._hf.decode(tokens.tolist(), skip_special_tokens=True).strip()
