"""PDG's approximate text (eqs. 9-11, 16-17): SDEL / CDEL / REPL, the per-sample draw, L_c, its wiring."""

import json
import math
import random
from collections import Counter

import pytest
import torch

from micro import MICRO_LOGGED as MICRO
from tbpr.data import read_dataset
from tbpr.data.datasets import CaptionPairDataset
from tbpr.data.tokenizer import Tokenizer
from tbpr.data.transforms import build_image_transform
from tbpr.errors import ConfigError
from tbpr.losses import LossParams, Views, approximate_constraint_loss, compute_losses
from tbpr.text import operations as ops
from tbpr.text import wordnet
from tbpr.text.augment import ApproximateText, ApproximateTextConfig
from tbpr.train import load_config, train
from tbpr.train.engine import Trainer
from tbpr.train.reproducible import SeededDataset, sample_seed
from test_text_operations import CAPTION, FAKE, fake, needs_wordnet

# CAPTION has L = 10 words: N_w = floor(0.2 * 10) = 2


@pytest.fixture(scope="module")
def wn():
    needs_wordnet()
    return wordnet.reader()


@pytest.mark.parametrize(
    ("sigma", "length", "n"), [(0.2, 10, 2), (0.2, 14, 2), (0.2, 15, 3), (0.2, 4, 0), (0.5, 1, 0)]
)
def test_n_altered_is_floored_sigma_times_length(sigma, length, n):
    assert ops.n_altered(sigma, length) == n


def test_sdel_deletes_n_w_words_at_random_positions():
    # Random(0).sample of the 10 word positions draws words 6 and 9: "black" and "boots"
    assert random.Random(0).sample(range(10), 2) == [6, 9]
    assert (
        ops.single_deletion(CAPTION, 0.2, random.Random(0)) == "The woman wears a red jacket, trousers and."
    )
    assert (
        ops.single_deletion(CAPTION, 0.2, random.Random(3))
        == "The woman wears red jacket, black trousers boots."
    )
    for seed in range(50):
        out = ops.words(ops.single_deletion(CAPTION, 0.2, random.Random(seed)))
        assert len(out) == 8 and _is_subsequence(out, ops.words(CAPTION))


def test_cdel_deletes_n_w_consecutive_words_with_a_uniform_start():
    # Random(0).randrange(9) = 6: the span "black trousers"
    assert random.Random(0).randrange(9) == 6
    assert (
        ops.continuous_deletion(CAPTION, 0.2, random.Random(0)) == "The woman wears a red jacket, and boots."
    )
    original = ops.words(CAPTION)
    starts = Counter()
    for seed in range(900):
        out = ops.words(ops.continuous_deletion(CAPTION, 0.2, random.Random(seed)))
        matches = [k for k in range(9) if out == original[:k] + original[k + 2 :]]
        assert matches, out  # the deleted words are contiguous
        starts[matches[0]] += 1
    assert set(starts) == set(range(9)) and all(
        abs(c / 900 - 1 / 9) < 4 * math.sqrt(8 / 81 / 900) for c in starts.values()
    )


class FixedStart(random.Random):
    def randrange(self, *args):
        return 2


def test_cdel_removes_punctuation_inside_the_span():
    # 5 words, sigma 0.4: N_w = 2, the span starting at word 2 is "jacket, black"
    assert ops.continuous_deletion("a red jacket, black trousers.", 0.4, FixedStart()) == "a red trousers."


def test_repl_replaces_n_w_positions_by_synonyms():
    assert ops.synonym_substitution(CAPTION, 0.2, random.Random(0), fake) == (
        "The woman wears a red coat, black trousers and shoes."
    )
    for seed in range(50):
        out = ops.synonym_substitution(CAPTION, 0.2, random.Random(seed), fake)
        changed = [(a, b) for a, b in zip(ops.words(CAPTION), ops.words(out)) if a != b]
        assert len(changed) == 2 and all(b in FAKE[a.lower()] for a, b in changed)
        assert ops.tokenize(out)[0].text == "The"  # a stop word is never replaced


