"""EDA text operations (alpha semantics of TBPS-CLIP appendix B.1) and the WordNet set-up for nltk."""

import math
import os
import random
import shutil
from collections import Counter
from pathlib import Path

import nltk
import pytest

from components import missing
from tbpr.errors import ConfigError
from tbpr.text import operations as ops
from tbpr.text import wordnet

# 10 distinct words (L = 10), 7 of them non-stop words with a synonym
CAPTION = "The woman wears a red jacket, black trousers and boots."
FAKE = {
    "woman": ["lady"],
    "wears": ["dons"],
    "red": ["crimson", "scarlet"],
    "jacket": ["coat"],
    "black": ["dark"],
    "trousers": ["pants"],
    "boots": ["shoes"],
    "the": ["da"],  # a stop word: never used
}


def fake(word):
    return FAKE.get(word, [])


def needs_wordnet():
    if not (wordnet.DEBIAN_WORDNET / "data.noun").is_file():
        missing("Debian's WordNet", "make wordnet, or apt-get install wordnet-base wordnet-sense-index")


@pytest.fixture(scope="module")
def wn():
    needs_wordnet()
    return wordnet.reader()


def changed_positions(a, b):
    return [i for i, (x, y) in enumerate(zip(ops.words(a), ops.words(b))) if x != y]


def punctuation(text):
    return [(i, t.text) for i, t in enumerate(ops.tokenize(text)) if not t.word]


@pytest.mark.parametrize(
    ("alpha", "length", "n"),
    [
        (0.2, 10, 2),
        (0.05, 10, 1),
        (0.15, 10, 1),
        (0.1, 30, 3),
        (0.3, 10, 3),
        (0.29, 100, 29),
        (0, 10, 0),
        (0.5, 0, 0),
    ],
)
def test_n_operations_is_floored_alpha_times_length_at_least_one(alpha, length, n):
    assert ops.n_operations(alpha, length) == n


def test_tokenize_keeps_punctuation_apart_and_round_trips():
    text = "A woman's red t-shirt,  black trousers (long)."
    tokens = ops.tokenize(text)
    assert [t.text for t in tokens] == [
        "A",
        "woman's",
        "red",
        "t-shirt",
        ",",
        "black",
        "trousers",
        "(",
        "long",
        ")",
        ".",
    ]
    assert ops.words(text) == ["A", "woman's", "red", "t-shirt", "black", "trousers", "long"]
    assert ops.detokenize(tokens) == "A woman's red t-shirt, black trousers (long)."
    assert ops.detokenize(ops.tokenize(CAPTION)) == CAPTION


def test_synonym_replacement_changes_exactly_n_words():
    for seed in range(50):
        out = ops.synonym_replacement(CAPTION, 0.2, random.Random(seed), fake)
        changed = changed_positions(CAPTION, out)
        assert len(changed) == 2
        before, after = ops.words(CAPTION), ops.words(out)
        assert all(after[i] in FAKE[before[i].lower()] for i in changed)
        assert punctuation(out) == punctuation(CAPTION)


def test_synonym_replacement_replaces_every_occurrence_keeps_capitals_and_skips_stop_words():
    out = ops.synonym_replacement("The red shirt and red shoes, Red.", 0.01, random.Random(0), fake)
    assert out in (
        "The crimson shirt and crimson shoes, Crimson.",
        "The scarlet shirt and scarlet shoes, Scarlet.",
    )
    assert ops.synonym_replacement("the man", 1.0, random.Random(0), fake) == "the man"  # no candidate


def test_synonym_replacement_with_fewer_candidates_than_n_replaces_them_all():
    out = ops.synonym_replacement("a red hat on a big man", 1.0, random.Random(0), fake)
    assert changed_positions("a red hat on a big man", out) == [1]


def test_random_insertion_adds_exactly_n_synonyms_before_words():
    for seed in range(50):
        out = ops.random_insertion(CAPTION, 0.2, random.Random(seed), fake)
        before, after = ops.words(CAPTION), ops.words(out)
        assert len(after) == len(before) + 2
        inserted = Counter(after) - Counter(before)
        assert sum(inserted.values()) == 2
        assert set(inserted) <= {s for word, syns in FAKE.items() if word != "the" for s in syns}
        assert [w for w in after if w not in inserted] == before
        assert out.endswith(".") and not out.endswith(" .")


def test_random_insertion_without_candidates_returns_the_caption():
    assert ops.random_insertion("the man is here", 0.5, random.Random(0), fake) == "the man is here"


