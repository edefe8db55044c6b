"""NAM and EM in the training engine: recipes, the per-epoch table and its dump, exact resume, analysis."""

import json

import pytest
import torch

from micro import MICRO_LOGGED as MICRO
from tbpr.analysis.nam import markdown_table, nam_noise_table, token_kinds
from tbpr.data import read_dataset
from tbpr.data.synthpedes import generate
from tbpr.data.tokenizer import Tokenizer
from tbpr.train import load_config, train
from tbpr.train.masking import real_tokens


def run_nam(data, out, *extra):
    cfg = load_config(
        "mllm4text-small", [*MICRO, f"data.path={data}", f"output_dir={out}", "optim.epochs=2", *extra]
    )
    return train(cfg)


def test_mllm4text_recipes_load():
    big, small = load_config("mllm4text"), load_config("mllm4text-small")
    assert big.model.arch == "ViT-B-16" and big.model.temperature == 0.02
    assert big.data.batch_size == 512 and big.optim.epochs == 30
    # the public code trains on every caption every epoch, one NAM row per caption (not one per image)
    assert big.data.sampler == "random"
    assert (big.optim.name, big.optim.eps, big.optim.bias_lr_factor) == ("adam", 1e-3, 2.0)  # IRRA's solver
    for cfg in (big, small):
        assert cfg.losses == {"sdm": 1.0}
        assert cfg.data.hflip and cfg.data.augment.ops == ["pad_crop", "irra_erasing"]  # the paper's Sec. 4.2
        assert cfg.masking.mode == "nam" and cfg.masking.p == 0.15 and cfg.masking.layer is None


@pytest.mark.slow
def test_mllm4text_gives_every_caption_a_noise_level_from_the_previous_epoch(tmp_path, synth_tiny):
    """The recipe's sampler visits every caption in epoch 1, so in epoch 2 every caption masks with the
    probabilities its own tokens got in epoch 1 (with the per-image sampler only the captions drawn in
    epoch 1 would, the rest staying at the constant p)."""
    captions = read_dataset(synth_tiny).split("train").captions
    assert len(captions) == 196  # 7 batches of 28: no caption left in a dropped last batch
    overrides = [
        *MICRO,
        "model.pretrained=null",
        "data.batch_size=28",
        "optim.epochs=1",
        f"data.path={synth_tiny}",
        f"output_dir={tmp_path / 'run'}",
    ]
    run = train(load_config("mllm4text", overrides))
    table = torch.load(run / "checkpoints/last.pt", weights_only=False)["masking"]["current"]
    assert table.shape[0] == len(captions)  # one row per caption
    tokens = Tokenizer(77)([c.text for c in captions])
    real = real_tokens(tokens, Tokenizer(77).sot_id, Tokenizer(77).eot_id)
    start = torch.tensor(0.15, dtype=torch.float16)
    assert ((table != start) & real).any(1).all()  # every caption's row was computed in epoch 1


def test_nam_training_dumps_each_epochs_probabilities(tmp_path, synth_tiny):
    run = run_nam(synth_tiny, tmp_path / "nam")
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records if r["kind"] == "train")
    captions = read_dataset(synth_tiny).split("train").captions
    tokens = Tokenizer(77)([c.text for c in captions])
    real = real_tokens(tokens, Tokenizer(77).sot_id, Tokenizer(77).eot_id)
    start = torch.tensor(0.15, dtype=torch.float16)
    dumps = [torch.load(run / f"nam/epoch_{e:03d}.pt") for e in (1, 2)]
    for epoch, dump in enumerate(dumps, start=1):
        assert dump["epoch"] == epoch and dump["caption_ids"].tolist() == [c.id for c in captions]
        probs = dump["probs"].float()
        seen = (dump["probs"] != start).any(1)
        assert seen.float().mean() > 0.9  # the identity sampler visits almost every caption
        assert (probs[seen][~real[seen]] == 0).all()  # start, end and padding get 0
        # r' averages to p over a caption's tokens (more where r' was clipped at 0)
        means = (probs * real).sum(1) / real.sum(1)
        assert means.median().item() == pytest.approx(0.15, abs=0.02)
    assert not torch.equal(dumps[0]["probs"], dumps[1]["probs"])
    # the next run would start from the last epoch's probabilities
    state = torch.load(run / "checkpoints/last.pt", weights_only=False)["masking"]
    assert torch.equal(state["current"], dumps[1]["probs"])


