"""Caption token masking: NAM's r' arithmetic, masking statistics, the epoch hand-over, NAM similarities."""

import pytest
import torch

from tbpr.data.tokenizer import Tokenizer
from tbpr.errors import ConfigError
from tbpr.models import DualEncoder, ModelConfig
from tbpr.train import load_config
from tbpr.train.masking import (
    IRRA_MASK_ID,
    MaskingConfig,
    MaskTable,
    TokenMasker,
    apply_masking,
    nam_layer,
    nam_probabilities,
    real_tokens,
    sample_generators,
)
from tbpr.train.nam import max_patch_similarity, nam_layers

TOK = Tokenizer(16)
SOT, EOT = TOK.sot_id, TOK.eot_id


def masking_args(replace="mask"):
    return {"sot_id": SOT, "eot_id": EOT, "mask_id": IRRA_MASK_ID, "replace": replace}


def test_r_prime_on_a_hand_computed_similarity_matrix():
    # 5 positions: start token, three words, end token; 3 patches
    sim = torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.2, 0.1], [0.1, 0.5, 0.3], [0.7, 0.6, -0.2], [1.0, 1.0, 1.0]])
    real = torch.tensor([False, True, True, True, False])
    # r = 1 - max = [.1, .5, .3], mean .3; r' = r - .3 + p
    assert torch.allclose(nam_probabilities(sim, real, 0.25), torch.tensor([0, 0.05, 0.45, 0.25, 0]))
    # p = .15: the first word's r' = -.05 is clipped to 0
    assert torch.allclose(nam_probabilities(sim, real, 0.15), torch.tensor([0, 0.0, 0.35, 0.15, 0]))


def test_mean_of_r_prime_is_p_before_clipping_batched():
    gen = torch.Generator().manual_seed(0)
    sim = torch.rand(6, 10, 7, generator=gen) * 0.2 + 0.4  # r in [.4, .6]: no clipping at p = .5
    real = torch.zeros(6, 10, dtype=torch.bool)
    for row, n in enumerate([1, 2, 3, 5, 8, 10]):
        real[row, 1 : 1 + n] = True
    probs = nam_probabilities(sim, real, 0.5)
    means = (probs * real).sum(1) / real.sum(1)
    assert torch.allclose(means, torch.full((6,), 0.5), atol=1e-6)
    assert (probs[~real] == 0).all()
    # each row matches the unbatched computation
    for row in range(6):
        assert torch.allclose(probs[row], nam_probabilities(sim[row], real[row], 0.5))


def test_nam_layer_defaults_scale_the_tenth_of_twelve_blocks():
    assert [nam_layer(None, d, "text") for d in (12, 6, 4, 2, 1)] == [9, 4, 2, 1, 0]
    assert nam_layer(-1, 4, "text") == 3 and nam_layer(2, 4, "image") == 2
    with pytest.raises(ConfigError, match="masking.layer=4: the image tower has 4 blocks"):
        nam_layer(4, 4, "image")


@pytest.mark.parametrize(("field", "value"), [("mode", "bert"), ("replace", "random"), ("p", 1.5)], ids=str)
def test_bad_masking_config_names_the_field(field, value):
    with pytest.raises(ConfigError, match=f"masking.{field}"):
        MaskingConfig(**{field: value})


def test_nam_with_text_augmentation_is_rejected():
    with pytest.raises(ConfigError, match="masking.mode=nam"):
        load_config("cpu-small", ["masking.mode=nam", "data.text_augment.ops={random_deletion: 0.1}"])
    assert load_config("cpu-small", ["masking.mode=em", "data.text_augment.ops={random_deletion: 0.1}"])


@pytest.mark.parametrize("replace", ["mask", "bert"])
def test_start_end_and_padding_are_never_masked(replace):
    tokens = TOK(["a man in a red coat", "a woman", ""])
    masked, chosen = apply_masking(
        tokens, torch.ones(tokens.shape), sample_generators(0, 0, [0, 1, 2]), **masking_args(replace)
    )
    real = real_tokens(tokens, SOT, EOT)
    assert torch.equal(chosen, real)
    assert torch.equal(masked[~real], tokens[~real])
    if replace == "mask":
        assert (masked[real] == IRRA_MASK_ID).all()


def draws(probs_row, rows, replace="mask", text="a b c d e f g h i j"):
    tokens = TOK([text] * rows)
    probs = torch.as_tensor(probs_row).expand(rows, -1)
    masked, chosen = apply_masking(
        tokens, probs, sample_generators(1, 0, list(range(rows))), **masking_args(replace)
    )
    return tokens, masked, chosen


def test_em_masking_frequency_matches_p():
    tokens, _, chosen = draws(torch.full((16,), 0.15), 4000)
    real = real_tokens(tokens, SOT, EOT)
    assert chosen[real].float().mean().item() == pytest.approx(0.15, abs=0.01)


