"""Index writers killed at every step of the generation switch, two writers at once (real processes), and a
running service that picks up an update (a real socket)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

import tbpr.search.index as index_mod
from tbpr.atomic import write_text
from tbpr.cli import main
from tbpr.crashsafe import SIGNAL_AT_ENV
from tbpr.errors import ConfigError
from tbpr.search import Searcher, build_index, update_index
from tbpr.search.index import read_index_meta
from tbpr.search.service import create_app, serve_in_thread

SWITCH_STEPS = [
    "index.generation-written",  # the new generation is complete in its temp folder
    "index.generation-renamed",  # ... and renamed to gen-NNNN, index.json still names the old one
    "index.switched",  # index.json names the new generation, the old one is still there
    "index.previous-removed",  # the old generation is gone, the parts are still there
]
_ENCODE_IMAGES = index_mod._encode_images


def cli(*args: str, signal_at: str | None = None, popen: bool = False):
    """``tbpr ARGS`` in a new process, with a signal delivered at ``signal_at`` (tbpr.crashsafe.kill_point)."""
    env = dict(os.environ)
    if signal_at:
        env[SIGNAL_AT_ENV] = signal_at
    cmd = [sys.executable, "-m", "tbpr", *args]
    if popen:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def count_encoded(monkeypatch) -> list[int]:
    calls: list[int] = []

    def counting(loaded, images_dir, paths, *args):
        calls.append(len(paths))
        return _ENCODE_IMAGES(loaded, images_dir, paths, *args)

    monkeypatch.setattr(index_mod, "_encode_images", counting)
    return calls


@pytest.fixture(scope="module")
def final(tmp_path_factory, synth_tiny) -> Path:
    """Ten gallery images: the folder every scenario ends with."""
    folder = tmp_path_factory.mktemp("final") / "imgs"
    folder.mkdir()
    for path in sorted((synth_tiny / "imgs").rglob("*.jpg"))[:10]:
        shutil.copy2(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def reference_index(tmp_path_factory, final, tiny_run) -> Path:
    """An uninterrupted build of ``final``."""
    return build_index(tiny_run, final, tmp_path_factory.mktemp("ref") / "idx", num_workers=0)


@pytest.fixture(scope="module")
def reference(reference_index) -> tuple[dict, np.ndarray]:
    """Items and embeddings of ``reference_index``."""
    data = reference_index / read_index_meta(reference_index)["data"]
    return _items(data), np.load(data / "embeddings.npy")


def _items(data: Path) -> dict:
    """items.json without the inodes: each test indexes its own copy of the gallery (same bytes and mtimes)."""
    items = json.loads((data / "items.json").read_text())
    assert len(items.pop("ino")) == len(items["id"])
    return items


def assert_complete(index_dir: Path, reference, generation: int) -> None:
    """``index_dir`` is exactly the reference index: one generation, no parts, no temp folders."""
    meta = read_index_meta(index_dir)
    assert meta["generation"] == generation
    assert sorted(p.name for p in index_dir.iterdir()) == [".lock", f"gen-{generation:04d}", "index.json"]
    items, emb = reference
    data = index_dir / meta["data"]
    assert _items(data) == items
    np.testing.assert_allclose(np.load(data / "embeddings.npy"), emb, atol=1e-6)
    assert len(Searcher(index_dir).search("a man in a black coat", k=3)) == 3


def stale_index(tmp_path: Path, final: Path, tiny_run: Path) -> tuple[Path, Path]:
    """An index of an older state of ``final`` (two images missing, one since deleted), then ``final``'s state."""
    folder = tmp_path / "imgs"
    shutil.copytree(final, folder)  # copy2: the same sizes and mtimes as the reference
    held = tmp_path / "held"
    held.mkdir()
    later = sorted(folder.iterdir())[:2]
    for path in later:
        shutil.move(path, held / path.name)
    shutil.copy2(held / later[0].name, folder / "deleted.jpg")
    index_dir = build_index(tiny_run, folder, tmp_path / "idx", num_workers=0, chunk_size=4)
    (folder / "deleted.jpg").unlink()
    for path in held.iterdir():
        shutil.move(path, folder / path.name)
    return folder, index_dir


@pytest.mark.slow
@pytest.mark.parametrize("step", SWITCH_STEPS)
def test_update_killed_at_each_step_of_the_switch_is_completed_by_the_next_run(
    tmp_path, final, reference, tiny_run, step, monkeypatch
):
    _, index_dir = stale_index(tmp_path, final, tiny_run)
    killed = cli("index", "update", str(index_dir), "--num-workers", "0", "--chunk-size", "1", signal_at=step)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    if step == "index.generation-renamed":  # the state that made every rerun fail with 'Directory not empty'
        assert (index_dir / "gen-0002").is_dir() and read_index_meta(index_dir)["data"] == "gen-0001"
    calls = count_encoded(monkeypatch)
    update_index(index_dir, num_workers=0)
    assert calls == []  # the two new images were encoded (into parts) before the kill
    assert_complete(index_dir, reference, generation=2)