def test_repl_draws_positions_not_words_and_keeps_capitals():
    # 6 words, sigma 0.5: N_w = 3, but only the two occurrences of "red" have synonyms: both, independently
    assert ops.synonym_substitution("Red shoes and a red bag", 0.5, random.Random(0), fake) == (
        "Scarlet shoes and a crimson bag"
    )


def test_repl_uses_wordnet_synonyms(wn):
    def joined(word):  # multi-word synonyms ("put on") as one token, so positions line up
        return tuple(s.replace(" ", "_") for s in ops.wordnet_synonyms(word))

    for seed in range(20):
        out = ops.synonym_substitution(CAPTION, 0.2, random.Random(seed), joined)
        changed = [(a, b) for a, b in zip(ops.tokenize(CAPTION), ops.tokenize(out)) if a.text != b.text]
        assert len(changed) == 2
        assert all(b.text.replace("_", " ") in ops.wordnet_synonyms(a.text.lower()) for a, b in changed)
    assert ops.synonym_substitution(CAPTION, 0.2, random.Random(0)) != CAPTION  # the default is WordNet


@pytest.mark.parametrize("name", sorted(ops.APPROXIMATE_OPERATIONS))
def test_short_captions_are_left_alone(name):
    op = ops.APPROXIMATE_OPERATIONS[name]
    kwargs = {"synonyms": fake} if name == "repl" else {}
    assert (
        op("A red jacket, boots.", 0.2, random.Random(0), **kwargs) == "A red jacket, boots."
    )  # 4 < 1 / 0.2


def _is_subsequence(short, long):
    it = iter(long)
    return all(w in it for w in short)


# --- the per-sample draw ---------------------------------------------------------------------------------


def test_applied_with_probability_p_and_one_op_drawn_uniformly(monkeypatch, wn):
    calls = Counter()
    for name in ops.APPROXIMATE_OPERATIONS:
        monkeypatch.setitem(
            ops.APPROXIMATE_OPERATIONS, name, lambda t, s, rng, name=name: calls.update([name]) or name
        )
    approximate = ApproximateText(ApproximateTextConfig(ops=["sdel", "cdel", "repl"], sigma=0.2, p=0.5))
    rng, draws = random.Random(0), 6000
    outputs = Counter(approximate(CAPTION, rng) for _ in range(draws))
    fired = draws - outputs[CAPTION]
    assert abs(fired / draws - 0.5) < 4 * math.sqrt(0.25 / draws)
    assert set(calls) == {"sdel", "cdel", "repl"}
    assert all(abs(c / fired - 1 / 3) < 4 * math.sqrt(2 / 9 / fired) for c in calls.values())
    never = ApproximateText(ApproximateTextConfig(ops=["sdel"], p=0.0))
    assert all(never(CAPTION, rng) == CAPTION for _ in range(100))


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"ops": ["sdel", "swap"]}, "unknown operation 'swap'"),
        ({"ops": ["sdel", "sdel"]}, "once"),
        ({"ops": ["sdel"], "sigma": 1.0}, "sigma=1.0"),
        ({"ops": ["sdel"], "sigma": 0.0}, "sigma=0.0"),
        ({"ops": ["sdel"], "p": 1.5}, "p=1.5"),
    ],
)
def test_bad_approximate_config_is_a_config_error(cfg, match):
    with pytest.raises(ConfigError, match=f"data.text_augment.approximate.*{match}"):
        ApproximateTextConfig(**cfg)


def test_the_constraint_loss_needs_approximate_text_and_nam_refuses_it():
    with pytest.raises(ConfigError, match="approximate.ops"):
        load_config("cpu-small", ["losses.approx_constraint=0.1"])
    with pytest.raises(ConfigError, match="masking.mode=nam"):
        load_config("cpu-small", ["masking.mode=nam", "data.text_augment.approximate.ops=[cdel]"])
    with pytest.raises(ConfigError, match="constraint_min_sim"):
        load_config("cpu-small", ["loss_params.constraint_min_sim=0"])