@pytest.mark.slow
def test_resume_restores_the_nam_table_exactly(tmp_path, synth_tiny):
    whole = run_nam(synth_tiny, tmp_path / "whole")
    cut = tmp_path / "cut"
    run_nam(synth_tiny, cut, "max_steps=17")  # 12 steps per epoch: stops inside epoch 2
    mid = torch.load(cut / "checkpoints/last.pt", weights_only=False)
    assert mid["epoch"] == 1 and not torch.equal(mid["masking"]["next"], mid["masking"]["current"])
    run_nam(synth_tiny, cut)
    a = torch.load(whole / "checkpoints/last.pt", weights_only=False)
    b = torch.load(cut / "checkpoints/last.pt", weights_only=False)
    for key in ("current", "next"):
        assert torch.equal(a["masking"][key], b["masking"][key]), key
    for name, value in a["model"].items():
        assert torch.allclose(value, b["model"][name], atol=1e-6), name


@pytest.mark.parametrize("replace", ["mask", "bert"])
def test_equal_masking_trains(tmp_path, synth_tiny, replace):
    overrides = ["masking.mode=em", f"masking.replace={replace}", "max_steps=2"]
    run = run_nam(synth_tiny, tmp_path / replace, *overrides)
    assert not (run / "nam").exists()
    assert torch.load(run / "checkpoints/last.pt", weights_only=False)["masking"] == {}


def test_token_kinds_follow_the_mention_spans():
    text = "A girl in a grey t-shirt."
    mentions = [
        {"span": [2, 6], "noise": {"original": "man", "new": "woman"}},
        {"span": [12, 16], "noise": None},
        {"span": [17, 24], "noise": None},
    ]
    kinds = token_kinds(Tokenizer(77), text, mentions)
    # a | girl | in | a | grey | t | - | shirt | .
    assert kinds == ["other", "corrupted", "other", "other", *["clean_mention"] * 4, "other"]
    assert len(kinds) == int((Tokenizer(77)(text)[0] != 0).sum()) - 2


def test_nam_noise_table_on_noisy_synthpedes(tmp_path):
    data = tmp_path / "noisy"
    generate(data, size="tiny", seed=0, caption_noise=0.3)
    run = run_nam(data, tmp_path / "run", "optim.epochs=1")
    rows = nam_noise_table(run, data)
    assert [r["epoch"] for r in rows] == [1]
    row = rows[0]
    assert row["corrupted_tokens"] > 0 and row["clean_mention_tokens"] > row["corrupted_tokens"]
    assert all(0 <= row[k] <= 1 for k in ("corrupted", "clean_mention", "other"))
    assert "| 1 |" in markdown_table(rows)

    # positive control: plant 0.9 on the tokens of every corrupted word (found by tokenizing the word
    # itself, independently of the analysis's span mapping) and 0.1 elsewhere; the table must show it
    dump_path = run / "nam" / "epoch_001.pt"
    dump = torch.load(dump_path)
    tokenizer = Tokenizer(77)
    manifest = read_dataset(data)
    captions = {c.id: c for c in manifest.captions}
    corrupted_words = {
        cap["text"]: [cap["text"][slice(*m["span"])] for m in cap["mentions"] if m["noise"]]
        for rec in json.loads((data / "attributes.json").read_text())["images"].values()
        for cap in rec["captions"]
    }
    planted = torch.full_like(dump["probs"], 0.1)
    for row, cid in enumerate(dump["caption_ids"].tolist()):
        ids = tokenizer(captions[cid].text)[0].tolist()
        for word in corrupted_words[captions[cid].text]:
            piece = tokenizer(word.lower())[0].tolist()
            piece = piece[1 : piece.index(tokenizer.eot_id)]
            for start in range(len(ids) - len(piece) + 1):
                if ids[start : start + len(piece)] == piece:
                    planted[row, start : start + len(piece)] = 0.9
    torch.save({**dump, "probs": planted}, dump_path)
    (row,) = nam_noise_table(run, data)
    assert row["corrupted"] > 0.85 and row["clean_mention"] < 0.2 and row["other"] < 0.2
