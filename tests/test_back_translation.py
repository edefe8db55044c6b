"""Back translation into caption stores: MarianMT (tiny random models), a real chat server, resume, errors.

The models here are random or tiny: their translations are nonsense, the code paths are real.
"""

import io
import json
from dataclasses import replace

import pytest
import torch

from tbpr.cli import main
from tbpr.data.caption_store import CaptionStore, accepted_texts
from tbpr.data.check import load_training_manifest
from tbpr.errors import ConfigError, DataError
from tbpr.generate.chat import ChatClient, ChatSettings, Failure
from tbpr.generate.text.translate import ChatTranslator, MarianTranslator, back_translate

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")


def build_tiny_marian(folder, texts, seed):
    """A randomly initialized MarianMT model with sentencepiece vocabularies trained on ``texts``."""
    import sentencepiece as spm
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    folder.mkdir(parents=True)
    model_bytes = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model_bytes,
        vocab_size=150,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    spm_file = folder / "sp.model"
    spm_file.write_bytes(model_bytes.getvalue())
    sp = spm.SentencePieceProcessor(model_file=str(spm_file))
    vocab = {"</s>": 0, "<unk>": 1}
    for i in range(sp.get_piece_size()):
        vocab.setdefault(sp.id_to_piece(i), len(vocab))
    vocab["<pad>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = MarianTokenizer(
        source_spm=str(spm_file), target_spm=str(spm_file), vocab=str(folder / "vocab.json")
    )
    config = MarianConfig(
        vocab_size=len(vocab),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
        pad_token_id=vocab["<pad>"],
        eos_token_id=0,
        decoder_start_token_id=vocab["<pad>"],
        forced_eos_token_id=0,
    )
    torch.manual_seed(seed)
    MarianMTModel(config).save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    return folder / "model"


@pytest.fixture(scope="module")
def train_split(synth_tiny):
    return load_training_manifest(synth_tiny).split("train")


@pytest.fixture(scope="module")
def marian_models(tmp_path_factory, train_split):
    """(en->fr, fr->en) model folders: tiny random Marian models, loaded by path like any local model."""
    root = tmp_path_factory.mktemp("marian")
    texts = [c.text for c in train_split.captions]
    return build_tiny_marian(root / "en-fr", texts, seed=0), build_tiny_marian(root / "fr-en", texts, seed=1)


def marian(models, **kw):
    kw = {"num_beams": 1, "max_new_tokens": 6, **kw}
    return MarianTranslator({("en", "fr"): str(models[0]), ("fr", "en"): str(models[1])}, **kw)


class Interrupting:
    """Wraps a translator and raises KeyboardInterrupt at its ``stop_at``-th call (as Ctrl-C would)."""

    def __init__(self, inner, stop_at):
        self.inner, self.stop_at, self.calls = inner, stop_at, 0
        self.backend = inner.backend

    model = property(lambda self: self.inner.model)
    settings = property(lambda self: self.inner.settings)

    def translate(self, texts, src, tgt):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        return self.inner.translate(texts, src, tgt)


class Scripted:
    """Returns ``outputs[text]`` (a string or a Failure) for listed texts and ``"<text> (src->tgt)"`` otherwise."""

    backend, model, settings = "scripted", "scripted", {}

    def __init__(self, outputs=None):
        self.outputs = outputs or {}

    def translate(self, texts, src, tgt):
        return [self.outputs.get(t, f"{t} ({src}->{tgt})") for t in texts]


def test_marian_back_translation_through_the_cli(tmp_path, synth_tiny, train_split, marian_models, capsys):
    store = tmp_path / "bt.jsonl"
    argv = ["augment", "backtranslate", "--data", str(synth_tiny), "--out", str(store)]
    argv += ["--model-fwd", str(marian_models[0]), "--model-back", str(marian_models[1])]
    argv += ["--batch-size", "4", "--limit", "8", "--max-tokens", "6", "--num-beams", "2"]
    assert main(argv) == 0
    assert "8 wanted, 0 already done" in capsys.readouterr().out
    records = list(CaptionStore(store))
    captions = sorted(train_split.captions, key=lambda c: c.id)[:8]
    assert [r.key for r in records] == [f"{c.id}:0" for c in captions]
    assert [r.source_text for r in records] == [c.text for c in captions]
    first = records[0]
    assert first.method == "back_translation" and first.backend == "marian"
    assert first.model == f"{marian_models[0]} + {marian_models[1]}"
    assert first.languages == ["en", "fr", "en"] and first.attempt == 1
    assert first.settings == {"num_beams": 2, "max_new_tokens": 6}
    # the stored text is what the two models produce, leg by leg
    translator = marian(marian_models, num_beams=2)
    pivot = translator.translate([captions[0].text], "en", "fr")[0]
    assert first.extra["pivot_text"] == pivot
    assert first.text == translator.translate([pivot], "fr", "en")[0]
    assert all(r.accepted == bool(r.text) for r in records)

    before = store.read_bytes()
    assert main(argv) == 0  # everything is done: nothing is translated or written again
    assert "8 already done" in capsys.readouterr().out
    assert store.read_bytes() == before