def _dataset(synth_tiny, p=0.5):
    split = read_dataset(synth_tiny).split("train")
    approximate = ApproximateText(ApproximateTextConfig(ops=["sdel", "cdel"], p=p))
    return SeededDataset(
        CaptionPairDataset(
            split, build_image_transform((64, 32), train=True), Tokenizer(77), approximate=approximate
        )
    )


def test_each_sample_is_seeded_by_its_own_index_not_its_batch(synth_tiny):
    data = _dataset(synth_tiny)

    def batch(indices, epoch=0, number=3):  # what SeededBatches hands the dataset for one batch
        return {i: data[(i, sample_seed(7, epoch, number, i))] for i in indices}

    alone, mixed = batch([5]), batch([40, 5, 12, 0])
    assert (
        torch.equal(alone[5]["tokens"], mixed[5]["tokens"]) and alone[5]["replaced"] == mixed[5]["replaced"]
    )
    assert torch.equal(
        alone[5]["tokens_orig"], data.dataset.tokenizer(data.dataset.manifest.captions[5].text)[0]
    )
    epochs = [batch([5], epoch=e)[5] for e in range(40)]
    assert 5 < sum(s["replaced"] for s in epochs) < 35  # a new draw every epoch
    for s in epochs:
        assert s["replaced"] == (not torch.equal(s["tokens"], s["tokens_orig"]))


def test_a_caption_left_as_it_is_is_tokenized_once(synth_tiny):
    data = _dataset(synth_tiny, p=0.0)
    calls = []
    tokenizer = data.dataset.tokenizer
    data.dataset.tokenizer = lambda text: calls.append(text) or tokenizer(text)
    sample = data[(5, sample_seed(0, 0, 0, 5))]
    assert len(calls) == 1 and not sample["replaced"]
    assert torch.equal(sample["tokens"], sample["tokens_orig"])


def test_about_half_the_samples_are_replaced(synth_tiny):
    data = _dataset(synth_tiny)
    captions = data.dataset.manifest.captions
    eligible = [i for i, c in enumerate(captions) if ops.n_altered(0.2, len(ops.words(c.text)))]
    draws = [data[(i, sample_seed(0, e, 0, i))]["replaced"] for e in range(4) for i in eligible]
    assert abs(sum(draws) / len(draws) - 0.5) < 4 * math.sqrt(0.25 / len(draws))


# --- L_c ------------------------------------------------------------------------------------------------


def test_constraint_loss_by_hand():
    image = torch.tensor([[1.0, 0], [2.0, 0], [1.0, 0], [1.0, 0], [1.0, 0], [1.0, 0]])
    approx = torch.tensor([[0.6, 0.8], [0.8, 0.6], [0.6, 0.8], [0.6, 0.8], [3.0, 4.0], [0.6, 0.8]])
    orig = torch.tensor([[0.8, 0.6], [0.6, 0.8], [-0.6, 0.8], [0.02, 1.0], [0.0, 5.0], [-1.0, 0.0]])
    replaced = torch.tensor([True, True, True, True, True, False])
    s_orig = torch.nn.functional.normalize(orig, dim=-1)[:, 0].tolist()
    # row 0: cos 0.6 < 0.8 holds the constraint: 0. Row 1: eq. 16, 0.8 / 0.6 - 1 = 1/3 (scale-free).
    # row 2: original cos -0.6 <= 0: (0.6 - (-0.6)) / 0.05 = 24 (the ratio would give -2 -> 0).
    # row 3: original cos ~0.02 < 0.05: (0.6 - s) / 0.05, not the ratio's (0.6 / s - 1) ~ 29.
    # row 4: original cos 0: 0.6 / 0.05 = 12. Row 5 violates the constraint but was not replaced: 0.
    expected = [0.0, 1 / 3, 24.0, (0.6 - s_orig[3]) / 0.05, 12.0, 0.0]
    loss = approximate_constraint_loss(image, approx, orig, replaced)
    assert loss.item() == pytest.approx(sum(expected), rel=1e-5)
    assert approximate_constraint_loss(image, approx, orig, replaced, min_sim=0.5).item() == pytest.approx(
        0 + 1 / 3 + 2.4 + (0.6 - s_orig[3]) / 0.5 + 1.2, rel=1e-5
    )
    with pytest.raises(ValueError, match="min_sim"):
        approximate_constraint_loss(image, approx, orig, replaced, min_sim=0)


