"""The image generation core: the renderer backend and its styles, the image job (kill at every step and
rerun, shards and merge, failures with reasons, the person filter) and the backend registry."""

from __future__ import annotations

import dataclasses
import hashlib
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
from tbpr.data.synthpedes.attributes import is_valid, sample_attributes, sample_looks
from tbpr.data.synthpedes.render import render_image
from tbpr.data.synthpedes.scene import sample_scene
from tbpr.data.synthpedes.style import STYLES
from tbpr.errors import ConfigError, DataError
from tbpr.generate.images.backend import EditRequest, Failed, Generated, ImageRequest, make_backend
from tbpr.generate.images.edits import METHOD as EDIT_METHOD
from tbpr.generate.images.edits import edit_work
from tbpr.generate.images.filters import BasicPersonFilter, make_filter
from tbpr.generate.images.job import ImageWork, run_image_job
from tbpr.generate.images.persons import load_vocabulary, sample_identity
from tbpr.generate.images.renderer import RendererBackend
from tbpr.generate.images.sheet import CELL, LABEL, MARGIN, cell_label, contact_sheet, label_font
from tbpr.generate.images.store import accepted_images
from tbpr.generate.jobs import Shard
from tbpr.generate.status import merge_stores

KILL_STEPS = ["images.file-written", "store.appended"]


