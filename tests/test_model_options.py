"""Model-side training options: text attention dropout, freezing, dropping text layers, CoOp,
CLIP-Adapter and SimCLR heads, and their checkpoints."""

import pytest
import torch
from torch import nn

from tbpr.data.tokenizer import Tokenizer
from tbpr.errors import ConfigError
from tbpr.models import DualEncoder, ModelConfig, load_model, save_model
from tbpr.models.adapter import FeatureAdapter
from tbpr.models.prompting import PromptContext
from tbpr.train.config import OptimConfig
from tbpr.train.optim import build_optimizer

TOK = Tokenizer(77)
CAPTIONS = ["a man in a red coat", "a woman wearing blue jeans and a white shirt with a black bag", "short"]


def build(arch: str = "tbpr-micro", seed: int = 0, **kw) -> DualEncoder:
    torch.manual_seed(seed)
    size = (64, 32) if arch == "tbpr-micro" else (128, 64)
    return DualEncoder(ModelConfig(arch=arch, image_size=size, **kw))


def trainable(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def grads_after_backward(model: DualEncoder) -> set[str]:
    images = torch.randn(2, 3, 64, 32)
    loss = model.encode_image(images, normalize=False).sum() + model.encode_text(TOK(CAPTIONS[:2])).sum()
    loss.backward()
    return {name for name, p in model.named_parameters() if p.grad is not None}


# --- text attention dropout ---------------------------------------------------------------------


def test_text_attention_dropout_is_random_in_training_only():
    model = build(text_attn_dropout=0.3)
    assert all(block.attn.dropout == 0.3 for block in model.text_blocks)
    assert all(block.attn.dropout == 0.0 for block in model.image_blocks)  # image tower unchanged
    tokens, images = TOK(CAPTIONS), torch.randn(2, 3, 64, 32)
    model.train()
    assert not torch.allclose(model.encode_text(tokens), model.encode_text(tokens))
    assert torch.equal(model.encode_image(images), model.encode_image(images))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.encode_text(tokens), model.encode_text(tokens))


def test_zero_text_attention_dropout_leaves_the_model_unchanged():
    plain, zero = build(), build(text_attn_dropout=0.0)
    assert plain.state_dict().keys() == zero.state_dict().keys()
    zero.train()
    tokens = TOK(CAPTIONS)
    assert torch.equal(zero.encode_text(tokens), plain.eval().encode_text(tokens))
    with pytest.raises(ConfigError, match="text_attn_dropout"):
        build(text_attn_dropout=1.0)


# --- freezing -----------------------------------------------------------------------------------


def test_defaults_train_everything_but_open_clip_temperature():
    model = build()
    assert model.prompt is None and model.adapter is None and len(model.ss_heads) == 0
    frozen = {name for name, _ in model.named_parameters()} - trainable(model)
    assert frozen == {"clip.logit_scale"}  # open_clip's own temperature; tbpr's is a fixed buffer


def test_freeze_by_prefix_locks_exactly_the_patch_embedding():
    base, locked = build(), build(freeze=["clip.visual.conv1"])
    assert trainable(base) - trainable(locked) == {"clip.visual.conv1.weight"}
    optimized = {
        id(p) for group in build_optimizer(locked, OptimConfig()).param_groups for p in group["params"]
    }
    assert id(locked.clip.visual.conv1.weight) not in optimized
    assert len(optimized) == len(trainable(locked))
    assert "clip.visual.conv1.weight" not in grads_after_backward(locked)


def test_freeze_prefix_matches_whole_name_components():
    model = build("tbpr-tiny", freeze=["clip.transformer.resblocks.1"])
    assert {n for n in trainable(build("tbpr-tiny")) - trainable(model)} == {
        n for n, _ in model.named_parameters() if n.startswith("clip.transformer.resblocks.1.")
    }


@pytest.mark.parametrize("prefix", ["clip.visual.conv", "clip.visual.conv2", "visual.conv1"])
def test_unknown_freeze_prefix_lists_valid_names(prefix):
    with pytest.raises(
        ConfigError, match=r"model.freeze: .* matches no parameter.*clip\.visual\.conv1\.weight"
    ):
        build(freeze=[prefix])


def test_freeze_text_layers_locks_those_blocks():
    model = build("tbpr-tiny", freeze_text_layers=[0, -1])
    frozen = trainable(build("tbpr-tiny")) - trainable(model)
    expected = {
        n
        for n, _ in model.named_parameters()
        if n.startswith(("clip.transformer.resblocks.0.", "clip.transformer.resblocks.3."))
    }
    assert frozen == expected
    with pytest.raises(ConfigError, match="freeze_text_layers: layer 4 out of range"):
        build("tbpr-tiny", freeze_text_layers=[4])


