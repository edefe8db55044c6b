"""MLLM captioning (``tbpr caption``) with a tiny randomly initialized LLaVA model: run in-process
(``TransformersVisionBackend``) and behind ``transformers serve`` (images sent as base64 data URLs).

The tiny model writes nonsense, so its replies are rejected by the cleaning rules (not English); tests
that need predictable verdicts wrap a backend with ``Scripted``, which replaces reply texts (the images
still go through the real model unless ``inner`` is None).
"""

import json
from pathlib import Path

import pytest
from PIL import Image

from llm_server import cached_folder, smollm2_folder, transformers_serve
from tbpr.cli import main
from tbpr.data.caption_store import CaptionStore
from tbpr.errors import DataError
from tbpr.generate.chat import ChatClient, ChatSettings, Failure, Reply
from tbpr.generate.jobs import Shard
from tbpr.generate.text.caption import METHOD, caption_images, image_id, scan_images, slot
from tbpr.generate.text.templates import STATIC, load_templates
from tbpr.generate.text.vision import TransformersVisionBackend, VisionChatBackend

GOOD = "A woman with long black hair wears a red jacket, blue jeans and white shoes, carrying a black bag."


def _build_tiny_llava(out: Path) -> None:
    """A 2-layer LLaVA (CLIP vision tower, Llama text model) with SmolLM2's tokenizer plus an <image> token."""
    import torch
    from transformers import (
        AutoTokenizer,
        CLIPImageProcessor,
        CLIPVisionConfig,
        GenerationConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder())
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
        "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% elif c['type'] == 'text' %}"
        "{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tokenizer.chat_template = template
    images = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    processor = LlavaProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        chat_template=template,
        num_additional_image_tokens=1,
    )
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
    )
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        **ids,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    # transformers serve only turns sampling off (temperature 0), never on: sample unless asked not to
    model.generation_config = GenerationConfig(do_sample=True, pad_token_id=tokenizer.pad_token_id, **ids)
    model.save_pretrained(out)
    processor.save_pretrained(out)


@pytest.fixture(scope="session")
def tiny_vlm() -> Path:
    """The tiny LLaVA folder: built once (a few seconds) under the test cache, then reused."""
    return cached_folder("tiny-llava-random-v1", _build_tiny_llava)


