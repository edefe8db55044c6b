"""One training forward over every view a recipe's losses need (the module DDP wraps).

Views of one tower go through the encoder as one concatenated batch: one forward pass per view,
no re-encoding. Features are returned unnormalized (every loss normalizes inside); SimCLR heads,
when the losses need them, project the tower's features of both views.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tbpr.models import DualEncoder


class MultiViewForward(nn.Module):
    """``forward(batch)`` -> {'image', 'text', ['image2'], ['text2'], 'ss': {...}, 'logit_scale'}."""

    def __init__(self, model: DualEncoder, ss_towers: list[str]):
        super().__init__()
        self.model = model
        self.ss_towers = list(ss_towers)

    def _encode(self, encode, first: Tensor, second: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if second is None:
            return encode(first, normalize=False), None
        both = encode(torch.cat([first, second]), normalize=False)
        return both[: len(first)], both[len(first) :]

    def forward(self, batch: dict[str, Tensor]) -> dict:
        out: dict = {"logit_scale": self.model.logit_scale, "ss": {}}
        for tower, encode, first, second in (
            ("image", self.model.encode_image, batch["image"], batch.get("image2")),
            ("text", self.model.encode_text, batch["tokens"], batch.get("tokens2")),
        ):
            out[tower], view2 = self._encode(encode, first, second)
            if view2 is not None:
                out[f"{tower}2"] = view2
            if tower in self.ss_towers:
                out["ss"][tower] = self.model.ss_project(tower, out[tower])
                out["ss"][f"{tower}2"] = self.model.ss_project(tower, view2)
        return out
