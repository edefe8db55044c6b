"""Module contribution scores C1/C2 (TBPS-CLIP appendix A.4) and the layer-picking helper."""

import copy
import json
import shutil

import pytest
import torch

from tbpr.analysis import (
    KINDS,
    ModuleRef,
    interpolated,
    list_modules,
    lowest_contribution_layers,
    module_contributions,
    removed,
    smallest_alpha,
)
from tbpr.analysis.modules import (
    alpha_grid,
    contribution_c1,
    initial_state,
    module_parameters,
    normalized_drops,
)
from tbpr.analysis.split_scorer import SplitScorer, limit_queries
from tbpr.errors import ConfigError
from tbpr.models import DualEncoder, ModelConfig, save_model


@pytest.fixture(scope="module")
def loaded(tiny_run):
    from tbpr.evaluation.run_eval import load_run

    return load_run(tiny_run)


@pytest.fixture()
def model(loaded):
    return copy.deepcopy(loaded.model)


def _inputs(model):
    torch.manual_seed(0)
    images = torch.randn(2, 3, *model.config.image_size)
    tokens = torch.tensor([[49406, 320, 1125, 49407] + [0] * 73, [49406, 518, 49407] + [0] * 74])
    return images, tokens


@torch.no_grad()
def _encode(model, images, tokens):
    return model.encode_image(images, normalize=False), model.encode_text(tokens, normalize=False)


@torch.no_grad()
def _zero_branches(model, ref):
    """The model with the module's residual branch outputs zeroed through its output projections."""
    model = copy.deepcopy(model)
    blocks = model.image_blocks if ref.tower == "image" else model.text_blocks
    block = blocks[ref.layer]
    projections = {"attn": [block.attn.out_proj], "mlp": [block.mlp.c_proj]}
    projections["whole"] = projections["attn"] + projections["mlp"]
    for proj in projections[ref.kind]:
        proj.weight.zero_()
        proj.bias.zero_()
    return model


@pytest.mark.parametrize("tower", ["image", "text"])
@pytest.mark.parametrize("kind", KINDS)
def test_removed_is_a_zero_branch_and_is_undone(model, tower, kind):
    ref = ModuleRef(tower, 1, kind)
    images, tokens = _inputs(model)
    before = _encode(model, images, tokens)
    with removed(model, ref):
        inside = _encode(model, images, tokens)
    after = _encode(model, images, tokens)
    expected = _encode(_zero_branches(model, ref), images, tokens)
    changed, kept = (0, 1) if tower == "image" else (1, 0)
    assert not torch.allclose(inside[changed], before[changed])
    torch.testing.assert_close(inside[changed], expected[changed])
    assert torch.equal(inside[kept], before[kept])  # the other tower is untouched
    for a, b in zip(after, before):
        assert torch.equal(a, b)


def test_module_parameters_split_each_block(model):
    for tower in ("image", "text"):
        attn = module_parameters(model, ModuleRef(tower, 0, "attn"))
        mlp = module_parameters(model, ModuleRef(tower, 0, "mlp"))
        whole = module_parameters(model, ModuleRef(tower, 0, "whole"))
        assert not set(attn) & set(mlp)
        assert set(attn) | set(mlp) == set(whole)
        assert any(".attn.in_proj_weight" in n for n in attn) and any(".ln_1." in n for n in attn)
        assert any(".mlp.c_fc.weight" in n for n in mlp) and any(".ln_2." in n for n in mlp)
    assert len(list_modules(model)) == 2 * 2 * 3  # tbpr-micro: 2 layers per tower


def test_interpolated_moves_only_the_module_and_restores(model):
    ref = ModuleRef("text", 0, "mlp")
    finetuned = {k: v.clone() for k, v in model.state_dict().items()}
    init = {k: v + 1.0 if v.is_floating_point() else v for k, v in finetuned.items()}
    names = set(module_parameters(model, ref))
    for alpha, offset in ((0.0, 1.0), (0.25, 0.75), (1.0, 0.0)):
        with interpolated(model, ref, init, alpha):
            state = model.state_dict()
            for name in names:  # (1 - alpha) * (ft + 1) + alpha * ft = ft + (1 - alpha)
                torch.testing.assert_close(state[name], finetuned[name] + offset)
            for name in set(state) - names:
                assert torch.equal(state[name], finetuned[name])
    for name, value in model.state_dict().items():
        assert torch.equal(value, finetuned[name])


