"""The public API: ``tbpr.load`` a run, encode texts and images (paths or PIL images) in batches."""

import subprocess
import sys

import pytest
import torch
from PIL import Image

import tbpr
from tbpr.data import read_dataset
from tbpr.errors import ConfigError, DataError
from tbpr.evaluation.evaluator import encode_split
from tbpr.evaluation.run_eval import load_run


@pytest.fixture(scope="module")
def retriever(tiny_run):
    return tbpr.load(tiny_run, device="cpu")


def test_embeddings_equal_the_evaluators_in_any_batch_size(retriever, tiny_run, synth_tiny):
    test = read_dataset(synth_tiny).split("test")
    run = load_run(tiny_run)
    expected = encode_split(run.model, test, run.image_transform(), run.tokenizer(), 8, 0, progress=False)
    paths = [test.image_path(rec) for rec in test.images]
    texts = [c.text for c in test.captions]
    for batch_size in (1, 7, 256):
        torch.testing.assert_close(retriever.encode_images(paths, batch_size), expected.image_feats)
        torch.testing.assert_close(retriever.encode_text(texts, batch_size), expected.text_feats)
    with Image.open(paths[0]) as pil:  # a PIL image, in any mode, encodes as its file does
        rgba = pil.convert("RGBA")  # converted to RGB as a file is
        torch.testing.assert_close(retriever.encode_images(rgba), expected.image_feats[:1])
        torch.testing.assert_close(retriever.encode_images([pil, str(paths[1])]), expected.image_feats[:2])
    one = retriever.encode_text("a man in a blue jacket")
    assert one.shape == (1, expected.text_feats.shape[1]) and one.dtype == torch.float32
    torch.testing.assert_close(one.norm(dim=1), torch.ones(1))
    assert retriever.checkpoint == tiny_run / "checkpoints" / "best.pt"


def test_bad_inputs_are_clear_errors(retriever, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"junk")
    with pytest.raises(DataError, match="cannot read image .*bad.jpg"):
        retriever.encode_images([bad])
    with pytest.raises(ConfigError, match="text 1 is a int"):
        retriever.encode_text(["a man", 3])
    with pytest.raises(ConfigError, match="cannot encode a int"):
        retriever.encode_images([3])
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        retriever.encode_text(["a man"], batch_size=0)
    with pytest.raises(ConfigError, match="empty"):
        retriever.encode_images([])
    with pytest.raises(ConfigError, match="no checkpoint"):
        tbpr.load(tmp_path)


def test_import_tbpr_stays_light_until_the_api_is_used():
    code = "import sys, tbpr; print('torch' in sys.modules, tbpr.load.__module__, 'torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "tbpr.api", "True"]