def test_marian_batches_match_one_at_a_time(marian_models, train_split):
    texts = [c.text for c in train_split.captions[:5]]
    batched = marian(marian_models, batch_size=4).translate(texts, "en", "fr")
    single = marian(marian_models, batch_size=1).translate(texts, "en", "fr")
    assert batched == single


def test_missing_marian_model_is_a_config_error(tmp_path):
    translator = MarianTranslator({("en", "fr"): str(tmp_path / "nowhere")})
    with pytest.raises(ConfigError, match="cannot load the Marian model"):
        translator.translate(["a man"], "en", "fr")
    with pytest.raises(ConfigError, match="no Marian model is given for translating fr -> de"):
        translator.translate(["un homme"], "fr", "de")


def test_interrupted_run_resumes_without_losing_or_duplicating(tmp_path, train_split, marian_models):
    store = tmp_path / "bt.jsonl"
    # calls 1-2 are batch 1's two legs, 3-4 batch 2's; call 5 is batch 3's first leg
    with pytest.raises(KeyboardInterrupt):
        back_translate(
            train_split, store, Interrupting(marian(marian_models), stop_at=5), batch_size=3, limit=12
        )
    finished = store.read_bytes()
    assert len(finished.splitlines()) == 6  # batches 1 and 2 were written before the interrupt
    with open(store, "ab") as fh:  # and a write that the kill cut short
        fh.write(b'{"key": "99:0", "caption_id": 99, "te')

    summary = back_translate(train_split, store, marian(marian_models), batch_size=3, limit=12)
    assert (summary.wanted, summary.skipped) == (12, 6)
    assert store.read_bytes().startswith(finished)
    keys = [r.key for r in CaptionStore(store)]
    wanted = [f"{c.id}:0" for c in sorted(train_split.captions, key=lambda c: c.id)[:12]]
    assert keys == wanted


def test_empty_outputs_are_rejected_and_not_redone(tmp_path, train_split):
    captions = sorted(train_split.captions, key=lambda c: c.id)[:3]
    a, b, _ = (c.text for c in captions)
    translator = Scripted({a: "  ", f"{b} (en->fr)": ""})  # a: empty pivot; b: empty way back
    summary = back_translate(train_split, tmp_path / "bt.jsonl", translator, limit=3)
    assert (summary.accepted, summary.rejected, summary.failed) == (1, 2, 0)
    records = list(CaptionStore(tmp_path / "bt.jsonl"))
    assert [(r.text, r.accepted, r.reason) for r in records[:2]] == [
        ("", False, "empty en->fr translation"),
        ("", False, "empty fr->en translation"),
    ]
    assert records[2].text == f"{captions[2].text} (en->fr) (fr->en)" and records[2].accepted
    assert back_translate(train_split, tmp_path / "bt.jsonl", translator, limit=3).skipped == 3


def test_failed_requests_are_recorded_then_retried(tmp_path, train_split):
    captions = sorted(train_split.captions, key=lambda c: c.id)[:3]
    store = tmp_path / "bt.jsonl"
    failing = Scripted({captions[1].text: Failure("HTTP 503 (gave up after 5 tries)")})
    summary = back_translate(train_split, store, failing, limit=3)
    assert (summary.accepted, summary.failed) == (2, 1)
    failed = list(CaptionStore(store))[1]
    assert failed.text is None and failed.reason == "en->fr: HTTP 503 (gave up after 5 tries)"

    summary = back_translate(train_split, store, Scripted(), limit=3)
    assert (summary.skipped, summary.accepted) == (2, 1)
    retried = list(CaptionStore(store))[-1]
    assert retried.key == f"{captions[1].id}:0" and retried.attempt == 2 and retried.accepted
    assert len(accepted_texts([store])) == 3


# ---- OpenAI-compatible chat servers ----


def test_unreachable_server_is_one_config_error(tmp_path):
    from llm_server import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    with ChatClient(url, max_retries=2, backoff=0.01) as client, pytest.raises(ConfigError) as err:
        client.complete([{"role": "user", "content": "hi"}])
    assert url in str(err.value) and "ConnectError" in str(err.value) and "3 tries" in str(err.value)


