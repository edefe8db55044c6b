"""Evaluate a trained run on one or more datasets: metrics, JSON and the retrieval figure."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tbpr.config import from_dict
from tbpr.data.check import load_checked_split
from tbpr.data.holdout import ValSplitConfig, resolve_val_split
from tbpr.data.readers import read_dataset
from tbpr.data.schema import Manifest
from tbpr.data.tokenizer import PretrainedTokenizer, Tokenizer
from tbpr.data.transforms import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, build_image_transform
from tbpr.errors import ConfigError
from tbpr.evaluation.evaluator import EncodedSplit, encode_split, score
from tbpr.evaluation.figures import render_retrieval_figure
from tbpr.models import DualEncoder, ModelConfig
from tbpr.models.checkpoint import load_checkpoint, model_from_payload

log = logging.getLogger(__name__)


@dataclass
class RunData:
    """The fields of a run's saved ``data`` section that evaluation reads (defaults: ``tbpr.train.config``'s)."""

    path: str = ""
    val_split: ValSplitConfig = field(default_factory=ValSplitConfig)
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD


@dataclass
class RunConfig:
    """What evaluation reads of the training config saved in a checkpoint; the rest is training's business,
    so evaluation does not depend on ``tbpr.train``."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: RunData = field(default_factory=RunData)
    init_from: str | None = None

    @classmethod
    def from_saved(cls, saved: dict) -> RunConfig:
        picked = {k: saved[k] for k in ("model", "init_from") if k in saved}
        data = saved.get("data", {})
        picked["data"] = {k: data[k] for k in ("path", "val_split", "mean", "std") if k in data}
        return from_dict(cls, picked)


@dataclass
class LoadedRun:
    """A trained model with the preprocessing it was trained with."""

    model: DualEncoder
    config: RunConfig
    checkpoint: Path

    def image_transform(self):
        d = self.config.data
        return build_image_transform(tuple(self.config.model.image_size), d.mean, d.std, train=False)

    def tokenizer(self) -> Tokenizer | PretrainedTokenizer:
        """The text tower's own tokenizer."""
        return self.model.tokenizer

    def split(self, data_path: Path, split: str, data_format: str | None = None) -> Manifest:
        """One split of a dataset; 'val' of the run's own training data is the split the run validated on
        (identities carved from its training split if it carved them: ``data.val_split``). The split is
        checked first (its images decoded), as training checks its data."""
        trained_on = (
            self.config.data.path and Path(data_path).resolve() == Path(self.config.data.path).resolve()
        )
        if split != "val" or not trained_on:
            return load_checked_split(data_path, split, data_format)
        manifest = read_dataset(data_path, data_format)
        return resolve_val_split(manifest, manifest.split("train"), self.config.data.val_split)[1]


def resolve_checkpoint(run: Path, checkpoint: str = "best") -> Path:
    """``best``/``last`` inside a run folder, or an explicit checkpoint file."""
    run = Path(run)
    if run.is_file():
        return run
    path = (
        Path(checkpoint) if checkpoint not in ("best", "last") else run / "checkpoints" / f"{checkpoint}.pt"
    )
    if not path.is_file():
        raise ConfigError(f"no checkpoint at {path}: is {run} a tbpr run folder (tbpr train --out ...)?")
    return path


def load_run(run: Path, checkpoint: str = "best", device: str | torch.device = "cpu") -> LoadedRun:
    path = resolve_checkpoint(run, checkpoint)
    payload = load_checkpoint(path)
    config = RunConfig.from_saved(payload.get("config", {}))
    model = model_from_payload(payload, path).to(device).eval()
    return LoadedRun(model, config, path)


def ranked_examples(
    encoded: EncodedSplit, manifest: Manifest, num_queries: int, top_k: int = 10, seed: int = 0
) -> dict[str, list]:
    """``render_retrieval_figure``'s per-query lists for ``num_queries`` randomly picked queries.

    Keys: ``queries`` (texts), ``ranked_paths``, ``ranked_matches`` and ``ranked_scores`` of the top
    ``top_k`` images, and ``first_match_ranks``: the 1-based rank of each query's first true match in
    the whole gallery (ties ranked in gallery order, as the metrics do; None without a match).
    """
    n = len(manifest.captions)
    picks = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:num_queries].tolist()
    sim = encoded.text_feats[picks] @ encoded.image_feats.T
    order = torch.argsort(sim, dim=1, descending=True, stable=True)
    hits = encoded.image_pids[order] == encoded.text_pids[picks].view(-1, 1)
    out = {
        key: [] for key in ("queries", "ranked_paths", "ranked_matches", "ranked_scores", "first_match_ranks")
    }
    for row, q in enumerate(picks):
        idx = order[row, :top_k].tolist()
        out["queries"].append(manifest.captions[q].text)
        out["ranked_paths"].append([manifest.image_path(manifest.images[i]) for i in idx])
        out["ranked_matches"].append(hits[row, :top_k].tolist())
        out["ranked_scores"].append(sim[row, idx].tolist())
        out["first_match_ranks"].append(int(hits[row].int().argmax()) + 1 if hits[row].any() else None)
    return out


def evaluate_run(
    run: LoadedRun,
    data_paths: list[Path],
    split: str = "test",
    data_format: str | None = None,
    batch_size: int = 256,
    num_workers: int = 2,
    device: str | torch.device = "cpu",
    visualize: int = 0,
    figure_dir: Path | None = None,
    per_query: bool = False,
) -> dict[str, dict]:
    """Metrics per dataset (keyed by folder name): ``{name: {"t2i": {...}, "i2t": {...}}}``.

    ``per_query``: each direction also holds its per-query arrays (``retrieval_metrics``)."""
    results = {}
    for data_path in data_paths:
        manifest = run.split(data_path, split, data_format)
        if not manifest.captions:
            raise ConfigError(f"{data_path} has no '{split}' split to evaluate on")
        name = Path(data_path).resolve().name
        if name in results:  # two targets with the same folder name: keep both
            name = f"{Path(data_path).resolve().parent.name}/{name}"
        log.info(
            "evaluating %s on %s/%s: %d queries, %d gallery images",
            run.checkpoint,
            name,
            split,
            len(manifest.captions),
            len(manifest.images),
        )
        encoded = encode_split(
            run.model, manifest, run.image_transform(), run.tokenizer(), batch_size, num_workers, device
        )
        results[name] = score(encoded, per_query)
        if visualize:
            out = Path(figure_dir or ".") / f"retrieval_{name}_{split}.png"
            ckpt = run.checkpoint
            run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
            title = f"run {run_dir} | checkpoint {ckpt.name} | {name} {split} split (green: true match)"
            render_retrieval_figure(
                **ranked_examples(encoded, manifest, visualize), out_path=out, title=title
            )
            results[name]["figure"] = str(out)
            log.info("wrote %s", out)
    return results
