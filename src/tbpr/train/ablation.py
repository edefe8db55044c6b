"""Ablation grids: train and evaluate config variants, one row each of a paper-style markdown table.

A grid (YAML) names a base recipe, ``key=value`` overrides common to every variant, and the variants:
a row label and the overrides that make the row. :class:`Ablation` trains each variant under
``OUT/<slug>/`` (with several seeds: once per seed, under ``OUT/<slug>/seed-<s>/``) with the training
engine, evaluates its 'best' checkpoint (chosen on the validation split) on the test split, writes
``result.json`` and the per-query scores (``per_query.npz``) into the run folder and rewrites
``OUT/table.md`` after every run. It is resumable: a run whose result matches its current config is not
rerun, an interrupted one resumes from its own ``checkpoints/last.pt``, and one whose config changed
since is retrained from its first epoch.

Several processes may share one ``OUT`` (e.g. different ``--seeds`` or ``--only`` on two machines): a
process trains a run only while it holds the run folder's lock (``.lock``, an ``flock`` that dies with
its process) and skips a run another process holds, and the table is built from what has finished on
disk, so whichever process writes it last writes it whole: a row's cells cover every seed finished in
its folder, also seeds outside this process's ``--seeds`` (the table names them).

The table shows each metric's mean (and standard deviation over seeds), and for Rank-1 and mAP the
difference from the first row with its 95% paired-bootstrap interval over the test queries
(``tbpr.evaluation.bootstrap``); a difference whose interval excludes 0 is marked.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tbpr.atomic import write_json, write_text
from tbpr.config import from_dict, load_yaml, to_dict
from tbpr.crashsafe import held_elsewhere, try_lock
from tbpr.errors import ConfigError, DataError
from tbpr.evaluation.bootstrap import (
    LEVEL,
    PER_QUERY_FILE,
    RESAMPLES,
    paired_bootstrap,
    query_scores,
    save_per_query,
    split_per_query,
)
from tbpr.evaluation.run_eval import evaluate_run, load_run
from tbpr.train import distributed as dist
from tbpr.train.config import RECIPE_DIR, TrainConfig, config_differences, load_config
from tbpr.train.engine import train
from tbpr.train.resume import NEUTRAL_KEYS

log = logging.getLogger(__name__)

GRID_DIR = RECIPE_DIR / "grids"
METRICS = ("R1", "R5", "R10", "mAP", "mINP")
DIRECTIONS = {"t2i": "text-to-image", "i2t": "image-to-text"}
RESULT_FILE = "result.json"
COMPARED = ("R1", "mAP")  # the metrics whose difference from the first row gets an interval
TABLE_FILE = "table.md"
LOCK_FILE = ".lock"  # in a run folder: held (flock) by the process training the run
SPLIT, CHECKPOINT = "test", "best"
_SLUG = re.compile(r"[a-z0-9][a-z0-9._-]*")
_SEED_DIR = re.compile(r"seed-(-?[0-9]+)")


@dataclass
class Variant:
    """One row: its label in the table, its overrides, its run folder name, a group heading above it."""

    name: str = ""
    overrides: list[str] = field(default_factory=list)
    slug: str | None = None  # default: the name in lower case, runs of other characters as '-'
    section: str | None = None  # a heading row before this one (the paper's "The group of removal:")
    base: str | None = None  # this row's recipe, if not the grid's (e.g. comparing recipes, Tables 11/16)


@dataclass
class Grid:
    """A whole ablation table. ``cumulative``: each variant also gets the overrides of those above it."""

    title: str = ""
    base: str = ""  # a shipped recipe name or a .yaml file (relative to the grid's folder)
    overrides: list[str] = field(default_factory=list)
    variants: list[Variant] = field(default_factory=list)
    cumulative: bool = False
    metrics: list[str] = field(default_factory=lambda: list(METRICS))
    direction: str = "t2i"
    eval_data: list[str] = field(default_factory=list)  # test datasets (default: each variant's data.path)
    notes: list[str] = field(default_factory=list)


def grid_path(name_or_path: str | Path, folder: Path | None = None) -> Path:
    """A shipped grid by name (e.g. 'table1-tricks-small') or a YAML file (relative to ``folder``)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        return folder / path if folder and not path.is_absolute() else path
    shipped = GRID_DIR / f"{name_or_path}.yaml"
    if not shipped.is_file():
        known = sorted(p.stem for p in GRID_DIR.glob("*.yaml"))
        raise ConfigError(f"no grid named {name_or_path!r}; shipped grids: {known} (or give a .yaml path)")
    return shipped


