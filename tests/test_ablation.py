"""``tbpr ablate``: grids, the table, and resuming (finished variants kept, interrupted ones resumed)."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tbpr.cli import main
from tbpr.config import to_dict
from tbpr.errors import ConfigError
from tbpr.evaluation.bootstrap import paired_bootstrap, query_scores, save_per_query
from tbpr.train import ablation as A
from tbpr.train import load_config
from tbpr.train.engine import Trainer

MICRO = [
    "model.arch=tbpr-micro",
    "model.image_size=[64, 32]",
    "data.batch_size=16",
    "data.num_workers=0",
    "optim.epochs=1",
    "max_steps=2",
    "checkpoint_every=1",
    "eval_every=0",
]
VARIANTS = [{"name": "Baseline"}, {"name": "+ no flip", "overrides": ["data.hflip=false"]}]


def write_grid(folder: Path, data_path: Path, variants=VARIANTS, **fields) -> Path:
    grid = {"title": "Tiny grid", "base": "cpu-small", "overrides": [*MICRO, f"data.path={data_path}"]}
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump({**grid, "variants": variants, **fields}, sort_keys=False))
    return path


def ablation(grid_file: Path, out: Path, overrides=(), seeds=()) -> A.Ablation:
    grid, path = A.load_grid(grid_file)
    return A.Ablation(grid, path, out, list(overrides), command="tbpr ablate grid.yaml", seeds=list(seeds))


@pytest.fixture
def train_calls(monkeypatch):
    """Each call of the engine's ``train`` made by the runner: the run folder's name."""
    calls = []

    def counting(cfg, resume=True):
        calls.append(Path(cfg.output_dir).name)
        return real(cfg, resume)

    real = A.train
    monkeypatch.setattr(A, "train", counting)
    return calls


@pytest.fixture(scope="module")
def finished(tmp_path_factory, synth_tiny):
    """A grid of two variants run to the end: (grid file, output folder)."""
    root = tmp_path_factory.mktemp("ablate")
    grid_file = write_grid(root, synth_tiny)
    ablation(grid_file, root / "out").run()
    return grid_file, root / "out"


def copy_of(finished, tmp_path) -> tuple[Path, Path]:
    grid_file, out = finished
    shutil.copytree(out, tmp_path / "out")
    shutil.copy(grid_file, tmp_path / "grid.yaml")
    return tmp_path / "grid.yaml", tmp_path / "out"


@pytest.mark.slow
def test_runs_every_variant_and_writes_the_table(finished):
    _, out = finished
    table = (out / "table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in rows[0].split("|")[1:-1]]
    assert header == [
        "Methods",
        "Rank-1",
        "Rank-5",
        "Rank-10",
        "mAP",
        "mINP",
        "ΔRank-1",
        "95% CI",
        "ΔmAP",
        "95% CI",
    ]
    for slug, row in zip(["baseline", "no-flip"], rows[1:]):
        result = json.loads((out / slug / "result.json").read_text())
        t2i = result["results"]["tiny"]["t2i"]
        cells = [c.strip() for c in row.split("|")[1:-1]]
        assert cells[0] == result["variant"]
        assert cells[1:6] == [f"{t2i[m]:.2f}" for m in ("R1", "R5", "R10", "mAP", "mINP")]
        assert result["evaluation"] == {
            "split": "test",
            "checkpoint": "best",
            "datasets": [result["config"]["data"]["path"]],
        }
    base = json.loads((out / "baseline/result.json").read_text())["results"]["tiny"]["t2i"]["R1"]
    other = json.loads((out / "no-flip/result.json").read_text())["results"]["tiny"]["t2i"]["R1"]
    cells = [c.strip() for c in rows[2].split("|")[1:-1]]
    assert cells[6].rstrip("*") == f"{other - base:+.2f}"
    for column, metric in ((6, "R1"), (8, "mAP")):  # the intervals come from the saved per-query scores
        low, high = paired_bootstrap(
            *(
                query_scores(out / slug / "per_query.npz", "tiny", "t2i", metric)
                for slug in ("no-flip", "baseline")
            )
        )
        assert cells[column + 1] == f"[{low:+.2f}, {high:+.2f}]"
        assert cells[column].endswith("*") == (low > 0 or high < 0)
    assert json.loads((out / "no-flip/result.json").read_text())["config"]["data"]["hflip"] is False
    assert "tbpr ablate grid.yaml" in table and "not finished" not in table


@pytest.mark.slow
def test_rerun_does_not_retrain_or_reevaluate_finished_variants(finished, tmp_path, train_calls, monkeypatch):
    grid_file, out = copy_of(finished, tmp_path)  # a moved output folder still counts as finished
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")}
    monkeypatch.setattr(A, "evaluate_run", lambda *a, **k: pytest.fail("re-evaluated a finished variant"))
    # result-neutral keys (workers, logging) do not make a result stale either
    ablation(grid_file, out, ["data.num_workers=1", "log_every=5"]).run()
    assert train_calls == []
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")} == mtimes
    assert "Baseline" in (out / "table.md").read_text()


@pytest.mark.slow
def test_a_changed_variant_config_is_rerun_from_scratch(finished, tmp_path, train_calls, caplog):
    grid_file, out = copy_of(finished, tmp_path)
    grid = yaml.safe_load(grid_file.read_text())
    grid["variants"][1]["overrides"].append("optim.lr=1e-3")
    grid_file.write_text(yaml.safe_dump(grid))
    old = json.loads((out / "no-flip/result.json").read_text())
    with caplog.at_level(logging.INFO, logger="tbpr"):
        ablation(grid_file, out).run()
    assert train_calls == ["no-flip"]
    assert "config changed since its run (optim.lr)" in caplog.text
    new = json.loads((out / "no-flip/result.json").read_text())
    assert new["config"]["optim"]["lr"] == 1e-3 and old["config"]["optim"]["lr"] != 1e-3
    steps = [json.loads(x)["step"] for x in (out / "no-flip/metrics.jsonl").read_text().splitlines()]
    assert steps[0] == 1  # trained from step 0, not resumed from the old run's checkpoint


@pytest.mark.slow
def test_new_test_datasets_are_evaluated_without_retraining(finished, tmp_path, train_calls, monkeypatch):
    grid_file, out = copy_of(finished, tmp_path)
    data = Path(yaml.safe_load(grid_file.read_text())["overrides"][-1].removeprefix("data.path="))
    shutil.copytree(data, tmp_path / "second")
    grid = yaml.safe_load(grid_file.read_text())
    grid["eval_data"] = [str(data), str(tmp_path / "second")]
    grid_file.write_text(yaml.safe_dump(grid))
    run = ablation(grid_file, out)
    assert [run.status(rv).state for rv in run.variants] == ["evaluate", "evaluate"]
    table = (out / "table.md").read_text()
    monkeypatch.setenv("RANK", "1")  # under torchrun only the first process evaluates and writes
    run.run()
    assert (out / "table.md").read_text() == table
    monkeypatch.delenv("RANK")
    run.run()
    assert train_calls == []
    result = json.loads((out / "no-flip/result.json").read_text())
    assert result["results"].keys() == {"tiny", "second"}
    assert result["results"]["tiny"] == result["results"]["second"]
    assert "second Rank-1" in (out / "table.md").read_text()


@pytest.mark.slow
def test_an_interrupted_variant_resumes_from_its_checkpoint(tmp_path, synth_tiny, train_calls, monkeypatch):
    grid_file = write_grid(tmp_path, synth_tiny)
    out = tmp_path / "out"
    save_last = Trainer._save_last

    def crash_in_second_variant(self):
        save_last(self)
        if self.out.name == "no-flip" and self.global_step == 1:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Trainer, "_save_last", crash_in_second_variant)
        with pytest.raises(KeyboardInterrupt):
            ablation(grid_file, out).run()
    assert (out / "baseline/result.json").is_file() and not (out / "no-flip/result.json").exists()
    row = next(line for line in (out / "table.md").read_text().splitlines() if "+ no flip" in line)
    assert [c.strip() for c in row.split("|")[1:-1]][1:] == ["-"] * 9
    run = ablation(grid_file, out)
    assert [run.status(rv).state for rv in run.variants] == ["done", "resume"], [
        run.status(rv) for rv in run.variants
    ]

    resumed_at = []
    load_state = Trainer._load_state

    def spy(self, path):
        load_state(self, path)
        resumed_at.append(self.global_step)

    monkeypatch.setattr(Trainer, "_load_state", spy)
    train_calls.clear()
    ablation(grid_file, out).run()
    assert train_calls == ["no-flip"] and resumed_at == [1]
    assert json.loads((out / "no-flip/result.json").read_text())["results"]["tiny"]["t2i"]["num_queries"] > 0
    assert "not finished" not in (out / "table.md").read_text()


@pytest.mark.slow
def test_every_seed_of_every_row_trains_and_an_interrupted_seed_resumes(
    tmp_path, synth_tiny, train_calls, monkeypatch
):
    grid_file = write_grid(tmp_path, synth_tiny)
    out = tmp_path / "out"
    save_last = Trainer._save_last

    def crash_in_the_last_run(self):
        save_last(self)
        if self.out == out / "no-flip" / "seed-1" and self.global_step == 1:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Trainer, "_save_last", crash_in_the_last_run)
        with pytest.raises(KeyboardInterrupt):
            ablation(grid_file, out, seeds=[0, 1]).run()
    run = ablation(grid_file, out, seeds=[0, 1])
    assert [run.status(rv).state for rv in run.variants] == ["done", "done", "done", "resume"]
    pending = next(line for line in (out / "table.md").read_text().splitlines() if "+ no flip" in line)
    assert {c.strip() for c in pending.split("|")[2:-1]} == {"-"}  # one seed missing: the row waits
    train_calls.clear()
    run.run()
    assert train_calls == ["seed-1"]
    results = {
        (slug, seed): json.loads((out / slug / f"seed-{seed}" / "result.json").read_text())
        for slug in ("baseline", "no-flip")
        for seed in (0, 1)
    }
    assert {(k, r["config"]["seed"]) for k, r in results.items()} == {(k, k[1]) for k in results}
    table = (out / "table.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| Baseline"))
    r1 = [results["baseline", s]["results"]["tiny"]["t2i"]["R1"] for s in (0, 1)]
    assert [c.strip() for c in row.split("|")[1:-1]][1] == f"{np.mean(r1):.2f} ± {np.std(r1, ddof=1):.2f}"
    assert "over seeds 0, 1" in table and "not finished" not in table
    # the interval pairs the queries, each row's per-query scores averaged over its two seeds
    rows = [
        [c.strip() for c in line.split("|")[1:-1]] for line in table.splitlines() if line.startswith("| ")
    ]
    pair = [
        np.mean(
            [query_scores(out / slug / f"seed-{s}" / "per_query.npz", "tiny", "t2i", "R1") for s in (0, 1)], 0
        )
        for slug in ("no-flip", "baseline")
    ]
    low, high = paired_bootstrap(*pair)
    assert rows[2][7] == f"[{low:+.2f}, {high:+.2f}]"


@pytest.mark.slow
def test_a_result_without_per_query_scores_is_evaluated_again(finished, tmp_path, train_calls):
    grid_file, out = copy_of(finished, tmp_path)
    (out / "no-flip" / "per_query.npz").unlink()
    run = ablation(grid_file, out)
    assert [run.status(rv).state for rv in run.variants] == ["done", "evaluate"]
    run.run()
    assert train_calls == [] and (out / "no-flip" / "per_query.npz").is_file()
    assert run.status(run.variants[1]).state == "done"


@pytest.mark.slow
def test_cli_dry_run_only_and_data_shortcut(finished, tmp_path, capsys, synth_tiny, train_calls):
    grid_file, out = copy_of(finished, tmp_path)
    argv = ["ablate", str(grid_file), "--out", str(out), "--data", str(synth_tiny), "--only", "no-flip"]
    assert main([*argv, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "# + no flip" in printed and "finished: not rerun" in printed and "# Baseline" not in printed
    assert main([*argv, "--dry-run", "--seeds", "3", "4"]) == 0
    printed = capsys.readouterr().out
    assert f"{out / 'no-flip' / 'seed-3'}: not started: trains from its first epoch" in printed
    assert "seed-4" in printed and not (out / "no-flip" / "seed-3").exists()  # a dry run creates nothing
    assert yaml.safe_load(printed.split("\n", 2)[2])["data"]["path"] == str(synth_tiny)
    assert main(["ablate", str(grid_file), "--out", str(out), "--only", "nope"]) == 2
    assert main([*argv, "--set", "optim.lr=2e-3"]) == 0
    assert train_calls == ["no-flip"]
    table = (out / "table.md").read_text()
    assert "--set optim.lr=2e-3 --only no-flip" in table
    # the baseline's result no longer matches (--set changed its config too): its row shows '-'
    assert "Rows with '-' have not finished yet." in table


def cells(table: str, label: str) -> list[str]:
    """The cells of the table row whose label is ``label``."""
    row = next(line for line in table.splitlines() if line.startswith(f"| {label} "))
    return [c.strip() for c in row.split("|")[2:-1]]


@pytest.mark.slow
def test_seeds_finished_by_separate_commands_share_one_table(tmp_path, synth_tiny, train_calls):
    grid_file = write_grid(tmp_path, synth_tiny)
    out = tmp_path / "out"
    ablation(grid_file, out, seeds=[0]).run()
    assert "Seed 0." in (out / "table.md").read_text()
    ablation(grid_file, out, seeds=[1]).run()  # e.g. on a second machine, into the same folder
    assert train_calls == ["seed-0", "seed-0", "seed-1", "seed-1"]
    r1 = {
        (slug, seed): json.loads((out / slug / f"seed-{seed}" / "result.json").read_text())["results"][
            "tiny"
        ]["t2i"]["R1"]
        for slug in ("baseline", "no-flip")
        for seed in (0, 1)
    }
    base, other = [r1["baseline", s] for s in (0, 1)], [r1["no-flip", s] for s in (0, 1)]
    for seeds, found in (([1], 0), ([0], 1)):  # the second command's table, then the first command's again
        ablation(grid_file, out, seeds=seeds).run()
        table = (out / "table.md").read_text()
        assert cells(table, "Baseline")[0] == f"{np.mean(base):.2f} ± {np.std(base, ddof=1):.2f}"
        assert cells(table, "+ no flip")[0] == f"{np.mean(other):.2f} ± {np.std(other, ddof=1):.2f}"
        assert cells(table, "+ no flip")[5].rstrip("*") == f"{np.mean(other) - np.mean(base):+.2f}"
        assert "over seeds 0, 1." in table and "not finished" not in table
        assert (
            f"Runs of seed {found} found finished in this folder are included, though not in this "
            f"command's `--seeds {seeds[0]}`." in table
        )
    assert len(train_calls) == 4  # nothing trained twice
    (out / "baseline" / "seed-1" / "result.json").unlink()
    assert (
        "over its row's seeds: 0 (Baseline); 0, 1 (+ no flip)." in ablation(grid_file, out, seeds=[0]).table()
    )


HOLD_LOCK = (  # another process holding a run folder's lock until it is killed
    "import fcntl, sys, time; f = open(sys.argv[1], 'ab'); fcntl.flock(f, fcntl.LOCK_EX); "
    "print('locked', flush=True); time.sleep(600)"
)


@pytest.mark.slow
def test_a_run_another_process_holds_is_skipped_until_that_process_dies(
    tmp_path, synth_tiny, train_calls, caplog, capsys
):
    grid_file = write_grid(tmp_path, synth_tiny)
    out = tmp_path / "out"
    (out / "no-flip").mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(out / "no-flip" / A.LOCK_FILE)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        assert main(["ablate", str(grid_file), "--out", str(out), "--dry-run"]) == 0
        printed = capsys.readouterr().out
        assert f"# + no flip -> {out / 'no-flip'}: being trained by another process: skipped" in printed
        assert f"# Baseline -> {out / 'baseline'}: not started" in printed
        with caplog.at_level(logging.INFO, logger="tbpr"):
            ablation(grid_file, out).run()
        assert train_calls == ["baseline"]
        assert (
            f"variant '+ no flip' ({out / 'no-flip'}): being trained by another process: skipped"
            in caplog.text
        )
        assert not (out / "no-flip" / "checkpoints").exists()
        assert set(cells((out / "table.md").read_text(), "+ no flip")) == {"-"}
    finally:
        holder.kill()
        holder.wait()
    ablation(grid_file, out).run()  # the lock died with its holder
    assert train_calls == ["baseline", "no-flip"]
    assert "not finished" not in (out / "table.md").read_text()


@pytest.mark.slow
def test_two_commands_at_once_on_one_folder_train_each_run_once_and_the_last_writes_all(tmp_path, synth_tiny):
    grid_file = write_grid(tmp_path, synth_tiny)
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    jobs = [
        subprocess.Popen(
            [sys.executable, "-m", "tbpr", "ablate", str(grid_file), "--out", str(out), "--seeds", *seeds],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seeds in (["0", "1"], ["1", "2"])  # seed 1 in both
    ]
    logs = ""
    for job in jobs:
        _, stderr = job.communicate(timeout=300)
        assert job.returncode == 0, stderr[-3000:]
        logs += stderr
    for slug in ("baseline", "no-flip"):  # each run started by one of the two, never by both
        for seed in (0, 1, 2):
            assert logs.count(f"({out / slug / f'seed-{seed}'}): not started") == 1, logs[-3000:]
    table = (out / "table.md").read_text()
    assert "over seeds 0, 1, 2." in table and "not finished" not in table


@pytest.mark.slow
def test_under_torchrun_every_process_skips_a_run_another_job_holds(tmp_path, synth_tiny):
    grid_file = write_grid(tmp_path, synth_tiny)
    out = tmp_path / "out"
    (out / "baseline").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "tbpr", "ablate", str(grid_file), "--out", str(out)]
    with open(out / "baseline" / A.LOCK_FILE, "ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # its own session: a hung job (a rank training what rank 0 skipped) is killed whole
        job = subprocess.Popen(
            cmd, env=dict(env, OMP_NUM_THREADS="1"), stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        try:
            _, stderr = job.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
            pytest.fail("the torchrun job hung: its processes disagreed on the held run")
    assert job.returncode == 0, stderr[-3000:]
    assert "being trained by another process" in stderr
    assert not (out / "baseline" / "checkpoints").exists() and (out / "no-flip" / "result.json").is_file()


def test_table_layout_sections_pending_rows_and_several_datasets(tmp_path, synth_tiny, monkeypatch):
    other = tmp_path / "other"
    other.mkdir()
    variants = [
        {"name": "CLIP"},
        {"name": "A", "section": "The group of removal:", "overrides": ["data.hflip=false"]},
        {"name": "B", "overrides": ["optim.lr=1e-3"]},
    ]
    grid_file = write_grid(
        tmp_path,
        synth_tiny,
        variants,
        metrics=["R1", "mAP"],
        eval_data=[str(synth_tiny), str(other)],
        notes=["a note"],
    )
    run = ablation(grid_file, tmp_path / "out")
    fake = {
        "CLIP": {"tiny": {"t2i": {"R1": 50.0, "mAP": 40.0}}, "other": {"t2i": {"R1": 30.0, "mAP": 20.0}}},
        "A": {"tiny": {"t2i": {"R1": 52.5, "mAP": 41.0}}, "other": {"t2i": {"R1": 29.0, "mAP": 19.0}}},
    }
    monkeypatch.setattr(A.Ablation, "finished_results", lambda self, rv: fake.get(rv.variant.name))
    lines = run.table().splitlines()
    assert lines[0] == "# Tiny grid"
    assert lines[4:10] == [
        "| Methods                 | tiny Rank-1 | tiny mAP | other Rank-1 | other mAP | tiny ΔRank-1 | tiny 95% CI "
        "| tiny ΔmAP | tiny 95% CI | other ΔRank-1 | other 95% CI | other ΔmAP | other 95% CI |",
        "|-------------------------|------------:|---------:|-------------:|----------:|-------------:|------------:"
        "|----------:|------------:|--------------:|-------------:|-----------:|-------------:|",
        "| CLIP                    |       50.00 |    40.00 |        30.00 |     20.00 |              |             "
        "|           |             |               |              |            |              |",
        "| *The group of removal:* |             |          |              |           |              |             "
        "|           |             |               |              |            |              |",
        "| A                       |       52.50 |    41.00 |        29.00 |     19.00 |        +2.50 |           - "
        "|     +1.00 |           - |         -1.00 |            - |      -1.00 |            - |",
        "| B                       |           - |        - |            - |         - |            - |           - "
        "|         - |           - |             - |            - |          - |            - |",
    ]
    assert "Rows with '-' have not finished yet." in lines and "- a note" in lines


def fake_per_query(hits: int, total: int = 100) -> dict:
    """Per-query arrays of a run whose first ``hits`` queries find their person at rank 1 (AP 1)."""
    rank = np.where(np.arange(total) < hits, 1, 5)
    return {
        "tiny::t2i::rank": rank,
        "tiny::t2i::ap": (rank == 1) * 1.0,
        "tiny::t2i::valid": np.ones(total, bool),
    }


def test_seeds_give_mean_std_cells_and_marked_paired_intervals(tmp_path, synth_tiny, monkeypatch):
    variants = [{"name": "Base"}, {"name": "Better", "overrides": ["data.hflip=false"]}]
    variants += [{"name": "Same", "overrides": ["optim.lr=1e-3"]}]
    run = ablation(write_grid(tmp_path, synth_tiny, variants, metrics=["R1"]), tmp_path / "out", seeds=[0, 1])
    assert [(rv.variant.slug, rv.seed, rv.config.seed) for rv in run.variants[:2]] == [
        ("base", 0, 0),
        ("base", 1, 1),
    ]
    assert run.variants[1].run_dir == tmp_path / "out" / "base" / "seed-1"
    hits = {
        ("Base", 0): 50,
        ("Base", 1): 52,
        ("Better", 0): 60,
        ("Better", 1): 62,
        ("Same", 0): 50,
        ("Same", 1): 52,
    }
    for rv in run.variants:
        save_per_query(rv.run_dir / "per_query.npz", fake_per_query(hits[rv.variant.name, rv.seed]))

    def results(self, rv):
        value = float(hits[rv.variant.name, rv.seed])
        return {"tiny": {"t2i": {"R1": value, "mAP": value}}}

    monkeypatch.setattr(A.Ablation, "finished_results", results)
    lines = run.table().splitlines()
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in lines if line.startswith("| ")]
    assert rows[0] == ["Methods", "Rank-1", "ΔRank-1", "95% CI", "ΔmAP", "95% CI"]
    assert rows[1][:2] == ["Base", "51.00 ± 1.41"]  # mean and sample standard deviation of 50 and 52
    # per query, Better minus Base (seeds averaged): 50 on queries 50, 51, 60, 61; 100 on 52-59; mean 10
    diff = np.zeros(100)
    diff[[50, 51, 60, 61]], diff[52:60] = 50.0, 100.0
    low, high = paired_bootstrap(diff, np.zeros(100))
    assert 0 < low < 10 < high
    assert rows[2] == [
        "Better",
        "61.00 ± 1.41",
        "+10.00*",
        f"[{low:+.2f}, {high:+.2f}]",
        "+10.00*",
        f"[{low:+.2f}, {high:+.2f}]",
    ]
    assert rows[3] == ["Same", "51.00 ± 1.41", "+0.00", "[+0.00, +0.00]", "+0.00", "[+0.00, +0.00]"]
    assert "mean ± standard deviation (n - 1) over seeds 0, 1" in run.table()
    # a seed without per-query scores: the difference still shows, its interval does not
    (run.variants[5].run_dir / "per_query.npz").unlink()
    same = next(line for line in run.table().splitlines() if line.startswith("| Same"))
    assert [c.strip() for c in same.split("|")[1:-1]][2:4] == ["+0.00", "-"]
    with pytest.raises(ConfigError, match=r"--seeds \[1, 1\]: a seed is given twice"):
        ablation(write_grid(tmp_path, synth_tiny), tmp_path / "out", seeds=[1, 1])


def test_cumulative_variants_stack_their_overrides(tmp_path, synth_tiny):
    variants = [
        {"name": "a", "overrides": ["optim.lr=1e-3"]},
        {"name": "b", "overrides": ["data.hflip=false"]},
    ]
    for cumulative, lr in ((True, 1e-3), (False, 5e-4)):
        run = ablation(write_grid(tmp_path, synth_tiny, variants, cumulative=cumulative), tmp_path / "out")
        cfg = run.variants[1].config
        assert (cfg.optim.lr, cfg.data.hflip) == (lr, False)
        assert cfg.output_dir == str(tmp_path / "out" / "b")


def test_a_grid_extends_another_and_resolves_paths_near_it(tmp_path, synth_tiny):
    write_grid(tmp_path, synth_tiny)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump({"optim": {"lr": 0.25}}))
    child = tmp_path / "sub" / "child.yaml"
    child.parent.mkdir()
    child.write_text("extends: ../grid.yaml\nbase: ../recipe.yaml\n")
    run = ablation(child, tmp_path / "out")
    assert [rv.variant.name for rv in run.variants] == ["Baseline", "+ no flip"]
    assert run.grid.title == "Tiny grid" and run.variants[0].config.optim.lr == 0.25


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda g: g["variants"][1].update(overide=["x=1"]), ["variants[1] ('+ no flip')", "overide"]),
        (lambda g: g["variants"][1].update(overrides=["optim.lrr=1"]), ["variant '+ no flip'", "lrr"]),
        (lambda g: g["variants"][1].update(overrides="optim.lr=1"), ["variants[1] ('+ no flip').overrides"]),
        (lambda g: g["variants"][1].pop("name"), ["variants[1].name", "needs a name"]),
        (lambda g: g["variants"].append({"name": "BASELINE!"}), ["'Baseline' and 'BASELINE!'", "slug"]),
        (lambda g: g["variants"].append({"name": "Baseline"}), ["same name"]),
        (lambda g: g["variants"][0].update(slug="A B"), ["variants[0] ('Baseline').slug"]),
        (lambda g: g.update(metrics=["R2"]), ["metrics", "R2"]),
        (lambda g: g.update(direction="both"), ["direction", "both"]),
        (lambda g: g.pop("base"), ["base"]),
        (lambda g: g.update(variants=[]), ["variants"]),
        (lambda g: g.update(colums=["R1"]), ["grid", "colums"]),
        (lambda g: g.update(extends="grid.yaml"), ["extends", "cycle"]),
    ],
)
def test_a_bad_grid_names_the_file_and_the_field(tmp_path, synth_tiny, edit, expected):
    path = write_grid(tmp_path, synth_tiny)
    grid = yaml.safe_load(path.read_text())
    edit(grid)
    path.write_text(yaml.safe_dump(grid))
    with pytest.raises(ConfigError) as err:
        ablation(path, tmp_path / "out")
    for text in [str(path), *expected]:
        assert text in str(err.value)


def test_unknown_grid_and_variant_names_list_the_choices(tmp_path, synth_tiny):
    with pytest.raises(ConfigError, match="shipped grids: .*table1-tricks"):
        A.load_grid("no-such-grid")
    run = ablation(write_grid(tmp_path, synth_tiny), tmp_path / "out")
    with pytest.raises(ConfigError, match=r"no such variant; its variants: \['Baseline', '\+ no flip'\]"):
        run.select(["nope"])
    assert [rv.variant.slug for rv in run.select(["+ no flip"])] == ["no-flip"]


SHIPPED = sorted(A.GRID_DIR.glob("*.yaml"))


# each paper's grids and the recipe they start from
PAPER_GRIDS = {
    "clip-baseline": [
        "table1-tricks",
        "table2-image-aug",
        "table3-text-aug",
        "table4-aug-combos",
        "table5-losses",
        "table16-few-shot",
    ],
    "llm-da": ["llmda-table5-modules", "llmda-fig6-alpha", "llmda-fig7-beta", "llmda-table4-text-aug"],
    "mllm4text": ["mllm4text-masking"],
    "clip-sdm": ["noise"],
    "pdg": ["pdg-table3-losses", "pdg-table4-slicing", "pdg-table5-modules", "pdg-table7-text-ops"],
}
BASE = {grid: base for base, grids in PAPER_GRIDS.items() for grid in grids}
CPU_BASE = {
    "clip-sdm": "cpu-small",
    "pdg": "pdg-lite",
}  # a recipe whose CPU version is not named RECIPE-small
CPU_BASE_OF_GRID = {"pdg-table4-slicing": "pdg-scratch-small"}  # pdg-lite's image tower has no patches
GPU_ARCH = {"pdg": "towers"}  # BERT-base + ViT-B/16 (the others: CLIP ViT-B/16)
# grids on the pretrained CPU towers (tbpr-lite): the rows of the paper grid those towers can train
LITE = {"noise-lite": "noise"}


def test_every_paper_table_ships_as_a_gpu_and_a_cpu_grid():
    names = {p.stem for p in SHIPPED}
    assert names == {*BASE, *(f"{t}-small" for t in BASE), *LITE}


def test_a_lite_grid_keeps_the_rows_of_its_paper_grid_that_tbpr_lite_can_train(tmp_path):
    for name, paper in LITE.items():
        grid, path = A.load_grid(name)
        run = A.Ablation(grid, path, tmp_path / name, ["data.path=data/synthpedes-small"])
        assert grid.base == "tbpr-lite" and {rv.config.model.arch for rv in run.variants} == {"tbpr-lite"}
        rows = {v.slug for v in A.load_grid(paper)[0].variants}
        assert {v.slug for v in grid.variants} <= rows and len(grid.variants) > 1


PAPER_SHIPPED = [p for p in SHIPPED if p.stem not in LITE]


@pytest.mark.parametrize("path", PAPER_SHIPPED, ids=[p.stem for p in PAPER_SHIPPED])
def test_shipped_grids_resolve_every_variant(path, tmp_path):
    grid, _ = A.load_grid(path.stem)
    run = A.Ablation(grid, path, tmp_path / "out", ["data.path=data/synthpedes-small"])
    configs = [json.dumps(to_dict(rv.config), sort_keys=True) for rv in run.variants]
    assert len(set(configs)) == len(configs), "two rows of the grid train the same config"
    small = path.stem.endswith("-small")
    base = BASE[path.stem.removesuffix("-small")]
    gpu_name = path.stem.removesuffix("-small")
    cpu_base = CPU_BASE_OF_GRID.get(gpu_name, CPU_BASE.get(base, f"{base}-small"))
    assert grid.base == (cpu_base if small else base)
    if small:
        gpu, _ = A.load_grid(path.stem.removesuffix("-small"))
        assert [v.name for v in grid.variants] == [v.name for v in gpu.variants]
    else:
        assert {rv.config.model.arch for rv in run.variants} == {GPU_ARCH.get(base, "ViT-B-16")}


def test_a_variant_may_start_from_its_own_recipe(tmp_path):
    grid, path = A.load_grid("table16-few-shot-small")
    run = A.Ablation(grid, path, tmp_path / "out", ["data.path=data/synthpedes-small"])
    rows = {rv.variant.slug: rv.config for rv in run.variants}
    assert rows["tbps-clip-5pc"].losses == load_config("tbps-clip-small").losses  # the row's own base
    assert rows["clip-5pc"].losses == {"clip_itc": 1.0}  # the grid's base
    assert rows["coop-1pc"].model.tuning == "coop" and rows["coop-1pc"].data.train_fraction == 0.01
    assert rows["clip-adapter-10pc"].model.tuning == "clip-adapter"
