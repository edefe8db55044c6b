"""The ``diffusers`` image backend on tiny random pipelines saved to folders, as a user's model would be."""

import json

import numpy as np
import pytest

from tbpr.cli import main
from tbpr.generate.images.backend import EditRequest, Failed, Generated, ImageRequest, make_backend
from tbpr.generate.images.diffusion.backend import P2P
from tbpr.generate.images.diffusion.tiny import save_tiny_pipeline

PROMPT = "a man in a red shirt and black trousers"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return save_tiny_pipeline(root / "sd"), save_tiny_pipeline(root / "ip2p", kind="instruct")


@pytest.fixture(scope="module")
def backend(models):
    return make_backend("diffusers", str(models[0]), device="cpu")


def request(prompt=PROMPT, seed=1, **kw):
    return ImageRequest(prompt=prompt, seed=seed, **{"width": 32, "height": 64, "steps": 2, **kw})


def test_generate_batches_seeded_requests_and_fails_bad_sizes_alone(backend):
    results = backend.generate(
        [request(seed=1), request("a woman in a green coat", seed=2), request(width=30)]
    )
    assert [type(r) for r in results] == [Generated, Generated, Failed]
    assert results[0].image.size == (32, 64) and "multiples of 4" in results[2].reason
    (alone,) = backend.generate([request(seed=1)])
    diff = np.abs(np.asarray(alone.image, dtype=int) - np.asarray(results[0].image, dtype=int))
    assert diff.max() <= 1  # the same image up to rounding, whatever the batch
    provenance = backend.provenance()
    assert len(provenance["model_hash"]) == 16 and provenance["settings"]["device"] == "cpu"


def test_prompt_to_prompt_edit_and_its_failures(backend, tmp_path):
    source = tmp_path / "src.png"
    backend.generate([request()])[0].image.save(source)
    edit = dict(source=source, edit={"kind": "colour", "value": "blue"}, seed=0, steps=2)
    ok = EditRequest(
        **edit,
        source_prompt=PROMPT,
        target_prompt=PROMPT.replace("red", "blue"),
        inversion={"inner_steps": 1},
    )
    refined = EditRequest(**edit, source_prompt=PROMPT, target_prompt=PROMPT + ", in a park")
    unaligned = EditRequest(**edit, source_prompt=PROMPT, target_prompt="a turquoise-ish shirt")
    missing = EditRequest(
        **{**edit, "source": tmp_path / "gone.png"}, source_prompt=PROMPT, target_prompt=PROMPT
    )
    results = backend.edit([ok, refined, unaligned, missing])
    assert isinstance(results[0], Generated) and results[0].image.size == (32, 64)
    assert results[0].info["inversion"]["inner_steps"] == 1 and results[0].info["cross_share"] == 0.8
    assert isinstance(results[1], Generated) and results[1].image.size == (32, 64)
    assert isinstance(results[2], Failed) and "equal token counts" in results[2].reason
    assert isinstance(results[3], Failed) and "gone.png" in results[3].reason


def test_an_edit_model_takes_the_instructed_edits_and_inversion_the_others(models, backend, tmp_path):
    with_model = make_backend("diffusers", str(models[0]), device="cpu", edit_model=str(models[1]))
    source = tmp_path / "src.png"
    backend.generate([request()])[0].image.save(source)
    common = dict(source=source, seed=3, steps=2)
    instructed = EditRequest(**common, edit={"kind": "weather", "value": "rainy"}, instruction="make it rain")
    swap = EditRequest(  # no instruction, as tbpr generate pairs asks: prompt-to-prompt's word swap
        **common,
        edit={"kind": "word_swap", "value": {"old": "red", "new": "blue"}},
        source_prompt=PROMPT,
        target_prompt=PROMPT.replace("red", "blue"),
        inversion={"inner_steps": 1},
    )
    results = with_model.edit([swap, instructed, swap])
    assert all(isinstance(r, Generated) and r.image.size == (32, 64) for r in results)
    assert [r.info["method"] for r in results] == [P2P, "instructpix2pix", P2P]
    (alone,) = backend.edit([swap])  # the same edit as a backend without an edit model makes
    diff = np.abs(np.asarray(alone.image, dtype=int) - np.asarray(results[0].image, dtype=int))
    assert diff.max() <= 1
    assert with_model.provenance()["settings"]["edit"] == f"instructpix2pix, {P2P} without an instruction"
    with_model.close()


def test_missing_model_is_one_error_before_any_work(tmp_path):
    from tbpr.generate.images.diffusion.loading import ModelNotFound

    with pytest.raises(ModelNotFound, match="model_index.json missing"):
        make_backend("diffusers", str(tmp_path / "nothing"))


def test_generate_persons_with_the_diffusers_backend(models, tmp_path, capsys):
    store = tmp_path / "persons.jsonl"
    args = ["generate", "persons", "--backend", "diffusers", "--model", str(models[0]), "--device", "cpu"]
    args += ["--out", str(store), "--count", "2", "--per-prompt", "1", "--width", "32", "--height", "64"]
    assert main([*args, "--steps", "2", "--filter", "none"]) == 0
    records = [json.loads(line) for line in store.read_text().splitlines()]
    images = [r for r in records if r.get("backend") == "diffusers"]
    assert len(images) == 2 and all(len(r["model_hash"]) == 16 for r in images)
    assert main([*args, "--steps", "2", "--filter", "none"]) == 0  # a rerun adds nothing
    assert len(store.read_text().splitlines()) == len(records)
    edits = tmp_path / "edits.jsonl"
    args = [
        "generate",
        "edit",
        "--from",
        str(store),
        "--out",
        str(edits),
        "--background",
        "park",
        "--steps",
        "2",
    ]
    args += ["--backend", "diffusers", "--model", str(models[0]), "--device", "cpu", "--filter", "none"]
    assert main(args) == 0  # null-text inversion + prompt-to-prompt refinement ("..., in a park")
    done = [json.loads(line) for line in edits.read_text().splitlines()]
    done = [r for r in done if r.get("backend") == "diffusers"]
    assert len(done) == 2 and all(
        r["result"]["method"] == "null-text inversion + prompt-to-prompt" for r in done
    )