def test_random_swap_permutes_at_most_2n_positions():
    n = ops.n_operations(0.2, 10)
    outputs = set()
    for seed in range(50):
        out = ops.random_swap(CAPTION, 0.2, random.Random(seed))
        assert Counter(ops.words(out)) == Counter(ops.words(CAPTION))
        assert 0 < len(changed_positions(CAPTION, out)) <= 2 * n  # 10 distinct words: every swap shows
        assert punctuation(out) == punctuation(CAPTION)
        outputs.add(out)
    assert len(outputs) > 10
    assert ops.random_swap("alone.", 1.0, random.Random(0)) == "alone."


def test_random_deletion_deletes_each_word_with_probability_alpha():
    alpha, draws, length = 0.2, 2000, 10
    rng = random.Random(0)
    deleted = sum(length - len(ops.words(ops.random_deletion(CAPTION, alpha, rng))) for _ in range(draws))
    sigma = math.sqrt(alpha * (1 - alpha) / (draws * length))
    assert abs(deleted / (draws * length) - alpha) < 4 * sigma
    assert ops.random_deletion(CAPTION, 0.0, rng) == CAPTION


def test_random_deletion_never_returns_an_empty_caption():
    for seed in range(20):
        out = ops.random_deletion(CAPTION, 1.0, random.Random(seed))
        assert out in ops.words(CAPTION)
    assert ops.random_deletion("...", 1.0, random.Random(0)) == "..."


class Scripted(random.Random):
    """random() returns the given values in turn (0 deletes the word, 1 keeps it)."""

    def __init__(self, values):
        super().__init__(0)
        self.values = list(values)

    def random(self):
        return self.values.pop(0)


@pytest.mark.parametrize(
    ("text", "draws", "expected"),
    [
        ("a red jacket, black.", [1, 1, 1, 0], "a red jacket."),  # the orphaned comma gives way to the period
        ("Black, red.", [0, 1], "red."),  # no leading comma
        ("a red jacket, black trousers.", [1, 1, 0, 1, 1], "a red, black trousers."),
        ("red (blue) shoes.", [1, 0, 1], "red () shoes."),  # brackets are not separators
    ],
)
def test_random_deletion_tidies_orphaned_separators(text, draws, expected):
    assert ops.random_deletion(text, 0.5, Scripted(draws)) == expected


@pytest.mark.parametrize("name", sorted(ops.OPERATIONS))
def test_operations_are_deterministic_for_a_seed(name):
    op = ops.OPERATIONS[name]
    kwargs = {"synonyms": fake} if name in ops.USES_SYNONYMS else {}
    first = [op(CAPTION, 0.3, random.Random(seed), **kwargs) for seed in range(20)]
    assert first == [op(CAPTION, 0.3, random.Random(seed), **kwargs) for seed in range(20)]
    assert len(set(first)) > 1


def test_eda_applies_one_of_the_four_operations_uniformly(monkeypatch):
    calls = Counter()

    def recorder(name):
        def op(text, alpha, rng, synonyms=None):
            calls[name] += 1
            assert alpha == 0.1
            assert synonyms is (fake if name in ops.USES_SYNONYMS else None)
            return name

        return op

    four = ("synonym_replacement", "random_insertion", "random_swap", "random_deletion")
    for name in four:
        monkeypatch.setattr(ops, name, recorder(name))
    rng = random.Random(0)
    results = Counter(ops.eda(CAPTION, 0.1, rng, fake) for _ in range(4000))
    assert results == calls and set(calls) == set(four)
    assert all(abs(count / 4000 - 0.25) < 4 * math.sqrt(0.25 * 0.75 / 4000) for count in calls.values())


# --- WordNet ---------------------------------------------------------------------------------------------


def test_lexnames_matches_wordnet_3():
    lines = wordnet.lexnames_text().splitlines()
    assert len(lines) == 45
    assert lines[0] == "00\tadj.all\t3"
    assert lines[3] == "03\tnoun.Tops\t1"
    assert lines[6] == "06\tnoun.artifact\t1"
    assert lines[28] == "28\tnoun.time\t1"
    assert lines[29] == "29\tverb.body\t2"
    assert lines[43] == "43\tverb.weather\t2"
    assert lines[44] == "44\tadj.ppl\t3"


def fake_debian(path):
    path.mkdir()
    for name in wordnet.WordNetCorpusReader._FILES:
        if name != "lexnames":
            (path / name).write_text(f"content of {name}\n")
    return path