@pytest.fixture
def images(tmp_path) -> Path:
    """Six readable images in nested folders (jpg, png, webp, upper-case suffix), a broken one, a text file."""
    root = tmp_path / "imgs"
    for i, rel in enumerate(["a/0.jpg", "a/1.png", "b/c/2.webp", "b/3.JPEG", "4.jpg", "b/c/5.png"]):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24 + i, 60), (40 * i, 100, 200 - 30 * i)).save(root / rel)
    (root / "b/broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "notes.txt").write_text("not an image")
    return root


class Scripted:
    """An image backend: runs ``inner`` (if any) on the real images, then replaces each reply with the
    next scripted text of its image (``script[relative path]``; exhausted scripts give ``GOOD``).
    ``stop_after`` calls, it raises KeyboardInterrupt (a killed job)."""

    backend = "openai"
    model = "scripted-vlm"
    settings = {"temperature": 0.7}

    def __init__(self, root: Path, script=None, inner=None, stop_after=None) -> None:
        self.root, self.script, self.inner, self.stop_after = root, dict(script or {}), inner, stop_after
        self.calls: list[list[tuple[str, str]]] = []

    def generate(self, requests, seeds):
        if self.stop_after is not None and len(self.calls) >= self.stop_after:
            raise KeyboardInterrupt
        if self.inner is not None:
            self.inner.generate(requests, seeds)
        self.calls.append([(p.relative_to(self.root).as_posix(), text) for p, text in requests])
        out = []
        for path, _ in requests:
            queue = self.script.setdefault(path.relative_to(self.root).as_posix(), [])
            reply = queue.pop(0) if queue else GOOD
            out.append(reply if isinstance(reply, Failure) else Reply(reply))
        return out


def test_scan_is_recursive_and_ids_are_stable(images):
    found = scan_images(images)
    assert found == ["4.jpg", "a/0.jpg", "a/1.png", "b/3.JPEG", "b/broken.jpg", "b/c/2.webp", "b/c/5.png"]
    assert image_id("a/0.jpg") == image_id("a/0.jpg") != image_id("a/1.png")
    assert 0 <= image_id("a/0.jpg") < 2**48
    assert len({slot("m1", "static"), slot("m1", "dynamic"), slot("m2", "static")}) == 3
    with pytest.raises(DataError, match="does not exist"):
        scan_images(images / "nope")


def test_transformers_backend_end_to_end(images, tmp_path, tiny_vlm):
    """The real image path in-process: every readable image captioned, the broken one listed, nonsense rejected."""
    backend = TransformersVisionBackend(str(tiny_vlm), batch_size=4, settings=ChatSettings(0.7, 0.9, 12))
    store = tmp_path / "caps.jsonl"
    summary = caption_images(images, store, backend, per_image=2, max_attempts=2, batch_size=5)
    assert summary.unreadable.keys() == {"b/broken.jpg"}
    assert "1 unreadable images skipped" in summary.line(str(store))
    assert summary.wanted == 12 and summary.failed == 0
    records = list(CaptionStore(store))
    assert {r.extra["image"] for r in records} == set(scan_images(images)) - {"b/broken.jpg"}
    rec = records[0]
    assert rec.method == METHOD and rec.backend == "transformers" and rec.model == str(tiny_vlm)
    assert rec.extra["instruction"] == "static" and rec.extra["template_id"] is None
    assert rec.settings["generation_batch"] == 4 and "seed" in rec.settings and "batch_seed" in rec.settings
    assert rec.caption_id == image_id(rec.source_text) and rec.source_text == rec.extra["image"]
    # random weights write nonsense: rejected by the cleaning rules, each asked twice
    assert all(r.reason for r in records if not r.accepted)
    assert summary.accepted + summary.rejected == len(records)


def test_cleaning_rejects_and_asks_again(images, tmp_path):
    script = {
        "a/0.jpg": ["A [gender] in a [color] coat.", "I'm sorry, but I cannot describe people.", GOOD],
        "a/1.png": ["Une femme avec un manteau rouge et un pantalon bleu.", GOOD],
        "4.jpg": ["", "{template}", "<image> a man"],
    }
    backend = Scripted(images, script)
    store = tmp_path / "caps.jsonl"
    summary = caption_images(images, store, backend, max_attempts=3)
    reasons = {}
    for rec in CaptionStore(store):
        reasons.setdefault(rec.extra["image"], []).append((rec.attempt, rec.accepted, rec.reason))
    assert reasons["a/0.jpg"] == [
        (1, False, "leftover template markup"),
        (2, False, "refusal"),
        (3, True, None),
    ]
    assert reasons["a/1.png"] == [(1, False, "not English"), (2, True, None)]
    assert [r[2] for r in reasons["4.jpg"]] == [
        "empty",
        "leftover template markup",
        "leftover template markup",
    ]
    assert summary.exhausted == 1 and summary.accepted == 5
    assert caption_images(images, store, backend, max_attempts=3).skipped == 6  # all done: nothing asked


def test_dynamic_instruction_inserts_a_template(images, tmp_path):
    templates = load_templates()
    backend = Scripted(images)
    store = tmp_path / "caps.jsonl"
    caption_images(images, store, backend, kind="dynamic", templates=templates, per_image=3)
    prompts = [text for call in backend.calls for _, text in call]
    records = list(CaptionStore(store))
    assert len(records) == 18 and all(r.accepted for r in records)
    for rec, prompt in zip(records, prompts):
        template = templates[rec.extra["template_id"]]
        assert rec.extra["template"] == template and f"'{template}'" in prompt and "{template}" not in prompt
    assert len({r.extra["template_id"] for r in records}) > 5  # drawn at random per request


def test_several_captioners_share_a_store(images, tmp_path):
    store = tmp_path / "caps.jsonl"
    one, two = Scripted(images), Scripted(images)
    two.model = "other-vlm"
    caption_images(images, store, one, kind="static")
    caption_images(images, store, one, kind="dynamic", templates=load_templates())
    caption_images(images, store, two, kind="static", per_image=2)
    records = list(CaptionStore(store))
    assert len(records) == 6 * 4 and len({r.key for r in records}) == 24
    kinds = {(r.model, r.extra["instruction"]) for r in records}
    assert kinds == {("scripted-vlm", "static"), ("scripted-vlm", "dynamic"), ("other-vlm", "static")}
    assert all(r.key.split(":")[0] == str(image_id(r.extra["image"])) for r in records)
    assert caption_images(images, store, one, kind="static").skipped == 6


def test_interrupted_job_resumes(images, tmp_path):
    store = tmp_path / "caps.jsonl"
    killed = Scripted(images, stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        caption_images(images, store, killed, batch_size=2)
    assert len(list(CaptionStore(store))) == 4  # two batches were stored before the kill
    with open(store, "ab") as fh:
        fh.write(b'{"key": "torn')  # a write cut off by the kill
    resumed = Scripted(images)
    summary = caption_images(images, store, resumed, batch_size=2)
    assert summary.skipped == 4 and summary.accepted == 2
    keys = [r.key for r in CaptionStore(store)]
    assert len(keys) == len(set(keys)) == 6


def test_failed_requests_are_retried_on_rerun(images, tmp_path):
    store = tmp_path / "caps.jsonl"
    # within a job, a failed request is asked again in the next round
    summary = caption_images(images, tmp_path / "rounds.jsonl", Scripted(images, {"a/0.jpg": [Failure("x")]}))
    assert summary.failed == 1 and summary.accepted == 6
    caption_images(images, store, Scripted(images, {"a/0.jpg": [Failure("HTTP 500")]}), max_attempts=1)
    failed = [r for r in CaptionStore(store) if r.text is None]
    assert len(failed) == 1 and failed[0].reason == "HTTP 500" and not failed[0].accepted
    summary = caption_images(images, store, Scripted(images), max_attempts=1)
    assert summary.accepted == 1 and summary.skipped == 5


def test_shards_cover_every_image_once(images, tmp_path):
    seen = []
    for i in range(3):
        backend = Scripted(images)
        caption_images(images, tmp_path / f"s{i}.jsonl", backend, shard=Shard(i, 3))
        seen.append({rel for call in backend.calls for rel, _ in call})
        assert all(image_id(rel) % 3 == i for rel in seen[-1])
    assert sorted(rel for s in seen for rel in s) == sorted(set(scan_images(images)) - {"b/broken.jpg"})
    assert sum(map(len, seen)) == 6
    merged = tmp_path / "all.jsonl"
    assert main(["augment", "merge", str(merged), *(str(tmp_path / f"s{i}.jsonl") for i in range(3))]) == 0
    assert {r.extra["image"] for r in CaptionStore(merged)} == set().union(*seen)
    assert caption_images(images, merged, Scripted(images)).skipped == 6  # the merged job is complete


def test_store_of_another_folder_is_refused(images, tmp_path):
    store = tmp_path / "caps.jsonl"
    caption_images(images, store, Scripted(images))
    lines = store.read_text().splitlines()
    rec = json.loads(lines[0])
    rec["source_text"] = "elsewhere/x.jpg"
    store.write_text("\n".join([json.dumps(rec), *lines[1:]]) + "\n")
    with pytest.raises(DataError, match="another images folder"):
        caption_images(images, store, Scripted(images))


def test_static_instruction_is_the_papers():
    assert STATIC.startswith("Write a description about the overall appearance of the person in the image")


@pytest.mark.slow
def test_http_backend_through_transformers_serve(images, tmp_path, tiny_vlm, fault_proxy, capsys):
    """The real HTTP path: images as data URLs to ``transformers serve`` running the tiny LLaVA, faults
    injected in front of it (retried 500s, a malformed reply recorded and retried on the rerun)."""
    with transformers_serve(tiny_vlm, tmp_path / "serve.log") as url:
        fault_proxy.reset(upstream=url, faults=["pass", 500, 503, "malformed"])
        store = tmp_path / "caps.jsonl"
        argv = ["caption", str(images), "--out", str(store), "--base-url", fault_proxy.url]
        argv += ["--instruction", "dynamic", "--max-tokens", "8", "--max-attempts", "1", "--concurrency", "2"]
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert "6 wanted" in out and "1 failed requests" in out and "unreadable: b/broken.jpg" in out
        records = list(CaptionStore(store))
        assert len(records) == 6 and all(r.backend == "openai" for r in records)
        assert all(r.model.startswith(str(tiny_vlm)) for r in records)  # the name the server reports
        assert sum(r.text is None for r in records) == 1
        assert sum("malformed" in (r.reason or "") for r in records) == 1
        assert all(r.extra["template_id"] is not None for r in records)
        log = (tmp_path / "serve.log").read_text()
        assert "POST /v1/chat/completions" in log
        # a direct request: the served model takes the image (its prompt counts the image tokens)
        with ChatClient(url, settings=ChatSettings(0.0, None, 4)) as client:
            backend = VisionChatBackend(client)
            reply = backend.generate([(images / "a/0.jpg", "Describe the person.")], [1])[0]
        assert isinstance(reply, Reply)
        assert main(argv) == 0  # the rerun asks only the failed request again
        assert "5 already done" in capsys.readouterr().out
        assert len(list(CaptionStore(store))) == 7


def test_caption_command_with_the_local_model(images, tmp_path, tiny_vlm, capsys):
    store = tmp_path / "caps.jsonl"
    argv = [
        "caption",
        str(images),
        "--out",
        str(store),
        "--backend",
        "transformers",
        "--model",
        str(tiny_vlm),
    ]
    argv += ["--instruction", "dynamic", "--per-image", "2", "--max-tokens", "6", "--max-attempts", "1"]
    assert main([*argv, "--limit", "3", "--shard", "0/1"]) == 0
    assert "6 wanted" in capsys.readouterr().out
    assert main(argv) == 0  # the rest: the first three images are done
    out = capsys.readouterr().out
    assert "12 wanted, 6 already done" in out and "unreadable: b/broken.jpg (" in out
    assert {r.extra["instruction"] for r in CaptionStore(store)} == {"dynamic"}
    assert main(["caption", str(images), "--backend", "transformers"]) == 2  # no --model
    assert main(["caption", str(images), "--model", "m"]) == 2  # no --out