# --- dropping text layers -----------------------------------------------------------------------


def test_drop_text_layers_runs_the_remaining_blocks():
    full, dropped = build("tbpr-tiny"), build("tbpr-tiny", drop_text_layers=[1, 2])
    assert len(dropped.text_blocks) == 2 and dropped.clip.transformer.layers == 2
    for kept, original in ((0, 0), (1, 3)):  # same seed: the kept blocks are the original ones
        for a, b in zip(dropped.text_blocks[kept].parameters(), full.text_blocks[original].parameters()):
            assert torch.equal(a, b)
    # the same features as the full model with blocks 1 and 2 replaced by the identity
    full.clip.transformer.resblocks = nn.ModuleList([full.text_blocks[0], full.text_blocks[3]])
    tokens = TOK(CAPTIONS)
    dropped.eval(), full.eval()
    with torch.no_grad():
        ours = dropped.encode_text(tokens)  # padding-trim path
        torch.testing.assert_close(ours, full.clip.encode_text(tokens, normalize=True), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(
            ours, dropped.clip.encode_text(tokens, normalize=True), rtol=1e-5, atol=1e-6
        )


def test_drop_and_freeze_use_the_architecture_numbering():
    model = build("tbpr-tiny", drop_text_layers=[1, 2], freeze_text_layers=[3])
    frozen_blocks = [
        i for i, block in enumerate(model.text_blocks) if not any(p.requires_grad for p in block.parameters())
    ]
    assert frozen_blocks == [1]  # original block 3 sits at position 1


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"drop_text_layers": [4]}, "drop_text_layers: layer 4 out of range"),
        ({"drop_text_layers": [0, -4]}, "names a layer twice"),
        ({"drop_text_layers": [0, 1, 2, 3]}, "removes every text layer"),
        (
            {"drop_text_layers": [1], "freeze_text_layers": [1]},
            r"freeze_text_layers: layers \[1\] are dropped",
        ),
    ],
)
def test_bad_text_layer_lists_are_config_errors(kw, message):
    with pytest.raises(ConfigError, match=message):
        build("tbpr-tiny", **kw)


# --- CoOp ---------------------------------------------------------------------------------------


def test_coop_trains_only_the_context_vectors():
    model = build(tuning="coop")
    assert trainable(model) == {"prompt.ctx"}
    assert grads_after_backward(model) == {"prompt.ctx"}
    learn = build(tuning="coop", learnable_temperature=True)
    assert trainable(learn) == {"prompt.ctx", "temperature.log_scale"}


def test_coop_context_starts_from_a_pedestrian_photo_of():
    model = build(tuning="coop")
    ids = TOK("a pedestrian photo of")[0, 1:5]
    assert TOK.decode(ids) == "a pedestrian photo of" and model.prompt.length == 4
    assert torch.equal(model.prompt.ctx, model.clip.token_embedding.weight[ids])


def test_coop_at_init_encodes_the_prompt_followed_by_the_caption():
    model = build(tuning="coop").eval()
    long_caption = " ".join(["red"] * 74)  # 76 tokens: the prompt pushes its tail out of the context
    captions = [*CAPTIONS, long_caption]
    prompted = TOK([f"a pedestrian photo of {c}" for c in captions])  # truncation keeps the end token
    with torch.no_grad():
        ours = model.encode_text(TOK(captions))
        reference = model.clip.encode_text(prompted, normalize=True)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)


def test_prompt_make_room_shifts_tokens_and_keeps_the_end_token():
    emb = nn.Embedding(10, 3)
    prompt = PromptContext(emb, [4, 5])
    assert torch.equal(prompt.ctx, emb.weight[[4, 5]])
    sot, eot = 8, 9
    tokens = torch.tensor([[sot, 1, 2, eot, 0, 0, 0, 0], [sot, 1, 2, 3, 4, 5, 6, eot]])
    assert prompt.make_room(tokens).tolist() == [
        [sot, sot, sot, 1, 2, eot, 0, 0],
        [sot, sot, sot, 1, 2, 3, 4, eot],
    ]
    x = torch.zeros(2, 8, 3)
    out = prompt.insert(x)
    assert torch.equal(out[:, 1:3], emb.weight[[4, 5]].detach().expand(2, -1, -1))
    assert out[:, [0, *range(3, 8)]].abs().sum() == 0


