"""Evaluate a trained run on one or more datasets: metrics, JSON and the retrieval figure."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from tbpr.config import from_dict
from tbpr.data.readers import read_dataset
from tbpr.data.schema import Manifest
from tbpr.data.tokenizer import PretrainedTokenizer, Tokenizer
from tbpr.data.transforms import build_image_transform
from tbpr.errors import ConfigError
from tbpr.evaluation.evaluator import EncodedSplit, encode_split, score
from tbpr.evaluation.figures import render_retrieval_figure
from tbpr.models import DualEncoder, load_model
from tbpr.train.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class LoadedRun:
    """A trained model with the preprocessing it was trained with."""

    model: DualEncoder
    config: TrainConfig
    checkpoint: Path

    def image_transform(self):
        d = self.config.data
        return build_image_transform(tuple(self.config.model.image_size), d.mean, d.std, train=False)

    def tokenizer(self) -> Tokenizer | PretrainedTokenizer:
        """The text tower's own tokenizer."""
        return self.model.tokenizer


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
    payload = torch.load(path, map_location="cpu", weights_only=False)
    config = from_dict(TrainConfig, payload.get("config", {}))
    model = load_model(path).to(device).eval()
    return LoadedRun(model, config, path)


def ranked_examples(
    encoded: EncodedSplit, manifest: Manifest, num_queries: int, top_k: int = 10, seed: int = 0
):
    """Query texts, top-k gallery paths and match flags for ``num_queries`` evenly spread queries."""
    n = len(manifest.captions)
    picks = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:num_queries].tolist()
    sim = encoded.text_feats[picks] @ encoded.image_feats.T
    top = torch.topk(sim, k=min(top_k, sim.shape[1]), dim=1).indices
    texts, paths, matches = [], [], []
    for row, q in enumerate(picks):
        texts.append(manifest.captions[q].text)
        idx = top[row].tolist()
        paths.append([manifest.image_path(manifest.images[i]) for i in idx])
        matches.append([bool(encoded.image_pids[i] == encoded.text_pids[q]) for i in idx])
    return texts, paths, matches


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
) -> dict[str, dict]:
    """Metrics per dataset (keyed by folder name): ``{name: {"t2i": {...}, "i2t": {...}}}``."""
    results = {}
    for data_path in data_paths:
        manifest = read_dataset(data_path, data_format).split(split)
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
        results[name] = score(encoded)
        if visualize:
            out = Path(figure_dir or ".") / f"retrieval_{name}_{split}.png"
            render_retrieval_figure(*ranked_examples(encoded, manifest, visualize), out_path=out)
            results[name]["figure"] = str(out)
            log.info("wrote %s", out)
    return results
