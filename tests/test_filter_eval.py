import argparse
import difflib
import json

import numpy as np
import pytest

from tbpr.cli.augment_filter_cmd import register_filter_commands
from tbpr.data.synthpedes.vocabulary import FORMS
from tbpr.errors import DataError
from tbpr.generate.text.faithfulness import SimilarityScorer
from tbpr.generate.text.filter_eval import KINDS, evaluate_filter, plant_rewrites, rejection_metrics


@pytest.fixture
def half_similar(monkeypatch):
    """Every pair scores 0.5: TFF at alpha 0.6 rejects everything, at alpha 0.4 nothing."""
    monkeypatch.setattr(SimilarityScorer, "pairs", lambda self, a, b: np.full(len(a), 0.5))


def words_of(attribute, value):
    return {w for role in FORMS[attribute].values() for w in role.get(value, [])}


def test_rejection_metrics_by_hand():
    kinds = ["faithful", "faithful", "swapped", "dropped", "invented", "swapped"]
    rejected = [True, False, True, False, True, False]
    m = rejection_metrics(kinds, rejected)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 4)
    assert m["recall_by_kind"] == {"swapped": 0.5, "dropped": 0.0, "invented": 1.0}
    assert m["false_rejection"] == 0.5 and (m["tp"], m["fp"], m["fn"]) == (2, 1, 2)
    none = rejection_metrics(["faithful", "swapped"], [False, False])
    assert none["precision"] is None and none["recall"] == 0.0


def test_planted_rewrites(synth_tiny):
    planted = plant_rewrites(synth_tiny, captions=12, seed=3)
    assert len(planted) == 48 and [p.kind for p in planted] == list(KINDS) * 12
    assert plant_rewrites(synth_tiny, captions=12, seed=3) == planted
    assert plant_rewrites(synth_tiny, captions=12, seed=4) != planted
    for i in range(0, len(planted), 4):
        faithful, swapped, dropped, invented = planted[i : i + 4]
        assert len({p.original for p in planted[i : i + 4]}) == 1
        assert all(p.rewrite != p.original for p in planted[i : i + 4])
        # a swap replaces the words of one value in the faithful rewrite by words of another value (and
        # maybe an article or verb agreeing with it)
        attribute, change = swapped.detail.split(": ")
        old, new = change.split(" -> ")
        a, b = faithful.rewrite.split(), swapped.rewrite.split()
        edits = [op for op in difflib.SequenceMatcher(a=a, b=b).get_opcodes() if op[0] != "equal"]
        assert 1 <= len(edits) <= 2, (faithful.rewrite, swapped.rewrite)
        removed = " ".join(w for _, a0, a1, _, _ in edits for w in a[a0:a1])
        added = " ".join(w for _, _, _, b0, b1 in edits for w in b[b0:b1])
        assert any(w in removed for w in words_of(attribute, old)), (removed, old)
        assert any(w in added for w in words_of(attribute, new)), (added, new)
        assert dropped.attribute != "gender" and dropped.detail.endswith("left out")
        if invented.attribute in ("hat", "glasses", "scarf"):
            assert any(w in invented.rewrite for w in FORMS[invented.attribute]["obj"]["yes"])


@pytest.mark.slow
def test_evaluation_numbers_and_table(synth_tiny, half_similar):
    result = evaluate_filter(synth_tiny, captions=30, alpha=0.6, seed=0)
    n = result.numbers
    assert n["captions"] == 30 and n["basic_rejections"] == 0
    tff = n["variants"]["TFF (alpha 0.6)"]
    assert tff["precision"] == pytest.approx(0.75) and tff["recall"] == 1.0 and tff["false_rejection"] == 1.0
    attributes = n["variants"]["attribute check"]
    assert attributes["recall_by_kind"]["swapped"] >= 0.9 and attributes["false_rejection"] <= 0.1
    both = n["variants"]["TFF + attribute check"]
    assert both["recall"] == 1.0 and both["false_rejection"] == 1.0
    assert sum(row["n"] for row in n["by_attribute"]) == 90
    assert n["similarity"]["faithful"] == {"mean": 0.5, "min": 0.5, "max": 0.5}
    table = result.markdown.splitlines()
    assert (
        "| filter | precision | recall | recall swapped | recall dropped | recall invented | faithful rejected |"
        in table
    )
    assert "| TFF (alpha 0.6) | 75.0% | 100.0% | 100.0% | 100.0% | 100.0% | 100.0% |" in table
    rows = [row for row in n["by_attribute"] if row["kind"] == "swapped"]
    assert all(row["recall"]["TFF (alpha 0.6)"] == 1.0 for row in rows)
    lenient = evaluate_filter(synth_tiny, captions=30, alpha=0.4, seed=0).numbers["variants"]
    assert lenient["TFF (alpha 0.4)"]["recall"] == 0.0 and lenient["TFF (alpha 0.4)"]["precision"] is None
    assert lenient["TFF + attribute check"] == lenient["attribute check"] == attributes


def test_alpha_zero_turns_tff_off(synth_tiny, monkeypatch):
    def refuse(*args):
        raise AssertionError("alpha 0 needs no similarity model")

    monkeypatch.setattr(SimilarityScorer, "pairs", refuse)
    variants = evaluate_filter(synth_tiny, captions=5, alpha=0).numbers["variants"]
    assert variants["TFF (alpha 0)"]["recall"] == 0.0 and variants["TFF (alpha 0)"]["false_rejection"] == 0.0


def test_filter_eval_command(synth_tiny, half_similar, tmp_path, capsys):
    p = argparse.ArgumentParser()
    register_filter_commands(p.add_subparsers(dest="cmd", required=True))
    out = tmp_path / "report" / "filter.md"
    args = p.parse_args(["filter-eval", "--data", str(synth_tiny), "--captions", "5", "--out", str(out)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert printed == out.read_text() and "Planted rewrites of 5 SynthPedes captions" in printed


def test_filter_eval_needs_a_synthpedes_folder(tmp_path):
    with pytest.raises(DataError, match="attributes.json not found"):
        plant_rewrites(tmp_path)
    (tmp_path / "attributes.json").write_text(
        json.dumps({"images": {"x": {"captions": [{"text": "a man"}]}}})
    )
    with pytest.raises(DataError, match="not a SynthPedes attributes file"):
        plant_rewrites(tmp_path)
