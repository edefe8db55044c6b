"""`tbpr augment status` and `tbpr augment merge`: store reports, the Fig. 4 histogram, merging shards."""

import argparse
import json

import pytest
from PIL import Image

from tbpr.cli.augment_status_cmd import register_status_commands
from tbpr.data.caption_store import CaptionStore, StoreRecord, record_key
from tbpr.errors import ConfigError, DataError
from tbpr.generate.status import (
    default_status_dir,
    merge_stores,
    reason_kind,
    similarity_bin,
    store_status,
    write_status,
)


def rewrite(caption_id, text, accepted=True, reason=None, similarity=None, n=0, attempt=1, source=None):
    return StoreRecord(
        key=record_key(caption_id, n),
        caption_id=caption_id,
        text=text,
        source_text=source or f"caption {caption_id}",
        method="llm_rewrite",
        backend="openai",
        model="smollm2",
        languages=["en"],
        settings={"temperature": 0.7, "seed": attempt},
        attempt=attempt,
        accepted=accepted,
        reason=reason,
        created="2026-11-24T20:00:00Z",
        extra={"similarity": similarity, "attributes": None, "filter": {"alpha": 0.6, "model": "m"}},
    )


def back_translation(caption_id, text, accepted=True, reason=None):
    return StoreRecord(
        key=record_key(caption_id),
        caption_id=caption_id,
        text=text,
        source_text=f"caption {caption_id}",
        method="back_translation",
        backend="marian",
        model="opus",
        languages=["en", "fr", "en"],
        settings={},
        attempt=1,
        accepted=accepted,
        reason=reason,
        created="2026-11-24T20:00:00Z",
    )


RECORDS = [
    # caption 1, key 1:0: rejected on similarity, then accepted (the histogram takes the first: 0.41)
    rewrite(1, "a man in blue.", False, "similarity 0.41 < alpha 0.6", 0.41),
    rewrite(1, "a man wearing red.", True, None, 0.83, attempt=2),
    # caption 1, key 1:1: accepted at once
    rewrite(1, "the man wears red.", True, None, 0.95, n=1),
    # caption 2: failed, then an attribute change, then another similarity rejection: no accepted rewrite
    rewrite(2, None, False, "HTTP 500: internal error (gave up after 4 tries)"),
    rewrite(2, "a woman in a blue coat.", False, "attribute changed: coat red->blue", 0.62, attempt=2),
    rewrite(2, "a cat.", False, "similarity 0.1 < alpha 0.6", 0.1, attempt=3),
    # caption 3: a basic rejection (no score) then accepted
    rewrite(3, "", False, "empty"),
    rewrite(3, "a child in green.", True, None, 0.6, attempt=2),
]


@pytest.fixture
def store(tmp_path):
    store = CaptionStore(tmp_path / "rewrites.jsonl")
    store.append(RECORDS)
    store.append(
        [back_translation(1, "a man in red."), back_translation(2, None, False, "en->fr: HTTP 503: busy")]
    )
    return store.path


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("similarity 0.41 < alpha 0.6", "similarity < alpha"),
        ("attribute changed: jacket red->blue", "attribute changed"),
        ("HTTP 500: internal error", "HTTP"),
        ("en->fr: HTTP 503: busy", "en->fr: HTTP"),
        ("ReadTimeout: timed out (gave up after 4 tries)", "ReadTimeout"),
        ("not English", "not English"),
        (None, "(no reason)"),
    ],
)
def test_reasons_are_grouped_by_kind(reason, kind):
    assert reason_kind(reason) == kind


@pytest.mark.parametrize(
    ("value", "index"),
    [(0.0, 0), (0.0999, 0), (0.1, 1), (0.3, 3), (0.59, 5), (0.6, 6), (0.7, 7), (1.0, 9), (-0.2, 0)],
)
def test_similarity_bins_are_a_tenth_wide(value, index):
    assert similarity_bin(value) == index


def test_status_counts_per_method(store):
    summary = store_status(store, examples=2)
    llm = summary["methods"]["llm_rewrite"]
    assert {k: llm[k] for k in ("captions", "keys", "tries", "accepted", "rejected", "failed")} == {
        "captions": 3,
        "keys": 4,
        "tries": 8,
        "accepted": 3,
        "rejected": 4,  # the empty output counts as a rejected output
        "failed": 1,
    }
    assert llm["acceptance_rate"] == pytest.approx(3 / 7)
    assert (llm["keys_accepted"], llm["key_acceptance_rate"]) == (3, 0.75)
    assert llm["rejection_reasons"] == {"similarity < alpha": 2, "attribute changed": 1, "empty": 1}
    assert llm["failure_reasons"] == {"HTTP": 1}
    assert llm["tries_per_key"] == {"1": 1, "2": 2, "3": 1}
    assert llm["accepted_on_try"] == {"1": 1, "2": 2}
    # one score per key, its first scored try: 0.41 (1:0), 0.95 (1:1), 0.62 (2:0), 0.6 (3:0)
    sim = llm["similarity"]
    assert sim["counts"] == [0, 0, 0, 0, 1, 0, 2, 0, 0, 1]
    assert sim["shares"] == [0, 0, 0, 0, 0.25, 0, 0.5, 0, 0, 0.25]
    assert sim["scored_keys"] == 4 and sim["alpha"] == 0.6 and sim["below_alpha"] == 0.25
    assert sim["mean"] == pytest.approx((0.41 + 0.95 + 0.62 + 0.6) / 4)
    assert sim["median"] == pytest.approx((0.6 + 0.62) / 2)
    assert len(llm["examples"]["kept"]) == 2 and len(llm["examples"]["rejected"]) == 2
    kept = {"a man wearing red.", "the man wears red.", "a child in green."}
    assert {ex["text"] for ex in llm["examples"]["kept"]} <= kept
    bt = summary["methods"]["back_translation"]
    assert (bt["tries"], bt["accepted"], bt["failed"], bt["similarity"]) == (2, 1, 1, None)
    assert bt["failure_reasons"] == {"en->fr: HTTP": 1} and bt["acceptance_rate"] == 1.0


