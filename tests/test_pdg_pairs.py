"""PDG pairs: which persons qualify, n pairs per person, the pairs dataset and training on it as an extra
source (``data.extra_train``)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tbpr.cli import main
from tbpr.crashsafe import SIGNAL_AT_ENV
from tbpr.data.caption_store import CaptionStore
from tbpr.data.from_generated import build_from_generated
from tbpr.data.readers import read_dataset
from tbpr.data.sources import add_training_sources
from tbpr.data.synthpedes.generation import JPEG_QUALITY
from tbpr.errors import ConfigError, DataError
from tbpr.generate.images.pdg import colour_swap as C
from tbpr.generate.images.pdg.job import METHOD, PairSettings, make_pairs, pair_work, skipped_path
from tbpr.generate.images.pdg.plan import Source, plan_pairs, training_sources
from tbpr.generate.images.pdg.synthpedes_truth import RENDERABLE_NAMES, SynthPedesTruth
from tbpr.generate.images.renderer import RendererBackend
from tbpr.generate.images.sheet import CELL, MARGIN, cell_label, edit_text, label_font
from tbpr.generate.images.store import accepted_images, request_fields
from tbpr.train import load_config
from tbpr.train.engine import Trainer

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
    assert len({(p.source.person, p.index) for p in plan.pairs}) == len(plan.pairs)


def test_a_plan_is_seeded_and_a_persons_pairs_do_not_depend_on_the_others(swapper):
    def edits(plan):
        return {(p.source.person, p.index): p.caption for p in plan.pairs}

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


def test_synthpedes_truth_turns_a_colour_edit_into_an_attribute_change(synth_tiny):
    truth = SynthPedesTruth(synth_tiny)
    sources, max_pid, _ = training_sources(synth_tiny)
    plan = plan_pairs(sources, max_pid, C.ColourSwapper(names=RENDERABLE_NAMES), n=2)
    assert plan.pairs and all(p.edit.new in RENDERABLE_NAMES for p in plan.pairs)
    for pair in plan.pairs:
        change = truth.colour_change(pair.source.image, pair.source.caption, pair.edit)
        ((attribute, colour),) = change.items()
        person = truth.person(pair.source.image)
        assert colour == RENDERABLE_NAMES[pair.edit.new] and person["attributes"][attribute] != colour
        assert set(person) == {"attributes", "looks", "scene"}
    assert RENDERABLE_NAMES["dark blue"] == "navy" and RENDERABLE_NAMES["gray"] == "grey"
    pair = plan.pairs[0]
    assert "not one of" in truth.colour_change(pair.source.image, "another caption", pair.edit)
    with pytest.raises(DataError, match="attributes.json: no SynthPedes ground truth"):
        SynthPedesTruth(synth_tiny / "imgs")


@pytest.fixture(scope="module")
def pairs_store(tmp_path_factory, synth_tiny, swapper):
    """(store, summary, plan, skipped) of two renderer pairs per person of SynthPedes tiny."""
    store = tmp_path_factory.mktemp("pdg") / "pairs.jsonl"
    return (store, *make_pairs(synth_tiny, store, RendererBackend(), per_person=2, seed=0))


def test_the_renderer_pair_is_the_source_person_redrawn_with_the_new_colour(pairs_store, synth_tiny):
    store, summary, plan, _ = pairs_store
    records = list(CaptionStore(store))
    assert summary.accepted == len(records) == len(plan.pairs) > 0 and summary.failed == 0
    rec = records[0]
    pair = next(p for p in plan.pairs if p.pid == rec.caption_id)
    assert rec.method == METHOD and rec.key == f"{pair.pid}:0" and rec.extra["identity_id"] == pair.pid
    assert rec.extra["prompt"] == rec.extra["caption"] == pair.caption != pair.source.caption
    assert rec.extra["source_caption"] == rec.extra["source_prompt"] == pair.source.caption
    assert rec.extra["source_image"] == pair.source.image and rec.extra["colour_swap"]["new"] == pair.edit.new
    assert rec.extra["edit"]["kind"] == "attributes" and rec.extra["seed"] == rec.settings["seed"]
    source = np.asarray(Image.open(synth_tiny / "imgs" / pair.source.image))
    generated = Image.open(store.parent / rec.text)
    # redrawing the recorded person unchanged gives the source image back exactly (saved as the dataset
    # saves it): the pair is the same person in the same scene, with the garment's colour changed
    (same,) = RendererBackend().generate([_request(rec, {})])
    (swapped,) = RendererBackend().generate([_request(rec, rec.extra["edit"]["value"])])
    assert np.array_equal(as_dataset_jpeg(same.image), source)
    assert swapped.image.tobytes() == generated.tobytes() != same.image.tobytes()


def as_dataset_jpeg(image: Image.Image) -> np.ndarray:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return np.asarray(Image.open(buffer))


def _request(rec, change):
    from tbpr.generate.images.backend import ImageRequest

    person = {**rec.extra["person"], "attributes": {**rec.extra["person"]["attributes"], **change}}
    return ImageRequest("", rec.extra["seed"], person=person)


def test_n_pairs_per_person_and_skipped_captions_with_reasons(pairs_store):
    store, _, plan, skipped = pairs_store
    per_person: dict[int, set[str]] = {}
    for rec in CaptionStore(store):
        per_person.setdefault(rec.extra["source_person"], set()).add(rec.extra["caption"])
    assert len(per_person) == plan.qualifying and all(len(c) == 2 for c in per_person.values())
    lines = skipped_path(store).read_text().splitlines()
    assert len(lines) == len(skipped) and all('"reason": "' in line for line in lines)


def test_an_inversion_backend_gets_the_prompts_the_word_swap_and_the_settings(swapper):
    plan = plan_pairs(SOURCES, 20, swapper)
    work, skipped = pair_work(plan, Path("/data/imgs"), "diffusers", PairSettings(steps=20, inner_steps=5))
    assert not skipped and len(work) == len(plan.pairs)
    request = work[0].request
    assert request.source == Path("/data/imgs") / plan.pairs[0].source.image and request.person is None
    assert (request.source_prompt, request.target_prompt) == (
        plan.pairs[0].source.caption,
        plan.pairs[0].caption,
    )
    assert request.edit == {"kind": "word_swap", "value": plan.pairs[0].edit.to_json()}
    assert (
        request.steps == 20
        and request.inversion["inner_steps"] == 5
        and request.inversion["cross_share"] == 0.8
    )


def test_the_contact_sheet_labels_a_pair_by_its_colour_change(pairs_store, swapper):
    font, width = label_font(), CELL[0] - 2 * MARGIN
    rec, _ = next(accepted_images(pairs_store[0]))  # the renderer's edit: {"kind": "attributes", ...}
    ((attribute, colour),) = rec.extra["edit"]["value"].items()
    assert edit_text(rec.extra["edit"]) == f"attributes: {attribute}={colour}"
    head, line = cell_label(rec, font).split("\n")
    assert head == "attributes:" and line.endswith(colour) and font.getlength(line) <= width
    plan = plan_pairs(SOURCES, 20, swapper)
    work, _ = pair_work(plan, Path("/data/imgs"), "diffusers", PairSettings())
    edit = request_fields(work[0].request)["edit"]  # what the job records for an inversion backend
    swap = plan.pairs[0].edit
    assert edit_text(edit) == f"word_swap: {swap.old} -> {swap.new}"


def test_bad_inversion_settings_are_one_clear_error(tmp_path, caplog):
    assert (
        main(["generate", "pairs", str(tmp_path), "--out", str(tmp_path / "p.jsonl"), "--edit-model", "x"])
        == 2
    )
    assert "--edit-model (instruction editing) does not apply" in caplog.text
    caplog.clear()
    assert (
        main(["generate", "persons", "--out", str(tmp_path / "q.jsonl"), "--count", "1", "--edit-model", "x"])
        == 2
    )
    assert "generate persons draws new persons" in caplog.text and not (tmp_path / "q.jsonl").exists()
    with pytest.raises(ConfigError, match=r"--cross-share 1.5: expected a share of the steps in \[0, 1\]"):
        PairSettings(cross_share=1.5)


def test_a_renderer_job_on_a_dataset_without_ground_truth_is_one_error_before_any_work(tmp_path):
    store = tmp_path / "p.jsonl"
    with pytest.raises(DataError, match="no SynthPedes ground truth"):
        make_pairs(Path(__file__).parent / "fixtures/jsonl", store, RendererBackend())
    assert not store.exists()


def _cli(*args: str, signal_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **({SIGNAL_AT_ENV: signal_at} if signal_at else {})}
    return subprocess.run(
        [sys.executable, "-m", "tbpr", *args], env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_generate_pairs_killed_then_rerun_loses_nothing_and_shards_merge(tmp_path, synth_tiny, pairs_store):
    args = ["generate", "pairs", str(synth_tiny), "--per-person", "2", "--batch-size", "4"]
    killed = _cli(*args, "--out", str(tmp_path / "k.jsonl"), signal_at="images.file-written")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert _cli(*args, "--out", str(tmp_path / "k.jsonl")).returncode == 0
    whole = {r.key: (r.extra["caption"], r.extra["seed"]) for r in CaptionStore(pairs_store[0])}
    records = list(CaptionStore(tmp_path / "k.jsonl"))
    assert len(records) == len({r.key for r in records}) == len(whole)  # no loss, no duplicates
    assert {r.key: (r.extra["caption"], r.extra["seed"]) for r in records} == whole
    on_disk = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png")}
    assert on_disk == {r.text for r in records}
    for i in range(2):
        assert main([*args, "--out", str(tmp_path / f"s.{i}.jsonl"), "--shard", f"{i}/2"]) == 0
    shards = [{r.key for r in CaptionStore(tmp_path / f"s.{i}.jsonl")} for i in range(2)]
    assert not shards[0] & shards[1] and shards[0] | shards[1] == set(whole)


@pytest.fixture(scope="module")
def pairs_dataset(tmp_path_factory, pairs_store):
    out = tmp_path_factory.mktemp("pdg-data") / "pairs"
    build_from_generated([pairs_store[0]], out)
    return out


def test_the_pairs_dataset_loads_with_one_identity_per_pair_and_the_edited_captions(
    pairs_dataset, pairs_store
):
    manifest = read_dataset(pairs_dataset)
    plan = pairs_store[2]
    assert len(manifest.images) == len(plan.pairs) == manifest.num_ids()
    assert sorted(c.text for c in manifest.captions) == sorted(p.caption for p in plan.pairs)
    assert all(manifest.image_path(im).is_file() for im in manifest.images)


def test_an_extra_source_adds_identities_after_the_training_split(tmp_path, synth_tiny, pairs_dataset):
    train = read_dataset(synth_tiny).split("train")
    extra = read_dataset(pairs_dataset)
    both = add_training_sources(train, [pairs_dataset], first_caption_id=10_000)
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
def test_training_reads_the_pairs_as_an_extra_source(tmp_path, synth_tiny, pairs_dataset):
    overrides = [
        "model.arch=tbpr-micro",
        "model.image_size=[64, 32]",
        "data.batch_size=8",
        "data.num_workers=0",
        "optim.epochs=1",
        "eval_every=0",
        f"data.path={synth_tiny}",
        f"data.extra_train=[{pairs_dataset}]",
        f"output_dir={tmp_path / 'run'}",
    ]
    trainer = Trainer(load_config("cpu-small", overrides))
    real = read_dataset(synth_tiny).split("train")
    extra = read_dataset(pairs_dataset)
    assert trainer.train_split.num_ids() == real.num_ids() + extra.num_ids()
    assert len(trainer.loader.dataset) == len(real.captions) + len(extra.captions)
    run = trainer.train()
    assert (run / "checkpoints/last.pt").is_file()
    assert "extra_train" in (run / "config.yaml").read_text()


def test_the_renderer_refuses_an_attribute_edit_it_cannot_draw(pairs_store):
    from tbpr.generate.images.backend import EditRequest, Failed

    store = pairs_store[0]
    rec = next(iter(CaptionStore(store)))
    source, person = store.parent / rec.text, rec.extra["person"]
    not_a_mapping, no_such_colour = RendererBackend().edit(
        [
            EditRequest(source, {"kind": "attributes", "value": "red"}, 0, person=person),
            EditRequest(source, {"kind": "attributes", "value": {"upper_colour": "beige"}}, 0, person=person),
        ]
    )
    assert isinstance(not_a_mapping, Failed) and "attributes (a mapping)" in not_a_mapping.reason
    assert (
        isinstance(no_such_colour, Failed) and "not a valid SynthPedes combination" in no_such_colour.reason
    )


@pytest.mark.slow
def test_generate_pairs_with_the_diffusers_backend_inverts_and_swaps_the_word(tmp_path, swapper):
    """Null-text inversion + prompt-to-prompt word swap on a tiny random Stable Diffusion, end to end."""
    from tbpr.generate.images.diffusion.tiny import save_tiny_pipeline

    data = tmp_path / "data"
    (data / "imgs").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = [
        (7, "a.png", "A man in a red shirt and black trousers carrying a blue backpack."),
        (8, "b.png", "A woman carrying a red bag."),  # no clothes phrase: skipped
    ]
    for _, name, _ in rows:
        Image.fromarray(rng.integers(0, 256, (64, 32, 3), dtype=np.uint8)).save(data / "imgs" / name)
    (data / "annotations.jsonl").write_text(
        "".join(
            json.dumps({"file_path": name, "id": pid, "split": "train", "captions": [text]}) + "\n"
            for pid, name, text in rows
        )
    )
    model = save_tiny_pipeline(tmp_path / "sd")
    store = tmp_path / "gen" / "pairs.jsonl"
    args = [
        "generate",
        "pairs",
        str(data),
        "--out",
        str(store),
        "--backend",
        "diffusers",
        "--model",
        str(model),
    ]
    args += ["--device", "cpu", "--steps", "2", "--inner-steps", "1", "--filter", "none", "--per-person", "2"]
    assert main(args) == 0
    records = list(CaptionStore(store))
    assert len(records) == 2 and all(r.accepted for r in records)
    for rec in records:
        assert rec.backend == "diffusers" and rec.extra["edit"]["kind"] == "word_swap"
        result = rec.extra["result"]
        assert result["method"] == "null-text inversion + prompt-to-prompt"
        assert result["inversion"]["inner_steps"] == 1 and result["cross_share"] == 0.8
        assert (
            rec.extra["source_prompt"].endswith("blue backpack.")
            and rec.extra["caption"] != rec.extra["source_prompt"]
        )
        assert Image.open(store.parent / rec.text).size == (32, 64)
    assert [json.loads(x)["reason"] for x in skipped_path(store).read_text().splitlines()] == [C.NO_CLOTHES]
    build_from_generated([store], tmp_path / "pairs")
    assert read_dataset(tmp_path / "pairs").num_ids() == 2
