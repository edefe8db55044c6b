"""The optional MLM loss (IRRA's cross-modal head; MLLM4Text-ReID Table 2): loss, head, config, engine."""

import logging
import math

import pytest
import torch

from micro import MICRO_LOGGED as MICRO
from tbpr.data.tokenizer import Tokenizer
from tbpr.errors import ConfigError
from tbpr.losses import Views, compute_losses, masked_token_loss
from tbpr.losses.mlm import IGNORE
from tbpr.models import DualEncoder, ModelConfig
from tbpr.models.checkpoint import atomic_torch_save, model_payload
from tbpr.train import engine, load_config, train
from tbpr.train.init_from import load_init_weights
from tbpr.train.masking import IRRA_MASK_ID
from tbpr.train.optim import build_optimizer


def test_masked_token_loss_by_hand():
    logits = torch.zeros(1, 3, 4)
    logits[0, 1, 2] = math.log(3)  # softmax over [1, 1, 3, 1] / 6: p(id 2) = 0.5
    logits[0, 0, 0] = 50.0  # unmasked positions do not count, however wrong
    labels = torch.tensor([[IGNORE, 2, IGNORE]])
    assert masked_token_loss(logits, labels).item() == pytest.approx(math.log(2))
    labels = torch.tensor([[1, 2, IGNORE]])  # position 0 (logits [50, 0, 0, 0], id 1): ln(e^50 + 3) - 0
    expected = (math.log(math.exp(50) + 3) + math.log(2)) / 2  # the mean over the two masked positions
    assert masked_token_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_masked_token_loss_without_masked_positions_is_zero_with_a_gradient():
    logits = torch.randn(2, 5, 7, requires_grad=True)
    loss = masked_token_loss(logits, torch.full((2, 5), IGNORE))
    loss.backward()
    assert loss.item() == 0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_mlm_is_a_registered_loss_reading_the_views_logits():
    logits = torch.zeros(1, 2, 4)
    logits[0, 0, 3] = math.log(3)
    views = Views(
        torch.eye(2),
        torch.eye(2),
        torch.tensor([0, 1]),
        1.0,
        mlm_logits=logits,
        mlm_labels=torch.tensor([[3, IGNORE]]),
    )
    total, record = compute_losses({"mlm": 2.0}, views)
    assert record["mlm"] == pytest.approx(math.log(2)) and total.item() == pytest.approx(2 * math.log(2))


def test_the_mlm_loss_needs_masking_and_adds_the_head():
    with pytest.raises(ConfigError, match="masking.mode"):
        load_config("mllm4text-small", ["masking.mode=none", "losses.mlm=1.0"])
    cfg = load_config("mllm4text-small", ["losses.mlm=1.0"])
    assert cfg.model.mlm_head and not load_config("mllm4text-small").model.mlm_head
    with pytest.raises(ConfigError, match="tuning coop"):
        DualEncoder(ModelConfig(arch="tbpr-micro", image_size=(64, 32), mlm_head=True, tuning="coop"))


