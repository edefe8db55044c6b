"""The diffusion library on tiny random pipelines: what is exact with random weights.

Shapes, determinism per seed, batched == one at a time, DDIM inversion undone exactly by sampling when the
UNet predicts zero noise, prompt-to-prompt with identical prompts reproducing the plain sample, and the
errors for a missing model and unequal token counts.
"""

import pytest
import torch

from tbpr.errors import ConfigError
from tbpr.generate.images.diffusion.instruct import instruct_edit
from tbpr.generate.images.diffusion.inversion import (
    NullTextSettings,
    ddim_invert,
    image_to_latent,
    inverse_step,
    null_text_inversion,
)
from tbpr.generate.images.diffusion.loading import ModelNotFound, load_pipeline, weights_hash
from tbpr.generate.images.diffusion.p2p import prompt_to_prompt, token_alignment
from tbpr.generate.images.diffusion.sampling import (
    decode,
    denoise,
    encode_prompts,
    initial_latents,
    text_to_image,
)
from tbpr.generate.images.diffusion.tiny import IMAGE_SIZE, save_tiny_pipeline, tiny_pipeline

SIZE = dict(height=IMAGE_SIZE, width=IMAGE_SIZE)
PROMPTS = ["a man in a red shirt", "a woman with blue jeans", "a child in a green coat"]


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@pytest.fixture
def zero_noise_pipe():
    """A tiny pipeline whose UNet predicts zero noise everywhere (``conv_out`` zeroed)."""
    p = tiny_pipeline()
    p.unet.conv_out.weight.data.zero_()
    p.unet.conv_out.bias.data.zero_()
    return p


def test_clip_tokenizer_ids_match_clip(pipe):
    assert pipe.tokenizer("red blue").input_ids == [49406, 736, 1746, 49407]


