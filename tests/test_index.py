"""Gallery indexes: build, stored items, exact search, resume, update, model check, approximate kinds."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tbpr.search.index as index_mod
from tbpr.data.schema import CaptionRecord
from tbpr.errors import ConfigError, DataError
from tbpr.evaluation.evaluator import encode_split
from tbpr.evaluation.run_eval import load_run
from tbpr.search import Searcher, build_index, update_index
from tbpr.search.folder import gallery_manifest, image_id, scan_folder
from tbpr.search.index import build_faiss, read_index_meta, resolved_params
from tbpr.search.searcher import exact_search

_ENCODE_IMAGES = index_mod._encode_images
QUERIES = ["a man in a black coat with a red backpack", "a woman in a white dress", "grey trousers"]


def make_gallery(folder: Path, synth_tiny: Path) -> Path:
    """The SynthPedes images plus an upper-case .PNG, a .webp, a corrupt .jpg, a truncated .jpg and a .txt."""
    shutil.copytree(synth_tiny / "imgs", folder)
    first = sorted(folder.rglob("*.jpg"))[0]
    (folder / "extra").mkdir()
    with Image.open(first) as im:
        im.save(folder / "extra" / "UPPER.PNG")
        im.save(folder / "extra" / "crop.webp")
    (folder / "extra" / "broken.jpg").write_bytes(b"this is not an image")
    (folder / "extra" / "truncated.jpg").write_bytes(first.read_bytes()[:200])
    (folder / "extra" / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, synth_tiny):
    return make_gallery(tmp_path_factory.mktemp("gallery") / "imgs", synth_tiny)


@pytest.fixture(scope="module")
def built(tmp_path_factory, gallery, tiny_run):
    return build_index(
        tiny_run, gallery, tmp_path_factory.mktemp("index") / "idx", num_workers=0, chunk_size=64
    )


def load_data(index_dir: Path) -> tuple[dict, dict, np.ndarray, list]:
    meta = read_index_meta(index_dir)
    data = index_dir / meta["data"]
    items = json.loads((data / "items.json").read_text())
    unreadable = json.loads((data / "unreadable.json").read_text())
    return meta, items, np.load(data / "embeddings.npy"), unreadable


class Interrupted(Exception):
    """A simulated interruption (Ctrl-C, a killed job) in the middle of a build."""


def count_encoded(monkeypatch, fail_on_call: int | None = None) -> list[int]:
    """Record how many images each chunk encodes; raise on the ``fail_on_call``-th chunk (1-based)."""
    calls: list[int] = []

    def counting(loaded, images_dir, paths, *args):
        if fail_on_call is not None and len(calls) + 1 == fail_on_call:
            raise Interrupted
        calls.append(len(paths))
        return _ENCODE_IMAGES(loaded, images_dir, paths, *args)

    monkeypatch.setattr(index_mod, "_encode_images", counting)
    return calls


def test_build_stores_items_hashes_and_lists_unreadable_files(built, gallery, tiny_run):
    meta, items, emb, unreadable = load_data(built)
    readable = sorted(p.relative_to(gallery).as_posix() for p in gallery.rglob("*.jpg")) + [
        "extra/UPPER.PNG",
        "extra/crop.webp",
    ]
    expected = sorted(set(readable) - {"extra/broken.jpg", "extra/truncated.jpg"})
    assert items["path"] == expected
    assert items["id"] == [hashlib.sha1(p.encode()).hexdigest()[:16] for p in expected]
    assert items["sha256"] == [hashlib.sha256((gallery / p).read_bytes()).hexdigest() for p in expected]
    assert items["size"] == [(gallery / p).stat().st_size for p in expected]
    assert sorted(u["path"] for u in unreadable) == ["extra/broken.jpg", "extra/truncated.jpg"]
    assert all(u["reason"] for u in unreadable)
    assert meta["size"] == len(expected) == emb.shape[0] and meta["unreadable"] == 2
    assert meta["kind"] == "flat" and meta["images_dir"] == str(gallery.resolve())
    model = meta["model"]
    ckpt = tiny_run / "checkpoints" / "best.pt"
    assert model["fingerprint"] == "sha256:" + hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert model["checkpoint_path"] == str(ckpt.resolve()) and model["arch"] == "tbpr-micro"
    assert model["image_size"] == [64, 32] and model["context_length"] == 77 and len(model["mean"]) == 3
    # no parts, no temp files; the writer lock's file stays
    assert sorted(p.name for p in built.iterdir()) == [".lock", "gen-0001", "index.json"]

    assert emb.dtype == np.float32 and emb.shape[1] == 64
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # the same features as the evaluator computes for these images with the run's preprocessing
    run = load_run(tiny_run)
    manifest = gallery_manifest(gallery, expected)
    manifest.captions = [CaptionRecord(i, i, "a person") for i in range(len(expected))]
    reference = encode_split(run.model, manifest, run.image_transform(), run.tokenizer(), num_workers=0)
    np.testing.assert_allclose(emb, reference.image_feats.numpy(), atol=1e-5)


def test_unreadable_files_are_logged_with_count_and_examples(tmp_path, synth_tiny, tiny_run, caplog):
    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(next((synth_tiny / "imgs").rglob("*.jpg")), folder / "ok.jpg")
    for i in range(12):
        (folder / f"bad{i:02d}.jpg").write_bytes(b"junk")
    with caplog.at_level(logging.WARNING, logger="tbpr"):
        build_index(tiny_run, folder, tmp_path / "idx", num_workers=0)
    message = caplog.text
    assert "12 unreadable files under" in message and "bad00.jpg" in message
    assert "bad10.jpg" not in message and "and 2 more" in message
    assert "unreadable.json" in message


def test_search_returns_the_exact_top_k(built):
    searcher = Searcher(built)
    _, items, emb, _ = load_data(built)
    assert len(searcher) == len(items["id"])
    for query in QUERIES:
        q = searcher.encode_query(query)[0]
        order = np.argsort(-(emb @ q), kind="stable")[:5]
        results = searcher.search(query, k=5)
        assert [r.rank for r in results] == [1, 2, 3, 4, 5]
        assert [r.id for r in results] == [items["id"][i] for i in order]
        assert [r.path for r in results] == [items["path"][i] for i in order]
        np.testing.assert_allclose([r.score for r in results], (emb @ q)[order], atol=1e-5)
    assert len(searcher.search("a man", k=10_000)) == len(searcher)
    first = searcher.search("a man", k=1)[0]
    assert searcher.image_file(first.id) == Path(searcher.info()["images_dir"]) / first.path
    assert searcher.image_file(first.id).is_file()
    with pytest.raises(KeyError):
        searcher.image_file("0000000000000000")
    info = searcher.info()
    assert info["kind"] == "flat" and info["size"] == len(searcher) and info["model"]["arch"] == "tbpr-micro"
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        searcher.search("a man", k=0)
    with pytest.raises(ConfigError, match="query is empty"):
        searcher.search("   ")


def test_exact_search_in_blocks_matches_a_hand_computed_ranking():
    emb = np.array([[1, 0], [0, 1], [0.6, 0.8], [-1, 0], [0.8, 0.6]], dtype=np.float32)
    scores, rows = exact_search(emb, np.array([[1, 0], [0, 1]], dtype=np.float32), k=3, block=2)
    assert rows.tolist() == [[0, 4, 2], [1, 2, 4]]
    np.testing.assert_allclose(scores, [[1.0, 0.8, 0.6], [1.0, 0.8, 0.6]])
    rng = np.random.default_rng(0)
    big = rng.standard_normal((1000, 16)).astype(np.float32)
    queries = rng.standard_normal((4, 16)).astype(np.float32)
    _, rows = exact_search(big, queries, k=10, block=97)
    assert rows.tolist() == np.argsort(-(queries @ big.T), axis=1)[:, :10].tolist()


def test_interrupted_build_resumes_without_re_encoding_finished_chunks(
    tmp_path, gallery, tiny_run, built, monkeypatch
):
    out = tmp_path / "idx"
    calls = count_encoded(monkeypatch, fail_on_call=3)
    with pytest.raises(Interrupted):
        build_index(tiny_run, gallery, out, num_workers=0, chunk_size=40)
    assert calls == [38, 40]  # two chunks finished; the first holds extra/'s two unreadable files
    assert not (out / "index.json").exists()
    assert sorted(p.name for p in (out / "parts").iterdir()) == [
        "part-000000.json",
        "part-000000.npy",
        "part-000001.json",
        "part-000001.npy",
    ]
    with pytest.raises(ConfigError, match="unfinished index"):
        Searcher(out)

    calls = count_encoded(monkeypatch)
    build_index(tiny_run, gallery, out, num_workers=0, chunk_size=40)
    _, full_items, full_emb, full_bad = load_data(built)
    _, items, emb, bad = load_data(out)
    assert sum(calls) == len(full_items["id"]) - 78  # only what the first run had not finished
    assert items == full_items and bad == full_bad
    np.testing.assert_allclose(emb, full_emb, atol=1e-6)
    assert not (out / "parts").exists()
    calls.clear()
    assert build_index(tiny_run, gallery, out, num_workers=0) == out  # finished: nothing to do
    assert calls == [] and read_index_meta(out)["generation"] == 1
    with pytest.raises(ConfigError, match="already holds another index"):
        build_index(tiny_run, gallery, out, num_workers=0, kind="hnsw")


def test_parts_of_another_folder_are_not_reused(tmp_path, synth_tiny, tiny_run, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    for path in sorted((synth_tiny / "imgs").rglob("*.jpg"))[:3]:
        shutil.copy2(path, first / path.name)
    shutil.copytree(first, second)  # same names, sizes and mtimes: only the folder differs
    calls = count_encoded(monkeypatch, fail_on_call=3)
    with pytest.raises(Interrupted):
        build_index(tiny_run, first, tmp_path / "idx", num_workers=0, chunk_size=1)
    calls = count_encoded(monkeypatch)
    build_index(tiny_run, second, tmp_path / "idx", num_workers=0, chunk_size=1)
    assert calls == [1, 1, 1]
    assert read_index_meta(tmp_path / "idx")["images_dir"] == str(second.resolve())


def test_update_adds_changes_and_drops_files_encoding_only_those(tmp_path, synth_tiny, tiny_run, monkeypatch):
    folder = make_gallery(tmp_path / "imgs", synth_tiny)
    out = build_index(tiny_run, folder, tmp_path / "idx", num_workers=0, chunk_size=64)
    _, items0, emb0, _ = load_data(out)
    jpgs = sorted(p for p in folder.rglob("*.jpg") if p.parent.name != "extra")
    new, changed, deleted, touched = folder / "new" / "a.jpg", jpgs[0], jpgs[1], jpgs[2]
    new.parent.mkdir()
    shutil.copy(jpgs[5], new)
    shutil.copy(jpgs[6], changed)  # other content (and size or mtime)
    deleted.unlink()
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    with Image.open(jpgs[7]) as im:  # the corrupt file is fixed: retried
        im.save(folder / "extra" / "broken.jpg", format="JPEG")
    rel = lambda p: p.relative_to(folder).as_posix()  # noqa: E731

    calls = count_encoded(monkeypatch)
    report = update_index(out, num_workers=0)
    assert sum(calls) == 3  # new, changed, fixed; the touched file's hash is unchanged
    assert (report.added, report.changed, report.removed, report.encoded) == (1, 2, 1, 3)
    assert report.unreadable == 1 and report.size == len(items0["id"]) + 1
    assert report.unchanged == len(items0["id"]) - 2  # not the still-truncated file; the touched one is
    assert str(report).startswith(f"1 added, 2 changed, 1 removed, {report.unchanged} unchanged; 3 images")
    meta, items, emb, bad = load_data(out)
    assert meta["data"] == "gen-0002" and not (out / "gen-0001").exists() and not (out / "parts").exists()
    assert items["path"] == sorted(items["path"]) and rel(deleted) not in items["path"]
    assert {rel(new), "extra/broken.jpg"} <= set(items["path"])
    assert [b["path"] for b in bad] == ["extra/truncated.jpg"]
    assert items["id"] == [image_id(p) for p in items["path"]]
    row, row0 = {p: i for i, p in enumerate(items["path"])}, {p: i for i, p in enumerate(items0["path"])}
    # the new file has the same content as jpgs[5] (so the same embedding); changed now equals jpgs[6]
    np.testing.assert_allclose(emb[row[rel(new)]], emb0[row0[rel(jpgs[5])]], atol=1e-6)
    np.testing.assert_allclose(emb[row[rel(changed)]], emb0[row0[rel(jpgs[6])]], atol=1e-6)
    assert items["sha256"][row[rel(changed)]] == items0["sha256"][row0[rel(jpgs[6])]]
    assert items["mtime_ns"][row[rel(touched)]] == touched.stat().st_mtime_ns
    untouched = [p for p in items0["path"] if p in row and p not in {rel(changed)}]
    assert np.array_equal(emb[[row[p] for p in untouched]], emb0[[row0[p] for p in untouched]])

    searcher = Searcher(out)
    assert len(searcher) == report.size and searcher.search("a man", k=1000)[0].path in items["path"]
    calls.clear()
    again = update_index(out, num_workers=0)
    assert calls == [] and again.encoded == 0 and read_index_meta(out)["data"] == "gen-0002"
    assert (again.unchanged, again.unreadable) == (report.size, 1)


def test_index_refuses_a_different_model(tmp_path, built, tiny_run):
    assert len(Searcher(built, run=tiny_run)) > 0  # the same model is accepted
    other = tmp_path / "other"
    (other / "checkpoints").mkdir(parents=True)
    shutil.copy(tiny_run / "checkpoints" / "last.pt", other / "checkpoints" / "best.pt")
    with pytest.raises(ConfigError, match="model mismatch") as err:
        Searcher(built, run=other)
    assert str(other / "checkpoints" / "best.pt") in str(err.value)

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    index = build_index(run, read_index_meta(built)["images_dir"], tmp_path / "idx", num_workers=0)
    shutil.copy(run / "checkpoints" / "last.pt", run / "checkpoints" / "best.pt")  # retrained in place
    with pytest.raises(ConfigError, match="model mismatch"):
        Searcher(index)
    (run / "checkpoints" / "best.pt").unlink()
    with pytest.raises(ConfigError, match="no longer exists"):
        Searcher(index)


def test_hnsw_and_ivf_agree_with_flat_on_the_tiny_gallery(tmp_path, gallery, tiny_run, built):
    flat = Searcher(built)
    hnsw_dir = build_index(
        tiny_run, gallery, tmp_path / "hnsw", kind="hnsw", num_workers=0, params={"ef_search": 32}
    )
    hnsw = Searcher(hnsw_dir)
    assert hnsw.info()["kind"] == "hnsw" and hnsw.info()["params"]["ef_search"] == 32
    assert hnsw._gen.index.hnsw.efSearch == 32
    for query in QUERIES:
        assert hnsw.search(query, k=1)[0].id == flat.search(query, k=1)[0].id
    _, _, emb, _ = load_data(built)
    ivf = build_faiss(emb, "ivf")
    assert ivf.nlist == len(emb) // 39  # 4 * sqrt(N) capped at N / 39 for a small gallery
    queries = np.stack([flat.encode_query(q)[0] for q in QUERIES])
    assert ivf.search(queries, 1)[1].tolist() == build_faiss(emb, "flat").search(queries, 1)[1].tolist()


def test_index_parameters_are_resolved_and_checked():
    assert resolved_params("ivf", None, 1_000_000) == {"nlist": 4000, "nprobe": 16}
    assert resolved_params("ivf", {"nlist": 100, "nprobe": 4}, 1_000_000) == {"nlist": 100, "nprobe": 4}
    assert resolved_params("ivf", None, 10) == {"nlist": 1, "nprobe": 16}
    assert resolved_params("hnsw", {"m": 16}, 5) == {"m": 16, "ef_construction": 80, "ef_search": 64}
    with pytest.raises(ConfigError, match="unknown index kind 'annoy'"):
        resolved_params("annoy", None, 10)
    with pytest.raises(ConfigError, match="has no parameter"):
        resolved_params("hnsw", {"nprobe": 3}, 10)
    with pytest.raises(ConfigError, match="positive integer"):
        resolved_params("hnsw", {"ef_search": 0}, 10)


def test_scan_is_recursive_case_insensitive_and_sorted(tmp_path):
    for name in ["b/x.JPG", "a.jpeg", "c/d/e.Png", "f.webp", "g.gif", "h.txt", "i.jpg.bak"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x" * len(name))
    scanned = scan_folder(tmp_path)
    assert [f.path for f in scanned] == ["a.jpeg", "b/x.JPG", "c/d/e.Png", "f.webp"]
    assert scanned[1].size == len("b/x.JPG")


def test_bad_inputs_give_clear_errors(tmp_path, tiny_run, gallery):
    with pytest.raises(DataError, match="does not exist"):
        build_index(tiny_run, tmp_path / "nowhere", tmp_path / "idx")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="no images"):
        build_index(tiny_run, tmp_path / "empty", tmp_path / "idx")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.jpg").write_bytes(b"junk")
    with pytest.raises(DataError, match="no readable images"):
        build_index(tiny_run, tmp_path / "junk", tmp_path / "idx", num_workers=0)
    assert not (tmp_path / "idx" / "index.json").exists()
    with pytest.raises(ConfigError, match="not a tbpr index"):
        Searcher(tmp_path / "missing")
    with pytest.raises(ConfigError, match="unknown index kind"):
        build_index(tiny_run, gallery, tmp_path / "idx2", kind="annoy")
    with pytest.raises(ConfigError, match="no checkpoint"):
        build_index(tmp_path / "norun", gallery, tmp_path / "idx3")