def test_the_head_learns_to_predict_masked_words():
    torch.manual_seed(0)
    model = DualEncoder(ModelConfig(arch="tbpr-micro", image_size=(64, 32), mlm_head=True, mlm_depth=1))
    tokens = Tokenizer(77)(["a man in a red coat", "a woman with a blue bag"])
    labels = torch.full_like(tokens, IGNORE)
    labels[:, 4] = tokens[:, 4]  # "red" / "blue"
    masked = torch.where(labels != IGNORE, IRRA_MASK_ID, tokens)
    images = torch.randn(2, 3, 64, 32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(40):
        with model.capture_tokens([-1], [-1]) as store:
            model.encode_image(images)
            model.encode_text(masked)
        logits = model.predict_masked(store["text"][1], store["image"][1])
        assert logits.shape == (2, store["text"][1].shape[1], model.clip.token_embedding.num_embeddings)
        loss = masked_token_loss(logits, labels[:, : logits.shape[1]])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > math.log(1000) and losses[-1] < 0.25 * losses[0], losses[::10]


def test_training_scores_the_original_ids_of_the_masked_positions(tmp_path, synth_tiny, monkeypatch):
    seen = []
    real = engine.compute_two_embeddings

    def spy(weights, views, tse, params, keep):
        seen.append((views.mlm_logits.detach(), views.mlm_labels))
        return real(weights, views, tse, params, keep)

    monkeypatch.setattr(engine, "compute_two_embeddings", spy)
    overrides = [*MICRO, f"data.path={synth_tiny}", f"output_dir={tmp_path / 'run'}", "max_steps=3"]
    cfg = load_config(
        "mllm4text-small", [*overrides, "masking.mode=em", "masking.replace=mask", "losses.mlm=0.5"]
    )
    trainer = engine.Trainer(cfg)
    masked_batches = []
    mask = trainer.masker.mask

    def keep(tokens, indices, epoch):
        masked, chosen = mask(tokens, indices, epoch)
        masked_batches.append((tokens.clone(), masked, chosen))
        return masked, chosen

    monkeypatch.setattr(trainer.masker, "mask", keep)
    head_before = {k: v.clone() for k, v in trainer.model.mlm_head.state_dict().items()}
    trainer.train()
    assert len(seen) == 3
    vocab = trainer.model.clip.token_embedding.num_embeddings
    for (logits, labels), (original, masked, chosen) in zip(seen, masked_batches, strict=True):
        assert chosen.any() and torch.equal(chosen, masked == IRRA_MASK_ID)
        assert torch.equal(labels, original[chosen])  # row-major order of the masked positions
        assert logits.shape == (int(chosen.sum()), vocab)  # the vocabulary MLP runs only there
    record = (tmp_path / "run/metrics.jsonl").read_text().splitlines()[0]
    assert '"mlm":' in record and '"sdm":' in record
    after = trainer.model.mlm_head.state_dict()
    assert any(not torch.equal(head_before[k], after[k]) for k in after)


def test_head_logits_at_positions_are_the_full_logits_there():
    torch.manual_seed(0)
    model = DualEncoder(
        ModelConfig(arch="tbpr-micro", image_size=(64, 32), mlm_head=True, mlm_depth=1)
    ).eval()
    text, image = torch.randn(2, 6, 64), torch.randn(2, 9, 64)  # block outputs (width 64)
    positions = torch.zeros(2, 6, dtype=torch.bool)
    positions[0, 2] = positions[1, 1] = positions[1, 4] = True
    full = model.predict_masked(text, image)
    torch.testing.assert_close(model.predict_masked(text, image, positions), full[positions])


def test_mlm_head_learning_rate_factor_and_fine_tuning_without_it(tmp_path, synth_tiny, caplog):
    overrides = [*MICRO, f"data.path={synth_tiny}", "max_steps=1", "masking.mode=nam", "losses.mlm=1.0"]
    cfg = load_config(
        "mllm4text-small", [*overrides, f"output_dir={tmp_path / 'mlm'}", "optim.mlm_lr_factor=5"]
    )
    model = DualEncoder(cfg.model)
    lrs = {id(p): g["lr"] for g in build_optimizer(model, cfg.optim).param_groups for p in g["params"]}
    assert {lrs[id(p)] for p in model.mlm_head.parameters()} == {5 * cfg.optim.lr}
    assert {lrs[id(p)] for p in model.clip.parameters() if p.requires_grad} == {cfg.optim.lr}
    run = train(cfg)
    plain = DualEncoder(load_config("mllm4text-small", MICRO).model)
    load_init_weights(plain, run)  # the MLM head is optional on either side, like the SimCLR heads
    atomic_torch_save(model_payload(plain), tmp_path / "plain.pt")
    with caplog.at_level(logging.INFO, logger="tbpr.train.init_from"):
        load_init_weights(model, tmp_path / "plain.pt")
    heads = len(model.mlm_head.state_dict())
    assert f"freshly initialized: mlm_head.* ({heads} tensors)" in caplog.text
