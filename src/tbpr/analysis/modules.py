"""Contribution of each transformer module to retrieval (TBPS-CLIP appendix A.4, Wang and Tu 2020).

A module is the self-attention sub-layer (``attn``: ``ln_1``, ``attn``, ``ls_1``), the feed-forward
sub-layer (``mlp``: ``ln_2``, ``mlp``, ``ls_2``) or the whole layer (``whole``) of one residual block of
the image or text tower; layers are 0-based.

- C1 (eq. 10): removing a module (its residual branch adds zero; a removed layer is the identity)
  drops the metric by dM_i; ``C1_i = dM_i / max_j dM_j``. A removal that does not lower the metric
  counts as no contribution (C1 = 0), so C1 lies in [0, 1] and the largest drop scores exactly 1.
  The max runs over the modules of the same tower (``normalize="tower"``, the default: the paper's
  Fig. 5 shows each encoder in panels of its own) or over both towers (``normalize="all"``).
- C2 (eq. 11): ``C2_i = min alpha`` such that ``M(theta) - M(theta^alpha) < epsilon``, with only module
  i's parameters moved to ``theta^alpha = (1 - alpha) theta^0 + alpha theta`` (theta^0 the initial,
  theta the fine-tuned weights), alpha searched on the grid 0, step, 2 step, ... from 0 upwards;
  alpha = 1 (the fine-tuned model) always qualifies.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from tbpr.analysis import split_scorer
from tbpr.errors import ConfigError
from tbpr.evaluation.run_eval import load_run
from tbpr.models import DualEncoder, load_model

log = logging.getLogger(__name__)

TOWERS = ("image", "text")
KINDS = ("attn", "mlp", "whole")
# the submodules of a residual block that make up each sub-layer (its residual branch)
_PARTS = {"attn": ("ln_1", "attn", "ls_1"), "mlp": ("ln_2", "mlp", "ls_2")}
_SCORES = ("sum", "C1", "C2")
NORMALIZATIONS = ("tower", "all")  # what C1's largest drop is taken over


@dataclass(frozen=True)
class ModuleRef:
    """One module: ``tower`` ("image"/"text"), 0-based ``layer``, ``kind`` ("attn"/"mlp"/"whole")."""

    tower: str
    layer: int
    kind: str

    def __str__(self) -> str:
        return f"{self.tower}.{self.layer}.{self.kind}"


def tower_blocks(model, tower: str) -> nn.ModuleList:
    """The residual blocks of one tower of a ``DualEncoder``."""
    if tower not in TOWERS:
        raise ConfigError(f"tower {tower!r} is not one of {', '.join(TOWERS)}")
    blocks = model.image_blocks if tower == "image" else model.text_blocks
    for block in blocks:
        missing = [part for parts in _PARTS.values() for part in parts if not hasattr(block, part)]
        if missing:
            raise ConfigError(
                f"the {tower} tower's blocks ({type(block).__name__}) have no {', '.join(missing)}: module "
                "analysis needs open_clip ResidualAttentionBlock towers (ViT and text transformers)"
            )
    return blocks


def list_modules(model, towers: tuple[str, ...] = TOWERS) -> list[ModuleRef]:
    return [
        ModuleRef(tower, layer, kind)
        for tower in towers
        for layer in range(len(tower_blocks(model, tower)))
        for kind in KINDS
    ]


def _block(model, ref: ModuleRef) -> nn.Module:
    blocks = tower_blocks(model, ref.tower)
    if not 0 <= ref.layer < len(blocks):
        raise ConfigError(f"{ref}: the {ref.tower} tower has layers 0..{len(blocks) - 1}")
    if ref.kind not in KINDS:
        raise ConfigError(f"{ref}: module kind must be one of {', '.join(KINDS)}")
    return blocks[ref.layer]


def module_parameters(model, ref: ModuleRef) -> dict[str, nn.Parameter]:
    """The module's parameters by their full name in ``model.named_parameters()``."""
    block = _block(model, ref)
    parts = [block] if ref.kind == "whole" else [block.get_submodule(p) for p in _PARTS[ref.kind]]
    wanted = {id(p) for part in parts for p in part.parameters()}
    return {name: p for name, p in model.named_parameters() if id(p) in wanted}