def test_text_to_image_shapes_and_seeds(pipe):
    out = text_to_image(pipe, PROMPTS[:2], seeds=[3, 4], steps=2, **SIZE)
    assert [im.size for im in out.images] == [(IMAGE_SIZE, IMAGE_SIZE)] * 2
    assert out.latents.shape == (2, 4, IMAGE_SIZE // 2, IMAGE_SIZE // 2)
    assert out.seeds == [3, 4] and out.steps == 2 and out.guidance == 7.5
    with pytest.raises(ValueError, match="one seed per prompt"):
        text_to_image(pipe, PROMPTS[:2], seeds=[1], steps=2, **SIZE)
    with pytest.raises(ValueError, match="multiples of 4"):
        text_to_image(pipe, PROMPTS[:1], seeds=[1], steps=2, height=66, width=64)


def test_same_seed_same_image_other_seed_other_image(pipe):
    a = text_to_image(pipe, PROMPTS[:1], seeds=[7], steps=2, **SIZE).latents
    b = text_to_image(pipe, PROMPTS[:1], seeds=[7], steps=2, **SIZE).latents
    c = text_to_image(pipe, PROMPTS[:1], seeds=[8], steps=2, **SIZE).latents
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 0.1


def test_batched_equals_one_at_a_time(pipe):
    seeds = [11, 12, 13]
    batched = text_to_image(pipe, PROMPTS, seeds, steps=2, negative_prompt="blurry", **SIZE).latents
    single = [
        text_to_image(pipe, [p], [s], steps=2, negative_prompt="blurry", **SIZE).latents
        for p, s in zip(PROMPTS, seeds)
    ]
    torch.testing.assert_close(batched, torch.cat(single), rtol=1e-4, atol=1e-4)


def test_inverse_step_undoes_the_ddim_step(pipe):
    """For a fixed noise prediction, inverse_step at t is the exact inverse of the scheduler's step at t."""
    pipe.scheduler.set_timesteps(4)
    gen = torch.Generator().manual_seed(0)
    x, eps = torch.randn(1, 4, 8, 8, generator=gen), torch.randn(1, 4, 8, 8, generator=gen)
    for t in pipe.scheduler.timesteps:
        back = pipe.scheduler.step(eps, t, inverse_step(pipe.scheduler, eps, int(t), x)).prev_sample
        torch.testing.assert_close(back, x, rtol=1e-5, atol=1e-5)
    # hand-computed for the last step (t = 1, previous alpha = alphas_cumprod[0] since set_alpha_to_one=False)
    a_prev, a_t = pipe.scheduler.alphas_cumprod[0], pipe.scheduler.alphas_cumprod[1]
    expected = (a_t / a_prev) ** 0.5 * x  # with zero noise DDIM only rescales
    torch.testing.assert_close(inverse_step(pipe.scheduler, torch.zeros_like(x), 1, x), expected)


def test_ddim_inversion_then_sampling_returns_the_start_latent(zero_noise_pipe):
    p = zero_noise_pipe
    start = torch.randn(1, 4, IMAGE_SIZE // 2, IMAGE_SIZE // 2, generator=torch.Generator().manual_seed(1))
    trajectory = ddim_invert(p, start, PROMPTS[0], steps=4)
    assert len(trajectory) == 5 and not torch.allclose(trajectory[-1], start)
    cond, uncond = encode_prompts(p, PROMPTS[:1]), encode_prompts(p, [""])
    back = denoise(p, trajectory[-1], cond, uncond, guidance=7.5, steps=4)
    torch.testing.assert_close(back, start, rtol=1e-5, atol=1e-5)


def test_null_text_inversion_exact_case_stops_at_once(zero_noise_pipe):
    """Zero noise: the guided step already lands on the inverted latent, so no Adam update is made."""
    image = decode(zero_noise_pipe, initial_latents(zero_noise_pipe, [2], **SIZE))[0]
    inv = null_text_inversion(zero_noise_pipe, image, PROMPTS[0], steps=3, guidance=7.5)
    assert inv.inner_steps_used == [0, 0, 0] and len(inv.null_embeddings) == 3
    assert max(inv.losses) < 1e-10


def test_null_text_inversion_reconstructs_better_than_the_plain_null(pipe):
    image = text_to_image(pipe, PROMPTS[:1], [5], steps=3, **SIZE).images[0]
    settings = NullTextSettings(inner_steps=3, early_stop=0.0, early_stop_growth=0.0)
    inv = null_text_inversion(pipe, image, PROMPTS[0], steps=3, guidance=7.5, settings=settings)
    assert inv.inner_steps_used == [3, 3, 3]
    assert inv.latent.shape == (1, 4, IMAGE_SIZE // 2, IMAGE_SIZE // 2)
    target = image_to_latent(pipe, image)
    cond = encode_prompts(pipe, PROMPTS[:1])
    tuned = denoise(pipe, inv.latent, cond, inv.null_embeddings, 7.5, 3)
    plain = denoise(pipe, inv.latent, cond, encode_prompts(pipe, [""]), 7.5, 3)
    assert (tuned - target).pow(2).mean() < (plain - target).pow(2).mean()


def test_word_swap_with_identical_prompts_reproduces_the_source_sample(pipe):
    plain = text_to_image(pipe, PROMPTS[:1], [9], steps=3, **SIZE).latents
    swapped = prompt_to_prompt(pipe, PROMPTS[0], PROMPTS[0], seed=9, steps=3, **SIZE).latents
    torch.testing.assert_close(swapped[:1], plain, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(swapped[1:], plain, rtol=1e-4, atol=1e-4)
    assert all(type(proc).__name__ == "AttnProcessor2_0" for proc in pipe.unet.attn_processors.values())


def _plain_edit_equals_uncontrolled(pipe, edited: str) -> torch.Tensor:
    """The plain latents of ``edited``, checked equal to the edited half of prompt-to-prompt without control."""
    plain_edit = text_to_image(pipe, [edited], [9], steps=3, **SIZE).latents
    free = prompt_to_prompt(
        pipe, PROMPTS[0], edited, seed=9, steps=3, cross_share=0, self_share=0, **SIZE
    ).latents
    torch.testing.assert_close(free[1:], plain_edit, rtol=1e-4, atol=1e-4)
    return plain_edit


def test_word_swap_replaces_attention_only_for_its_share_of_steps(pipe):
    edited = PROMPTS[0].replace("red", "blue")
    plain_edit = _plain_edit_equals_uncontrolled(pipe, edited)
    controlled = prompt_to_prompt(
        pipe, PROMPTS[0], edited, seed=9, steps=3, cross_share=1, self_share=1, **SIZE
    ).latents
    assert (controlled[1:] - plain_edit).abs().max() > 1e-3


def test_prompt_to_prompt_refuses_prompts_it_cannot_align(pipe):
    assert token_alignment(pipe, "a red shirt", "a blue shirt") is None  # a word swap
    with pytest.raises(ConfigError, match="equal token counts .* source has 5 .* edited has 7"):
        prompt_to_prompt(pipe, "a red shirt", "a turquoise-ish shirt", steps=2, **SIZE)


def test_refinement_alignment_by_hand(pipe):
    """ "a red shirt" is [SOT, a, red, shirt]; ", in a park" adds 4 tokens, then the end token and padding."""
    mapper, keep = token_alignment(pipe, "a red shirt", "a red shirt, in a park")
    assert mapper[:4].tolist() == [0, 1, 2, 3] and keep.nonzero().flatten().tolist() == [4, 5, 6, 7]
    assert mapper[8].item() == 4 and mapper[76].item() == 72  # the end token and padding shift by 4


def test_refinement_keeps_the_source_layout_only_while_controlled(pipe):
    edited = PROMPTS[0] + ", in a park"
    plain_source = text_to_image(pipe, PROMPTS[:1], [9], steps=3, **SIZE).latents
    plain_edit = _plain_edit_equals_uncontrolled(pipe, edited)
    controlled = prompt_to_prompt(
        pipe, PROMPTS[0], edited, seed=9, steps=3, cross_share=1, self_share=0, **SIZE
    )
    torch.testing.assert_close(controlled.latents[:1], plain_source, rtol=1e-4, atol=1e-4)
    assert (controlled.latents[1:] - plain_edit).abs().max() > 1e-3


def test_instruct_pix2pix_edit_is_seeded():
    p = tiny_pipeline("instruct")
    image = text_to_image(tiny_pipeline(), PROMPTS[:1], [1], steps=2, **SIZE).images[0]
    a = instruct_edit(p, [image, image], ["make it rain", "make it night"], seeds=[1, 2], steps=2)
    b = instruct_edit(p, [image], ["make it rain"], seeds=[1], steps=2)
    assert [im.size for im in a.images] == [(IMAGE_SIZE, IMAGE_SIZE)] * 2
    torch.testing.assert_close(a.latents[:1], b.latents, rtol=1e-4, atol=1e-4)


def test_saved_tiny_pipeline_loads_like_a_model(tmp_path, pipe):
    save_tiny_pipeline(tmp_path / "tiny")
    loaded = load_pipeline(tmp_path / "tiny")
    assert type(loaded.scheduler).__name__ == "DDIMScheduler" and loaded.unet.dtype == torch.float32
    a = text_to_image(loaded, PROMPTS[:1], [4], steps=2, **SIZE).latents
    torch.testing.assert_close(a, text_to_image(pipe, PROMPTS[:1], [4], steps=2, **SIZE).latents)


def test_missing_model_is_one_clear_error(tmp_path, monkeypatch):
    with pytest.raises(ModelNotFound, match="model_index.json missing") as err:
        load_pipeline(tmp_path / "nothing")
    assert "\n" not in str(err.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound, match="'nobody/no-such-model' cannot be loaded") as err:
        load_pipeline("nobody/no-such-model")
    assert "\n" not in str(err.value)


def test_weights_hash_follows_the_weights(pipe):
    assert weights_hash(pipe) == weights_hash(tiny_pipeline(seed=0))
    assert weights_hash(pipe) != weights_hash(tiny_pipeline(seed=1))
    assert len(weights_hash(pipe)) == 16