def test_coop_rejects_an_empty_init():
    with pytest.raises(ConfigError, match="coop_init"):
        build(tuning="coop", coop_init="")


# --- CLIP-Adapter -------------------------------------------------------------------------------


def test_clip_adapter_trains_only_the_adapter():
    model = build(tuning="clip-adapter")
    assert trainable(model) == {"adapter.fc.0.weight", "adapter.fc.2.weight"}
    assert model.adapter.fc[0].weight.shape == (16, 64)  # reduction 4 of the 64-d features
    assert [type(m) for m in model.adapter.fc] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU]
    assert grads_after_backward(model) == {"adapter.fc.0.weight", "adapter.fc.2.weight"}


def test_adapter_blend_by_hand():
    adapter = FeatureAdapter(4, reduction=2, alpha=0.4)
    with torch.no_grad():
        adapter.fc[0].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0]]))
        adapter.fc[2].weight.copy_(torch.tensor([[1.0, 0], [0, 1], [0, 0], [0, 0]]))
    # A(f) = ReLU(W2 ReLU(W1 f)) = (2, 0, 0, 0); 0.4 * A(f) + 0.6 * f
    out = adapter(torch.tensor([[2.0, -3.0, 5.0, -1.0]]))
    torch.testing.assert_close(out, torch.tensor([[2.0, -1.8, 3.0, -0.6]]))


def test_adapter_applies_to_the_image_features():
    model = build(tuning="clip-adapter", adapter_reduction=1, adapter_alpha=0.25).eval()
    with torch.no_grad():
        for i in (0, 2):
            model.adapter.fc[i].weight.copy_(torch.eye(64))
        images = torch.randn(2, 3, 64, 32)
        f = model.clip.encode_image(images)
        torch.testing.assert_close(model.encode_image(images, normalize=False), 0.25 * f.relu() + 0.75 * f)
        assert torch.allclose(model.encode_image(images).norm(dim=-1), torch.ones(2))


@pytest.mark.parametrize(
    ("kw", "field"),
    [({"adapter_alpha": 1.5}, "adapter_alpha"), ({"adapter_reduction": 0}, "adapter_reduction")],
)
def test_bad_adapter_settings_are_config_errors(kw, field):
    with pytest.raises(ConfigError, match=field):
        build(tuning="clip-adapter", **kw)


def test_unknown_tuning_is_a_config_error():
    with pytest.raises(ConfigError, match="model.tuning"):
        build(tuning="lora")


# --- SimCLR heads -------------------------------------------------------------------------------


def test_ss_heads_exist_only_when_listed():
    assert not any(k.startswith("ss_heads") for k in build().state_dict())
    model = build(ss_heads=["image"])
    head = model.ss_heads["image"]
    assert [type(m) for m in head] == [nn.Linear, nn.ReLU, nn.Linear]
    assert (head[0].in_features, head[0].out_features, head[2].out_features) == (
        64,
        16,
        64,
    )  # 512-128-512 scaled
    feats = torch.randn(3, 64)
    expected = (feats @ head[0].weight.T + head[0].bias).relu() @ head[2].weight.T + head[2].bias
    torch.testing.assert_close(model.ss_project("image", feats), expected)
    with pytest.raises(ConfigError, match="add 'text' to model.ss_heads"):
        model.ss_project("text", feats)
    with pytest.raises(ConfigError, match="ss_heads"):
        build(ss_heads=["audio"])


# --- checkpoints --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {
            "drop_text_layers": [1, 2],
            "freeze_text_layers": [0],
            "text_attn_dropout": 0.05,
            "ss_heads": ["image", "text"],
        },
        {"tuning": "coop", "freeze": ["clip.visual.conv1"]},
        {"tuning": "clip-adapter", "adapter_alpha": 0.3},
    ],
)
def test_models_with_options_round_trip_through_checkpoints(tmp_path, kw):
    model = build("tbpr-tiny", seed=3, **kw).eval()
    with torch.no_grad():  # make every trainable tensor differ from a fresh init
        for p in model.parameters():
            p.add_(0.01)
    save_model(model, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt").eval()
    assert loaded.config == model.config
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys()
    assert all(torch.equal(state[k], loaded_state[k]) for k in state)
    assert trainable(loaded) == trainable(model)
    images, tokens = torch.randn(2, 3, 128, 64), TOK(CAPTIONS)
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(images), model.encode_image(images))
        assert torch.equal(loaded.encode_text(tokens), model.encode_text(tokens))