def test_status_writes_the_histogram_and_the_summary_atomically(store):
    summary = write_status(store)
    out = default_status_dir(store)
    assert out == store.with_name("rewrites.jsonl.status")
    assert sorted(p.name for p in out.iterdir()) == [
        "similarity_llm_rewrite.png",
        "summary.json",
    ]  # no temp files
    with Image.open(out / "similarity_llm_rewrite.png") as png:
        assert png.format == "PNG" and png.size[0] > 300
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["files"]["similarity_llm_rewrite"] == str(out / "similarity_llm_rewrite.png")


def test_status_of_a_back_translation_store_has_no_histogram(tmp_path):
    store = CaptionStore(tmp_path / "bt.jsonl")
    store.append([back_translation(1, "a man in red.")])
    write_status(store.path, tmp_path / "report")
    assert [p.name for p in (tmp_path / "report").iterdir()] == ["summary.json"]
    with pytest.raises(DataError, match="missing.jsonl does not exist"):
        store_status(tmp_path / "missing.jsonl")


def parser():
    p = argparse.ArgumentParser()
    register_status_commands(p.add_subparsers(dest="action", required=True))
    return p


def run(*argv):
    args = parser().parse_args([str(a) for a in argv])
    return args.func(args)


def test_status_command_prints_a_summary(store, tmp_path, capsys):
    assert run("status", store, "--out", tmp_path / "report", "--examples", "1") == 0
    out = capsys.readouterr().out
    assert "llm_rewrite: 3 captions, 4 keys, 8 tries: 3 accepted, 4 rejected, 1 failed" in out
    assert "acceptance 42.9% of outputs" in out
    assert "rejected: similarity < alpha (2), attribute changed (1), empty (1)" in out
    assert "25.0% below alpha" in out
    assert (tmp_path / "report/similarity_llm_rewrite.png").is_file()


def shards(tmp_path):
    a, b = CaptionStore(tmp_path / "shard0.jsonl"), CaptionStore(tmp_path / "shard1.jsonl")
    a.append(RECORDS[:3])
    b.append(RECORDS[3:])
    return a.path, b.path


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_merge_concatenates_shards_and_drops_identical_records(tmp_path, capsys):
    a, b = shards(tmp_path)
    out = tmp_path / "merged.jsonl"
    assert run("merge", out, a, b, a) == 0  # shard 0 given twice
    assert lines(out) == [r.to_json() for r in RECORDS]
    assert "8 records from 3 stores, 3 identical duplicates dropped" in capsys.readouterr().out
    assert store_status(out)["methods"]["llm_rewrite"]["tries"] == 8
    summary = merge_stores(out, [out, b])  # merging into one of the inputs
    assert (summary.records, summary.duplicates) == (8, 5) and lines(out) == [r.to_json() for r in RECORDS]


def test_merge_counts_keys_tried_in_several_stores(tmp_path, caplog):
    a, b = CaptionStore(tmp_path / "a.jsonl"), CaptionStore(tmp_path / "b.jsonl")
    a.append([RECORDS[0]])
    b.append([RECORDS[1]])  # the same key 1:0, retried by another job
    assert merge_stores(tmp_path / "m.jsonl", [a.path, b.path]).overlapping_keys == 1
    assert "1 keys have tries in more than one store" in caplog.text


def test_merge_refuses_stores_of_different_captions(tmp_path):
    a, b = shards(tmp_path)
    other = CaptionStore(tmp_path / "other.jsonl")
    other.append([rewrite(1, "x", source="a different caption 1")])
    out = tmp_path / "merged.jsonl"
    with pytest.raises(
        DataError, match=r"caption 1 has different source text in .*shard0\.jsonl and .*other\.jsonl"
    ):
        merge_stores(out, [a, b, other.path])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.jsonl", "shard0.jsonl", "shard1.jsonl"]


def test_merge_refuses_to_overwrite_missing_or_busy_stores(tmp_path):
    a, b = shards(tmp_path)
    with pytest.raises(ConfigError, match="shard1.jsonl exists and is not among the stores to merge"):
        merge_stores(b, [a])
    with pytest.raises(DataError, match="nope.jsonl'] do not exist"):
        merge_stores(tmp_path / "m.jsonl", [a, tmp_path / "nope.jsonl"])
    with CaptionStore(b).exclusive(), pytest.raises(ConfigError, match="shard1.jsonl is being written"):
        merge_stores(tmp_path / "m.jsonl", [a, b])
    assert not (tmp_path / "m.jsonl").exists()


def test_augment_status_on_deeply_nested_json_is_one_clear_error(tmp_path, caplog):
    from tbpr.cli import main

    store = tmp_path / "rw.jsonl"
    store.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    assert main(["augment", "status", str(store)]) == 2
    assert f"caption store {store}, line 1: not a valid record (JSON nested too deeply)" in caplog.text