def test_alpha_grid():
    assert alpha_grid(0.1) == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert alpha_grid(0.25) == [0.0, 0.25, 0.5, 0.75]
    assert alpha_grid(0.3) == [0.0, 0.3, 0.6, 0.9]
    assert alpha_grid(1.0) == [0.0]
    with pytest.raises(ConfigError):
        alpha_grid(0.0)


def test_smallest_alpha_is_the_first_alpha_within_epsilon():
    curve = {0.0: 40.0, 0.25: 56.0, 0.5: 58.0, 0.75: 59.0}
    # baseline 60, epsilon 3: drops 20, 4, 2 -> 0.5 is the first with a drop below 3; 0.75 is not tried
    assert smallest_alpha(curve.__getitem__, 60.0, 3.0, 0.25) == (0.5, {0.0: 40.0, 0.25: 56.0, 0.5: 58.0})
    # a drop of exactly epsilon does not qualify (strict inequality of eq. 11)
    assert smallest_alpha(curve.__getitem__, 60.0, 2.0, 0.25)[0] == 0.75
    # no alpha below 1 qualifies: the fine-tuned weights themselves (alpha = 1)
    assert smallest_alpha(curve.__getitem__, 60.0, 0.5, 0.25)[0] == 1.0
    with pytest.raises(ConfigError, match="epsilon"):
        smallest_alpha(curve.__getitem__, 60.0, 0.0, 0.25)


def test_normalized_drops():
    assert normalized_drops({"a": 2.0, "b": 4.0, "c": -1.0, "d": 0.0}) == {
        "a": 0.5,
        "b": 1.0,
        "c": 0.0,
        "d": 0.0,
    }
    assert normalized_drops({"a": -2.0, "b": 0.0}) == {"a": 0.0, "b": 0.0}