@contextmanager
def removed(model, ref: ModuleRef) -> Iterator[None]:
    """Run the model without one module: its residual branch adds zero, or its whole layer is skipped."""
    block = _block(model, ref)
    if ref.kind == "whole":
        handle = block.register_forward_hook(
            lambda _m, args, kwargs, _out: args[0] if args else kwargs["q_x"], with_kwargs=True
        )
    else:  # ls_1 / ls_2 scale the branch output just before it is added to the residual stream
        scale = block.get_submodule(_PARTS[ref.kind][-1])
        handle = scale.register_forward_hook(lambda _m, _args, out: torch.zeros_like(out))
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def interpolated(model, ref: ModuleRef, init_state: dict[str, torch.Tensor], alpha: float) -> Iterator[None]:
    """Set the module's parameters to ``(1 - alpha) * init + alpha * current``; restore them after."""
    params = module_parameters(model, ref)
    missing = sorted(set(params) - set(init_state))
    if missing:
        raise ConfigError(f"the initial weights have no {missing[0]} (and {len(missing) - 1} more) for {ref}")
    saved = {name: p.detach().clone() for name, p in params.items()}
    try:
        with torch.no_grad():
            for name, p in params.items():
                # torch.lerp gives exactly the start at weight 0 and exactly the end at weight 1
                p.copy_(torch.lerp(init_state[name].to(p.device, p.dtype), saved[name], alpha))
        yield
    finally:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(saved[name])


def alpha_grid(step: float) -> list[float]:
    """0, step, 2*step, ... below 1 (alpha = 1 is the fine-tuned model itself)."""
    if not 0 < step <= 1:
        raise ConfigError(f"the alpha step must be in (0, 1], got {step}")
    return [round(k * step, 10) for k in range(math.ceil(1 / step - 1e-9))]


def check_search(epsilon: float, step: float) -> None:
    """Reject a C2 search that cannot work: epsilon must be positive, step in (0, 1]."""
    if epsilon <= 0:
        raise ConfigError(f"epsilon must be positive (the paper uses 3 Rank-1 points), got {epsilon}")
    alpha_grid(step)


def smallest_alpha(
    metric_at: Callable[[float], float], baseline: float, epsilon: float, step: float
) -> tuple[float, dict[float, float]]:
    """C2: the first alpha of ``alpha_grid(step)`` with ``baseline - metric_at(alpha) < epsilon``, else 1.

    Returns it with the metric of every alpha tried.
    """
    check_search(epsilon, step)
    tried = {}
    for alpha in alpha_grid(step):
        tried[alpha] = metric_at(alpha)
        if baseline - tried[alpha] < epsilon:
            return alpha, tried
    return 1.0, tried


def check_normalize(normalize: str) -> None:
    if normalize not in NORMALIZATIONS:
        raise ConfigError(f"C1 normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalize!r}")


def normalized_drops(drops: dict, where: str = "module") -> dict:
    """C1 for each key of ``drops`` (metric drop when the module is removed): drop / largest drop."""
    largest = max(drops.values(), default=0.0)
    if largest <= 0:
        log.warning("no %s's removal lowers the metric: its C1 is 0", where)
        return dict.fromkeys(drops, 0.0)
    return {key: max(drop, 0.0) / largest for key, drop in drops.items()}


def contribution_c1(drops: dict[ModuleRef, float], normalize: str = "tower") -> dict[ModuleRef, float]:
    """C1 of every module: its drop over the largest drop of its tower ("tower") or of all modules ("all")."""
    check_normalize(normalize)
    if normalize == "all":
        return normalized_drops(drops)
    c1 = {}
    for tower in dict.fromkeys(ref.tower for ref in drops):
        c1 |= normalized_drops({r: d for r, d in drops.items() if r.tower == tower}, f"{tower} tower module")
    return c1


def module_contributions(
    model,
    init_state: dict[str, torch.Tensor],
    scorer: Callable[[str], float],
    baseline: float,
    epsilon: float = 3.0,
    step: float = 0.1,
    towers: tuple[str, ...] = TOWERS,
    progress: bool = True,
    normalize: str = "tower",
) -> dict[str, dict[str, dict[str, dict]]]:
    """C1 and C2 of every module: ``{tower: {layer: {kind: {"C1", "C2", "drop", "removed", "alphas"}}}}``.

    ``scorer(tower)`` evaluates the model as it currently is, re-encoding ``tower`` only; ``baseline``
    is its value for the untouched model. Layers are string keys (the table is written as JSON);
    ``removed`` is the metric without the module and ``alphas`` the metric at each alpha tried for C2.
    ``normalize`` chooses C1's largest drop: per tower (the paper's Fig. 5) or over all modules.
    """
    check_normalize(normalize)
    refs = list_modules(model, towers)
    rows: dict[ModuleRef, dict] = {}
    for ref in tqdm(refs, desc="modules", disable=not progress):
        with removed(model, ref):
            without = scorer(ref.tower)

        def metric_at(alpha: float, ref=ref) -> float:
            with interpolated(model, ref, init_state, alpha):
                return scorer(ref.tower)

        c2, tried = smallest_alpha(metric_at, baseline, epsilon, step)
        rows[ref] = {"drop": baseline - without, "removed": without, "C2": c2, "alphas": tried}
        log.debug("%s: removed %.2f, C2 %.2f", ref, without, c2)
    c1 = contribution_c1({ref: row["drop"] for ref, row in rows.items()}, normalize)
    table: dict[str, dict[str, dict[str, dict]]] = {}
    for ref, row in rows.items():
        entry = {"C1": c1[ref], **row, "alphas": {str(a): m for a, m in row["alphas"].items()}}
        table.setdefault(ref.tower, {}).setdefault(str(ref.layer), {})[ref.kind] = entry
    return table