def test_nam_masking_frequency_matches_each_token_probability():
    probs = torch.tensor([0.0, 0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0, 0.4, 0.0, 0, 0, 0, 0])
    _, _, chosen = draws(probs, 4000)
    assert torch.allclose(chosen.float().mean(0), probs, atol=0.03)


def test_bert_replacement_is_80_10_10():
    tokens, masked, chosen = draws(torch.full((16,), 0.5), 4000, replace="bert")
    picked, original = masked[chosen], tokens[chosen]
    n = len(picked)
    mask_frac = (picked == IRRA_MASK_ID).float().mean().item()
    kept_frac = (picked == original).float().sum().item() / n
    assert mask_frac == pytest.approx(0.8, abs=0.02)
    assert kept_frac == pytest.approx(0.1, abs=0.02)  # (a random token equal to the original is rare)
    random = picked[(picked != IRRA_MASK_ID) & (picked != original)]
    assert len(random) / n == pytest.approx(0.1, abs=0.02)
    assert ((random >= 1) & (random < SOT)).all()
    assert torch.equal(masked[~chosen], tokens[~chosen])


def test_masks_are_reproducible_per_sample_and_change_with_the_epoch():
    tokens = TOK(["a b c d e f g h i j"] * 3)
    probs = torch.full(tokens.shape, 0.5)
    a, _ = apply_masking(tokens, probs, sample_generators(0, 0, [5, 6, 7]), **masking_args())
    # caption 6 alone, in another batch position: the same mask
    b, _ = apply_masking(tokens[:1], probs[:1], sample_generators(0, 0, [6]), **masking_args())
    assert torch.equal(a[1], b[0])
    c, _ = apply_masking(tokens, probs, sample_generators(0, 1, [5, 6, 7]), **masking_args())
    assert not torch.equal(a, c)


def test_table_hand_over_epoch_one_constant_then_previous_epoch_r_prime():
    table = MaskTable(4, 6, 0.15)
    assert torch.allclose(table.rows(torch.tensor([0, 3])), torch.full((2, 6), 0.15), atol=1e-3)
    update = torch.rand(2, 6)
    table.update(torch.tensor([1, 2]), update)
    assert torch.allclose(table.rows(torch.tensor([1])), torch.full((1, 6), 0.15), atol=1e-3)  # not yet
    table.advance()
    assert torch.allclose(table.rows(torch.tensor([1, 2])), update, atol=1e-3)
    assert torch.allclose(table.rows(torch.tensor([0])), torch.full((1, 6), 0.15), atol=1e-3)  # unseen
    table.update(torch.tensor([1]), torch.zeros(1, 6))
    state = {k: v.clone() for k, v in table.state_dict().items()}
    restored = MaskTable(4, 6, 0.15)
    restored.load_state_dict(state)
    restored.advance()
    assert torch.equal(restored.rows(torch.tensor([1])), torch.zeros(1, 6))
    with pytest.raises(ConfigError, match="NAM table"):
        MaskTable(5, 6, 0.15).load_state_dict(state)


def test_token_masker_uses_the_previous_epochs_probabilities_and_dumps_them(tmp_path):
    masker = TokenMasker(MaskingConfig(mode="nam", p=0.15), 2, 16, TOK, seed=0)
    tokens = TOK(["a b c d e f g h", "a b c d e f g h"])
    ones = real_tokens(tokens, SOT, EOT).float()
    masker.table.update(torch.tensor([0, 1]), torch.stack([ones[0], torch.zeros(16)]))
    masker.end_epoch(1, tmp_path, caption_ids=[10, 11], main=True)
    masked, chosen = masker.mask(tokens, torch.tensor([0, 1]), epoch=1)
    assert torch.equal(chosen, torch.stack([ones[0].bool(), torch.zeros(16, dtype=torch.bool)]))
    assert (masked[0][ones[0].bool()] == IRRA_MASK_ID).all()
    assert torch.equal(masked[1], tokens[1])
    dump = torch.load(tmp_path / "nam/epoch_001.pt")
    assert dump["epoch"] == 1 and dump["caption_ids"].tolist() == [10, 11]
    assert torch.equal(dump["probs"][1], torch.zeros(16, dtype=torch.float16))


def test_max_patch_similarity_matches_token_features():
    model = DualEncoder(ModelConfig(arch="tbpr-micro", image_size=(64, 32))).eval()
    image_layer, text_layer = nam_layers(model, None)
    assert (image_layer, text_layer) == (1, 1)
    images = torch.randn(3, 3, 64, 32)
    tokens = Tokenizer(77)(["a man in a red coat", "a woman with a bag", "blue"])
    feats = model.token_features(images, tokens, image_layer=0, text_layer=0)
    with model.capture_tokens([0]) as store:
        model.encode_image(images)
    got = max_patch_similarity(model, store["image"][0], tokens, text_layer=0)
    expected = torch.einsum("bld,bpd->blp", feats["text"], feats["image"][:, 1:]).amax(-1)
    assert got.shape == tokens.shape
    assert torch.allclose(got[:, : expected.shape[1]], expected, atol=1e-5)
    assert (got[:, expected.shape[1] :] == 0).all()
