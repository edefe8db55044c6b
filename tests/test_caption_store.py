import json

import pytest

from tbpr.data import caption_store as store_mod
from tbpr.data.caption_store import CaptionStore, StoreRecord, accepted_texts, record_key
from tbpr.errors import ConfigError, DataError

SPEC_FIELDS = {
    "key",
    "caption_id",
    "text",
    "source_text",
    "method",
    "backend",
    "model",
    "languages",
    "settings",
    "attempt",
    "accepted",
    "reason",
    "created",
}


def rec(caption_id, text="a man in red", accepted=True, method="back_translation", n=0, **kw):
    return StoreRecord(
        key=record_key(caption_id, n),
        caption_id=caption_id,
        text=text,
        source_text="the man wears red",
        method=method,
        backend="marian",
        model="m-en-fr + m-fr-en",
        languages=["en", "fr", "en"],
        settings={"num_beams": 4},
        attempt=kw.pop("attempt", 1),
        accepted=accepted,
        reason=kw.pop("reason", None if accepted else "empty output"),
        **kw,
    )


def test_records_round_trip_in_the_agreed_format(tmp_path):
    store = CaptionStore(tmp_path / "s.jsonl")
    first = rec(12, extra={"pivot_text": "un homme en rouge"})
    store.append([first, rec(13, text=None, accepted=False, reason="HTTP 500")])
    lines = (tmp_path / "s.jsonl").read_text().splitlines()
    obj = json.loads(lines[0])
    assert set(obj) == SPEC_FIELDS | {"pivot_text"}
    assert obj["key"] == "12:0" and obj["languages"] == ["en", "fr", "en"]
    assert len(obj["created"]) == 20 and obj["created"].endswith("Z")
    loaded = list(CaptionStore(tmp_path / "s.jsonl"))
    assert loaded[0] == first and loaded[1].text is None and loaded[1].reason == "HTTP 500"


def test_each_append_is_fsynced_once(tmp_path, monkeypatch):
    calls = []
    real_fsync = store_mod.os.fsync
    monkeypatch.setattr(store_mod.os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd)))
    store = CaptionStore(tmp_path / "s.jsonl")
    store.append([rec(1), rec(2)])
    first = len(calls)  # the file, plus its directory entry when the file is new
    store.append([rec(3), rec(4), rec(5)])
    assert first == 2 and len(calls) == 3
    store.append([])
    assert len(calls) == 3


def test_torn_last_line_is_ignored_and_cut_before_the_next_append(tmp_path, caplog):
    path = tmp_path / "s.jsonl"
    store = CaptionStore(path)
    store.append([rec(1), rec(2)])
    whole = path.read_bytes()
    with open(path, "ab") as fh:
        fh.write(json.dumps(rec(3).to_json()).encode()[:40])  # killed mid-write
    assert [r.caption_id for r in store] == [1, 2]
    assert "torn last line" in caplog.text
    with store.exclusive():
        assert path.read_bytes() == whole
        store.append([rec(3)])
    assert [r.caption_id for r in CaptionStore(path)] == [1, 2, 3]


def test_a_file_that_is_only_a_torn_line_becomes_empty(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"key": "1:0", "capt')
    store = CaptionStore(path)
    with store.exclusive():
        assert path.read_bytes() == b""
    assert list(store) == []


def test_a_complete_record_without_newline_is_torn(tmp_path):
    # its newline never reached the disk, so it was not finished: the job redoes that caption
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(rec(1).to_json()) + "\n" + json.dumps(rec(2).to_json()))
    with CaptionStore(path).exclusive() as store:
        assert [r.caption_id for r in store] == [1]


@pytest.mark.parametrize(
    "bad, problem",
    [
        ("{not json", "not a valid record"),
        (json.dumps({k: v for k, v in rec(5).to_json().items() if k != "method"}), "missing field 'method'"),
        (json.dumps({**rec(5).to_json(), "caption_id": "5"}), "field 'caption_id' has the wrong type"),
        (json.dumps({**rec(5).to_json(), "accepted": 1}), "field 'accepted' has the wrong type"),
        (json.dumps({**rec(5).to_json(), "text": None}), "accepted record has no text"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_malformed_lines_name_the_file_and_line(tmp_path, bad, problem):
    path = tmp_path / "s.jsonl"
    good = json.dumps(rec(1).to_json())
    path.write_text(f"{good}\n{bad}\n{good}\n")
    with pytest.raises(DataError, match=rf"{path}, line 2: .*{problem}"):
        list(CaptionStore(path))


def test_a_malformed_last_line_with_newline_is_an_error_not_a_torn_tail(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(rec(1).to_json()) + "\n{oops\n")
    with pytest.raises(DataError, match="line 2"):
        CaptionStore(path).done_keys()


def test_progress_and_done_keys(tmp_path):
    store = CaptionStore(tmp_path / "s.jsonl")
    store.append(
        [
            rec(1),  # accepted
            rec(2, text="", accepted=False),  # output rejected once
            rec(3, text=None, accepted=False, reason="timeout"),  # request failed: no output
            rec(4, text="", accepted=False),
            rec(4, attempt=2),  # rejected, then accepted
            rec(5, n=1),  # the second output wanted for caption 5
        ]
    )
    progress = store.progress()
    assert progress["4:0"].tries == 2 and progress["4:0"].rejected == 1 and progress["4:0"].accepted
    assert progress["3:0"].tries == 1 and progress["3:0"].rejected == 0 and not progress["3:0"].accepted
    assert store.done_keys() == {"1:0", "2:0", "4:0", "5:1"}
    assert store.done_keys(max_attempts=2) == {"1:0", "4:0", "5:1"}
    assert CaptionStore(tmp_path / "missing.jsonl").done_keys() == set()


def test_accepted_texts_across_stores(tmp_path):
    bt, llm = CaptionStore(tmp_path / "bt.jsonl"), CaptionStore(tmp_path / "llm.jsonl")
    bt.append([rec(1, "bt one"), rec(2, "", accepted=False), rec(1, "bt one again", attempt=2)])
    llm.append([rec(1, "rewrite a", method="llm_rewrite"), rec(1, "rewrite b", method="llm_rewrite", n=1)])
    texts = accepted_texts([bt.path, llm.path])
    assert texts == {1: ["bt one", "rewrite a", "rewrite b"]}  # first accepted record per key and store
    assert accepted_texts([bt.path, llm.path], method="back_translation") == {1: ["bt one"]}
    with pytest.raises(DataError, match=r"nope\.jsonl does not exist"):
        accepted_texts([tmp_path / "nope.jsonl"])


def test_only_one_job_fills_a_store_at_a_time(tmp_path):
    store = CaptionStore(tmp_path / "s.jsonl")
    with (
        store.exclusive(),
        pytest.raises(ConfigError, match="being written by another process"),
        CaptionStore(store.path).exclusive(),
    ):
        pass
    with CaptionStore(store.path).exclusive():  # released when the first job ends
        pass