def lowest_contribution_layers(
    table: dict, n: int, tower: str = "text", score: str = "sum", kind: str = "whole"
) -> list[int]:
    """The ``n`` layers of ``tower`` whose ``kind`` module has the lowest score, sorted (0-based).

    ``table`` is an ``analyze_run`` result (or its ``scores`` part); ``score`` is "sum" (C1 + C2, as the
    paper picks layers to drop or freeze for its Table 17, from Fig. 5's scores: C1 normalized within
    the text tower, the default), "C1" or "C2". Because the scores of a
    combination add up, the n individually lowest layers are the combination with the lowest sum;
    ties go to the lower layer. Feed the result to ``model.drop_text_layers``/``freeze_text_layers``.
    """
    scores = table.get("scores", table)
    if tower not in scores:
        raise ConfigError(f"the module table has no {tower!r} tower (it has {', '.join(scores)})")
    if score not in _SCORES:
        raise ConfigError(f"score must be one of {', '.join(_SCORES)}, got {score!r}")
    layers = scores[tower]
    if not 0 <= n <= len(layers):
        raise ConfigError(f"cannot pick {n} of the {len(layers)} {tower} layers")

    def value(layer: str) -> float:
        entry = layers[layer][kind]
        return entry["C1"] + entry["C2"] if score == "sum" else entry[score]

    ranked = sorted(layers, key=lambda layer: (value(layer), int(layer)))
    return sorted(int(layer) for layer in ranked[:n])


def initial_state(checkpoint: Path, model_config) -> tuple[dict[str, torch.Tensor], str]:
    """The run's initial weights and where they came from.

    ``init.pt`` beside the checkpoint (written when training starts) if there is one; else the
    pretrained weights the run started from, rebuilt from its model config. A run from random
    initialization without ``init.pt`` cannot be recovered.
    """
    init = Path(checkpoint).parent / "init.pt"
    if init.is_file():
        return load_model(init).state_dict(), str(init)
    if model_config.pretrained is None:
        raise ConfigError(
            f"{init} does not exist and the run started from random weights (model.pretrained is null), "
            "so its initial weights cannot be recovered: C2 needs a run trained with save_init: true (the "
            "default since init.pt exists), which writes checkpoints/init.pt when the run starts"
        )
    log.info("no %s: rebuilding the initial model from model.pretrained=%s", init, model_config.pretrained)
    return DualEncoder(model_config).state_dict(), f"model.pretrained={model_config.pretrained}"


def analyze_run(
    run: Path,
    data: Path | None = None,
    split: str = "val",
    data_format: str | None = None,
    metric: str = "R1",
    epsilon: float = 3.0,
    step: float = 0.1,
    limit_queries: int | None = None,
    checkpoint: str = "best",
    batch_size: int = 256,
    num_workers: int = 2,
    device: str | torch.device = "cpu",
    progress: bool = True,
    normalize: str = "tower",
) -> dict:
    """Load a run, score every module of both towers on a split, and return the JSON-able table."""
    check_search(epsilon, step)
    check_normalize(normalize)
    start = time.perf_counter()
    loaded = load_run(run, checkpoint, device)
    init_state, init_source = initial_state(loaded.checkpoint, loaded.config.model)
    if not (data or loaded.config.data.path):
        raise ConfigError(f"{loaded.checkpoint} records no data.path: name the dataset folder with --data")
    data = Path(data or loaded.config.data.path)
    manifest = loaded.split(data, split, data_format)
    if not manifest.captions:
        raise ConfigError(f"{data} has no '{split}' split to analyze; choose another with --split")
    manifest = split_scorer.limit_queries(manifest, limit_queries)
    scorer = split_scorer.SplitScorer(
        loaded.model,
        manifest,
        loaded.image_transform(),
        loaded.tokenizer(),
        metric,
        batch_size,
        num_workers,
        device,
    )
    scores = module_contributions(
        loaded.model,
        init_state,
        scorer,
        scorer.baseline,
        epsilon,
        step,
        progress=progress,
        normalize=normalize,
    )
    return {
        "checkpoint": str(loaded.checkpoint),
        "initial_weights": init_source,
        "data": str(data),
        "split": split,
        "metric": metric,
        "direction": "t2i",
        "epsilon": epsilon,
        "step": step,
        "normalize": normalize,
        "num_queries": scorer.num_queries,
        "num_gallery": scorer.num_gallery,
        "baseline": scorer.baseline,
        "seconds": round(time.perf_counter() - start, 1),
        "scores": scores,
    }