def test_c2_on_a_hand_made_metric(model):
    """A metric of 60 minus 10 x the largest parameter distance from the fine-tuned weights."""
    finetuned = {k: v.clone() for k, v in model.state_dict().items()}
    init = {k: v - 1.0 if v.is_floating_point() else v for k, v in finetuned.items()}
    block_params = [name for name in finetuned if ".resblocks." in name]  # all that C2 interpolates
    towers = []

    def scorer(tower):
        towers.append(tower)
        state = model.state_dict()
        return 60.0 - 10.0 * max(float((state[k] - finetuned[k]).abs().max()) for k in block_params)

    # interpolating any module to alpha gives a distance of 1 - alpha: 10 (1 - alpha) < 2.5 -> alpha > 0.75
    table = module_contributions(model, init, scorer, 60.0, epsilon=2.5, step=0.1, progress=False)
    entries = [table[t][layer][kind] for t in table for layer in table[t] for kind in table[t][layer]]
    assert len(entries) == 12
    assert all(entry["C2"] == 0.8 for entry in entries)
    assert list(entries[0]["alphas"]) == ["0.0", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8"]
    assert towers.count("image") == towers.count("text") == 6 * 10  # 1 removal + 9 alphas each
    wide = module_contributions(model, init, scorer, 60.0, epsilon=10.5, step=0.1, progress=False)
    assert all(wide[t][layer][kind]["C2"] == 0.0 for t in wide for layer in wide[t] for kind in KINDS)
    for name, value in model.state_dict().items():
        assert torch.equal(value, finetuned[name])


def test_limit_queries_spreads_captions_and_keeps_the_gallery(synth_tiny):
    from tbpr.data.readers import read_dataset

    manifest = read_dataset(synth_tiny).split("val")
    n = len(manifest.captions)
    limited = limit_queries(manifest, 4)
    assert limited.captions == [manifest.captions[i * n // 4] for i in range(4)]
    assert limited.images == manifest.images
    assert limit_queries(manifest, None) is manifest and limit_queries(manifest, n + 1) is manifest
    with pytest.raises(ConfigError):
        limit_queries(manifest, 0)


def test_split_scorer_matches_the_evaluator(model, loaded, synth_tiny):
    from tbpr.data.readers import read_dataset
    from tbpr.evaluation.evaluator import encode_split, score

    manifest = read_dataset(synth_tiny).split("val")
    transform, tokenizer = loaded.image_transform(), loaded.tokenizer()
    scorer = SplitScorer(model, manifest, transform, tokenizer, metric="mAP", num_workers=0)

    def evaluated():
        encoded = encode_split(model, manifest, transform, tokenizer, num_workers=0, progress=False)
        return score(encoded)["t2i"]["mAP"]

    assert scorer.baseline == pytest.approx(evaluated())
    for tower in ("image", "text"):
        with removed(model, ModuleRef(tower, 0, "attn")):
            value = scorer(tower)  # only this tower is re-encoded, the other one comes from the cache
            assert value == pytest.approx(evaluated())
        assert value != pytest.approx(scorer.baseline)
    assert scorer("image") == scorer.baseline


def _agreement(model, reference, tower):
    """100 x the mean cosine similarity of ``tower``'s features to ``reference`` (a metric any change lowers)."""
    feats = dict(zip(("image", "text"), _encode(model, *_inputs(model))))[tower]
    return 100.0 * float(torch.cosine_similarity(feats, reference[tower]).mean())


def test_scores_on_the_tiny_model(model, loaded):
    """C1/C2 through the real hooks and interpolation, with feature agreement as the metric.

    (The briefly trained tiny model retrieves at chance level: removing modules does not lower its
    Rank-1, so a metric that any change lowers is used instead.) The initial weights are a fresh random
    model, so C2's interpolation really moves the module; the expected C2 is computed here by loading
    the interpolated weights into a copy of the model, apart from ``interpolated``.
    """
    reference = dict(zip(("image", "text"), _encode(model, *_inputs(model))))
    finetuned = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    init = DualEncoder(loaded.config.model).state_dict()

    def scorer(tower):
        return _agreement(model, reference, tower)

    def expected_c2(ref):
        for alpha in (0.0, 0.5):
            moved = copy.deepcopy(model)
            state = dict(finetuned)
            for name in module_parameters(model, ref):
                state[name] = (1 - alpha) * init[name] + alpha * finetuned[name]
            moved.load_state_dict(state)
            if 100.0 - _agreement(moved, reference, ref.tower) < 3.0:
                return alpha
        return 1.0

    table = module_contributions(model, init, scorer, 100.0, step=0.5, progress=False)
    refs = [ModuleRef(t, layer, kind) for t in ("image", "text") for layer in (0, 1) for kind in KINDS]
    entries = {ref: table[ref.tower][str(ref.layer)][ref.kind] for ref in refs}
    for tower in ("image", "text"):  # C1 is normalized within each tower (the paper's Fig. 5)
        mine = [entry for ref, entry in entries.items() if ref.tower == tower]
        largest = max(entry["drop"] for entry in mine)
        assert max(entry["C1"] for entry in mine) == 1.0 and min(entry["C1"] for entry in mine) > 0.0
        for entry in mine:
            assert entry["drop"] == pytest.approx(100.0 - entry["removed"])
            assert entry["C1"] == pytest.approx(entry["drop"] / largest)
    c2 = {ref: entry["C2"] for ref, entry in entries.items()}
    assert c2 == {ref: expected_c2(ref) for ref in refs}, c2
    assert set(c2.values()) - {0.0}  # some module cannot go back to its initial weights: C2 is not trivial
    assert all(entry["alphas"]["0.0"] < 100.0 for entry in entries.values())  # moved to init: features change
    assert scorer("text") == pytest.approx(100.0)  # every change was undone
    for name, value in model.state_dict().items():
        assert torch.equal(value, finetuned[name])

    overall = module_contributions(model, init, scorer, 100.0, step=0.5, progress=False, normalize="all")
    largest = max(entry["drop"] for entry in entries.values())
    for ref, entry in entries.items():
        assert overall[ref.tower][str(ref.layer)][ref.kind]["C1"] == pytest.approx(entry["drop"] / largest)


def test_c1_is_normalized_per_tower_or_over_all_modules():
    drops = {
        ModuleRef("image", 0, "attn"): 2.0,
        ModuleRef("image", 0, "whole"): 4.0,
        ModuleRef("text", 0, "attn"): 1.0,
        ModuleRef("text", 0, "mlp"): -0.5,
        ModuleRef("text", 0, "whole"): 0.5,
    }
    assert list(contribution_c1(drops).values()) == [0.5, 1.0, 1.0, 0.0, 0.5]
    assert list(contribution_c1(drops, "all").values()) == [0.5, 1.0, 0.25, 0.0, 0.125]
    flat = {ref: (drop if ref.tower == "image" else -1.0) for ref, drop in drops.items()}
    assert list(contribution_c1(flat).values()) == [0.5, 1.0, 0.0, 0.0, 0.0]  # no text drop: text C1 is 0
    with pytest.raises(ConfigError, match="C1 normalization must be one of tower, all"):
        contribution_c1(drops, "kind")


def test_lowest_contribution_layers():
    def entry(c1, c2):
        return {"C1": c1, "C2": c2}

    whole = [entry(1.0, 1.0), entry(0.1, 0.2), entry(0.5, 0.0), entry(0.05, 0.6), entry(0.3, 0.2)]
    table = {"scores": {"text": {str(i): {"whole": e, "attn": entry(0, 0)} for i, e in enumerate(whole)}}}
    # sums 2.0, 0.3, 0.5, 0.65, 0.5: layers 2 and 4 tie at 0.5, the lower layer goes first
    assert lowest_contribution_layers(table, 1) == [1]
    assert lowest_contribution_layers(table, 2) == [1, 2]
    assert lowest_contribution_layers(table, 3) == [1, 2, 4]
    assert lowest_contribution_layers(table, 2, score="C1") == [1, 3]
    assert lowest_contribution_layers(table["scores"], 1, score="C2") == [2]
    assert lowest_contribution_layers(table, 1, kind="attn") == [0]
    with pytest.raises(ConfigError, match="image"):
        lowest_contribution_layers(table, 1, tower="image")
    with pytest.raises(ConfigError):
        lowest_contribution_layers(table, 6)


def test_initial_state_sources(tmp_path, loaded):
    checkpoint = tmp_path / "checkpoints" / "best.pt"
    with pytest.raises(ConfigError, match="cannot be recovered"):
        initial_state(checkpoint, loaded.config.model)
    # a run that started from pretrained weights: the initial model is rebuilt from them
    weights = tmp_path / "clip.pt"
    torch.save(loaded.model.clip.state_dict(), weights)
    config = ModelConfig(**{**vars(loaded.config.model), "pretrained": str(weights)})
    state, source = initial_state(checkpoint, config)
    assert source == f"model.pretrained={weights}"
    torch.testing.assert_close(
        state["clip.transformer.resblocks.0.attn.in_proj_weight"],
        loaded.model.clip.transformer.resblocks[0].attn.in_proj_weight,
    )
    # checkpoints/init.pt wins
    fresh = DualEncoder(loaded.config.model)
    save_model(fresh, checkpoint.parent / "init.pt")
    state, source = initial_state(checkpoint, config)
    assert source == str(checkpoint.parent / "init.pt")
    for name, value in fresh.state_dict().items():
        assert torch.equal(state[name], value)


@pytest.mark.slow
def test_cli_writes_json_and_heatmap(tmp_path, tiny_run, loaded, capsys):
    from tbpr.cli import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    save_model(DualEncoder(loaded.config.model), run / "checkpoints" / "init.pt")
    out = tmp_path / "analysis"
    argv = ["analyze", "modules", str(run), "--limit-queries", "16", "--step", "0.25", "--metric", "mAP"]
    assert main([*argv, "--out", str(out), "--num-workers", "0", "--device", "cpu"]) == 0
    table = json.loads((out / "modules.json").read_text())
    assert table["initial_weights"] == str(run / "checkpoints" / "init.pt")
    assert (table["split"], table["metric"], table["epsilon"], table["num_queries"], table["normalize"]) == (
        "val",
        "mAP",
        3.0,
        16,
        "tower",
    )
    assert set(table["scores"]) == {"image", "text"}
    assert {k: set(v) for k, v in table["scores"]["text"].items()} == {"0": set(KINDS), "1": set(KINDS)}
    entries = [e for tower in table["scores"].values() for layer in tower.values() for e in layer.values()]
    assert all(0.0 <= e["C1"] <= 1.0 and e["C2"] in (0.0, 0.25, 0.5, 0.75, 1.0) for e in entries)
    assert (out / "modules.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "text layers to drop/freeze (n=1)" in capsys.readouterr().out