def _read_grid_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """The grid's mapping, its ``extends`` parent's keys under its own."""
    data = load_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends: expected a grid name or .yaml file, got {parent!r}")
    parent_path = grid_path(parent, path.parent)
    if parent_path.resolve() in {p.resolve() for p in (*chain, path)}:
        raise ConfigError(f"{path}: extends {parent!r} makes a cycle")
    return {**_read_grid_yaml(parent_path, (*chain, path)), **data}


def slugify(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def load_grid(name_or_path: str | Path) -> tuple[Grid, Path]:
    """Read and check a grid; returns it with its file. Errors name the file and the variant."""
    path = grid_path(name_or_path)
    data = _read_grid_yaml(path)
    raw_variants = data.pop("variants", None)
    grid = from_dict(Grid, data, f"{path}: grid")
    if not isinstance(raw_variants, list) or not raw_variants:
        raise ConfigError(f"{path}: variants: give a list of variants, each {{name: ..., overrides: [...]}}")
    for i, raw in enumerate(raw_variants):
        label = raw.get("name") if isinstance(raw, dict) else None
        where = f"{path}: variants[{i}]" + (f" ({label!r})" if isinstance(label, str) else "")
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a mapping {{name: ..., overrides: [...]}}, got {raw!r}")
        variant = from_dict(Variant, raw, where)
        if not variant.name.strip():
            raise ConfigError(f"{where}.name: every variant needs a name (its row label in the table)")
        variant.slug = variant.slug or slugify(variant.name)
        if not _SLUG.fullmatch(variant.slug):
            raise ConfigError(
                f"{where}.slug: {variant.slug!r} cannot name a run folder; give a slug of lower-case "
                "letters, digits, '.', '_' or '-'"
            )
        if variant.base and variant.base.endswith((".yaml", ".yml")):
            variant.base = str(grid_path(variant.base, path.parent))
        grid.variants.append(variant)
    _check_grid(grid, path)
    if grid.base.endswith((".yaml", ".yml")):
        grid.base = str(grid_path(grid.base, path.parent))
    grid.title = grid.title or path.stem
    return grid, path


def _check_grid(grid: Grid, path: Path) -> None:
    if not grid.base:
        raise ConfigError(
            f"{path}: base: name the recipe every variant starts from, e.g. base: clip-baseline"
        )
    unknown = [m for m in grid.metrics if m not in METRICS]
    if unknown or not grid.metrics:
        raise ConfigError(f"{path}: metrics: {unknown or 'empty'}; choose among {list(METRICS)}")
    if grid.direction not in DIRECTIONS:
        raise ConfigError(f"{path}: direction: {grid.direction!r}; choose one of {list(DIRECTIONS)}")
    for attr in ("name", "slug"):
        seen: dict[str, str] = {}
        for v in grid.variants:
            key = getattr(v, attr)
            if key in seen:
                raise ConfigError(
                    f"{path}: variants {seen[key]!r} and {v.name!r} have the same {attr} {key!r}; "
                    + ("rename one" if attr == "name" else "give one of them a distinct 'slug'")
                )
            seen[key] = v.name


@dataclass
class ResolvedVariant:
    """One run of a variant (one seed): its full override list, training config and test datasets."""

    variant: Variant
    overrides: list[str]
    config: TrainConfig
    datasets: list[str]
    seed: int | None = None  # set when the ablation runs several seeds

    @property
    def run_dir(self) -> Path:
        return Path(self.config.output_dir)

    @property
    def evaluation(self) -> dict:
        return {"split": SPLIT, "checkpoint": CHECKPOINT, "datasets": self.datasets}


@dataclass
class Status:
    """What running a variant will do: 'done', 'evaluate', 'resume', 'new' or 'changed' (+ the keys)."""

    state: str
    changed: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return {
            "done": "finished: not rerun",
            "evaluate": "trained: evaluated again (its test datasets changed or its per-query scores are missing)",
            "resume": "interrupted: resumes from its checkpoint",
            "new": "not started: trains from its first epoch",
            "changed": f"config changed since its run ({', '.join(self.changed)}): retrains from its first epoch",
        }[self.state]


def _read_result(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not a result file ({err}); delete it to rerun this variant") from err


class Ablation:
    """A grid resolved against an output folder and extra overrides (``--set``), ready to run."""

    def __init__(
        self,
        grid: Grid,
        grid_file: Path,
        out: Path,
        overrides: list[str] = (),
        command: str = "",
        seeds: list[int] = (),
    ):
        """``seeds``: train every variant once per seed (``seed=S``, under ``OUT/<slug>/seed-<S>/``)."""
        self.grid, self.grid_file, self.out, self.command = grid, grid_file, Path(out), command
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"--seeds {list(seeds)}: a seed is given twice")
        self.seeds = list(seeds)
        self.variants = self._resolve(list(overrides))

    def _resolve(self, extra: list[str]) -> list[ResolvedVariant]:
        """One entry per variant and seed, the seeds of a variant next to each other."""
        resolved, stacked, self._overrides = [], [], {}
        for v in self.grid.variants:
            own = v.overrides
            if self.grid.cumulative:
                own = stacked = [*stacked, *v.overrides]
            self._overrides[v.slug] = [*self.grid.overrides, *own, *extra]
            resolved += [self.run_of(v, seed) for seed in self.seeds or [None]]
        return resolved

    def run_of(self, v: Variant, seed: int | None) -> ResolvedVariant:
        """Variant ``v``'s run with ``seed`` (None: the recipe's seed, in ``OUT/<slug>/``)."""
        overrides = self._overrides[v.slug] + ([] if seed is None else [f"seed={seed}"])
        try:
            cfg = load_config(v.base or self.grid.base, overrides)
        except ConfigError as err:
            raise ConfigError(f"{self.grid_file}: variant {v.name!r}: {err}") from err
        run_dir = self.out / v.slug
        cfg.output_dir = str(run_dir if seed is None else run_dir / f"seed-{seed}")
        datasets = list(self.grid.eval_data) or [cfg.data.path]
        return ResolvedVariant(v, overrides, cfg, datasets, seed)

    def rows(self) -> list[list[ResolvedVariant]]:
        """The runs grouped by variant (table row), in the grid's order."""
        groups: dict[str, list[ResolvedVariant]] = {}
        for rv in self.variants:
            groups.setdefault(rv.variant.slug, []).append(rv)
        return list(groups.values())

    def select(self, only: list[str] = ()) -> list[ResolvedVariant]:
        """The variants named (by name or slug) in ``only``, all of them if it is empty."""
        if not only:
            return self.variants
        known = {key for rv in self.variants for key in (rv.variant.name, rv.variant.slug)}
        missing = [name for name in only if name not in known]
        if missing:
            names = [rv.variant.name for rv in self.variants]
            raise ConfigError(
                f"--only {missing}: {self.grid_file} has no such variant; its variants: {names}"
            )
        return [rv for rv in self.variants if {rv.variant.name, rv.variant.slug} & set(only)]

    def status(self, rv: ResolvedVariant) -> Status:
        current = to_dict(rv.config)
        result = _read_result(rv.run_dir / RESULT_FILE)
        if result is not None:
            changed = list(config_differences(result.get("config", {}), current, NEUTRAL_KEYS))
            if changed:
                return Status("changed", changed)
            can_evaluate = (rv.run_dir / "checkpoints" / f"{CHECKPOINT}.pt").is_file()
            if result.get("evaluation") == rv.evaluation:
                # results from before per-query scores were saved are evaluated again when possible
                if (rv.run_dir / PER_QUERY_FILE).is_file() or not can_evaluate:
                    return Status("done")
                return Status("evaluate")
            if can_evaluate:
                return Status("evaluate")
        if (rv.run_dir / "checkpoints" / "last.pt").is_file():
            saved = rv.run_dir / "config.yaml"
            changed = list(
                config_differences(load_yaml(saved) if saved.is_file() else {}, current, NEUTRAL_KEYS)
            )
            return Status("changed", changed) if changed else Status("resume")
        return Status("new")

    def describe(self, rv: ResolvedVariant) -> str:
        """What running ``rv`` would do now (for ``--dry-run``); takes no lock."""
        if held_elsewhere(rv.run_dir / LOCK_FILE):
            return "being trained by another process: skipped"
        return self.status(rv).describe()

    def run(self, only: list[str] = ()) -> Path:
        """Train and evaluate the selected variants in order, skipping any run another process is
        training; returns the table's path."""
        for rv in self.select(only):
            with self._claim(rv) as mine:
                if not mine:
                    log.info(
                        "variant %r (%s): being trained by another process: skipped",
                        rv.variant.name,
                        rv.run_dir,
                    )
                    continue
                status = self.status(rv)  # under the lock: another process may have finished it meanwhile
                level = logging.WARNING if status.state == "changed" else logging.INFO
                log.log(level, "variant %r (%s): %s", rv.variant.name, rv.run_dir, status.describe())
                if status.state != "done":
                    self._run_variant(rv, status)
                    self.write_table()
        dist.cleanup()
        return self.write_table()

    @contextlib.contextmanager
    def _claim(self, rv: ResolvedVariant) -> Iterator[bool]:
        """Whether this job may train ``rv`` now: its folder's lock, held while the block runs. Under
        torchrun the first process takes it and the others follow its answer (they train together)."""
        lock = try_lock(rv.run_dir / LOCK_FILE) if is_main_process() else contextlib.nullcontext(True)
        with lock as held:
            yield dist.main_decides(held)

    def _run_variant(self, rv: ResolvedVariant, status: Status) -> None:
        if status.state == "changed":  # stale result and checkpoints must not count or be resumed
            (rv.run_dir / RESULT_FILE).unlink(missing_ok=True)
            (rv.run_dir / PER_QUERY_FILE).unlink(missing_ok=True)
            shutil.rmtree(rv.run_dir / "checkpoints", ignore_errors=True)
        if status.state != "evaluate":
            train(rv.config)
        if not is_main_process():  # under torchrun every process trains; the first evaluates and writes
            return
        cfg = rv.config
        device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        loaded = load_run(rv.run_dir, CHECKPOINT, device)
        data_format = cfg.data.format if rv.datasets == [cfg.data.path] else None
        results = evaluate_run(
            loaded,
            [Path(d) for d in rv.datasets],
            SPLIT,
            data_format,
            cfg.data.eval_batch_size,
            cfg.data.num_workers,
            device,
            per_query=True,
        )
        results, per_query = split_per_query(results)
        save_per_query(rv.run_dir / PER_QUERY_FILE, per_query)  # before the result that makes the run 'done'
        record = {
            "variant": rv.variant.name,
            "slug": rv.variant.slug,
            "grid": str(self.grid_file),
            "overrides": rv.overrides,
            "config": to_dict(cfg),
            "evaluation": rv.evaluation,
            "results": results,
        }
        write_json(rv.run_dir / RESULT_FILE, record, indent=2)

    def finished_results(self, rv: ResolvedVariant) -> dict | None:
        """The run's metrics ``{dataset: {direction: metrics}}`` if its result is current."""
        if self.status(rv).state != "done":
            return None
        return _read_result(rv.run_dir / RESULT_FILE)["results"]

    def table_runs(self, requested: list[ResolvedVariant]) -> list[tuple[ResolvedVariant, dict]] | None:
        """A row's finished runs and their metrics, by seed: None until each run of ``requested`` has
        finished; then also every other seed finished in the row's folder (e.g. by another ``--seeds``)."""
        results = [self.finished_results(rv) for rv in requested]
        if any(r is None for r in results):
            return None
        runs = list(zip(requested, results))
        for seed in self._other_seeds(requested[0].variant):
            rv = self.run_of(requested[0].variant, seed)
            if (result := self.finished_results(rv)) is not None:
                runs.append((rv, result))
        return sorted(runs, key=lambda run: run[0].seed or 0)

    def _other_seeds(self, variant: Variant) -> list[int]:
        """Seeds outside ``--seeds`` with a result in the variant's folder (none without ``--seeds``)."""
        if not self.seeds:
            return []
        found = (
            _SEED_DIR.fullmatch(p.parent.name)
            for p in (self.out / variant.slug).glob(f"seed-*/{RESULT_FILE}")
        )
        return sorted({int(m[1]) for m in found if m} - set(self.seeds))

    def query_scores(self, runs: list[ResolvedVariant], dataset: str, metric: str) -> np.ndarray | None:
        """A row's per-query ``metric`` (percent), averaged over its seeds; None unless every seed has one."""
        scores = [
            query_scores(rv.run_dir / PER_QUERY_FILE, dataset, self.grid.direction, metric) for rv in runs
        ]
        if any(s is None for s in scores) or len({s.shape for s in scores}) != 1:
            return None
        return np.mean(scores, axis=0)

    def write_table(self) -> Path:
        path = self.out / TABLE_FILE
        return write_text(path, self.table()) if is_main_process() else path

    def table(self) -> str:
        """The markdown table in the paper's layout: rows = variants, columns = metrics, then the
        differences from the first row in Rank-1 and mAP, each with its paired-bootstrap interval."""
        grid = self.grid
        names = list(dict.fromkeys(Path(d).resolve().name for rv in self.variants for d in rv.datasets))
        label = {m: f"Rank-{m[1:]}" if m[1:].isdigit() else m for m in (*grid.metrics, *COMPARED)}
        ci = f"{LEVEL:.0%} CI"

        def heading(dataset: str, text: str) -> str:
            return f"{dataset} {text}" if len(names) > 1 else text

        header = ["Methods"]
        header += [heading(n, label[m]) for n in names for m in grid.metrics]
        header += [heading(n, text) for n in names for m in COMPARED for text in (f"Δ{label[m]}", ci)]
        rows, reference, pending, row_seeds = [], None, False, {}
        for requested in self.rows():
            variant = requested[0].variant
            if variant.section:
                rows.append([f"*{variant.section}*"] + [""] * (len(header) - 1))
            finished = self.table_runs(requested)
            done = finished is not None
            pending |= not done
            runs, results = [rv for rv, _ in finished or []], [r for _, r in finished or []]
            if done:
                row_seeds[variant.name] = [rv.seed for rv in runs]
            values = {
                (n, m): [r[n][grid.direction][m] for r in results]
                if done and all(n in r for r in results)
                else None
                for n in names
                for m in dict.fromkeys((*grid.metrics, *COMPARED))
            }
            scores = {
                (n, m): self.query_scores(runs, n, m) if done else None for n in names for m in COMPARED
            }
            cells = [_mean_std(values[n, m]) for n in names for m in grid.metrics]
            if reference is None:
                reference = values, scores
                cells += [""] * (2 * len(COMPARED) * len(names))
            else:
                for n in names:
                    for m in COMPARED:
                        ref_values, ref_scores = reference[0][n, m], reference[1][n, m]
                        cells += _comparison(values[n, m], ref_values, scores[n, m], ref_scores)
            rows.append([variant.name, *cells])

        lines = [f"# {grid.title}", ""]
        own = sorted({v.base for v in grid.variants if v.base})
        own_bases = f" (some rows start from {', '.join(f'`{b}`' for b in own)})" if own else ""
        data = ", ".join(f"`{d}`" for d in dict.fromkeys(d for rv in self.variants for d in rv.datasets))
        seeds = self._seeds_text(row_seeds)
        lines.append(
            f"Base recipe `{grid.base}`{own_bases}; {DIRECTIONS[grid.direction]} retrieval on the {SPLIT} split of "
            f"{data}, with each run's 'best' checkpoint (chosen on the validation split; the final model "
            f"when a run does not validate).{seeds} Δ: the row's {' / '.join(label[m] for m in COMPARED)} "
            f"minus the first row's; {ci}: its {LEVEL:.0%} paired-bootstrap interval over the test queries "
            f"({RESAMPLES} resamples of the queries, each row's per-query scores averaged over its seeds); "
            "* marks a difference whose interval excludes 0."
        )
        lines += ["", *_markdown_rows(header, rows), ""]
        if pending:
            every = " (a row waits for every seed of `--seeds`)." if self.seeds else "."
            lines += ["Rows with '-' have not finished yet" + every, ""]
        lines += [f"- {note}" for note in grid.notes]
        lines += [""] if grid.notes else []
        if self.command:
            lines += ["Produced by:", "", "```", self.command, "```", ""]
        return "\n".join(lines)

    def _seeds_text(self, row_seeds: dict[str, list[int]]) -> str:
        """The seeds the cells cover (each row's, where rows differ), and any found beyond ``--seeds``."""
        if not self.seeds:
            return ""
        groups: dict[tuple[int, ...], list[str]] = {}
        for name, seeds in row_seeds.items():
            groups.setdefault(tuple(seeds), []).append(name)
        mean_std = " Each cell is the mean ± standard deviation (n - 1) over"
        if len(groups) > 1:
            text = (
                f"{mean_std} its row's seeds: "
                + "; ".join(f"{_listed(s)} ({', '.join(n)})" for s, n in groups.items())
                + "."
            )
        else:
            seeds = next(iter(groups), tuple(self.seeds))
            text = f"{mean_std} seeds {_listed(seeds)}." if len(seeds) > 1 else f" Seed {seeds[0]}."
        extra = sorted({s for seeds in groups for s in seeds} - set(self.seeds))
        if extra:
            text += (
                f" Runs of seed{'s' * (len(extra) > 1)} {_listed(extra)} found finished in this folder are "
                f"included, though not in this command's `--seeds {' '.join(map(str, self.seeds))}`."
            )
        return text


def _listed(seeds) -> str:
    return ", ".join(map(str, seeds))


def is_main_process() -> bool:
    """Whether this is the first (or only) process of a torchrun job: it takes locks, evaluates, writes."""
    return int(os.environ.get("RANK", "0")) == 0


def _mean_std(values: list[float] | None) -> str:
    """One value as it is; several as mean ± sample standard deviation."""
    if values is None:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"


def _comparison(
    values: list[float] | None,
    reference: list[float] | None,
    scores: np.ndarray | None,
    ref_scores: np.ndarray | None,
) -> list[str]:
    """The Δ cell (marked '*' when the interval excludes 0) and the interval cell."""
    if values is None or reference is None:
        return ["-", "-"]
    delta = f"{np.mean(values) - np.mean(reference):+.2f}"
    if scores is None or ref_scores is None or scores.shape != ref_scores.shape:
        return [delta, "-"]
    low, high = paired_bootstrap(scores, ref_scores)
    return [delta + ("*" if low > 0 or high < 0 else ""), f"[{low:+.2f}, {high:+.2f}]"]


def _markdown_rows(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = (c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    )
    return [line(header), rule, *(line(r) for r in rows)]
