"""Evaluation encodes captions in batches of similar length and returns features in caption order."""

import torch

from tbpr.data.readers import read_dataset
from tbpr.data.tokenizer import Tokenizer
from tbpr.evaluation.evaluator import encode_split, length_batches
from tbpr.evaluation.run_eval import load_run


def test_length_batches_group_captions_by_length_and_cover_each_once(synth_tiny):
    manifest = read_dataset(synth_tiny).split("test")
    tokenizer = Tokenizer()
    batches = length_batches(tokenizer([c.text for c in manifest.captions]), tokenizer.pad_id, 5)
    flat = [i for batch in batches for i in batch.tolist()]
    assert sorted(flat) == list(range(len(manifest.captions)))
    assert [len(b) for b in batches[:-1]] == [5] * (len(batches) - 1)
    lengths = [int((tokenizer(manifest.captions[i].text) != 0).sum()) for i in flat]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]


def test_features_come_back_in_caption_order(synth_tiny, tiny_run):
    run = load_run(tiny_run)
    manifest = read_dataset(synth_tiny).split("test")
    encoded = encode_split(run.model, manifest, run.image_transform(), run.tokenizer(), 4, 0, progress=False)
    run.model.eval()
    with torch.no_grad():
        one_by_one = torch.cat([run.model.encode_text(run.tokenizer()(c.text)) for c in manifest.captions])
    torch.testing.assert_close(encoded.text_feats, one_by_one, atol=1e-5, rtol=1e-4)
    assert encoded.text_pids.tolist() == manifest.caption_pids()
    assert encoded.image_pids.tolist() == [rec.pid for rec in manifest.images]
