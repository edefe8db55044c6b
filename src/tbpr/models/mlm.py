"""The cross-modal masked-language-modelling head of IRRA, an option of MLLM4Text-ReID's Table 2.

The masked caption's final token features attend to its image's final token features (one
cross-attention), pass through ``depth`` transformer blocks, and an MLP predicts every token's vocabulary
id. Both inputs are token features already mapped into the joint space (``DualEncoder.project_*_tokens``),
as in IRRA. Unlike IRRA, the vocabulary MLP runs only at the positions asked for (the masked ones):
the [tokens, vocab] logits of a whole batch would dominate the step's time and memory.
"""

from __future__ import annotations

from open_clip.transformer import Transformer
from torch import Tensor, nn


class CrossModalMLMHead(nn.Module):
    """``forward(text_tokens [B, L, D], image_tokens [B, 1+P, D], positions)`` -> vocabulary logits.

    ``positions``: bool [B, L]; the logits are [positions.sum(), vocab] in row-major order of the True
    entries. Without ``positions``: [B, L, vocab].
    """

    def __init__(self, width: int, vocab_size: int, depth: int = 4):
        super().__init__()
        heads = max(1, width // 64)
        self.ln_text = nn.LayerNorm(width)
        self.ln_image = nn.LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.blocks = Transformer(width, depth, heads, batch_first=True)
        self.ln_post = nn.LayerNorm(width)
        self.predict = nn.Sequential(
            nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width), nn.Linear(width, vocab_size)
        )

    def forward(self, text_tokens: Tensor, image_tokens: Tensor, positions: Tensor | None = None) -> Tensor:
        query = self.ln_text(text_tokens)
        memory = self.ln_image(image_tokens.to(query.dtype))
        x, _ = self.cross_attn(query, memory, memory, need_weights=False)
        x = self.ln_post(self.blocks(x))
        return self.predict(x if positions is None else x[positions])
