"""Hostile gallery folders: links, FIFOs and non-UTF-8 names are skipped and listed, never read or served."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tbpr.generate.text.caption import scan_images
from tbpr.search.index import build_index, read_index_meta
from tbpr.search.searcher import Searcher
from tbpr.search.service import create_app

GOOD = ["a.jpg", "b.jpg", "sub/c.png"]


def tbpr(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """The CLI in a child process, so that a command that hangs (on a FIFO) fails the test instead."""
    return subprocess.run(
        [sys.executable, "-m", "tbpr", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def hostile(tmp_path, synth_tiny):
    """Good images, a link to one of them, and each hostile entry of the findings."""
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    sources = sorted((synth_tiny / "imgs").rglob("*.jpg"))
    for name, source in zip(GOOD, sources):
        with Image.open(source) as im:
            im.save(folder / name)
    secret = tmp_path / "secret.jpg"  # outside the folder
    secret.write_bytes((folder / "a.jpg").read_bytes())
    os.symlink(folder / "a.jpg", folder / "inside-link.jpg")
    os.symlink(folder / "gone.jpg", folder / "dangling.jpg")
    os.symlink(secret, folder / "outside-link.jpg")
    os.symlink("/etc/hostname", folder / "etc.jpg")
    os.mkfifo(folder / "fifo.jpg")
    (folder / "dir.jpg").mkdir()
    shutil.copy(folder / "b.jpg", os.fsencode(folder) + b"/caf\xe9.jpg")
    return folder


SKIPPED = {
    "dangling.jpg": "dangling symbolic link",
    "outside-link.jpg": "symbolic link to outside the folder",
    "etc.jpg": "symbolic link to outside the folder",
    "fifo.jpg": "not a regular file",
    "caf\\xe9.jpg": "the file name is not valid UTF-8",
}


def test_index_build_skips_and_lists_what_is_not_an_image_file_inside(hostile, tmp_path, tiny_run):
    out = tmp_path / "idx"
    done = tbpr("index", "build", "--run", str(tiny_run), "--images", str(hostile), "--out", str(out),
                "--num-workers", "0")  # fmt: skip
    assert done.returncode == 0, done.stderr
    for name, reason in SKIPPED.items():
        assert f"{name} ({reason}" in done.stderr
    meta = read_index_meta(out)
    items = json.loads((out / meta["data"] / "items.json").read_text())
    assert sorted(items["path"]) == sorted([*GOOD, "inside-link.jpg"])


def test_caption_scan_skips_the_same_entries(hostile, caplog):
    assert scan_images(hostile) == sorted([*GOOD, "inside-link.jpg"])
    for name in SKIPPED:
        assert name in caplog.text


def test_data_check_does_not_hang_on_a_fifo(tmp_path, synth_tiny):
    data = Path(shutil.copytree(synth_tiny, tmp_path / "data"))
    victim = sorted((data / "imgs").rglob("*.jpg"))[0]
    victim.unlink()
    os.mkfifo(victim)
    done = tbpr("data", "check", str(data), timeout=120)
    assert done.returncode != 0
    assert "not a regular file" in done.stdout + done.stderr


@pytest.fixture
def served(hostile, tmp_path, tiny_run):
    index = build_index(tiny_run, hostile, tmp_path / "idx", num_workers=0)
    searcher = Searcher(index)
    ids = {path: searcher._gen.ids[row] for row, path in enumerate(searcher._gen.paths)}
    return TestClient(create_app(searcher), base_url="http://localhost"), ids


def test_an_unchanged_image_is_served(served, hostile):
    client, ids = served
    response = client.get(f"/api/images/{ids['a.jpg']}")
    assert response.status_code == 200 and response.content == (hostile / "a.jpg").read_bytes()
    assert client.get(f"/api/images/{ids['inside-link.jpg']}").status_code == 200


@pytest.mark.parametrize(
    "swap",
    [
        lambda f, outside: (f.unlink(), f.symlink_to("/etc/hostname")),
        lambda f, outside: (f.unlink(), f.symlink_to(outside)),  # same bytes, but outside the folder
        lambda f, outside: f.write_bytes(f.read_bytes()[:-1] + b"x"),
        lambda f, outside: (f.unlink(), os.mkfifo(f)),
        lambda f, outside: f.unlink(),
    ],
    ids=["link-to-etc", "link-outside-same-bytes", "rewritten", "fifo", "deleted"],
)
def test_a_file_swapped_after_indexing_is_not_served(served, hostile, tmp_path, swap):
    client, ids = served
    outside = tmp_path / "copy.jpg"
    shutil.copy(hostile / "b.jpg", outside)
    swap(hostile / "b.jpg", outside)
    response = client.get(f"/api/images/{ids['b.jpg']}")
    assert response.status_code == 404 and "missing or changed" in response.json()["detail"]
    assert not response.headers["content-type"].startswith("image/")