def test_prepare_builds_the_nltk_folder_once(tmp_path, monkeypatch):
    monkeypatch.setenv(wordnet.ROOT_ENV, str(tmp_path / "nltk"))
    source = fake_debian(tmp_path / "debian")
    target = wordnet.prepare(source=source)
    assert target == tmp_path / "nltk" / "corpora" / "wordnet"
    assert (target / "data.noun").read_text() == "content of data.noun\n"
    assert (target / "lexnames").read_text() == wordnet.lexnames_text()
    assert all(os.stat(p).st_nlink == 1 and not p.stat().st_mode & 0o022 for p in target.iterdir())
    assert [p.name for p in target.parent.iterdir()] == ["wordnet"]  # no temporary folder left
    stamp = (target / "lexnames").stat().st_mtime_ns
    (source / "data.noun").unlink()  # a second call does not look at the source again
    assert wordnet.prepare(source=source) == target
    assert (target / "lexnames").stat().st_mtime_ns == stamp


def test_prepare_survives_a_concurrent_first_use(tmp_path, monkeypatch):
    source = fake_debian(tmp_path / "debian")

    def other_process_won(src, dst):
        shutil.copytree(src, dst)  # another process renamed its complete folder into place first
        raise OSError(39, "Directory not empty")

    monkeypatch.setattr(os, "rename", other_process_won)
    target = wordnet.prepare(tmp_path / "root", source)
    assert sorted(p.name for p in target.parent.iterdir()) == ["wordnet"]
    assert (target / "lexnames").is_file()


def test_prepare_names_what_to_install(tmp_path):
    with pytest.raises(ConfigError, match="apt-get install wordnet-base wordnet-sense-index"):
        wordnet.prepare(tmp_path / "root", tmp_path / "missing")
    source = fake_debian(tmp_path / "debian")
    (tmp_path / "root" / "corpora" / "wordnet").mkdir(parents=True)
    with pytest.raises(ConfigError, match="lacks WordNet files; remove it"):
        wordnet.prepare(tmp_path / "root", source)


def test_missing_wordnet_is_a_config_error(tmp_path, monkeypatch):
    def not_found(resource):
        raise LookupError(resource)

    monkeypatch.setattr(nltk.data, "find", not_found)
    with pytest.raises(
        ConfigError, match=r"apt-get install wordnet-base wordnet-sense-index.*nltk.downloader wordnet"
    ):
        wordnet.load(tmp_path / "root", tmp_path / "no-debian")


def test_load_reads_debian_wordnet_through_a_prepared_folder(tmp_path, monkeypatch):
    needs_wordnet()
    monkeypatch.setattr(nltk.data, "path", list(nltk.data.path))
    reader = wordnet.load(tmp_path / "nltk")
    assert (tmp_path / "nltk" / "corpora" / "wordnet" / "lexnames").is_file()
    assert reader.synsets("jacket")[0].lexname() == "noun.artifact"  # read through lexnames
    assert str(tmp_path / "nltk") in nltk.data.path


def test_data_root_is_overridable(monkeypatch, tmp_path):
    monkeypatch.setenv(wordnet.ROOT_ENV, str(tmp_path))
    assert wordnet.data_root() == tmp_path
    monkeypatch.delenv(wordnet.ROOT_ENV)
    assert wordnet.data_root() == Path.home() / ".cache" / "tbpr" / "nltk_data"


def test_synonyms_come_from_wordnet(wn):
    names = {
        " ".join(lemma.name().replace("_", " ").replace("-", " ").lower().split())
        for synset in wn.synsets("jacket")
        for lemma in synset.lemmas()
    }
    synonyms = ops.wordnet_synonyms("jacket")
    assert synonyms and set(synonyms) <= names - {"jacket"}
    assert "jacket crown" in synonyms  # multi-word lemma, '_' -> ' '
    assert wn.synsets("a") and ops.wordnet_synonyms("a") == ()  # stop words get none


def test_operations_use_wordnet_synonyms(wn):
    outputs = {ops.synonym_replacement("jacket", 1.0, random.Random(seed)) for seed in range(30)}
    assert outputs <= set(ops.wordnet_synonyms("jacket")) and len(outputs) > 1
    synonyms = ops.wordnet_synonyms("red") + ops.wordnet_synonyms("jacket")
    for seed in range(10):
        out = ops.random_insertion("red jacket", 0.5, random.Random(seed))
        assert any(out in (f"{s} red jacket", f"red {s} jacket") for s in synonyms), out


def test_forked_workers_get_their_own_wordnet_files(wn):
    """A DataLoader worker forked after loading must not share the parent's file offsets."""
    wn.synsets("jacket")  # the parent has its data files open
    parent_files = {id(fh) for fh in wn._data_file_map.values()}
    assert parent_files
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report whether its reader starts without the inherited handles and still works
        ok = not wn._data_file_map and wn.synsets("jacket")[0].name() == "jacket.n.01"
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.waitpid(pid, 0)
    assert {id(fh) for fh in wn._data_file_map.values()} == parent_files  # the parent keeps its own
    assert wn.synsets("coat")[0].name() == "coat.n.01"