def persons(count: int = 6, per_item: int = 2) -> list[ImageWork]:
    """``count`` identities with SynthPedes attributes, ``per_item`` images each."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        attrs = sample_attributes(rng)
        for n in range(per_item):
            request = ImageRequest(prompt=f"person {i}", seed=0, person={"attributes": attrs})
            out.append(ImageWork(i, n, f"person {i}", request, {"identity": attrs}))
    return out


def run(store, work=None, **kw):
    return run_image_job(store, RendererBackend(), persons() if work is None else work, "test_person", **kw)


def snapshot(store: Path) -> dict[str, tuple[str, str]]:
    """key -> (image file, SHA-256 of its bytes) of the accepted records."""
    return {
        rec.key: (rec.text, hashlib.sha256(path.read_bytes()).hexdigest())
        for rec, path in accepted_images(store)
    }


# ------------------------------------------------------------------------------------------ renderer
def test_renderer_is_deterministic_per_seed_and_records_ground_truth():
    backend = RendererBackend()
    attrs = sample_attributes(np.random.default_rng(1))
    a, b, c = backend.generate(
        [ImageRequest("p", seed=s, person={"attributes": attrs, "view": "back"}) for s in (5, 5, 6)]
    )
    assert isinstance(a, Generated) and a.image.size == (128, 256)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.image.tobytes() != c.image.tobytes()
    assert a.info["scene"]["view"] == "back" and a.info["weather"] == "clear"


def test_default_style_draws_the_synthpedes_images_and_other_styles_differ():
    rng = np.random.default_rng(3)
    attrs, looks, scene = sample_attributes(rng), sample_looks(rng), sample_scene(rng, "front")
    person = {"attributes": attrs, "looks": looks, "scene": scene.to_json()}
    images = {}
    for name in STYLES:
        (result,) = RendererBackend(name).generate([ImageRequest("p", seed=0, person=person)])
        images[name] = np.asarray(result.image, dtype=np.float32)
    assert np.array_equal(images["synthpedes"], np.asarray(render_image(attrs, looks, scene)))
    for name in ("synthetic", "vivid"):
        assert np.abs(images[name] - images["synthpedes"]).mean() > 2  # palette and proportions changed


def test_style_backgrounds_come_from_the_style_set():
    attrs = sample_attributes(np.random.default_rng(2))
    backend = RendererBackend("synthetic")
    results = backend.generate([ImageRequest("p", seed=s, person={"attributes": attrs}) for s in range(12)])
    assert {r.info["scene"]["background"] for r in results} <= set(STYLES["synthetic"].backgrounds)


def test_renderer_edit_changes_only_the_edited_condition(tmp_path):
    backend = RendererBackend()
    attrs = sample_attributes(np.random.default_rng(4))
    (source,) = backend.generate(
        [ImageRequest("p", seed=1, person={"attributes": attrs, "background": "wall"})]
    )
    path = tmp_path / "src.png"
    source.image.save(path)
    person = {"attributes": attrs, **source.info}
    park, rain, sit = backend.edit(
        [
            EditRequest(path, {"kind": "background", "value": "park"}, seed=9, person=person),
            EditRequest(path, {"kind": "weather", "value": "rainy"}, seed=9, person=person),
            EditRequest(path, {"kind": "posture", "value": "sitting"}, seed=9, person=person),
        ]
    )
    assert park.info["scene"] == {**source.info["scene"], "background": "park"}
    assert rain.info["scene"] == source.info["scene"] and rain.info["weather"] == "rainy"
    assert rain.image.tobytes() != source.image.tobytes()
    assert isinstance(sit, Failed) and "posture 'sitting' cannot be drawn" in sit.reason
    broken = {**person, "scene": {"view": "front"}}
    (bad,) = backend.edit([EditRequest(path, {"kind": "view", "value": "back"}, seed=9, person=broken)])
    assert isinstance(bad, Failed) and bad.reason.startswith(
        "recorded scene {'view': 'front'} is not a SynthPedes scene"
    )
    (partial,) = backend.generate([ImageRequest("p", 0, person={"attributes": {"gender": "man"}})])
    assert partial.reason == "person attributes {'gender': 'man'} are not a valid SynthPedes combination"


def test_unknown_backend_or_model_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"image backend 'nope' is unknown; use one of synthpedes"):
        make_backend("nope")
    with pytest.raises(
        ConfigError, match=r"renderer style 'oil' is unknown; use one of synthpedes, synthetic"
    ):
        make_backend("synthpedes", "oil")
    assert make_backend("synthpedes", "synthetic").provenance()["settings"]["style"]["name"] == "synthetic"


# ------------------------------------------------------------------------------------------ the job
def test_job_writes_every_image_with_its_provenance_and_a_rerun_does_nothing(tmp_path):
    store = tmp_path / "gen.jsonl"
    summary = run(store, seed=3)
    assert (summary.wanted, summary.accepted, summary.failed) == (12, 12, 0)
    records = list(CaptionStore(store))
    rec = records[0]
    assert rec.backend == "synthpedes" and rec.model == "synthpedes" and rec.extra["model_hash"]
    assert rec.extra["prompt"] == "person 0" and rec.extra["identity"] == rec.extra["person"]["attributes"]
    assert rec.settings["seed"] == rec.extra["seed"] and rec.extra["result"]["scene"]
    assert (tmp_path / rec.text).is_file() and rec.text.startswith("gen_images/test_person/")
    again = run(store, seed=3)
    assert (again.skipped, again.accepted) == (12, 0) and len(list(CaptionStore(store))) == 12


def _killed_run(store: Path, step: str | None) -> subprocess.CompletedProcess:
    code = (
        "import sys; sys.path.insert(0, sys.argv[2]); import test_image_generation as t; "
        "t.run(sys.argv[1], seed=3, batch_size=4)"
    )
    env = {**os.environ}
    if step:
        env[SIGNAL_AT_ENV] = step
    return subprocess.run(
        [sys.executable, "-c", code, str(store), str(Path(__file__).parent)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("step", KILL_STEPS)
def test_a_job_killed_at_any_step_continues_without_loss_or_duplicates(tmp_path, step):
    reference = tmp_path / "ref" / "gen.jsonl"
    run(reference, seed=3, batch_size=4)
    store = tmp_path / "killed" / "gen.jsonl"
    killed = _killed_run(store, step)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert _killed_run(store, None).returncode == 0
    records = list(CaptionStore(store))
    assert len(records) == len({r.key for r in records}) == 12  # no duplicates
    assert snapshot(store) == {
        k: (v[0].replace("ref", "killed"), v[1]) for k, v in snapshot(reference).items()
    }
    on_disk = {p.relative_to(store.parent).as_posix() for p in (tmp_path / "killed").rglob("*.png")}
    assert on_disk == {
        r.text for r in records
    }  # the image written before the kill was rewritten, not doubled
    assert not list((tmp_path / "killed").rglob("*.tmp"))


def test_shards_split_the_items_and_merge_into_the_whole(tmp_path):
    whole = tmp_path / "whole.jsonl"
    run(whole, seed=3)
    parts = [tmp_path / f"gen.{i}.jsonl" for i in range(2)]
    for i, part in enumerate(parts):
        summary = run(part, seed=3, shard=Shard(i, 2))
        assert summary.wanted == 6 and {r.caption_id % 2 for r in CaptionStore(part)} == {i}
    merged = tmp_path / "gen.jsonl"
    assert merge_stores(merged, parts).records == 12
    hashes = {k: h for k, (_, h) in snapshot(merged).items()}
    assert hashes == {k: h for k, (_, h) in snapshot(whole).items()}


def test_missing_and_unreadable_sources_are_failures_retried_on_rerun(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 128), "grey").save(good)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    source = run(tmp_path / "src.jsonl")
    rec, path = next(accepted_images(tmp_path / "src.jsonl"))
    person = {"attributes": rec.extra["identity"], **rec.extra["result"]}
    edit = {"kind": "background", "value": "park"}

    def work(src: Path, i: int) -> ImageWork:
        return ImageWork(i, 0, f"{src.name} park", EditRequest(src, edit, seed=0, person=person))

    missing = tmp_path / "later.png"
    store = tmp_path / "edits.jsonl"
    summary = run_image_job(
        store, RendererBackend(), [work(missing, 0), work(broken, 1), work(path, 2)], "edit"
    )
    assert source.accepted == 12 and (summary.accepted, summary.failed) == (1, 6)  # 3 rounds x 2 failures
    reasons = {r.reason for r in CaptionStore(store) if r.reason}
    assert reasons == {
        f"source image {missing} does not exist",
        f"source image {broken} cannot be read (UnidentifiedImageError: cannot identify image file "
        f"{str(broken)!r})",
    }
    assert {p.name for p in (tmp_path / "edits_images" / "edit").iterdir()} == {"2_0_a1.png"}
    path.replace(missing)
    rerun = run_image_job(store, RendererBackend(), [work(missing, 0)], "edit")
    assert rerun.accepted == 1


class Exploding(RendererBackend):
    def generate(self, requests):
        raise RuntimeError("CUDA out of memory")


def test_a_failing_backend_call_is_recorded_and_the_store_survives(tmp_path):
    store = tmp_path / "gen.jsonl"
    summary = run_image_job(store, Exploding(), persons(2, 1), "p", max_attempts=2)
    assert (summary.failed, summary.accepted) == (4, 0)
    assert {r.reason for r in CaptionStore(store)} == {"backend error: RuntimeError: CUDA out of memory"}
    assert run_image_job(store, RendererBackend(), persons(2, 1), "p").accepted == 2


def test_the_person_filter_rejects_keeps_the_file_and_asks_again_with_a_new_seed(tmp_path):
    store = tmp_path / "gen.jsonl"
    wide = BasicPersonFilter(min_aspect=2.5)  # the renderer's 2:1 images fail it
    summary = run_image_job(store, RendererBackend(), persons(1, 1), "p", max_attempts=3, check=wide)
    records = list(CaptionStore(store))
    assert (summary.rejected, summary.exhausted) == (3, 1)
    assert len({r.settings["seed"] for r in records}) == 3 and all(
        (tmp_path / r.text).is_file() for r in records
    )
    assert records[0].reason == "filter: aspect ratio 2.00 (height/width) outside 2.5-4.0"
    assert records[0].extra["filter"] == "basic"


def test_the_basic_filter_refuses_flat_images_and_passes_rendered_ones():
    check = make_filter("basic")
    assert check(Image.new("RGB", (64, 128), "white")).startswith("filter: nearly uniform image")
    (result,) = RendererBackend().generate(
        [ImageRequest("p", 0, person={"attributes": persons(1, 1)[0].extra["identity"]})]
    )
    assert check(result.image) is None and make_filter("none") is None
    with pytest.raises(ConfigError, match="person filter 'pose' is unknown"):
        make_filter("pose")


def test_a_store_of_another_job_is_refused(tmp_path):
    store = tmp_path / "gen.jsonl"
    run(store, persons(1, 1))
    other = [ImageWork(0, 0, "someone else", persons(1, 1)[0].request)]
    with pytest.raises(DataError, match=r"key 0:0: holds an image of 'person 0'.*write to a new store"):
        run(store, other)
    assert json.loads(store.read_text().splitlines()[0])["source_text"] == "person 0"


# ------------------------------------------------------------------------------------------ commands
def test_person_prompts_obey_the_gender_constraints_and_record_the_identity():
    vocab = load_vocabulary()
    people = [sample_identity(vocab, 0, i) for i in range(300)]
    men = [p for p in people if p.attributes["gender"] == "man"]
    assert 100 < len(men) < 200
    assert all(p.attributes["lower_type"] != "skirt" for p in men)
    assert not any(
        word in p.prompt for p in men for word in ("skirt", "dress", "blouse", "leggings", "ponytail")
    )
    assert all(is_valid(p.attributes) for p in people)
    assert sample_identity(vocab, 0, 7) == people[7] and sample_identity(vocab, 1, 7) != people[7]
    assert all(p.prompt.startswith(("A ", "An ")) and "{" not in p.prompt for p in people)


def test_a_vocabulary_naming_an_unknown_slot_is_one_clear_error(tmp_path):
    bad = tmp_path / "v.yaml"
    bad.write_text("templates: ['A {colour_of_eyes} person']\nslots: [gender]\ngender: [{text: man}]\n")
    with pytest.raises(ConfigError, match=r"v.yaml: template 0 names unknown slots \['colour_of_eyes'\]"):
        load_vocabulary(bad)


def test_generate_persons_edit_and_status_commands(tmp_path, capsys, caplog):
    persons_store, edits_store = tmp_path / "p.jsonl", tmp_path / "e.jsonl"
    assert (
        main(["generate", "persons", "--out", str(persons_store), "--count", "3", "--per-prompt", "2"]) == 0
    )
    records = list(CaptionStore(persons_store))
    assert len(records) == 6 and len({r.caption_id for r in records}) == 3
    assert records[0].extra["identity"]["slots"]["gender"] in records[0].extra["prompt"]
    assert (
        main(
            [
                "generate",
                "edit",
                "--from",
                str(persons_store),
                "--out",
                str(edits_store),
                "--weather",
                "foggy",
            ]
        )
        == 0
    )
    edits = list(CaptionStore(edits_store))
    assert len(edits) == 6 and all(e.extra["edit"] == {"kind": "weather", "value": "foggy"} for e in edits)
    source = {r.text: r for r in records}
    for e in edits:
        original = source[e.extra["source_image"]]
        assert e.extra["identity_id"] == original.caption_id
        assert e.extra["result"]["scene"] == original.extra["result"]["scene"]
    assert main(["generate", "status", str(edits_store)]) == 0
    assert "person_edit: 6 source items, 6 keys, 6 tries: 6 accepted" in capsys.readouterr().out
    with Image.open(tmp_path / "e.jsonl.status" / "contact_sheet.png") as sheet:
        assert sheet.size == (6 * 96, 192 + 30)
    assert (
        main(["generate", "persons", "--out", str(tmp_path / "x.jsonl"), "--count", "1", "--model", "oil"])
        == 2
    )
    assert (
        main(
            [
                "generate",
                "persons",
                "--out",
                str(tmp_path / "x.jsonl"),
                "--count",
                "1",
                "--polish",
                "transformers",
            ]
        )
        == 2
    )
    assert "--polish transformers needs --polish-model" in capsys.readouterr().err + caplog.text
    assert not (tmp_path / "x.jsonl").exists()
    missing = ["generate", "edit", "--from", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "y.jsonl")]
    assert main([*missing, "--view", "back"]) == 2
    assert "none.jsonl does not exist" in caplog.text and not (tmp_path / "y.jsonl").exists()


def test_the_contact_sheet_labels_an_edit_by_its_kind_and_value_within_the_cell(tmp_path):
    source, edits = tmp_path / "p.jsonl", tmp_path / "e.jsonl"
    run(source, persons(count=1, per_item=1))
    wanted = {"picture_style": ["painting"], "posture": ["running"]}
    run_image_job(edits, RendererBackend(), edit_work(source, wanted), EDIT_METHOD)
    font = label_font()
    records = [rec for rec, _ in accepted_images(edits)]
    assert [r.extra["edit"] for r in records] == [
        {"kind": "picture_style", "value": "painting"},
        {"kind": "posture", "value": "running"},
    ]
    labels = [cell_label(rec, font) for rec in records]
    assert labels == ["picture_style:\npainting", "posture: running"]  # too wide: broken after the kind
    (rec, _), width = next(accepted_images(source)), CELL[0] - 2 * MARGIN
    assert cell_label(rec, font) == rec.key  # not an edit: its key
    long = dataclasses.replace(rec, key="123456789012345678:0")
    assert cell_label(long, font).startswith("123") and cell_label(long, font).endswith("678:0")
    for label in [*labels, cell_label(long, font)]:
        assert all(font.getlength(line) <= width for line in label.split("\n"))
    assert contact_sheet(edits).size == (2 * CELL[0], CELL[1] + LABEL)


@pytest.mark.parametrize("action", ["persons", "edit", "status"])
def test_generate_help_explains_every_option(action, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", action, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    options = {
        "persons": ["--count", "--per-prompt", "--vocabulary", "--polish"],
        "edit": ["--from", "--view"],
    }
    for option in [
        *options.get(action, []),
        *(["--shard", "--filter", "--model"] if action != "status" else []),
    ]:
        assert option in text


def test_a_training_set_from_generated_persons_and_edits_loads_with_the_readers(tmp_path):
    from tbpr.data.readers import read_dataset

    persons_store, edits_store = tmp_path / "p.jsonl", tmp_path / "e.jsonl"
    main(["generate", "persons", "--out", str(persons_store), "--count", "3", "--per-prompt", "2"])
    main(
        ["generate", "edit", "--from", str(persons_store), "--out", str(edits_store), "--posture", "running"]
    )
    edits = sum(1 for _ in CaptionStore(edits_store))
    out = tmp_path / "ds"
    assert main(["data", "from-generated", str(persons_store), str(edits_store), "--out", str(out)]) == 0
    manifest = read_dataset(out)
    train = manifest.split("train")
    assert len(train.images) == 6 + edits and len({im.pid for im in train.images}) == 3
    prompts = {r.extra["prompt"] for r in CaptionStore(persons_store)}
    assert {c.text for c in train.captions} == prompts
    assert all((out / "imgs" / im.path).is_file() for im in train.images)


class Polisher:
    """A text backend that writes the template prompt as a sentence, or refuses identity ``refuse``."""

    model, backend, settings = "scripted", "scripted", {}

    def __init__(self, refuse: int | None = None):
        self.refuse, self.calls = refuse, 0

    def generate(self, conversations, seeds):
        from tbpr.generate.chat import Failure, Reply

        self.calls += len(conversations)
        prompts = [c[-1]["content"].split("Description: ")[1] for c in conversations]
        return [
            Failure("HTTP 500")
            if p.endswith(str(self.refuse))
            else Reply(f"Here is {p.lower()} walking outside.")
            for p in prompts
        ]


def test_polished_prompts_are_recorded_and_reused_on_rerun(tmp_path):
    from tbpr.generate.images.persons import person_work
    from tbpr.generate.images.polish import polish_work

    store = tmp_path / "p.jsonl"
    work = person_work(load_vocabulary(), 2, 2, seed=0)
    first = polish_work(work, Polisher(), store, seed=0)
    assert first[0].request.prompt == f"Here is {work[0].source_text.lower()} walking outside."
    assert first[0].source_text == work[0].source_text and first[0].extra["polish"]["model"] == "scripted"
    run_image_job(store, RendererBackend(), first[:1], "p")
    again = Polisher()
    second = polish_work(work, again, store, seed=0)
    assert again.calls == 1 and second[1].request.prompt == first[1].request.prompt  # identity 0 reused
    assert (
        CaptionStore(store).progress()
        and next(iter(CaptionStore(store))).extra["prompt"] == first[0].request.prompt
    )


def test_a_failed_polish_keeps_the_template_prompt_with_the_reason(tmp_path):
    from tbpr.generate.images.persons import person_work
    from tbpr.generate.images.polish import polish_work

    work = person_work(load_vocabulary(), 1, 1, seed=0)
    refuse = work[0].source_text[-1]
    (polished,) = polish_work(work, Polisher(refuse=refuse), tmp_path / "p.jsonl", seed=0)
    assert polished.request.prompt == work[0].source_text and polished.extra["polish"]["reason"] == "HTTP 500"


def test_render_processes_do_not_change_the_images():
    requests = [w.request for w in persons(3, 1)]
    one = RendererBackend().generate(requests)
    backend = RendererBackend(workers=2)
    try:
        two = backend.generate(requests)
    finally:
        backend.close()
    assert [r.image.tobytes() for r in one] == [r.image.tobytes() for r in two]


def _cli(*args: str, signal_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **({SIGNAL_AT_ENV: signal_at} if signal_at else {})}
    return subprocess.run(
        [sys.executable, "-m", "tbpr", *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_generate_edit_killed_then_rerun_and_sharded_persons_merge(tmp_path):
    persons_args = ["generate", "persons", "--count", "4", "--per-prompt", "1", "--batch-size", "2"]
    for i in range(2):
        assert main([*persons_args, "--out", str(tmp_path / f"p.{i}.jsonl"), "--shard", f"{i}/2"]) == 0
    assert (
        main(
            [
                "augment",
                "merge",
                str(tmp_path / "p.jsonl"),
                *(str(tmp_path / f"p.{i}.jsonl") for i in range(2)),
            ]
        )
        == 0
    )
    assert main([*persons_args, "--out", str(tmp_path / "whole.jsonl")]) == 0
    merged, whole = snapshot(tmp_path / "p.jsonl"), snapshot(tmp_path / "whole.jsonl")
    assert {k: h for k, (_, h) in merged.items()} == {k: h for k, (_, h) in whole.items()}

    edit = ["generate", "edit", "--from", str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "e.jsonl")]
    edit += ["--view", "front,back", "--batch-size", "2"]
    killed = _cli(*edit, signal_at="images.file-written")
    assert killed.returncode == -9, killed.stderr[-2000:]
    stale = tmp_path / "e_images" / "person_edit" / ".x.png.abc.tmp"  # as a write killed mid-file leaves it
    stale.write_bytes(b"half")
    assert _cli(*edit).returncode == 0
    records = list(CaptionStore(tmp_path / "e.jsonl"))
    views = [r.extra["result"]["scene"]["view"] for r in CaptionStore(tmp_path / "p.jsonl")]
    wanted = sum(v != view for view in views for v in ("front", "back"))  # a view the image has is skipped
    assert len(records) == len({r.key for r in records}) == wanted
    assert not stale.exists()


def test_a_training_set_can_take_its_captions_from_tbpr_caption(tmp_path):
    from tbpr.data.caption_store import StoreRecord
    from tbpr.data.readers import read_dataset
    from tbpr.generate.text.caption import METHOD as CAPTIONED
    from tbpr.generate.text.caption import image_id

    store = tmp_path / "p.jsonl"
    main(["generate", "persons", "--out", str(store), "--count", "2", "--per-prompt", "1"])
    first, second = list(CaptionStore(store))
    captions = CaptionStore(tmp_path / "caps.jsonl")  # as `tbpr caption tmp_path` writes it
    captions.append(
        [
            StoreRecord(
                f"{image_id(first.text)}:0",
                image_id(first.text),
                "A person in a coat.",
                first.text,
                CAPTIONED,
                "openai",
                "vlm",
                ["en"],
                {},
                1,
                True,
            )
        ]
    )
    out = tmp_path / "ds"
    assert (
        main(["data", "from-generated", str(store), "--out", str(out), "--captions", str(captions.path)]) == 0
    )
    train = read_dataset(out).split("train")
    assert [c.text for c in train.captions] == ["A person in a coat."]  # the uncaptioned image is left out
    assert [im.path for im in train.images] == [first.text] and second.text != first.text