@pytest.mark.slow
@pytest.mark.parametrize("step", ["index.generation-renamed", "index.switched"])
def test_build_killed_during_the_switch_is_completed_by_the_same_command(
    tmp_path, final, reference, tiny_run, step, monkeypatch
):
    folder, index_dir = tmp_path / "imgs", tmp_path / "idx"
    shutil.copytree(final, folder)
    args = ["index", "build", "--run", str(tiny_run), "--images", str(folder), "--out", str(index_dir)]
    killed = cli(*args, "--num-workers", "0", signal_at=step)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    calls = count_encoded(monkeypatch)
    assert main([*args, "--num-workers", "0"]) == 0
    assert calls == []
    assert_complete(index_dir, reference, generation=1)


def wait_until_stopped(proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "the writer never reached its stop point"
        time.sleep(0.1)


@pytest.mark.slow
def test_a_second_writer_is_refused_while_the_first_holds_the_index(
    tmp_path, final, reference, tiny_run, caplog
):
    folder, index_dir = stale_index(tmp_path, final, tiny_run)
    first = cli(
        "index",
        "update",
        str(index_dir),
        "--num-workers",
        "0",
        signal_at="index.generation-written:SIGSTOP",
        popen=True,
    )  # stopped with its new generation written, holding the lock
    try:
        wait_until_stopped(first)
        temp = list(index_dir.glob(".gen-*.tmp"))
        assert len(temp) == 1
        with pytest.raises(
            ConfigError, match="being written by another `tbpr index build` or `tbpr index update`"
        ):
            update_index(index_dir, num_workers=0)
        caplog.clear()
        build = ["index", "build", "--run", str(tiny_run), "--images", str(folder), "--out", str(index_dir)]
        assert main(build) == 2
        assert "is being written by another" in caplog.text and "Traceback" not in caplog.text
        assert list(index_dir.glob(".gen-*.tmp")) == temp  # the refused writers touched nothing
        assert (index_dir / "parts").is_dir()
    finally:
        first.send_signal(signal.SIGCONT)
        out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    assert "2 added, 0 changed, 1 removed" in out
    assert_complete(index_dir, reference, generation=2)


def test_a_running_service_picks_up_an_update_between_requests(tmp_path, final, reference, tiny_run):
    folder, index_dir = stale_index(tmp_path, final, tiny_run)
    old_ids = set(json.loads((index_dir / "gen-0001" / "items.json").read_text())["id"])
    new_ids = set(reference[0]["id"])
    added = sorted(new_ids - old_ids)
    searcher = Searcher(index_dir)
    with serve_in_thread(create_app(searcher)) as url, httpx.Client(base_url=url, timeout=60) as http:
        assert http.get("/api/health").json()["gallery_size"] == len(old_ids) == 9
        assert http.get(f"/api/images/{added[0]}").status_code == 404
        seen, stop = [], threading.Event()

        def query_all_along() -> None:  # every answer is one whole generation, old or new, never a mixture
            while not stop.is_set():
                response = http.post("/api/search", json={"query": "a person", "k": 100})
                seen.append((response.status_code, {h["id"] for h in response.json()["results"]}))

        reader = threading.Thread(target=query_all_along)
        reader.start()
        try:
            report = update_index(index_dir, num_workers=0)
            answered, deadline = len(seen), time.monotonic() + 120
            while len(seen) < answered + 2 and time.monotonic() < deadline:  # the last began after the update
                time.sleep(0.05)
        finally:
            stop.set()
            reader.join(timeout=60)
        assert (report.added, report.removed, report.size) == (2, 1, 10)
        assert seen and all(status == 200 and ids in (old_ids, new_ids) for status, ids in seen)
        assert seen[-1][1] == new_ids  # switched without a restart
        assert http.get("/api/health").json()["gallery_size"] == 10
        response = http.get(f"/api/images/{added[0]}")
        path = folder / reference[0]["path"][reference[0]["id"].index(added[0])]
        assert response.status_code == 200 and response.content == path.read_bytes()


def test_a_newer_index_that_cannot_be_loaded_is_logged_and_the_current_one_kept(
    tmp_path, reference_index, caplog
):
    index_dir = tmp_path / "idx"
    shutil.copytree(reference_index, index_dir)
    searcher = Searcher(index_dir)
    before = searcher.search("a man", k=3)
    good = (index_dir / "index.json").read_text()
    write_text(index_dir / "index.json", good.replace('"version": 1', '"version": 99'))
    assert searcher.refresh() is False
    assert "changed but cannot be loaded" in caplog.text and "version 1" in caplog.text
    assert searcher.search("a man", k=3) == before
    caplog.clear()
    assert searcher.refresh() is False and not caplog.text  # not retried until index.json changes again
    write_text(index_dir / "index.json", good)
    assert searcher.refresh() is True and searcher.search("a man", k=3) == before
