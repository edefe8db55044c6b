"""The end-to-end demo: SynthPedes -> train on CPU (pretrained start, and from scratch to compare) -> test -> report."""

from __future__ import annotations

import json
import logging
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tbpr.atomic import write_json, write_text
from tbpr.data import read_dataset
from tbpr.data.synthpedes import generate
from tbpr.evaluation import format_metrics_table, retrieval_metrics_both
from tbpr.evaluation.run_eval import evaluate_run, load_run
from tbpr.models import ModelConfig
from tbpr.models.checkpoint import load_checkpoint
from tbpr.train import load_config, train
from tbpr.train.config import TrainConfig

log = logging.getLogger(__name__)

# the pretrained towers beat tbpr-tiny from scratch in the same training time (docs/results-synthpedes.md,
# "The demo"): the demo trains them and reports the from-scratch model, cut to about the same time, beside
DEMO_RECIPE = "tbpr-lite"
COMPARE_RECIPE = "cpu-small"
COMPARE_EPOCHS = 10  # a tbpr-lite step costs about 3.4 tbpr-tiny steps: 10 epochs ~ tbpr-lite's 3
EXAMPLE_QUERY = "a woman wearing a grey jumper and orange trousers"


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


def start_label(model: ModelConfig) -> str:
    """'pretrained start' when any weights are loaded (open_clip tag or file, a tower's weights), else
    'from scratch'."""
    towers = [t for t in (model.text_tower, model.image_tower) if t is not None]
    pretrained = model.pretrained is not None or any(t.weights != "random" for t in towers)
    return "pretrained start" if pretrained else "from scratch"


def next_commands(out: Path, data_dir: Path) -> list[str]:
    """What a user runs next with the demo's model: index a folder of images, search it, serve it."""
    run, index = shlex.quote(str(out / "run")), shlex.quote(str(out / "index"))
    images = shlex.quote(str(data_dir / "imgs" / "test"))
    return [
        f"tbpr index build --run {run} --images {images} --out {index}",
        f"tbpr search {index} {shlex.quote(EXAMPLE_QUERY)} -k 10 --sheet {shlex.quote(str(out / 'search.png'))}",
        f"tbpr serve {index}",
    ]


@dataclass
class _Row:
    """One trained model of the demo: its config, run folder, test metrics and training minutes."""

    recipe: str
    cfg: TrainConfig
    run_dir: Path
    metrics: dict
    minutes: float

    @property
    def label(self) -> str:
        return f"{self.cfg.model.arch}, {start_label(self.cfg.model)}"


def _train_and_test(
    recipe: str, overrides: list[str], data_dir: Path, run_dir: Path, seed: int, timing: dict, figure_dir=None
) -> _Row:
    """Train (or resume) ``recipe`` into ``run_dir`` and evaluate its best checkpoint on test."""
    cfg = load_config(recipe, [f"data.path={data_dir}", f"output_dir={run_dir}", f"seed={seed}", *overrides])
    started = time.perf_counter()
    train(cfg)
    timing[run_dir.name] = timing.get(run_dir.name, 0.0) + (time.perf_counter() - started) / 60
    loaded = load_run(run_dir, "best")
    results = evaluate_run(
        loaded,
        [data_dir],
        "test",
        num_workers=cfg.data.num_workers,
        visualize=8 if figure_dir else 0,
        figure_dir=figure_dir,
    )
    return _Row(recipe, cfg, run_dir, next(iter(results.values())), timing[run_dir.name])


def _describe(row: _Row) -> str:
    selected = load_checkpoint(row.run_dir / "checkpoints" / "best.pt")["selected"]
    return (
        f"- **{row.label}**: recipe `{row.recipe}` in `{row.run_dir}`, {row.cfg.optim.epochs} epochs "
        f"with losses {dict(row.cfg.losses)}, {row.minutes:.1f} min of training; checkpoint selected on the "
        f"validation split (epoch {selected['epoch']}, val {selected['metric']} "
        f"{selected.get('value', float('nan')):.2f})."
    )


def run_demo(
    out: Path,
    size: str = "small",
    seed: int = 0,
    recipe: str = DEMO_RECIPE,
    overrides: list[str] = (),
    compare: str | None = COMPARE_RECIPE,
    compare_epochs: int | None = COMPARE_EPOCHS,
) -> dict:
    """Generate data; train ``recipe`` into ``out/run`` and, unless None, the ``compare`` recipe into
    ``out/run-compare`` (for ``compare_epochs``, None: its recipe's; ``overrides`` apply to both, after
    that); test both; write report.md, metrics.json, timing.json (minutes of training per run, summed
    over invocations) and retrieval_*.png (of ``recipe``'s model) into ``out``; print the table and the
    next commands.

    Every stage resumes: existing data is reused and training continues from each run's checkpoints.
    """
    out = Path(out)
    started = time.perf_counter()
    data_dir = out / f"synthpedes-{size}-seed{seed}"
    generate(data_dir, size=size, seed=seed)
    timing_file = out / "timing.json"
    timing = json.loads(timing_file.read_text()) if timing_file.is_file() else {}
    rows = [_train_and_test(recipe, list(overrides), data_dir, out / "run", seed, timing, figure_dir=out)]
    if compare:
        epochs = [f"optim.epochs={compare_epochs}"] if compare_epochs else []
        rows.append(
            _train_and_test(compare, [*epochs, *overrides], data_dir, out / "run-compare", seed, timing)
        )
    write_json(timing_file, timing, indent=2)
    chance = chance_metrics(data_dir)
    results = {row.run_dir.name: row.metrics for row in rows} | {"chance": chance}
    write_json(out / "metrics.json", results, indent=2)
    table_rows = {}
    for row in rows:
        label = row.label if f"t2i, {row.label}" not in table_rows else f"{row.label}, {row.run_dir.name}"
        table_rows |= {f"t2i, {label}": row.metrics["t2i"], f"i2t, {label}": row.metrics["i2t"]}
    table = format_metrics_table(
        table_rows | {"t2i, random ranking": chance["t2i"], "i2t, random ranking": chance["i2t"]}
    )
    warning = chance_warning(rows[0].metrics["t2i"], chance["t2i"])
    if warning:
        log.warning("%s", warning)
    minutes = (time.perf_counter() - started) / 60
    commands = next_commands(out, data_dir)
    figure = Path(rows[0].metrics["figure"]).name
    write_text(
        out / "report.md",
        f"# tbpr demo\n\nData: SynthPedes `{size}` (seed {seed}) in `{data_dir}`.\n\n"
        + "\n".join(_describe(row) for row in rows)
        + f"\n\n## Test split\n\n{table}\n\n"
        + (f"**{warning}**\n\n" if warning else "")
        + f"![retrieval examples of {rows[0].label}]({figure})\n\n"
        "Green border: the image shows the described person; red: another person.\n\n"
        f"Total time of this invocation: {minutes:.1f} min.\n\n"
        "## Next\n\n```bash\n" + "\n".join(commands) + "\n```\n",
    )
    print(table)
    print(f"\nreport: {out / 'report.md'}\nfigure: {out / figure}\ntime: {minutes:.1f} min")
    print(
        "\nnext: index a folder of person images, search it, serve it:\n"
        + "\n".join(f"  {c}" for c in commands)
    )
    return results