def test_bad_key_is_one_config_error_before_any_batch(tmp_path, train_split, fault_proxy, monkeypatch):
    fault_proxy.reset(faults=[401] * 50)  # an auth gateway that refuses the key
    monkeypatch.setenv("MY_LLM_KEY", "wrong-key")
    with (
        ChatClient(fault_proxy.url, api_key_env="MY_LLM_KEY", backoff=0.01) as client,
        pytest.raises(ConfigError, match=r"refused the API key \(HTTP 401.*MY_LLM_KEY"),
    ):
        back_translate(train_split, tmp_path / "bt.jsonl", ChatTranslator(client), limit=20)
    assert fault_proxy.requests == 1  # one request, no retries, no batch
    assert fault_proxy.headers[0]["authorization"] == "Bearer wrong-key"
    assert list(CaptionStore(tmp_path / "bt.jsonl")) == []


def test_server_errors_and_timeouts_are_retried_then_reported(fault_proxy):
    fault_proxy.reset(faults=[500, 429, 503])
    with (
        ChatClient(fault_proxy.url, max_retries=2, backoff=0.01) as client,
        pytest.raises(ConfigError) as err,
    ):
        client.check()
    assert "HTTP 503" in str(err.value) and "gave up after 3 tries" in str(err.value)
    assert fault_proxy.requests == 3

    fault_proxy.reset(faults=["slow", "slow"])
    client = ChatClient(fault_proxy.url, timeout=0.3, max_retries=1, backoff=0.01)
    with client, pytest.raises(ConfigError, match="ReadTimeout.*gave up after 2 tries"):
        client.check()


@pytest.mark.slow
def test_chat_back_translation_against_a_real_server(tmp_path, synth_tiny, llm_server, fault_proxy, capsys):
    fault_proxy.reset(upstream=llm_server)  # relays to the real server, counting concurrent requests
    store = tmp_path / "bt.jsonl"
    argv = ["augment", "backtranslate", "--data", str(synth_tiny), "--out", str(store), "--backend", "openai"]
    argv += ["--base-url", fault_proxy.url, "--limit", "2", "--max-tokens", "12", "--concurrency", "2"]
    assert main(argv) == 0
    assert "2 wanted" in capsys.readouterr().out
    records = list(CaptionStore(store))
    assert [r.attempt for r in records] == [1, 1]
    first = records[0]
    assert first.backend == "openai" and "smollm2" in first.model  # the model name the server reported
    assert first.settings["max_tokens"] == 12 and "{src}" in first.settings["prompt"]
    assert all(isinstance(r.text, str) and r.accepted == bool(r.text.strip()) for r in records)
    assert fault_proxy.requests == 5  # the test request, then two legs of two captions
    assert fault_proxy.max_in_flight == 2  # both captions were in flight at once


@pytest.mark.slow
def test_bad_replies_are_recorded_and_retried_on_rerun(tmp_path, train_split, llm_server, fault_proxy):
    # the test request passes; then caption 0 gets malformed JSON, caption 1 empty choices,
    # caption 2 two 500s (more than the retries); caption 3 and the way back are answered by the model
    fault_proxy.reset(upstream=llm_server, faults=["pass", "malformed", "no_choices", 500, 500])
    store = tmp_path / "bt.jsonl"
    settings = ChatSettings(max_tokens=12)
    with ChatClient(fault_proxy.url, settings=settings, concurrency=1, max_retries=1, backoff=0.01) as client:
        summary = back_translate(train_split, store, ChatTranslator(client), limit=4)
    assert summary.failed == 3
    reasons = [r.reason for r in CaptionStore(store)][:3]
    assert reasons[0].startswith("en->fr: malformed JSON reply")
    assert reasons[1] == "en->fr: the reply has no choices"
    assert reasons[2].startswith("en->fr: HTTP 500") and reasons[2].endswith("(gave up after 2 tries)")

    fault_proxy.reset(upstream=llm_server, faults=["pass", 500])  # one 500, then a successful retry
    with ChatClient(fault_proxy.url, settings=settings, concurrency=1, max_retries=1, backoff=0.01) as client:
        summary = back_translate(train_split, store, ChatTranslator(client), limit=4)
    assert summary.skipped == 1 and summary.failed == 0
    records = list(CaptionStore(store))
    assert [r.attempt for r in records[4:]] == [2, 2, 2]
    assert len({r.key for r in records}) == 4


def test_a_store_of_other_captions_is_not_continued(tmp_path, train_split):
    store = tmp_path / "bt.jsonl"
    back_translate(train_split, store, Scripted(), limit=2)
    first = min(train_split.captions, key=lambda c: c.id)
    edited = train_split.split("train")
    edited.captions[edited.captions.index(first)] = replace(first, text="a different caption")
    with pytest.raises(DataError, match=rf"holds caption {first.id} as .* but the dataset has 'a different"):
        back_translate(edited, store, Scripted(), limit=3)
