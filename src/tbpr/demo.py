"""The end-to-end demo: SynthPedes -> train a small CLIP on CPU -> evaluate on test -> report."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from tbpr.atomic import write_json, write_text
from tbpr.data import read_dataset
from tbpr.data.synthpedes import generate
from tbpr.evaluation import format_metrics_table, retrieval_metrics_both
from tbpr.evaluation.run_eval import evaluate_run, load_run
from tbpr.models.checkpoint import load_checkpoint
from tbpr.train import load_config, train

log = logging.getLogger(__name__)


def chance_metrics(data_dir: Path, split: str = "test", trials: int = 5) -> dict[str, dict]:
    """Metrics of random rankings of the split (mean of ``trials``): the floor a model must clear."""
    manifest = read_dataset(data_dir).split(split)
    text_pids = torch.tensor(manifest.caption_pids())
    image_pids = torch.tensor([rec.pid for rec in manifest.images])
    runs = [
        retrieval_metrics_both(
            torch.rand(len(text_pids), len(image_pids), generator=torch.Generator().manual_seed(trial)),
            text_pids,
            image_pids,
        )
        for trial in range(trials)
    ]
    keys = ("R1", "R5", "R10", "mAP", "mINP")
    return {d: {k: sum(r[d][k] for r in runs) / trials for k in keys} for d in ("t2i", "i2t")}


def chance_warning(t2i: dict, chance_t2i: dict) -> str | None:
    """A warning when text-to-image R1 or mAP is at or below random ranking's (else None)."""
    low = [k for k in ("R1", "mAP") if t2i[k] <= chance_t2i[k]]
    if not low:
        return None
    compared = ", ".join(f"{k} {t2i[k]:.1f} against {chance_t2i[k]:.1f}" for k in low)
    return (
        f"At or below chance: text-to-image {compared} for random ranking. The model has not learned to "
        "retrieve: train longer (--set optim.epochs=...) or on a larger SynthPedes size (--size small)."
    )


def run_demo(
    out: Path, size: str = "small", seed: int = 0, recipe: str = "cpu-small", overrides: list[str] = ()
) -> dict:
    """Generate data, train, evaluate; write report.md, metrics.json and retrieval_*.png into ``out``.

    Every stage resumes: existing data is reused and training continues from ``run/checkpoints``.
    """
    out = Path(out)
    started = time.perf_counter()
    data_dir = out / f"synthpedes-{size}-seed{seed}"
    generate(data_dir, size=size, seed=seed)
    cfg = load_config(
        recipe, [f"data.path={data_dir}", f"output_dir={out / 'run'}", f"seed={seed}", *overrides]
    )
    run_dir = train(cfg)
    loaded = load_run(run_dir, "best")
    results = evaluate_run(
        loaded, [data_dir], "test", num_workers=cfg.data.num_workers, visualize=8, figure_dir=out
    )
    res = next(iter(results.values()))
    chance = chance_metrics(data_dir)
    results["chance"] = chance
    write_json(out / "metrics.json", results, indent=2)
    table = format_metrics_table(
        {
            "text-to-image": res["t2i"],
            "image-to-text": res["i2t"],
            "t2i, random ranking": chance["t2i"],
            "i2t, random ranking": chance["i2t"],
        }
    )
    warning = chance_warning(res["t2i"], chance["t2i"])
    if warning:
        log.warning("%s", warning)
    minutes = (time.perf_counter() - started) / 60
    selected = load_checkpoint(loaded.checkpoint)["selected"]
    write_text(
        out / "report.md",
        f"# tbpr demo\n\nData: SynthPedes `{size}` (seed {seed}) in `{data_dir}`.\n"
        f"Model: `{cfg.model.arch}` trained from scratch for {cfg.optim.epochs} epochs with losses "
        f"{dict(cfg.losses)}; checkpoint `{loaded.checkpoint}` selected on the validation split "
        f"(epoch {selected['epoch']}, val {selected['metric']} {selected.get('value', float('nan')):.2f}).\n\n"
        f"## Test split\n\n{table}\n\n"
        + (f"**{warning}**\n\n" if warning else "")
        + f"![retrieval examples]({Path(res['figure']).name})\n\n"
        f"Green border: the image shows the described person; red: another person.\n\n"
        f"Total time: {minutes:.1f} min.\n",
    )
    print(table)
    print(f"\nreport: {out / 'report.md'}\nfigure: {res['figure']}\ntime: {minutes:.1f} min")
    return results
