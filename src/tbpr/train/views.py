"""One training forward over every view a recipe's losses need (the module DDP wraps).

Views of one tower go through the encoder as one concatenated batch: one forward pass per view,
no re-encoding. Features are returned unnormalized (every loss normalizes inside); SimCLR heads,
when the losses need them, project the tower's features of both views. With ``nam_layers`` and a
"tokens_full" batch entry (the unmasked captions), it also returns "nam_max_sim" (``tbpr.train.nam``);
with ``mlm`` and "mlm_labels" (``tbpr.losses.mlm``), "mlm_logits" [masked tokens, vocab] at the
labelled positions, from the last blocks' token outputs (the MLM head): of the same forward, or, when
the batch has "tokens_mlm" (``masking.scope: mlm``, IRRA), of a separate text forward of those masked
captions, while "text" stays the features of the unmasked "tokens". With ``id_head``, "id_logits"
{'image', 'text'}: the ID classifier on both towers' features.
With "tokens_orig" and "replaced" (PDG's approximate text, for L_c), the original captions of the
replaced rows only are encoded, in the text tower's one forward, and returned as "text_orig" [N, D] with
zero rows where nothing was replaced (the loss masks them).
With ``model.tse``, "image_tse" / "text_tse" are RDE's second embedding of the first image / text view.
With ``mixup_lam`` and "mix_rows"/"mix_partners" (PDG's feature-level mixup, ``tbpr.train.mixup``), each
tower's one forward also runs one extra row per mixed sample from the second block on, on the mixture of
the two samples' first-block outputs (``tbpr.models.mixup``), returned as "image_mix"/"text_mix" [N, D]
(zero rows where a sample was not mixed) with "mixed" [N] bool.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from tbpr.losses.mlm import IGNORE
from tbpr.models import DualEncoder
from tbpr.models.mixup import mix_token_rows, mixed_after_first_block
from tbpr.train.nam import max_patch_similarity


class MultiViewForward(nn.Module):
    """``forward(batch)`` -> {'image', 'text', ['image2'], ['text2'], 'ss', 'logit_scale', ['nam_max_sim'],
    ['mlm_logits'], ['id_logits'], ['text_orig'], ['image_tse', 'text_tse'], ['image_mix', 'text_mix', 'mixed']}."""

    def __init__(
        self,
        model: DualEncoder,
        ss_towers: list[str],
        nam_layers: tuple[int, int] | None = None,
        mlm: bool = False,
        id_head: bool = False,
        mixup_lam: float | None = None,
    ):
        super().__init__()
        self.model = model
        self.ss_towers = list(ss_towers)
        self.nam_layers = nam_layers
        self.mlm = mlm
        self.id_head = id_head
        self.mixup_lam = mixup_lam

    @staticmethod
    def _encode(features, *views: Tensor | None) -> tuple[list[Tensor | None], Tensor | None]:
        """Each given view's global features, from one forward over their concatenation (None stays None),
        and the TSE features of the first view (None without ``model.tse``)."""
        given = [v for v in views if v is not None]
        feats, tse = features(torch.cat(given) if len(given) > 1 else given[0], rows=len(given[0]))
        out, start = [], 0
        for v in views:
            out.append(None if v is None else feats[start : start + len(v)])
            start += 0 if v is None else len(v)
        return out, tse

    def forward(self, batch: dict[str, Tensor]) -> dict:
        out: dict = {"logit_scale": self.model.logit_scale, "ss": {}}
        nam = self.nam_layers is not None and "tokens_full" in batch
        last_image, last_text = len(self.model.image_blocks) - 1, len(self.model.text_blocks) - 1
        image_layers = [self.nam_layers[0]] if nam else []
        image_layers += [last_image] if self.mlm else []
        with self.model.capture_tokens(image_layers, [last_text] if self.mlm else []) as captured:
            self._towers(batch, out)
            if self.mlm and "tokens_mlm" in batch:  # the last call: the text hook keeps its tokens
                self.model.global_text(batch["tokens_mlm"])
        # the hooks kept each tower's first view (a second view runs in the same call, after it)
        images, captions = len(batch["image"]), len(batch["tokens"])
        if nam:
            image_tokens = captured["image"][self.nam_layers[0]][:images]
            out["nam_max_sim"] = max_patch_similarity(
                self.model, image_tokens, batch["tokens_full"], self.nam_layers[1]
            )
        if self.mlm:
            text_tokens = captured["text"][last_text][:captions]
            positions = batch["mlm_labels"][:, : text_tokens.shape[1]] != IGNORE
            out["mlm_logits"] = self.model.predict_masked(
                text_tokens, captured["image"][last_image][:images], positions
            )
        if self.id_head:
            out["id_logits"] = {tower: self.model.classify(out[tower]) for tower in ("image", "text")}
        return out

    def _towers(self, batch: dict[str, Tensor], out: dict) -> None:
        replaced = batch.get("replaced")  # with "tokens_orig": encode the original of each replaced caption
        originals = None if replaced is None else batch["tokens_orig"][replaced]
        mix = self.mixup_lam is not None
        rows, partners = (batch["mix_rows"], batch["mix_partners"]) if mix else (None, None)
        mixing = mix and len(rows) > 0
        pad_id = self.model.tokenizer.pad_id
        towers = (
            (
                "image",
                self.model.image_features,
                self.model.image_blocks,
                (batch["image"], batch.get("image2")),
            ),
            (
                "text",
                self.model.text_features,
                self.model.text_blocks,
                (batch["tokens"], batch.get("tokens2"), originals),
            ),
        )
        for tower, features, blocks, views in towers:
            extra, mixer = None, contextlib.nullcontext()
            if mixing:  # extra rows at the end; they leave the first block as the mixtures
                first = views[0]
                extra = first[rows] if tower == "image" else mix_token_rows(first, rows, partners, pad_id)
                start = sum(len(v) for v in views if v is not None)
                mixer = mixed_after_first_block(blocks, start, rows, partners, self.mixup_lam)
            with mixer:
                (out[tower], view2, *more), tse = self._encode(features, *views, extra)
            if tse is not None:
                out[f"{tower}_tse"] = tse
            if mix:  # zeros where a sample was not mixed, so every rank gathers [N, D]
                feats, zeros = more.pop(), out[tower].new_zeros(out[tower].shape)
                out[f"{tower}_mix"] = zeros if feats is None else zeros.index_put((rows,), feats)
            if view2 is not None:
                out[f"{tower}2"] = view2
            if tower in self.ss_towers:
                out["ss"][tower] = self.model.ss_project(tower, out[tower])
                out["ss"][f"{tower}2"] = self.model.ss_project(tower, view2)
        if mix:
            out["mixed"] = torch.zeros(len(batch["image"]), dtype=torch.bool, device=batch["image"].device)
            out["mixed"][rows] = True
        if replaced is not None:  # zeros in the rows not replaced, so every rank gathers [N, D]
            text = out["text"]
            out["text_orig"] = text.new_zeros(text.shape).index_put((replaced,), more[0].to(text.dtype))