def test_constraint_loss_has_finite_gradients_on_zero_rows_and_is_registered():
    image = torch.randn(4, 8, requires_grad=True)
    text = torch.randn(4, 8, requires_grad=True)
    orig = torch.zeros(4, 8)  # rows never encoded (not replaced) are zeros
    orig[1] = torch.randn(8)
    orig.requires_grad_(True)
    replaced = torch.tensor([False, True, False, False])
    views = Views(
        image=image, text=text, pids=torch.arange(4), logit_scale=1.0, text_orig=orig, replaced=replaced
    )
    total, record = compute_losses({"approx_constraint": 0.1}, views, LossParams())
    assert total.item() == pytest.approx(
        0.1 * approximate_constraint_loss(image, text, orig, replaced).item()
    )
    total.backward()
    assert all(torch.isfinite(t.grad).all() for t in (image, text, orig))
    assert not image.grad[[0, 2, 3]].any() and not orig.grad[[0, 2, 3]].any()  # masked rows get nothing


# --- the engine -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("constraint", [False, True])
def test_originals_are_encoded_only_for_the_constraint_and_only_where_replaced(
    tmp_path, synth_tiny, constraint
):
    overrides = [
        *MICRO,
        f"data.path={synth_tiny}",
        f"output_dir={tmp_path}",
        "data.text_augment.approximate.ops=[sdel, cdel]",
    ]
    trainer = Trainer(
        load_config("cpu-small", overrides + constraint * ["losses={sdm: 1, approx_constraint: 0.1}"])
    )
    batch = next(iter(trainer.loader))
    assert batch["replaced"].any() and not batch["replaced"].all()
    rows = []
    encode = trainer.model.global_text  # the text tower's training forward

    def spy(tokens):
        rows.append(len(tokens))
        return encode(tokens)

    trainer.model.global_text = spy
    trainer.model.eval()  # no dropout: a second forward of the same tokens gives the same features
    _, terms = trainer._forward_loss(dict(batch))
    n = len(batch["tokens"])
    assert rows == [n + int(batch["replaced"].sum())] if constraint else rows == [n]
    assert ("approx_constraint" in terms) == constraint
    if constraint:
        out = trainer.forward({k: batch[k] for k in ("image", "tokens", "tokens_orig", "replaced")})
        replaced = batch["replaced"]
        assert not out["text_orig"][~replaced].any()
        expected = encode(batch["tokens_orig"][replaced])
        torch.testing.assert_close(out["text_orig"][replaced], expected, rtol=1e-4, atol=1e-5)


def test_a_tiny_training_with_approximate_text_and_the_constraint(tmp_path, synth_tiny, wn):
    cfg = load_config(
        "cpu-small",
        [
            *MICRO,
            "optim.epochs=1",
            f"data.path={synth_tiny}",
            f"output_dir={tmp_path}",
            "data.text_augment.approximate.ops=[sdel, cdel, repl]",
            "losses={sdm: 1, approx_constraint: 0.1}",
        ],
    )
    run = train(cfg)
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "train"]
    assert steps and all(math.isfinite(r["approx_constraint"]) and r["approx_constraint"] >= 0 for r in steps)
    assert (run / "checkpoints" / "best.pt").is_file()
